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
from collections.abc import Iterable
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, TextIO

from timeline.model import (
    SEVERITY_RANK,
    TIMESTAMP_DESC,
    Event,
    IsoFormatter,
    format_uncertainty,
    us_to_datetime,
)

_BATCH = 4096
MD_HEADER = ("| time (UTC) | ± | device / source | kind | severity | uptime | message | "
             "evidence |\n|---|---|---|---|---|---|---|---|\n")


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


def write_markdown(events: Iterable[Event], out: TextIO) -> int:
    """The timeline as one Markdown table; returns the number of rows."""
    seconds = _SecondCache("%Y-%m-%d %H:%M:%S")
    uncertainty = _Cache(format_uncertainty)
    lanes = _Cache(lambda key: md_escape(_lane(*key)))
    out.write(MD_HEADER)
    batch: list[str] = []
    rows = 0
    # Events are tuples: unpacking them is much cheaper than ten attribute lookups.
    for wall, unc, _basis, source, device, kind, severity, message, evidence, uptime_ms, \
            boot, _details, _crash in events:
        second, micro = divmod(wall, 1_000_000)
        if uptime_ms is None:
            uptime = ""
        elif boot is None:
            uptime = f"{uptime_ms} ms"
        else:
            uptime = f"{uptime_ms} ms (boot {boot})"
        link = f"`{evidence.replace('`', '')}`" if evidence else ""
        batch.append(f"| {seconds[second]}.{micro // 1000:03d} | {uncertainty[unc]} | "
                     f"{lanes[kind, device, source]} | {kind} | {severity} | {uptime} | "
                     f"{md_escape(message)} | {link} |\n")
        if len(batch) >= _BATCH:
            out.write("".join(batch))
            rows += len(batch)
            batch.clear()
    out.write("".join(batch))
    return rows + len(batch)


def _lane(kind: str, device: str | None, source: str) -> str:
    return Event(0, 0, "", source, device, kind, "", "").lane


class _SecondCache(dict):  # type: ignore[type-arg]
    """Whole UTC seconds formatted with ``strftime``, memoised (neighbours share them)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def __missing__(self, second: int) -> str:
        if len(self) > 4096:
            self.clear()
        value = self[second] = us_to_datetime(second * 1_000_000).strftime(self.pattern)
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

    Gives the same objects as :func:`timesketch_record`.  Events without
    crash facts or details (nearly all of them) are written from cached,
    pre-encoded pieces instead of through ``json.dumps``.
    """
    fmt = IsoFormatter()
    seconds = _SecondCache("%Y-%m-%dT%H:%M:%S")
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    quote = encode_basestring
    shared = _Cache(lambda key: _constant_fields(key, dumps))
    batch: list[str] = []
    lines = 0
    for event in events:
        wall, unc, basis, source, device, kind, severity, message, evidence, uptime_ms, \
            boot, details, crash = event
        if crash is not None or details:
            batch.append(dumps(timesketch_record(event, fmt)))
        else:
            prefix, fields = shared[basis, kind, source, severity, device]
            second, micro = divmod(wall, 1_000_000)
            tail = "" if evidence is None else f', "evidence": {quote(evidence)}'
            if uptime_ms is not None:
                tail += f', "uptime_ms": {uptime_ms}'
            if boot is not None:
                tail += f', "boot": {boot}'
            batch.append(f'{{"message": {prefix}{quote(message)[1:]}, '
                         f'"datetime": "{seconds[second]}.{micro:06d}+00:00", '
                         f'"timestamp": {wall}, {fields}, '
                         f'"uncertainty_us": {"null" if unc is None else unc}{tail}}}')
        if len(batch) >= _BATCH:
            out.write("\n".join(batch) + "\n")
            lines += len(batch)
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
    return lines + len(batch)


def _constant_fields(key: tuple[str, str, str, str, str | None],
                     dumps: Any) -> tuple[str, str]:
    """What an event shares with every event of its basis, kind, source, severity, device.

    Returns the opening of its JSON-encoded message (``"LANE: ``, without the
    closing quote) and the constant members.
    """
    basis, kind, source, severity, device = key
    prefix = encode_basestring(_lane(kind, device, source) + ": ")[:-1]
    text = (f'"timestamp_desc": {dumps(TIMESTAMP_DESC[basis])}, '
            f'"data_type": {dumps("crashcart:" + kind)}, "source": {dumps(source)}, '
            f'"kind": {dumps(kind)}, "severity": {dumps(severity)}, '
            f'"time_basis": {dumps(basis)}')
    if device is not None:
        text += f', "device": {dumps(device)}'
    return prefix, text
