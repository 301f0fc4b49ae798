"""Events from an evidence bundle: boots, resets, crashes, log lines, the capture.

Reads the serial console of a bundle (``serial/console.raw`` with the host
receive times of ``serial/lines.jsonl``, see docs/bundle-format.md) in the
fixture firmware's formats (fixtures/firmware/README.md): the boot banner
(the target's ``console.banner`` pattern) followed by ``reset: <reason>``,
``previous crash: ...`` at boot, ``[%8u ms] text`` log lines stamped with
device uptime, and crash logs between the target's crash markers, parsed by
:func:`collector.crashlog.parse_crash_log`.

Each boot banner starts a new clock segment; an uptime that goes backwards
with no banner starts one too (a reset whose banner was lost) and is shown
as an inferred reset.  Times come from :mod:`timeline.clock`.

Crash events carry the raw crash-log registers and fault name
(:class:`timeline.model.CrashInfo`).  Richer facts (function, line,
backtrace) come from a *decoder*: any callable matching
:class:`CrashDecoder`, called once per crash, whose result lands in
``CrashInfo.decoded``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import groupby, repeat
from operator import add
from pathlib import Path
from typing import NamedTuple, Protocol

from collector.bundle import MANIFEST, read_manifest
from collector.crashlog import REGISTER_NAMES, parse_crash_log
from crashcart.errors import InputError
from targets import Target, load_target
from timeline.clock import (
    COVERAGE_SIGMAS,
    DEFAULT_LATENCY_US,
    MIN_POINTS_FOR_FLOOR,
    ClockFit,
    fit_segment,
    settle_stream_order,
)
from timeline.model import (
    BASIS_HOST,
    BASIS_INTERPOLATED,
    BASIS_REPORTED,
    BASIS_UPTIME,
    CrashInfo,
    DecodedFault,
    Event,
    events_from_columns,
    parse_iso_us,
)

LOG = logging.getLogger(__name__)

CONSOLE_RAW = "serial/console.raw"
LINE_INDEX = "serial/lines.jsonl"
_PAIR = re.compile(r"([a-z_]+)=(\S+)")
_WARNING = re.compile(r"alarm|out of range|invalid|error|fail")
#: The uptime stamp that opens a ``[%8u ms] text`` log line, and the one character (the
#: space) between it and the text.
_STAMP = re.compile(r"\[ *([0-9]+) ms\].?", re.S)
_INDEX_FAST = re.compile(rb'^\{"offset": (\d+), "length": (\d+), "wall": '
                         rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})\+00:00", "mono": [^\n]*$',
                         re.M)
RESET_SEVERITY = {"power-on": "info", "software": "info", "fault": "error",
                  "watchdog": "error"}
#: Uncertainty of a time read straight from the capture host's clock.
HOST_CLOCK_UNCERTAINTY_US = 1000


class CrashDecoder(Protocol):
    """Adds decoded facts to a crash; return ``None`` when there is nothing to add."""

    def __call__(self, crash: CrashInfo, *, bundle: Path) -> DecodedFault | None: ...


@dataclass(frozen=True)
class BundleFile:
    name: str
    sha256: str
    size: int
    kind: str | None


@dataclass(frozen=True)
class BundleCapture:
    """What one bundle contributed to a timeline."""

    path: Path
    device: str
    evidence_name: str            # how events link to it ("evidence/node-1")
    target: str | None
    manifest_sha256: str          # the bundle's citation: sha256 of manifest.json
    status: str                   # complete | partial | capturing
    partial_reasons: tuple[str, ...]
    started_us: int | None
    ended_us: int | None
    files: tuple[BundleFile, ...]
    fits: tuple[ClockFit, ...]
    events: tuple[Event, ...]
    warnings: tuple[str, ...]


def read_bundle(
    path: str | Path,
    *,
    device: str | None = None,
    evidence_name: str | None = None,
    target: Target | None = None,
    host_clock_offset_us: int = 0,
    decoder: CrashDecoder | None = None,
) -> BundleCapture:
    """Read a bundle directory into events placed on the capture host's clock.

    :param device: name of the device the bundle was captured from
        (default: the bundle directory's name).
    :param evidence_name: prefix of evidence links (default: the path).
    :param target: console formats; default: the target named in the manifest.
    :param host_clock_offset_us: added to every host time (a capture host
        whose clock was known to be off).
    :param decoder: adds decoded facts to each crash.
    """
    root = Path(path)
    manifest = read_manifest(root)
    manifest_bytes = (root / MANIFEST).read_bytes()
    name = device or root.resolve().name
    link = evidence_name or str(root)
    if target is None:
        target = _target_of(manifest, root)
    files = tuple(BundleFile(fname, entry["sha256"], entry["size"], entry.get("kind"))
                  for fname, entry in sorted(manifest["files"].items()))
    cap = manifest["capture"]
    started = _manifest_time(cap.get("started"), root, "capture.started", host_clock_offset_us)
    ended = _manifest_time(cap.get("ended"), root, "capture.ended", host_clock_offset_us)
    parser = _ConsoleParser(root, name, link, target, host_clock_offset_us)
    if CONSOLE_RAW in manifest["files"]:
        parser.parse()
    fits, console_events = parser.finish(started, ended, decoder)
    events = _capture_events(manifest, name, link, started, ended, host_clock_offset_us, root)
    return BundleCapture(
        path=root, device=name, evidence_name=link, target=target.name,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        status=cap["status"], partial_reasons=tuple(cap.get("partial_reasons") or ()),
        started_us=started, ended_us=ended, files=files, fits=fits,
        events=tuple(events) + console_events,
        warnings=tuple(parser.warnings) + tuple(w for f in fits for w in f.warnings),
    )


def _target_of(manifest: dict[str, object], root: Path) -> Target:
    name = manifest.get("target")
    if not isinstance(name, str) or not name:
        raise InputError("bundle does not name its target, so its console cannot be read",
                         path=root / MANIFEST, field="target",
                         remedy="name the target in the incident's evidence entry (target: ...)")
    return load_target(name)


def _manifest_time(value: object, root: Path, field: str, offset_us: int) -> int | None:
    if value is None:
        return None
    try:
        return parse_iso_us(str(value)) + offset_us
    except ValueError:
        raise InputError("not an ISO 8601 time with a timezone", path=root / MANIFEST,
                         field=field, value=value) from None


def _capture_events(manifest: dict[str, object], device: str, link: str, started: int | None,
                    ended: int | None, offset_us: int, root: Path) -> list[Event]:
    cap = manifest["capture"]
    assert isinstance(cap, dict)
    manifest_link = f"{link}/{MANIFEST}"
    events: list[Event] = []
    if started is not None:
        events.append(Event(
            started, HOST_CLOCK_UNCERTAINTY_US, BASIS_HOST, "capture", device, "capture", "info",
            "evidence capture started", manifest_link,
            details=(("capture", "start"),) + ((("capture_end_us", ended),) if ended else ())))
    for source in manifest.get("sources") or ():  # type: ignore[attr-defined]
        if not isinstance(source, dict):
            continue
        for item in source.get("events") or ():
            if not isinstance(item, dict) or item.get("what") in (
                    "opened", "crash-begin", "crash-end"):
                continue
            when = _manifest_time(item.get("time"), root, "sources.events.time", offset_us)
            if when is None:
                continue
            what = str(item.get("what"))
            text = f"{source.get('kind')}: {what}"
            if item.get("gap_s") is not None:
                text += f" after a gap of {item['gap_s']} s"
            if item.get("error"):
                text += f" ({item['error']})"
            severity = "warning" if what in ("disconnected", "open-failed") else "info"
            events.append(Event(when, HOST_CLOCK_UNCERTAINTY_US, BASIS_HOST, "capture", device,
                                "capture", severity, text, manifest_link))
    if ended is not None:
        status = cap.get("status")
        reasons = "; ".join(cap.get("partial_reasons") or ())
        text = f"evidence capture ended ({status}{': ' + reasons if reasons else ''})"
        events.append(Event(ended, HOST_CLOCK_UNCERTAINTY_US, BASIS_HOST, "capture", device,
                            "capture", "warning" if status != "complete" else "info", text,
                            manifest_link, details=(("capture", "end"),)))
    return events


# -- the console ------------------------------------------------------------------------------


class _Item(NamedTuple):
    """A device event as read from the console, before its time is settled."""

    kind: str
    severity: str
    message: str
    offset: int
    length: int
    uptime_ms: int | None
    boot: int
    host_us: int | None
    details: tuple[tuple[str, str | int | float], ...] = ()
    crash: CrashInfo | None = None


#: Builds an ``_Item`` from a tuple of all its fields without the Python-level
#: ``NamedTuple.__new__`` (a Python call per log line on the hot path).
_new_item = functools.partial(tuple.__new__, _Item)


class _ConsoleParser:
    def __init__(self, root: Path, device: str, link: str, target: Target,
                 offset_us: int) -> None:
        self.root = root
        self.device = device
        self.evidence = f"{link}/{CONSOLE_RAW}#bytes="
        self.target = target
        self.offset_us = offset_us
        self.items: list[_Item] = []
        self.reported: list[tuple[_Item, dict[str, str]]] = []  # "previous crash:" lines
        self.points: dict[int, tuple[list[int], list[int]]] = {}
        self.warnings: list[str] = []
        self.boot = 0
        self.last_uptime: int | None = None
        self.boot_firmware: dict[int, tuple[str, str]] = {}
        self.pooled_sigma_us: float | None = None
        self.pooled_excess_us = 0.0
        self.points_boot = -1                         # the boot self.xs/self.ys belong to
        self.xs: list[int] = []
        self.ys: list[int] = []
        banner = target.console.banner
        self.banner_bytes = re.compile(banner.pattern.encode(), re.M) if banner else None

    # -- pass 1: lines to items ------------------------------------------------------

    def parse(self) -> None:
        raw = (self.root / CONSOLE_RAW).read_bytes()
        banner = self.target.console.banner
        begin = self.target.console.crash_begin
        end = self.target.console.crash_end
        warning = _WARNING.search
        stamp = _STAMP.match
        new_item = _new_item
        append = self.items.append
        lines = zip(*self._lines(raw))
        # Byte offsets are character offsets in ASCII, so the console is decoded once
        # and lines are matched in place (``pos``/``endpos``) without copying them.
        console = raw.decode("ascii") if raw.isascii() else None
        # The hot path (a log line stamped with uptime) works on locals; they are
        # written back to self around the rare lines that need the helpers.
        boot, last_uptime, xs, ys = self.boot, self.last_uptime, self.xs, self.ys
        for offset, length, host_us in lines:
            stop = offset + length
            if console is not None:
                line, start, end_in_line = console, offset, stop
            else:
                line = raw[offset:stop].decode("utf-8", "replace")
                start, end_in_line = 0, len(line)
            m = stamp(line, start, end_in_line)
            if m is not None:
                uptime = int(m[1])
                if last_uptime is not None and uptime < last_uptime:
                    self.boot, self.last_uptime = boot, last_uptime
                    self._inferred_reset(uptime, offset, length, host_us)
                    boot = self.boot
                last_uptime = uptime
                if host_us is not None:
                    if boot != self.points_boot:
                        self.points_boot = boot
                        xs, ys = self.points.setdefault(boot, ([], []))
                    xs.append(uptime)
                    ys.append(host_us)
                body = line[m.end():end_in_line].rstrip("\r\n")
                append(new_item(("log", "warning" if warning(body) else "info", body, offset,
                                 length, uptime, boot, host_us, (), None)))
                continue
            text = line[start:end_in_line].rstrip("\r\n")
            stripped = text.strip()
            if not stripped:
                continue
            self.boot, self.last_uptime = boot, last_uptime
            if stripped == begin:
                self._crash_log(raw, offset, length, host_us, lines, begin, end)
            elif (banner is not None and (bm := banner.match(text))
                  and raw.startswith(b"reset:", stop)):
                # The `version` command prints the banner line too; a boot is followed by
                # its reset cause.
                self._boot(bm, offset, length, host_us, raw)
            elif text.startswith("reset:"):
                continue  # read together with its banner
            elif text.startswith("previous crash:"):
                item = _Item("crash", "critical", "", offset, length, None, boot, host_us)
                self.reported.append((item, dict(_PAIR.findall(text))))
            else:
                append(_Item("log", "warning" if warning(text) else "info", text, offset,
                             length, None, boot, host_us))
            boot, last_uptime = self.boot, self.last_uptime
        self.boot, self.last_uptime = boot, last_uptime

    def _lines(self, raw: bytes) -> tuple[list[int], list[int], list[int | None]]:
        """Offsets, lengths and host receive times of the console lines, from lines.jsonl.

        Three parallel lists (columns), so the common case is built by C loops
        (``map``) rather than one Python tuple per line.
        """
        index = self.root / LINE_INDEX
        if not index.is_file():
            self.warnings.append(f"{self.device}: no {LINE_INDEX}; console lines have no "
                                 "host receive times and are placed between the capture's "
                                 "start and end")
            offsets, lengths = _split_lines(raw)
            return offsets, lengths, [None] * len(offsets)
        data = index.read_bytes()
        seconds = _Seconds(self.offset_us)
        # What crashcart writes, read with one regular-expression pass instead of a JSON
        # parse per line; any other line sends the whole file down the careful path.
        found = _INDEX_FAST.findall(data)
        if len(found) == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1):
            if not found:
                return [], [], []
            offset_digits, length_digits, stamps, micros = zip(*found)
            hosts: list[int | None] = list(map(add, map(seconds.__getitem__, stamps),
                                               map(int, micros)))
            return list(map(int, offset_digits)), list(map(int, length_digits)), hosts
        offsets: list[int] = []
        lengths: list[int] = []
        hosts = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                offset, length = entry["offset"], entry["length"]
                wall = parse_iso_us(entry["wall"]) + self.offset_us
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"bad line index entry ({exc})", path=index,
                                 line=number) from None
            if not isinstance(offset, int) or not isinstance(length, int):
                raise InputError("bad line index entry (offset and length must be integers)",
                                 path=index, line=number)
            offsets.append(offset)
            lengths.append(length)
            hosts.append(wall)
        return offsets, lengths, hosts

    def _inferred_reset(self, uptime: int, offset: int, length: int,
                        host_us: int | None) -> None:
        """Uptime went backwards with no banner: a reset whose boot lines were lost."""
        previous = self.last_uptime
        self._new_boot()
        self.items.append(_Item(
            "reset", "warning",
            f"reset inferred: uptime went back from {previous} ms to {uptime} ms "
            "with no boot banner", offset, length, None, self.boot, host_us,
            (("reset_reason", "unknown"),)))

    def _new_boot(self) -> None:
        self.boot += 1
        self.last_uptime = None

    def _boot(self, m: re.Match[str], offset: int, length: int, host_us: int | None,
              raw: bytes) -> None:
        self._new_boot()
        version = m.groupdict().get("version") or "?"
        build_id = m.groupdict().get("build_id") or "?"
        self.boot_firmware[self.boot] = (version, build_id)
        end = raw.find(b"\n", offset + length)
        nxt = raw[offset + length:len(raw) if end < 0 else end + 1]
        reason = nxt.decode("utf-8", "replace").split(":", 1)[1].strip()
        self.items.append(_Item(
            "reset", RESET_SEVERITY.get(reason, "warning"), f"reset ({reason})",
            offset + length, len(nxt), None, self.boot, host_us, (("reset_reason", reason),)))
        self.items.append(_Item(
            "boot", "info", f"boot: firmware {version} build-id {build_id[:12]}", offset, length,
            None, self.boot, host_us,
            (("version", version), ("build_id", build_id), ("reset_reason", reason))))

    def _crash_log(self, raw: bytes, offset: int, length: int, host_us: int | None,
                   lines: Iterator[tuple[int, int, int | None]], begin: str, end: str) -> None:
        stop = raw.find(end.encode(), offset)
        next_boot = -1
        if self.banner_bytes is not None:
            # a crash log cut off by a reset ends where the next banner starts
            m = self.banner_bytes.search(raw, offset + length, stop if stop >= 0 else len(raw))
            next_boot = m.start() if m else -1
        complete = stop >= 0 and (next_boot < 0 or stop < next_boot)
        if complete:
            stop = raw.find(b"\n", stop)
            stop = len(raw) if stop < 0 else stop + 1
        else:
            stop = next_boot if next_boot >= 0 else len(raw)
        text = raw[offset:stop].decode("utf-8", "replace")
        parsed = parse_crash_log(text)
        crash = CrashInfo(
            fault=parsed.fault, firmware_version=parsed.firmware_version,
            build_id=parsed.build_id, uptime_ms=parsed.uptime_ms,
            registers=tuple((n, parsed.registers[n]) for n in REGISTER_NAMES
                            if n in parsed.registers),
            complete=complete and parsed.complete,
            frame_available=not any("unavailable" in note for note in parsed.notes))
        item = _Item("crash", "critical", "", offset, stop - offset, parsed.uptime_ms, self.boot,
                     host_us, crash=crash)
        self.items.append(item)
        # skip the crash log's own lines
        for line_offset, line_length, _ in lines:
            if line_offset + line_length >= stop:
                break

    # -- pass 2: fits, settling, events ------------------------------------------------

    def finish(self, start_us: int | None, end_us: int | None,
               decoder: CrashDecoder | None) -> tuple[tuple[ClockFit, ...], tuple[Event, ...]]:
        fits = self._fits()
        items = self.items
        n = len(items)
        # Column-wise from here: one list per field, so the million-line cases run in
        # comprehensions and C loops (zip, map) instead of a Python loop per item.
        kinds, severities, messages, offsets, lengths, uptimes, boots, hosts, details, crashes = (
            [list(column) for column in zip(*items)] if n else [[] for _ in _Item._fields])
        for i, kind in enumerate(kinds):
            if (kind == "boot" or kind == "reset") and boots[i] in fits:
                # Uptime counts from the reset: the boot happened at uptime 0 of its segment.
                items[i] = items[i]._replace(uptime_ms=0)
                uptimes[i] = 0
        walls: list[int | None] = [None] * n
        uncertainties: list[int | None] = [None] * n
        start = 0
        for boot, run in groupby(boots):      # print order: each boot is one run
            stop = start + len(list(run))
            fit = fits.get(boot)
            if fit is not None:
                walls[start:stop], uncertainties[start:stop] = fit.place_all(uptimes[start:stop])
            excess = round(fit.latency_excess_us if fit is not None else self.pooled_excess_us)
            spread = _host_spread(fit)
            for i in range(start, stop):
                if walls[i] is None and (host_us := hosts[i]) is not None:
                    walls[i] = host_us - excess
                    uncertainties[i] = spread
            start = stop
        strong = [uptime is not None and boot in fits for uptime, boot in zip(uptimes, boots)]
        if n:
            try:
                settle_stream_order(walls, uncertainties, strong, start_us, end_us)
            except ValueError:
                raise InputError("console lines have no times and the capture has no start "
                                 "or end time", path=self.root / MANIFEST) from None
        extra = self._resolve_reported(fits, walls, start_us)
        bases = [BASIS_UPTIME if is_strong else BASIS_HOST if host_us is not None
                 else BASIS_INTERPOLATED for is_strong, host_us in zip(strong, hosts)]
        prefix = self.evidence
        evidence = [f"{prefix}{offset}+{length}" for offset, length in zip(offsets, lengths)]
        events = events_from_columns(
            walls, uncertainties, bases, repeat("console"), repeat(self.device), kinds,
            severities, messages, evidence, uptimes, boots, details, repeat(None))
        for i in [i for i, crash in enumerate(crashes) if crash is not None]:
            # items[i], not crashes[i]: _resolve_reported marks crashes confirmed
            events[i] = self._event(items[i], walls[i], uncertainties[i], strong[i], decoder)
        events.extend(self._event(item, wall, unc, is_strong, decoder)
                      for item, wall, unc, is_strong in extra)
        return tuple(fits.values()), tuple(events)

    def _fits(self) -> dict[int, ClockFit]:
        first = {boot: fit for boot, (xs, ys) in self.points.items()
                 if (fit := fit_segment(self.device, boot, xs, ys)) is not None}
        # Boots with too few stamped lines borrow the latency scatter and excess measured
        # in the others (same host, same cable).
        measured = [f for f in first.values() if f.points >= MIN_POINTS_FOR_FLOOR]
        dof = sum(f.points - 2 for f in measured)
        if dof > 0:
            self.pooled_sigma_us = math.sqrt(sum(f.residual_rms_us ** 2 * (f.points - 2)
                                                 for f in measured) / dof)
            self.pooled_excess_us = (sum(f.latency_excess_us * f.points for f in measured)
                                     / sum(f.points for f in measured))
        fits = {}
        for boot, fit in sorted(first.items()):
            if fit.points < MIN_POINTS_FOR_FLOOR and measured:
                xs, ys = self.points[boot]
                refit = fit_segment(self.device, boot, xs, ys,
                                    fallback_sigma_us=self.pooled_sigma_us,
                                    fallback_excess_us=self.pooled_excess_us)
                assert refit is not None
                fit = refit
            fits[boot] = fit
        return fits

    def _resolve_reported(
        self, fits: dict[int, ClockFit], walls: list[int | None], start_us: int | None,
    ) -> list[tuple[_Item, int, int | None, bool]]:
        """``previous crash:`` lines: confirm the crash already seen, or add it.

        Returns the added crashes with their time, uncertainty and strength.
        """
        extra: list[tuple[_Item, int, int | None, bool]] = []
        crashes: dict[int, list[int]] = {}
        boots: dict[int, int] = {}
        for i, other in enumerate(self.items):
            if other.kind == "crash":
                crashes.setdefault(other.boot, []).append(i)
            elif other.kind == "boot":
                boots[other.boot] = i
        for item, pairs in self.reported:
            uptime = _int(pairs.get("uptime_ms"))
            previous = item.boot - 1
            seen = [i for i in crashes.get(previous, ())
                    if (c := self.items[i].crash) is not None and c.uptime_ms == uptime]
            for i in seen:
                crash = self.items[i].crash
                assert crash is not None
                self.items[i] = self.items[i]._replace(
                    crash=replace(crash, confirmed_at_next_boot=True))
            if seen:
                continue
            regs = tuple((n, v) for n in REGISTER_NAMES if (v := _int(pairs.get(n))) is not None)
            version, build_id = self.boot_firmware.get(previous, (None, None))
            crash = CrashInfo(
                fault=pairs.get("reason"), firmware_version=version, build_id=build_id,
                uptime_ms=uptime, registers=regs, complete=False, from_crash_record=True)
            fit = fits.get(previous)
            if fit is not None and uptime is not None and previous >= 1:
                wall, unc = fit.placer()(uptime)
                extra.append((item._replace(uptime_ms=uptime, boot=previous, crash=crash),
                              wall, unc, True))
                continue
            # The crash happened in a boot this capture did not see: only the time it
            # was reported is known.
            banner = boots.get(item.boot)
            banner_time = walls[banner] if banner is not None else None
            for when in (banner_time, item.host_us, start_us):
                if when is not None:
                    extra.append((item._replace(boot=previous, crash=crash), when, None, False))
                    break
            else:
                self.warnings.append(f"{self.device}: a crash record reported at boot "
                                     f"{item.boot} has no time at all; left out")
        return extra

    def _event(self, item: _Item, wall_us: int | None, uncertainty_us: int | None,
               strong: bool, decoder: CrashDecoder | None) -> Event:
        assert wall_us is not None and item.crash is not None
        crash = item.crash
        if uncertainty_us is None and crash.from_crash_record:
            basis = BASIS_REPORTED
        elif strong:
            basis = BASIS_UPTIME
        elif item.host_us is None:
            basis = BASIS_INTERPOLATED
        else:
            basis = BASIS_HOST
        if decoder is not None:
            decoded = decoder(crash, bundle=self.root)
            if decoded is not None:
                crash = replace(crash, decoded=decoded)
        return Event(wall_us, uncertainty_us, basis, "console", self.device, item.kind,
                     item.severity, crash_message(crash),
                     f"{self.evidence}{item.offset}+{item.length}", item.uptime_ms, item.boot,
                     item.details, crash)


def crash_message(crash: CrashInfo) -> str:
    """``crash: BusFault, firmware 1.0.0, uptime 10 ms (pc=... cfsr=...)``"""
    parts = [f"crash: {crash.fault or 'unknown fault'}"]
    if crash.decoded is not None:
        parts = [f"crash: {crash.decoded.summary}"]
        if crash.decoded.location:
            parts.append(f"in {crash.decoded.location}")
    if crash.firmware_version:
        parts.append(f"firmware {crash.firmware_version}")
    if crash.uptime_ms is not None:
        parts.append(f"uptime {crash.uptime_ms} ms")
    text = ", ".join(parts)
    regs = crash.key_registers()
    if regs:
        text += f" ({regs})"
    if crash.from_crash_record:
        text += " [from the crash record reported at the next boot]"
    elif not crash.complete:
        text += " [crash log incomplete]"
    return text


def _host_spread(fit: ClockFit | None) -> int:
    """How far a host receive time may be from the device's print time."""
    if fit is None:
        return DEFAULT_LATENCY_US
    if fit.points < 3:
        return max(1000, round(COVERAGE_SIGMAS * fit.latency_sigma_us + fit.latency_excess_us))
    return max(1000, round(fit.residual_max_us + fit.latency_excess_us))


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        return None


def _split_lines(raw: bytes) -> tuple[list[int], list[int]]:
    """Offsets and lengths of the console's newline-terminated lines."""
    offsets: list[int] = []
    lengths: list[int] = []
    start = 0
    while (nl := raw.find(b"\n", start)) >= 0:
        offsets.append(start)
        lengths.append(nl + 1 - start)
        start = nl + 1
    return offsets, lengths


class _Seconds(dict):  # type: ignore[type-arg]
    """``b"2024-03-14T10:00:00"`` -> µs since the epoch (+ offset), memoised per second."""

    def __init__(self, offset_us: int) -> None:
        super().__init__()
        self.offset_us = offset_us

    def __missing__(self, stamp: bytes) -> int:
        value = self[stamp] = parse_iso_us(stamp.decode() + "+00:00") + self.offset_us
        return value
