"""External event files: deploys, config pushes, CI runs, alerts, notes.

One event per CSV row, JSONL line or YAML list item, with the columns of
docs/events-format.md.  Every error names the file, the line, the column
and the value, and says what to do.  YAML goes through
:func:`crashcart.yamlfile.load_yaml` (safe loading only).
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from crashcart.errors import InputError
from crashcart.units import parse_duration_ns
from crashcart.yamlfile import YamlDocument, load_yaml
from timeline.model import BASIS_EXTERNAL, EXTERNAL_KINDS, SEVERITIES, Event, time_value_us

REQUIRED_COLUMNS = ("time", "kind", "message")
OPTIONAL_COLUMNS = ("source", "device", "severity", "evidence", "uncertainty",
                    "version", "build_id", "config", "ref")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Columns copied into an event's details (and into Timesketch fields).
DETAIL_COLUMNS = ("version", "build_id", "config", "ref")
SUFFIXES = (".csv", ".jsonl", ".yaml", ".yml")
DEFAULT_SEVERITY = {"alert": "warning"}


@dataclass(frozen=True)
class EventFile:
    path: Path
    display_name: str
    events: tuple[Event, ...]


def load_event_file(path: str | Path, *, display_name: str | None = None) -> EventFile:
    """Read one event file; the format follows the suffix (.csv, .jsonl, .yaml/.yml)."""
    path = Path(path)
    name = display_name or str(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError("unknown event file type", path=path, value=path.suffix,
                         remedy="event files end in .csv, .jsonl, .yaml or .yml")
    if suffix in (".yaml", ".yml"):
        doc, items, prefix = _yaml_document(path)
        records = _yaml_records(path, doc, items, prefix)
        default_source = doc.data.get("source") if isinstance(doc.data, dict) else None
    else:
        text = _read_text(path)
        records = _csv_records(path, text) if suffix == ".csv" else _jsonl_records(path, text)
        default_source = path.stem
    events = tuple(_event(path, name, default_source or path.stem, record)
                   for record in records)
    return EventFile(path, name, events)


# -- one record -> one event ------------------------------------------------------------


@dataclass
class _Record:
    """A row as read: values by column, and where each value sits."""

    values: dict[str, Any]
    line: int
    line_of: Callable[[str], int]


def _event(path: Path, name: str, default_source: str, record: _Record) -> Event:
    def fail(column: str, message: str, value: Any = None, remedy: str | None = None) -> NoReturn:
        raise InputError(message, path=path, line=record.line_of(column), field=column,
                         value=value, remedy=remedy)

    values = record.values
    for column in values:
        if column not in COLUMNS:
            close = difflib.get_close_matches(column, COLUMNS, n=1)
            fail(column, "unknown column", remedy=f"did you mean '{close[0]}'?" if close
                 else "columns: " + ", ".join(COLUMNS))
    for column in REQUIRED_COLUMNS:
        if _blank(values.get(column)):
            raise InputError(f"missing required column '{column}'", path=path, line=record.line,
                             remedy="every event needs time, kind and message")
    try:
        wall_us = time_value_us(values["time"])
    except ValueError as exc:
        remedy = ("add Z (UTC) or an offset such as +01:00" if "timezone" in str(exc)
                  else "write it like 2024-03-14T10:00:00Z")
        fail("time", f"time {exc}", values["time"], remedy)
    kind = _text(values["kind"], "kind", fail)
    if kind not in EXTERNAL_KINDS:
        close = difflib.get_close_matches(kind, EXTERNAL_KINDS, n=1)
        fail("kind", "unknown kind", kind,
             f"did you mean '{close[0]}'?" if close else "kinds: " + ", ".join(EXTERNAL_KINDS))
    severity = DEFAULT_SEVERITY.get(kind, "info")
    if not _blank(values.get("severity")):
        severity = _text(values["severity"], "severity", fail)
        if severity not in SEVERITIES:
            fail("severity", "must be one of: " + ", ".join(SEVERITIES), severity)
    uncertainty_us = 0
    if not _blank(values.get("uncertainty")):
        uncertainty_us = _uncertainty(values["uncertainty"], fail)
    message = _text(values["message"], "message", fail)
    source = default_source
    if not _blank(values.get("source")):
        source = _text(values["source"], "source", fail)
    device = None if _blank(values.get("device")) else _text(values["device"], "device", fail)
    evidence = (f"{name}:{record.line}" if _blank(values.get("evidence"))
                else _text(values["evidence"], "evidence", fail))
    details = tuple((column, _text(values[column], column, fail)) for column in DETAIL_COLUMNS
                    if not _blank(values.get(column)))
    return Event(wall_us, uncertainty_us, BASIS_EXTERNAL, source, device, kind, severity,
                 " ".join(message.split()), evidence, details=details)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any, column: str, fail: Callable[..., NoReturn]) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(column, "must be text", value)
    return str(value).strip()


def _uncertainty(value: Any, fail: Callable[..., NoReturn]) -> int:
    if isinstance(value, str) and value.strip() in ("0", "exact"):
        return 0
    if not isinstance(value, str):
        fail("uncertainty", "must be a duration with a unit", value,
             "for example 30s, 5min or 250ms")
    try:
        return parse_duration_ns(value, what="uncertainty") // 1000
    except InputError as exc:
        fail("uncertainty", exc.message, value, exc.remedy)


# -- readers ----------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("event file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read event file: {exc.strerror}", path=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (bad byte 0x{raw[exc.start]:02x})", path=path,
                         line=line, remedy="save the file as UTF-8") from None


class _ContentLines:
    """Feeds csv.reader the lines that are not comments, remembering line numbers."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        self.index = 0
        self.first_line = 0    # physical line number of the current row's first line

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while self.index < len(self.lines):
            line = self.lines[self.index]
            self.index += 1
            if line.lstrip().startswith("#") or not line.strip():
                continue
            if self.first_line == 0:
                self.first_line = self.index
            return line
        raise StopIteration


