"""Text outputs: the Markdown table and Timesketch-importable JSONL.

Both stream: they write to a text handle as they go, so a million events
never exist as one string.  The picture is in :mod:`timeline.picture`.

Timesketch reads JSONL with ``message``, ``datetime`` (ISO 8601) and
``timestamp_desc`` on every line; crashcart adds ``timestamp`` (µs since
the epoch, which Timesketch also understands) and flat fields: ``device``,
``source``, ``kind``, ``severity``, ``time_basis``, ``uncertainty_us``,
``evidence``, ``uptime_ms``, ``boot``, the event's details and, for
crashes, ``crash_*`` fields (fault, firmware, registers, decoded facts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, islice, repeat
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from operator import floordiv, is_, is_not, mod, not_, or_, truth
from typing import Any, TextIO

from timeline.model import (
    SEVERITY_RANK,
    TIMESTAMP_DESC,
    Event,
    IsoFormatter,
    format_uncertainty,
    us_to_datetime,
)

#: Events rendered per chunk: enough for the column operations to pay, few enough that a
#: chunk's events stay in the CPU cache between the passes over its columns (chunks of
#: 1024 and 4096 were markedly slower than 256 on a million events).
_CHUNK = 256
MD_HEADER = ("| time (UTC) | ± | device / source | kind | severity | uptime | message | "
             "evidence |\n|---|---|---|---|---|---|---|---|\n")
_MD_SPECIAL = re.compile(r"[|<\\\n\r]")
#: Joins a chunk's strings for one escaping call; JSON leaves it as it is (not a control
#: character, not ASCII punctuation that needs escaping).
_SEPARATOR = "\x7f"


def key_events(events: Iterable[Event]) -> list[Event]:
    """Everything but ordinary log lines (log lines at warning or above stay)."""
    return [e for e in events if e.kind != "log" or SEVERITY_RANK[e.severity] >= 1]


def md_escape(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    if "|" not in text and "<" not in text and "\\" not in text and "\n" not in text \
            and "\r" not in text:
        return text
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\n", " ").replace("\r", " "))


def markdown_row(event: Event) -> str:
    """One row of the table (what :func:`write_markdown` writes for each event)."""
    second, micro = divmod(event.wall_us, 1_000_000)
    stamp = us_to_datetime(second * 1_000_000).strftime("%Y-%m-%d %H:%M:%S")
    if event.uptime_ms is None:
        uptime = ""
    elif event.boot is None:
        uptime = f"{event.uptime_ms} ms"
    else:
        uptime = f"{event.uptime_ms} ms (boot {event.boot})"
    link = f"`{event.evidence.replace('`', '')}`" if event.evidence else ""
    return (f"| {stamp}.{micro // 1000:03d} | {format_uncertainty(event.uncertainty_us)} | "
            f"{md_escape(event.lane)} | {event.kind} | {event.severity} | {uptime} | "
            f"{md_escape(event.message)} | {link} |\n")


# How the writers go fast
# -----------------------
# A million events make a million rows, and at a few microseconds of Python per row the
# outputs alone would take many seconds.  So both writers work a chunk at a time, column
# by column (``zip(*chunk)``), and leave the per-row work to C:
#
# * What rows share (lane, kind, severity, device, which optional fields are present)
#   is baked once into a ``%``-format *template* per combination ("shape"); the
#   constant text in a template has its ``%`` doubled.  A field that is absent in a
#   shape is consumed by ``%.0s``, which prints nothing, so every row of a chunk takes
#   the same argument tuple and ``map(operator.mod, templates, rows)`` formats them all.
# * Strings that need escaping (messages, evidence links) are escaped a chunk at a time:
#   both escapes work character by character, so escaping the joined strings and
#   splitting the result gives each string's escape.  The separator must not occur in
#   the strings; when it does, each string is escaped on its own.
# * Times: the whole second is formatted once per second (``_SecondCache``), the fraction
#   with ``%06d`` / ``%03d``.
# * JSONL: an event's details are the members after the fixed ones, formatted per event
#   (a few percent of events have them); crashes, and details that are not plain text
#   or numbers, go through :func:`timesketch_record` and the JSON encoder.
#
# :func:`markdown_row` and :func:`timesketch_record` say what one row is; the tests
# compare the writers with them.


def write_markdown(events: Iterable[Event], out: TextIO) -> int:
    """The timeline as one Markdown table; returns the number of rows."""
    seconds = _SecondCache(" ")
    uncertainty = _Cache(format_uncertainty)
    templates = _Cache(_markdown_template)
    out.write(MD_HEADER)
    rows = 0
    for chunk in _chunks(events):
        walls, uncs, _, sources, devices, kinds, severities, messages, evidence, uptimes, \
            boots, _, _ = zip(*chunk)
        shapes = zip(kinds, devices, sources, severities, map(is_, uptimes, repeat(None)),
                     map(is_, boots, repeat(None)), map(not_, evidence))
        values = zip(map(seconds.__getitem__, map(floordiv, walls, repeat(1_000_000))),
                     map(floordiv, map(mod, walls, repeat(1_000_000)), repeat(1000)),
                     map(uncertainty.__getitem__, uncs), uptimes, boots,
                     _md_escape_all(messages), _without_backticks(evidence))
        out.write("".join(map(mod, map(templates.__getitem__, shapes), values)))
        rows += len(chunk)
    return rows


def _markdown_template(shape: tuple[str, str | None, str, str, bool, bool, bool]) -> str:
    """The ``%`` template of the rows of one shape (see "How the writers go fast").

    Takes: whole second, milliseconds, uncertainty text, uptime, boot, escaped
    message, evidence without backticks.
    """
    kind, device, source, severity, no_uptime, no_boot, no_evidence = shape
    if no_uptime:
        uptime = "%.0s%.0s"
    elif no_boot:
        uptime = "%s ms%.0s"
    else:
        uptime = "%s ms (boot %s)"
    link = "%.0s" if no_evidence else "`%s`"
    constant = _percent_escaped
    return (f"| %s.%03d | %s | {constant(md_escape(_lane(kind, device, source)))} | "
            f"{constant(kind)} | {constant(severity)} | {uptime} | %s | {link} |\n")


def _md_escape_all(texts: tuple[str, ...]) -> Sequence[str]:
    """:func:`md_escape` of each text (most chunks have nothing to escape)."""
    if _MD_SPECIAL.search("".join(texts)) is None:
        return texts
    return list(map(md_escape, texts))


def _without_backticks(links: tuple[str | None, ...]) -> Sequence[str | None]:
    if "`" not in "".join(filter(None, links)):
        return links
    return [link.replace("`", "") if link else link for link in links]


def _lane(kind: str, device: str | None, source: str) -> str:
    return Event(0, 0, "", source, device, kind, "", "").lane


def _chunks(events: Iterable[Event]) -> Iterator[list[Event]]:
    it = iter(events)
    while chunk := list(islice(it, _CHUNK)):
        yield chunk


def _percent_escaped(text: str) -> str:
    """Constant text inside a ``%`` template."""
    return text.replace("%", "%%")


class _SecondCache(dict):  # type: ignore[type-arg]
    """Whole UTC seconds as ``%Y-%m-%d{separator}%H:%M:%S``, memoised (neighbours share them).

    The date comes from ``strftime`` once per day, the time of day from
    arithmetic (UTC has no leap seconds in ``datetime``).
    """

    def __init__(self, separator: str) -> None:
        super().__init__()
        self.separator = separator
        self.days: dict[int, str] = {}

    def __missing__(self, second: int) -> str:
        if len(self) > 4096:
            self.clear()
        day, in_day = divmod(second, 86_400)
        date = self.days.get(day)
        if date is None:
            date = self.days[day] = us_to_datetime(day * 86_400_000_000).strftime("%Y-%m-%d")
        hour, in_hour = divmod(in_day, 3600)
        value = self[second] = (f"{date}{self.separator}{hour:02d}:{in_hour // 60:02d}:"
                                f"{in_hour % 60:02d}")
        return value


class _Cache(dict):  # type: ignore[type-arg]
    """Memoises a one-argument function (lanes, uncertainties repeat a lot)."""

    def __init__(self, function: Any) -> None:
        super().__init__()
        self.function = function

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.function(key)
        return value

    def __call__(self, key: Any) -> Any:
        return self[key]


def timesketch_record(event: Event, fmt: IsoFormatter) -> dict[str, Any]:
    """One Timesketch JSONL object (``None`` fields left out)."""
    record: dict[str, Any] = {
        "message": f"{event.lane}: {event.message}",
        "datetime": fmt.iso(event.wall_us),
        "timestamp": event.wall_us,
        "timestamp_desc": TIMESTAMP_DESC[event.time_basis],
        "data_type": f"crashcart:{event.kind}",
        "source": event.source,
        "kind": event.kind,
        "severity": event.severity,
        "time_basis": event.time_basis,
        "uncertainty_us": event.uncertainty_us,
    }
    if event.device is not None:
        record["device"] = event.device
    if event.evidence is not None:
        record["evidence"] = event.evidence
    if event.uptime_ms is not None:
        record["uptime_ms"] = event.uptime_ms
    if event.boot is not None:
        record["boot"] = event.boot
    for key, value in event.details:
        record.setdefault(key, value)
    crash = event.crash
    if crash is not None:
        record["crash_fault"] = crash.fault
        record["crash_firmware_version"] = crash.firmware_version
        record["crash_build_id"] = crash.build_id
        record["crash_complete"] = crash.complete
        for name, value in crash.registers:
            record[f"crash_{name}"] = f"0x{value:08x}"
        decoded = crash.decoded
        if decoded is not None:
            record["crash_summary"] = decoded.summary
            record["crash_function"] = decoded.function
            record["crash_file"] = decoded.file
            record["crash_line"] = decoded.line
            if decoded.backtrace:
                record["crash_backtrace"] = " <- ".join(decoded.backtrace)
    return {k: v for k, v in record.items() if v is not None or k == "uncertainty_us"}


def write_jsonl(events: Iterable[Event], out: TextIO) -> int:
    """One Timesketch JSON object per line; returns the number of lines.

    Gives the same objects as :func:`timesketch_record`, encoded like
    ``json.dumps(record, ensure_ascii=False, separators=(", ", ": "))``, a
    chunk at a time (see "How the writers go fast").
    """
    fmt = IsoFormatter()
    seconds = _SecondCache("T")
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    templates = _Cache(lambda shape: _jsonl_template(shape, dumps))
    lines = 0
    for chunk in _chunks(events):
        walls, uncs, bases, sources, devices, kinds, severities, messages, evidence, \
            uptimes, boots, details, crashes = zip(*chunk)
        members = [""] * len(chunk)
        encoder: list[int] = []        # rows for timesketch_record and the JSON encoder
        for i in compress(range(len(chunk)), map(or_, map(truth, details),
                                                 map(is_not, crashes, repeat(None)))):
            found = None if crashes[i] is not None else _detail_members(chunk[i])
            if found is None:
                encoder.append(i)
            else:
                members[i] = found
        shapes = zip(bases, kinds, sources, severities, devices,
                     map(is_, uncs, repeat(None)), map(is_, evidence, repeat(None)),
                     map(is_, uptimes, repeat(None)), map(is_, boots, repeat(None)),
                     map(truth, details))
        values = zip(_json_escape_all(messages),
                     map(seconds.__getitem__, map(floordiv, walls, repeat(1_000_000))),
                     map(mod, walls, repeat(1_000_000)), walls, uncs,
                     _json_escape_all([link or "" for link in evidence]), uptimes, boots,
                     members)
        text = list(map(mod, map(templates.__getitem__, shapes), values))
        for i in encoder:
            text[i] = dumps(timesketch_record(chunk[i], fmt))
        out.write("\n".join(text))
        out.write("\n")
        lines += len(chunk)
    return lines


#: Members every Timesketch line has before an event's details.
_FIXED_MEMBERS = frozenset(("message", "datetime", "timestamp", "timestamp_desc", "data_type",
                            "source", "kind", "severity", "time_basis", "uncertainty_us"))


def _detail_members(event: Event) -> str | None:
    """``, "key": value`` for each detail, as :func:`timesketch_record` adds them.

    A detail never replaces a member (nor an earlier detail of the same
    name), and ``None`` values are left out.  Returns ``None`` for values
    other than text and numbers, which the JSON encoder formats instead.
    """
    taken = set(_FIXED_MEMBERS)
    for name, value in (("device", event.device), ("evidence", event.evidence),
                        ("uptime_ms", event.uptime_ms), ("boot", event.boot)):
        if value is not None:
            taken.add(name)
    text = ""
    for key, value in event.details:
        if key in taken:
            continue
        taken.add(key)
        if value is None:
            continue
        if type(key) is not str:
            return None
        if type(value) is str:
            text += f", {encode_basestring(key)}: {encode_basestring(value)}"
        elif type(value) is int:
            text += f", {encode_basestring(key)}: {value}"
        else:
            return None     # floats (NaN, Infinity), booleans and the rest
    return text


def _jsonl_template(shape: tuple[str, str, str, str, str | None, bool, bool, bool, bool, bool],
                    dumps: Any) -> str:
    """The ``%`` template of the lines of one shape (see "How the writers go fast").

    Takes: escaped message, whole second, microseconds, timestamp,
    uncertainty, escaped evidence, uptime, boot, detail members.  Its
    constant members are encoded by ``dumps`` like the rest of a record.

    Member order follows the JSONL crashcart has always written: events
    with details (once written only through :func:`timesketch_record`) have
    ``device`` after ``uncertainty_us``, the others before it.
    """
    basis, kind, source, severity, device, no_uncertainty, no_evidence, no_uptime, \
        no_boot, with_details = shape
    lane = encode_basestring(_lane(kind, device, source) + ": ")[1:-1]
    constant = (f'"timestamp_desc": {dumps(TIMESTAMP_DESC[basis])}, '
                f'"data_type": {dumps("crashcart:" + kind)}, "source": {dumps(source)}, '
                f'"kind": {dumps(kind)}, "severity": {dumps(severity)}, '
                f'"time_basis": {dumps(basis)}')
    device_member = "" if device is None else f', "device": {dumps(device)}'
    if not with_details:
        constant += device_member
    return ('{"message": "' + _percent_escaped(lane) + '%s", '
            '"datetime": "%s.%06d+00:00", "timestamp": %s, ' + _percent_escaped(constant)
            + ', "uncertainty_us": ' + ("null%.0s" if no_uncertainty else "%s")
            + (_percent_escaped(device_member) if with_details else "")
            + ("%.0s" if no_evidence else ', "evidence": "%s"')
            + ("%.0s" if no_uptime else ', "uptime_ms": %s')
            + ("%.0s" if no_boot else ', "boot": %s') + "%s}")


def _json_escape_all(texts: Sequence[str]) -> list[str]:
    """Each text as a JSON string without its quotes, as ``json.dumps`` writes it."""
    joined = _SEPARATOR.join(texts)
    if joined.count(_SEPARATOR) == len(texts) - 1:
        return encode_basestring(joined)[1:-1].split(_SEPARATOR)
    return [encode_basestring(text)[1:-1] for text in texts]
