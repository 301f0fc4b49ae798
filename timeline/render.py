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
from typing import Any, TextIO

from timeline.model import (
    SEVERITY_RANK,
    TIMESTAMP_DESC,
    Event,
    IsoFormatter,
    format_uncertainty,
)

_BATCH = 4096
MD_HEADER = ("| time (UTC) | ± | device / source | kind | severity | uptime | message | "
             "evidence |\n|---|---|---|---|---|---|---|---|\n")


def key_events(events: Iterable[Event]) -> list[Event]:
    """Everything but ordinary log lines (log lines at warning or above stay)."""
    return [e for e in events if e.kind != "log" or SEVERITY_RANK[e.severity] >= 1]


def md_escape(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace("\n", " ").replace("\r", " "))


def write_markdown(events: Iterable[Event], out: TextIO) -> int:
    """The timeline as one Markdown table; returns the number of rows."""
    fmt = IsoFormatter()
    out.write(MD_HEADER)
    batch: list[str] = []
    rows = 0
    for e in events:
        uptime = "" if e.uptime_ms is None else f"{e.uptime_ms} ms"
        if e.boot is not None and uptime:
            uptime += f" (boot {e.boot})"
        evidence = f"`{e.evidence.replace('`', '')}`" if e.evidence else ""
        batch.append(f"| {fmt.short(e.wall_us)} | {format_uncertainty(e.uncertainty_us)} | "
                     f"{md_escape(e.lane)} | {e.kind} | {e.severity} | {uptime} | "
                     f"{md_escape(e.message)} | {evidence} |\n")
        if len(batch) >= _BATCH:
            out.write("".join(batch))
            rows += len(batch)
            batch.clear()
    out.write("".join(batch))
    return rows + len(batch)


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
    """One Timesketch JSON object per line; returns the number of lines."""
    fmt = IsoFormatter()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    batch: list[str] = []
    lines = 0
    for event in events:
        batch.append(dumps(timesketch_record(event, fmt)))
        if len(batch) >= _BATCH:
            out.write("\n".join(batch) + "\n")
            lines += len(batch)
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
    return lines + len(batch)
