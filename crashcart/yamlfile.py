"""YAML files with line numbers, loaded safely, and a small field checker.

Every YAML file crashcart reads (targets, firmware configs, scenarios,
incidents, event files) goes through :func:`load_yaml`: PyYAML's safe
loader only (nothing in a file is ever executed or instantiated), duplicate
keys rejected, and the line of every value remembered so an error can say
``targets/x.yaml:12: field 'memory[1].size': ...``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from crashcart.errors import InputError

KeyPath = tuple[str | int, ...]

# A YAML file that expands to more nodes than this (alias bombs) is refused.
MAX_NODES = 200_000
MAX_FILE_BYTES = 16 * 1024 * 1024


def format_keypath(path: KeyPath) -> str:
    """``("memory", 1, "size")`` -> ``memory[1].size``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


@dataclass
class YamlDocument:
    """A parsed YAML file: its data and the line of each value."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """Line of the value at ``path``, or of its nearest ancestor."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def load_yaml(path: str | Path, *, what: str = "YAML file") -> YamlDocument:
    """Load ``path`` with the safe loader, keeping line numbers.

    Raises :class:`InputError` naming the file and line for unreadable
    files, syntax errors, duplicate keys and alias bombs.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(
                f"{what} is {size} bytes, larger than the {MAX_FILE_BYTES} byte limit",
                path=path,
                remedy="check that this is the right file",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=path, remedy="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory, not a file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            path=path,
            remedy="save the file as UTF-8",
        ) from None
    return parse_yaml(text, path=path, what=what)


def parse_yaml(text: str, *, path: Path, what: str = "YAML file") -> YamlDocument:
    """Parse YAML ``text`` as if read from ``path`` (see :func:`load_yaml`)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, path, what) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "syntax error"
        raise InputError(
            f"{what} is not valid YAML: {problem}",
            path=path,
            line=line,
            remedy="fix the YAML syntax at that line",
        ) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, path, what) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{what} is not valid YAML: {exc}", path=path) from None
    finally:
        loader.dispose()
    doc = YamlDocument(path=path, data=None)
    if node is None:
        return doc
    builder = _Builder(loader, doc, what)
    doc.data = builder.build(node, ())
    return doc


def _reader_error(exc: yaml.reader.ReaderError, text: str, path: Path, what: str) -> InputError:
    line = text.count("\n", 0, exc.position) + 1
    return InputError(
        f"{what} has a character YAML does not allow (U+{exc.character:04X})"
        f" at character offset {exc.position}",
        path=path,
        line=line,
        remedy="remove control characters from the file",
    )


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument, what: str) -> None:
        self.loader = loader
        self.doc = doc
        self.what = what
        self.count = 0

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise InputError(
                f"{self.what} expands to more than {MAX_NODES} values (alias bomb?)",
                path=self.doc.path,
                line=node.start_mark.line + 1,
            )
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
            self._fail_at(node, path, f"tag {node.tag} is not allowed (plain YAML only)")
        if isinstance(node, yaml.MappingNode):
            try:
                self.loader.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise InputError(
                    f"bad merge key: {exc.problem}",
                    path=self.doc.path,
                    line=node.start_mark.line + 1,
                ) from None
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                if isinstance(key, (list, dict)):
                    self._fail_at(key_node, path, "a mapping key must be a plain value")
                if key in result:
                    self._fail_at(
                        key_node,
                        path + (str(key),),
                        "duplicate key (the earlier value would be silently lost)",
                    )
                sub = path + (key if isinstance(key, (str, int)) else str(key),)
                self.doc.lines[sub] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, sub)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return self.build(node, path)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._fail_at(node, path, f"cannot read value: {exc.problem}")
        except (ValueError, OverflowError) as exc:
            self._fail_at(node, path, f"cannot read value: {exc}")

    def _fail_at(self, node: yaml.Node, path: KeyPath, message: str) -> NoReturn:
        raise InputError(
            message,
            path=self.doc.path,
            field=format_keypath(path),
            line=node.start_mark.line + 1,
        )


_MISSING = object()


class Checker:
    """Validates values of a :class:`YamlDocument` with precise errors.

    Each method takes the key path of the value it checks, so the error can
    name the file, line, field and value, and suggest a remedy.
    """

    def __init__(self, doc: YamlDocument, *, what: str) -> None:
        self.doc = doc
        self.what = what

    def fail(
        self,
        path: KeyPath,
        message: str,
        value: Any = _MISSING,
        remedy: str | None = None,
    ) -> NoReturn:
        raise InputError(
            message,
            path=self.doc.path,
            field=format_keypath(path),
            line=self.doc.line_of(path),
            value=None if value is _MISSING else value,
            remedy=remedy,
        )

    def get(self, path: KeyPath) -> Any:
        value = self.doc.data
        for part in path:
            value = value[part]
        return value

    def mapping(
        self,
        path: KeyPath,
        value: Any,
        *,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
        open_ended: bool = False,
        string_keys: bool = True,
    ) -> dict[Any, Any]:
        """Check ``value`` is a mapping with the given keys."""
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {_kind(value)}", value)
        required = list(required)
        allowed = set(required) | set(optional)
        for key in value:
            if string_keys and not isinstance(key, str):
                self.fail(path + (str(key),), "keys must be strings", key)
            if not open_ended and key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"did you mean '{close[0]}'?" if close else (
                    "allowed keys: " + ", ".join(sorted(allowed))
                )
                self.fail(path + (key,), "unknown key", remedy=hint)
        for key in required:
            if key not in value:
                self.fail(path, f"missing required key '{key}'")
        return value

    def sequence(self, path: KeyPath, value: Any, *, min_items: int = 0) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}", value)
        if len(value) < min_items:
            self.fail(path, f"must have at least {min_items} item(s)", value)
        return value

    def integer(
        self,
        path: KeyPath,
        value: Any,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {_kind(value)}", value)
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {_num(minimum)}", value)
        if maximum is not None and value > maximum:
            self.fail(path, f"must be at most {_num(maximum)}", value)
        return value

    def string(
        self,
        path: KeyPath,
        value: Any,
        *,
        choices: Sequence[str] | None = None,
        pattern: str | None = None,
    ) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_kind(value)}", value)
        if choices is not None and value not in choices:
            self.fail(path, "must be one of: " + ", ".join(choices), value)
        if pattern is not None and not re.fullmatch(pattern, value):
            self.fail(path, f"must match {pattern}", value)
        return value

    def boolean(self, path: KeyPath, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {_kind(value)}", value)
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
    }.get(type(value), type(value).__name__)


def _num(value: int) -> str:
    return f"0x{value:x}" if value > 0xFFFF else str(value)
