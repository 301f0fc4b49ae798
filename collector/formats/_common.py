"""What the third-party adapters share: reading input, log prefixes, context windows.

Console captures arrive with whatever the logging stack and the capture tool
put around each message: ANSI colours, Zephyr's ``[00:00:01.234,567] <err>
os: `` or ``E: ``, a host timestamp.  :func:`message_of` peels those off so
the adapters match the text the firmware printed (its format strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from crashcart.errors import InputError

# Lines of context kept before and after a crash (between neighbouring crashes).
CONTEXT_BEFORE = 200
CONTEXT_AFTER = 50

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Zephyr logging v2 (subsys/logging/log_output.c): "[hh:mm:ss.mmm,uuu] <err> module: "
# or a raw tick count "[00001234] <err> module: ", without timestamp "<err> module: ",
# and the minimal mode (CONFIG_LOG_MODE_MINIMAL) "E: ".
_ZEPHYR_PREFIX = re.compile(
    r"^(?:\[[^\]]{1,40}\]\s*)?<(?:err|wrn|inf|dbg)>\s+[\w.\-/]+:\s?"
    r"|^[EWID]: "
)
# A host-side capture timestamp before the device's text: "2024-05-01 12:00:00.123 ",
# "[12:00:00.123] ", "12:00:00.123 ".
_HOST_PREFIX = re.compile(
    r"^(?:\[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]?\s+"
    r"|\[?\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\]?\s+)"
)


@dataclass(frozen=True)
class Source:
    """Input text or bytes and the name to use for it in messages."""

    name: str                 # the file path, or "<text>"
    path: Path | None
    text: str | None
    data: bytes | None


def read_source(path_or_text: str | Path | bytes | bytearray) -> Source:
    """A file (``Path``, or a one-line ``str`` naming an existing file), text, or bytes."""
    if isinstance(path_or_text, (bytes, bytearray)):
        return Source("<bytes>", None, None, bytes(path_or_text))
    if isinstance(path_or_text, Path) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text
        and len(path_or_text) < 4096 and _is_file(path_or_text)
    ):
        path = Path(path_or_text)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"cannot read the crash evidence file: {err.strerror}",
                             path=path, remedy="check the path and its permissions") from err
        return Source(str(path), path, None, data)
    if not isinstance(path_or_text, str):
        raise InputError("expected a path, text or bytes", value=type(path_or_text).__name__)
    return Source("<text>", None, path_or_text, None)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def decode_text(data: bytes) -> str:
    """Console bytes as text; undecodable bytes (line noise) become U+FFFD, never an error."""
    return data.decode("utf-8", errors="replace")


def split_lines(text: str) -> list[str]:
    """Lines without their terminators; ``\\r\\n``, ``\\r`` and ``\\n`` all end a line."""
    return text.splitlines()


def message_of(line: str) -> str:
    """The text the firmware printed: without colours, host and Zephyr log prefixes."""
    line = _ANSI.sub("", line).replace("\x00", "")
    line = _HOST_PREFIX.sub("", line, count=1)
    return _ZEPHYR_PREFIX.sub("", line, count=1)


def context_window(lines: list[str], start: int, end: int, lower: int,
                   upper: int) -> tuple[list[str], int]:
    """Console lines around the crash ``lines[start:end]``, not crossing ``lower``/``upper``.

    Returns the lines and the index in them where the crash begins.
    """
    first = max(lower, start - CONTEXT_BEFORE)
    last = min(upper, end + CONTEXT_AFTER)
    return lines[first:last], start - first


def parse_hex(text: str, *, source: str, line: int, field: str) -> int:
    """A 32-bit hex value as printed by ``%08x``/``%x``/``%p`` (``0x`` optional)."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not digits or len(digits) > 8 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise InputError(
            f"'{field}' is not a 32-bit hex number",
            path=source, line=line, field=field, value=text,
            remedy="the line is damaged (line noise or a cut-off capture); "
                   "re-capture the console or correct the value in the file",
        )
    return int(digits, 16)
