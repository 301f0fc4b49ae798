"""Synthetic console captures with known truth, for tests, fixtures and the benchmark.

A :class:`SynthDevice` prints the fixture firmware's console formats
(fixtures/firmware/README.md) against a *true* clock: its uptime runs
``drift_ppm`` fast or slow, its UART sends 115200 baud (a line cannot start
before the previous one has left), and the capture host stamps each line
with the true time plus a random receive latency.  Every line a test cares
about carries a truth label, so a test can compare the timeline's order
with what really happened.

:func:`write_bundle` writes such a capture as an evidence bundle with
:class:`collector.bundle.BundleWriter` (the same files a real serial capture
writes).  The writer's clock is simulated so the manifest's capture times
agree with the console's; everything else in the bundle is real.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import collector.bundle
from collector.bundle import BundleWriter
from timeline.model import us_to_datetime

#: One character at 115200 baud, 8N1 (10 bits), in µs.
CHAR_TIME_US = 10 / 115200 * 1e6

CRASH_REGISTERS = (
    ("r0", "r1", "r2", "r3"), ("r12", "lr", "pc", "xpsr"), ("r4", "r5", "r6", "r7"),
    ("r8", "r9", "r10", "r11"), ("exc_return", "msp", "psp"),
    ("cfsr", "hfsr", "dfsr", "shcsr"), ("mmfar", "bfar"),
)
REASON_NAMES = {"HardFault": "HARDFAULT", "MemManage": "MEMMANAGE", "BusFault": "BUSFAULT",
                "UsageFault": "USAGEFAULT", "NMI/watchdog": "WATCHDOG"}


@dataclass(frozen=True)
class SynthLine:
    print_us: int             # true time the device started sending the line
    host_us: int              # when the capture host received its first byte
    text: str
    truth: str | None         # label for known-truth tests


class SynthDevice:
    """A simulated sensor node printing its console against a true clock."""

    def __init__(self, name: str, *, version: str, build_id: str, drift_ppm: float = 0.0,
                 latency_us: tuple[int, int] = (1_000, 8_000), seed: int = 0) -> None:
        self.name = name
        self.version = version
        self.build_id = build_id
        self.drift_ppm = drift_ppm
        self.latency_us = latency_us
        self.rng = random.Random(seed)
        self.lines: list[SynthLine] = []
        self.truth: list[tuple[int, str]] = []    # (true µs, label) of labelled happenings
        self._boot_us: int | None = None
        self._uptime_at_boot_ms = 0.0
        self._uart_free_us = 0
        self._last_host_us = 0
        self._last_request_us = 0
        self.last_crash: dict[str, int | str] | None = None

    # -- the device's clock ------------------------------------------------------------

    def running_since(self, true_us: int, uptime_ms: int) -> None:
        """The device is already up: its uptime is ``uptime_ms`` at ``true_us``."""
        self._boot_us = true_us
        self._uptime_at_boot_ms = float(uptime_ms)

    def uptime_ms(self, true_us: int) -> int:
        assert self._boot_us is not None, "the device has not booted"
        elapsed_ms = (true_us - self._boot_us) / 1000.0 * (1.0 + self.drift_ppm * 1e-6)
        return int(self._uptime_at_boot_ms + elapsed_ms)

    # -- printing ----------------------------------------------------------------------

    def _now(self, true_us: int) -> int:
        """When the firmware gets to something asked for at ``true_us`` (after its prints)."""
        return max(true_us, self._last_request_us)

    def print_line(self, true_us: int, text: str, truth: str | None = None) -> int:
        """Send one line as soon as the UART is free; returns when it was done.

        Calls must come in time order: a device prints its console in order.  The
        firmware polls the UART, so it is busy until a line is sent; a request
        that falls inside an earlier one is served when that one is done.
        """
        if true_us < self._last_request_us - 1_000_000:
            raise ValueError(f"{self.name}: line at {true_us} requested after one at "
                             f"{self._last_request_us}; print in time order")
        self._last_request_us = max(true_us, self._last_request_us)
        start = max(true_us, self._uart_free_us)
        self._uart_free_us = start + round((len(text) + 1) * CHAR_TIME_US)
        host = max(start + self.rng.randint(*self.latency_us), self._last_host_us)
        self._last_host_us = host
        self.lines.append(SynthLine(start, host, text, truth))
        return self._uart_free_us

    def log(self, true_us: int, text: str, truth: str | None = None) -> int:
        """A ``[%8u ms]`` log line, stamped with uptime when the firmware formats it."""
        true_us = self._now(true_us)
        if truth is not None:
            self.truth.append((true_us, truth))
        return self.print_line(true_us, f"[{self.uptime_ms(true_us):8d} ms] {text}")

    def reports(self, start_us: int, end_us: int, every_ms: int, *, node_id: int = 1,
                channel: int = 0) -> None:
        """Periodic report lines between two true times."""
        t = start_us
        while t < end_us:
            avg = 1000 + self.rng.randint(-80, 80)
            self.log(t, f"node {node_id} ch{channel} avg={avg} min={avg - 150} "
                        f"max={avg + 120}")
            t += every_ms * 1000

    def boot(self, true_us: int, reset: str, *, config_line: str = "config: v1 ok "
             "crc=0x5d1e7c22", sanitize: Sequence[str] = (), truth: str | None = None) -> None:
        """Reset at ``true_us``: banner, reset cause, config, previous crash, ``up``."""
        if truth is not None:
            self.truth.append((true_us, truth))
        self._boot_us = true_us
        self._uptime_at_boot_ms = 0.0
        self._uart_free_us = max(self._uart_free_us, true_us)
        if reset == "power-on":
            self.last_crash = None      # the crash record lives in RAM
        t = self.print_line(true_us, f"crashcart sensor-node {self.version} build-id "
                                     f"{self.build_id}")
        t = self.print_line(t, f"reset: {reset}")
        t = self.print_line(t, config_line)
        if self.last_crash is not None:
            c = self.last_crash
            t = self.print_line(
                t, f"previous crash: reason={REASON_NAMES.get(str(c['fault']), 'UNKNOWN')} "
                   f"uptime_ms={c['uptime_ms']} pc=0x{c['pc']:08x} lr=0x{c['lr']:08x} "
                   f"cfsr=0x{c['cfsr']:08x} hfsr=0x{c['hfsr']:08x}")
            self.last_crash = None
        for text in sanitize:
            t = self.log(t, text)
        self.log(t, "sensor-node up")

    def reply(self, true_us: int, text: str, truth: str | None = None) -> int:
        """A command reply (no uptime stamp)."""
        true_us = self._now(true_us)
        if truth is not None:
            self.truth.append((true_us, truth))
        return self.print_line(true_us, text)

    def crash(self, true_us: int, fault: str, registers: dict[str, int],
              truth: str | None = None) -> int:
        """The firmware faults at ``true_us`` and prints its crash log."""
        true_us = self._now(true_us)
        if truth is not None:
            self.truth.append((true_us, truth))
        uptime = self.uptime_ms(true_us)
        regs = {name: 0 for row in CRASH_REGISTERS for name in row}
        regs.update(registers)
        self.last_crash = {"fault": fault, "uptime_ms": uptime, **regs}
        t = self.print_line(true_us, "*** CRASH BEGIN ***")
        t = self.print_line(t, f"fault: {fault}")
        t = self.print_line(t, f"firmware: {self.version} build-id {self.build_id}")
        t = self.print_line(t, f"uptime_ms: {uptime}")
        for row in CRASH_REGISTERS:
            t = self.print_line(t, " ".join(f"{n}: 0x{regs[n]:08x}" for n in row))
        return self.print_line(t, "*** CRASH END ***")


@dataclass(frozen=True)
class SynthBundle:
    path: Path
    device: SynthDevice


def write_bundle(path: str | Path, device: SynthDevice, *, started_us: int, ended_us: int,
                 target: str = "mps2-an385",
                 command: Sequence[str] = ("crashcart", "collect")) -> SynthBundle:
    """Write ``device``'s console as a serial-capture evidence bundle.

    Lines received outside ``started_us..ended_us`` are not in the capture
    (a line already being received at the start is cut, as on a real port).
    """
    lines = [line for line in device.lines if started_us <= line.host_us <= ended_us]
    raw = bytearray()
    chunks: list[str] = []
    index: list[str] = []
    crashes: list[str] = []
    begin_at: tuple[int, str] | None = None
    for line in lines:
        data = (line.text + "\n").encode()
        wall = _iso(line.host_us)
        mono = round((line.host_us - started_us) / 1e6, 6)
        record = {"offset": len(raw), "size": len(data), "wall": wall, "mono": mono}
        chunks.append(json.dumps(record))
        index.append(json.dumps({"offset": len(raw), "length": len(data), "wall": wall,
                                 "mono": mono}))
        if line.text == "*** CRASH BEGIN ***":
            begin_at = (len(raw), wall)
            crashes.append(json.dumps({"begin_offset": len(raw), "end_offset": None,
                                       "begin_wall": wall, "end_wall": None,
                                       "complete": False}))
        elif line.text == "*** CRASH END ***" and begin_at is not None:
            crashes.append(json.dumps({"begin_offset": begin_at[0],
                                       "end_offset": len(raw) + len(data) - 1,
                                       "begin_wall": begin_at[1], "end_wall": wall,
                                       "complete": True}))
            begin_at = None
        raw += data
    clock = _SimulatedClock(started_us)
    with clock.installed(), BundleWriter(Path(path), target=target,
                                         command=list(command)) as bundle:
        source = bundle.add_source("serial", {"url": f"synthetic://{device.name}",
                                              "baudrate": 115200})
        for name, kind, lines_ in (("serial/console.raw", "serial-raw", None),
                                   ("serial/chunks.jsonl", "serial-chunk-index", chunks),
                                   ("serial/lines.jsonl", "serial-line-index", index),
                                   ("serial/crashes.jsonl", "serial-crash-index", crashes)):
            data = bytes(raw) if lines_ is None else "".join(x + "\n" for x in lines_).encode()
            bundle.write_file(name, data, kind=kind, source="serial")
        clock.now_us = ended_us
        bundle.end_source(source)
    return SynthBundle(Path(path), device)


class _SimulatedClock:
    """Stands in for the bundle writer's wall clock while a synthetic bundle is written."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def utc_now(self) -> str:
        return _iso(self.now_us)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with mock.patch.object(collector.bundle, "utc_now", self.utc_now):
            yield


def _iso(wall_us: int) -> str:
    return us_to_datetime(wall_us).isoformat(timespec="microseconds")
