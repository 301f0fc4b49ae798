"""The event model: one frozen record per thing that happened, on one clock.

Every event carries a wall-clock time (UTC microseconds since the Unix
epoch), how that time was obtained (:data:`TIME_BASES`) and how uncertain it
is, so a reader can tell an exact deploy time from a device event whose
time was inferred.  Events from bundles and from external event files share
this one model; the outputs (:mod:`timeline.render`, :mod:`timeline.picture`)
and the report read nothing else.

Times are integers (``wall_us``) rather than ``datetime`` objects: exact,
cheap to sort, and a million of them fit in memory comfortably.  ``Event``
is an immutable ``NamedTuple`` for the same reason (see its docstring); the
facts attached to crashes are frozen dataclasses.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

# -- vocabularies ---------------------------------------------------------------------

#: Kinds of events read from evidence bundles (the device's own console, the capture).
DEVICE_KINDS: Final = ("boot", "reset", "crash", "log", "capture")
#: Kinds of events read from external event files.
EXTERNAL_KINDS: Final = ("deploy", "config-push", "ci", "alert", "note", "action")
KINDS: Final = DEVICE_KINDS + EXTERNAL_KINDS

#: Severities, least to most severe.
SEVERITIES: Final = ("info", "warning", "error", "critical")
SEVERITY_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}

#: How an event's wall time was obtained.
BASIS_EXTERNAL: Final = "external"      # stated by the event file (with its stated uncertainty)
BASIS_HOST: Final = "host-received"     # the capture host's clock when the line arrived
BASIS_UPTIME: Final = "uptime-aligned"  # device uptime mapped through its boot segment's clock fit
BASIS_INTERPOLATED: Final = "interpolated"  # no time of its own; placed between its neighbours
BASIS_REPORTED: Final = "reported"      # only known to have happened at or before this time
TIME_BASES: Final = (BASIS_EXTERNAL, BASIS_HOST, BASIS_UPTIME, BASIS_INTERPOLATED,
                     BASIS_REPORTED)

#: Timesketch's ``timestamp_desc`` for each basis.
TIMESTAMP_DESC: Final = {
    BASIS_EXTERNAL: "Event time (external source)",
    BASIS_HOST: "Host receive time",
    BASIS_UPTIME: "Device uptime aligned to host clock",
    BASIS_INTERPOLATED: "Interpolated between neighbouring events",
    BASIS_REPORTED: "Reported at (happened at or before)",
}

#: Registers worth showing in one line (the full set is in ``CrashInfo.registers``).
KEY_REGISTERS: Final = ("pc", "lr", "cfsr", "hfsr", "mmfar", "bfar")


# -- facts attached to crash events ------------------------------------------------------


@dataclass(frozen=True)
class DecodedFault:
    """Facts a decoder adds to a crash (see :class:`timeline.bundle_events.CrashDecoder`).

    The decode module fills this from the bundle and the build's ELF; until
    then crashes carry only the raw registers of :class:`CrashInfo`.
    """

    summary: str                          # one line: "precise data BusFault reading 0x7220504c"
    function: str | None = None
    file: str | None = None
    line: int | None = None
    backtrace: tuple[str, ...] = ()       # innermost first, one frame per entry
    explanations: tuple[str, ...] = ()    # status bits explained, with their manual section

    @property
    def location(self) -> str | None:
        if self.function is None:
            return None
        if self.file is None:
            return self.function
        return f"{self.function} ({self.file}:{self.line})" if self.line else \
            f"{self.function} ({self.file})"


@dataclass(frozen=True)
class CrashInfo:
    """One crash as the device reported it (the fixture firmware's crash log)."""

    fault: str | None                     # "BusFault", "NMI/watchdog", or a reason name
    firmware_version: str | None
    build_id: str | None
    uptime_ms: int | None
    registers: tuple[tuple[str, int], ...] = ()
    complete: bool = True                 # the end marker was seen / every register present
    frame_available: bool = True          # false: "frame: unavailable (stacking failed)"
    from_crash_record: bool = False       # known only from "previous crash:" at the next boot
    confirmed_at_next_boot: bool = False  # the next boot reported the same crash record
    decoded: DecodedFault | None = None

    def register(self, name: str) -> int | None:
        for key, value in self.registers:
            if key == name:
                return value
        return None

    def key_registers(self) -> str:
        """``pc=0x000001bc lr=... cfsr=...`` for the registers present."""
        return " ".join(f"{name}=0x{value:08x}" for name in KEY_REGISTERS
                        if (value := self.register(name)) is not None)


# -- the event -----------------------------------------------------------------------------


class Event(NamedTuple):
    """Something that happened, placed on the common clock.

    Immutable like the other evidence records, but a ``NamedTuple`` rather
    than a frozen dataclass: a timeline can hold a million events, and a
    tuple is built about seven times faster than a frozen dataclass (whose
    ``__init__`` goes through ``object.__setattr__`` per field).

    ``uncertainty_us`` is the half-width of the interval the true time lies
    in (``wall_us ± uncertainty_us``); ``None`` means the time is only an
    upper bound (basis ``reported``).  ``evidence`` points at the bytes the
    event was read from: ``BUNDLE/serial/console.raw#bytes=OFFSET+LENGTH``
    for bundle events, or whatever link the event file gave.
    """

    wall_us: int
    uncertainty_us: int | None
    time_basis: str
    source: str                           # "console", "capture", or the external source's name
    device: str | None
    kind: str
    severity: str
    message: str
    evidence: str | None = None
    uptime_ms: int | None = None
    boot: int | None = None               # boot segment within its capture, 0 = before first banner
    details: tuple[tuple[str, str | int | float], ...] = ()
    crash: CrashInfo | None = None

    @property
    def lane(self) -> str:
        """The swimlane: the device for device events, the source for external ones."""
        if self.kind in DEVICE_KINDS:
            return self.device or self.source
        return self.source

    def detail(self, key: str) -> str | int | float | None:
        for name, value in self.details:
            if name == key:
                return value
        return None


#: ``Event`` from a tuple of all its fields, without the Python-level ``NamedTuple.__new__``.
_new_event = functools.partial(tuple.__new__, Event)


def events_from_columns(*columns: Iterable[object]) -> list[Event]:
    """Events from one iterable per field, in field order (``wall_us`` first).

    The bulk constructor for a million events: ``zip`` and ``map`` run in C
    and build each event without a Python-level call.
    """
    if len(columns) != len(Event._fields):
        raise TypeError(f"events_from_columns takes {len(Event._fields)} columns, "
                        f"got {len(columns)}")
    return list(map(_new_event, zip(*columns)))


# -- time helpers --------------------------------------------------------------------------

EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_ONE_US: Final = _dt.timedelta(microseconds=1)


def datetime_to_us(value: _dt.datetime) -> int:
    """An aware datetime -> UTC microseconds since the epoch (exact)."""
    return (value - EPOCH) // _ONE_US


def us_to_datetime(wall_us: int) -> _dt.datetime:
    return EPOCH + _dt.timedelta(microseconds=wall_us)


def parse_iso_us(text: str) -> int:
    """``2024-03-14T10:00:00.123456+00:00`` (or ``Z``) -> microseconds.

    Raises ``ValueError`` for text that is not ISO 8601 or has no timezone.
    """
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("no timezone")
    return datetime_to_us(value)


class IsoFormatter:
    """Formats microsecond times as ISO 8601 UTC, caching the per-second prefix.

    Formatting a million timestamps with ``datetime.isoformat`` costs about
    a second; most neighbouring events share their second, so the prefix is
    cached.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, wall_us: int) -> str:
        """``2024-03-14T10:00:00.123456+00:00``"""
        second, micro = divmod(wall_us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = us_to_datetime(second * 1_000_000).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micro:06d}+00:00"

    def short(self, wall_us: int) -> str:
        """``2024-03-14 10:00:00.123`` (milliseconds, for people)."""
        second, micro = divmod(wall_us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = us_to_datetime(second * 1_000_000).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix[:10]} {self._prefix[11:]}.{micro // 1000:03d}"


def format_uncertainty(uncertainty_us: int | None) -> str:
    """``±12 ms``, ``±1.5 s``, ``exact``, or ``at or before`` (upper bound only)."""
    if uncertainty_us is None:
        return "at or before"
    if uncertainty_us == 0:
        return "exact"
    if uncertainty_us < 1_000:
        return f"±{uncertainty_us} µs"
    if uncertainty_us < 1_000_000:
        return f"±{uncertainty_us / 1000:.0f} ms"
    if uncertainty_us < 120_000_000:
        return f"±{uncertainty_us / 1e6:.1f} s"
    return f"±{uncertainty_us / 60e6:.0f} min"


def format_duration_us(duration_us: int) -> str:
    """``350 ms``, ``12.4 s``, ``2 min 58 s``, ``52 min``, ``3 h 05 min``, ``2 d 4 h``."""
    us = abs(duration_us)
    if us < 1_000_000:
        return f"{us / 1000:.0f} ms"
    if us < 60_000_000:
        return f"{us / 1e6:.1f} s"
    minutes = us // 60_000_000
    if minutes < 10:
        return f"{minutes} min {us // 1_000_000 % 60:02d} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def time_value_us(value: object) -> int:
    """A time from an event file or incident.yaml -> microseconds.

    Accepts ISO 8601 text with a timezone (``2024-03-14T10:00:00Z``) and the
    aware datetimes YAML makes of unquoted timestamps.  Raises ``ValueError``
    with the reason otherwise.
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError("has no timezone")
        return datetime_to_us(value)
    if isinstance(value, _dt.date):
        raise ValueError("is a date without a time of day")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an ISO 8601 time")
    try:
        return parse_iso_us(value.strip())
    except ValueError as exc:
        if str(exc) == "no timezone":
            raise ValueError("has no timezone") from None
        raise ValueError("is not an ISO 8601 time") from None