def _csv_records(path: Path, text: str) -> Iterator[_Record]:
    feed = _ContentLines(text)
    reader = csv.reader(feed, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"not valid CSV: {exc}", path=path, line=feed.first_line) from None
    header_line = feed.first_line
    columns = [h.strip() for h in header]
    for column in columns:
        if column not in COLUMNS:
            close = difflib.get_close_matches(column, COLUMNS, n=1)
            raise InputError("unknown column in the header", path=path, line=header_line,
                             field=column, remedy=f"did you mean '{close[0]}'?" if close
                             else "columns: " + ", ".join(COLUMNS))
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise InputError("column named twice in the header", path=path, line=header_line,
                         field=twice[0])
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"the header has no '{missing[0]}' column", path=path, line=header_line,
                         remedy="the header needs at least: " + ", ".join(REQUIRED_COLUMNS))
    while True:
        feed.first_line = 0
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"not valid CSV: {exc}", path=path,
                             line=feed.first_line or feed.index) from None
        line = feed.first_line
        if len(row) != len(columns):
            raise InputError(f"row has {len(row)} fields, the header has {len(columns)}",
                             path=path, line=line,
                             remedy="quote values that contain commas (\"a, b\")")
        values = {c: v for c, v in zip(columns, row) if v.strip()}
        yield _Record(values, line, _same_line(line))


def _same_line(line: int) -> Callable[[str], int]:
    """Every column of a CSV row or JSONL line sits on the record's line."""

    def line_of(_column: str) -> int:
        return line

    return line_of


def _jsonl_records(path: Path, text: str) -> Iterator[_Record]:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path,
                             line=number, remedy="one JSON object per line") from None
        if not isinstance(value, dict):
            raise InputError("each line must be a JSON object", path=path, line=number,
                             value=stripped[:40])
        values = {str(k): v for k, v in value.items() if v is not None}
        yield _Record(values, number, _same_line(number))


def _yaml_document(path: Path) -> tuple[YamlDocument, list[Any], tuple[str, ...]]:
    doc = load_yaml(path, what="event file")
    data = doc.data
    if isinstance(data, dict):
        unknown = [k for k in data if k not in ("source", "events")]
        if unknown:
            raise InputError("unknown key", path=path, line=doc.line_of((unknown[0],)),
                             field=str(unknown[0]),
                             remedy="an event file is a list of events, or a mapping with "
                                    "'events' (and optionally 'source')")
        source = data.get("source")
        if source is not None and not isinstance(source, str):
            raise InputError("must be text", path=path, line=doc.line_of(("source",)),
                             field="source", value=source)
        items = data.get("events")
        prefix: tuple[str, ...] = ("events",)
        if not isinstance(items, list):
            raise InputError("'events' must be a list", path=path,
                             line=doc.line_of(("events",)), field="events")
    elif isinstance(data, list):
        items, prefix = data, ()
    elif data is None:
        items, prefix = [], ()
    else:
        raise InputError("an event file must be a list of events", path=path, line=1)
    return doc, items, prefix


def _yaml_records(path: Path, doc: YamlDocument, items: list[Any],
                  prefix: tuple[str, ...]) -> Iterator[_Record]:
    for i, item in enumerate(items):
        where = prefix + (i,)
        line = doc.line_of(where) or 1
        if not isinstance(item, dict):
            raise InputError("each event must be a mapping", path=path, line=line,
                             field=f"{'.'.join(prefix) or 'events'}[{i}]")
        values = {str(k): v for k, v in item.items() if v is not None}

        def line_of(column: str, where: tuple[Any, ...] = where, line: int = line) -> int:
            return doc.line_of(where + (column,)) or line

        yield _Record(values, line, line_of)
