"""Serial capture: every byte, as it arrives, with the host's clocks.

Reads any pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``,
``rfc2217://``, ``loop://``) through :func:`collector.serial_port.read_chunk`
(which never drops bytes on a disconnect) and writes into the bundle:

``serial/console.raw``
    the bytes exactly as received, appended and flushed per chunk.
``serial/chunks.jsonl``
    one line per chunk: ``{"offset", "size", "wall", "mono"}``; ``wall`` is
    UTC ISO 8601 with microseconds, ``mono`` the host monotonic clock (s).
``serial/lines.jsonl``
    one line per console line: ``{"offset", "length", "wall", "mono"}``
    stamped with the arrival of the line's first byte (when the device
    started printing it: the best host time for its uptime stamp).
``serial/crashes.jsonl``
    one line per crash log found by the target's markers, written when its
    begin marker arrives (``"end_offset": null``) and again when its end
    marker arrives.

The port may disappear (a device reset on USB, a pulled cable): the capture
records a ``disconnected`` event, keeps trying to reopen it, and records
``reconnected`` with the gap.  Nothing received while the port was open is
lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from collector.bundle import BundleWriter, GrowingFile, utc_now
from collector.serial_port import PortGone, close_port, open_port, read_chunk

LOG = logging.getLogger(__name__)

RECONNECT_INTERVAL_S = 0.2


_LINE_JSON = '{"offset": %d, "length": %d, "wall": %s, "mono": %s}'
_LINE_TAIL = ', "wall": %s, "mono": %s}'


@dataclass
class SerialStats:
    bytes: int = 0
    chunks: int = 0
    lines: int = 0
    crashes_begun: int = 0
    crashes_ended: int = 0
    disconnects: int = 0


class _MarkerScanner:
    """Finds begin/end markers in a stream, across chunk boundaries."""

    def __init__(self, begin: bytes, end: bytes) -> None:
        self.begin = begin
        self.end = end
        self.keep = max(len(begin), len(end)) - 1
        self.tail = b""
        self.tail_offset = 0

    def feed(self, offset: int, chunk: bytes) -> list[tuple[str, int]]:
        """(kind, stream offset) of markers completed by this chunk, in order."""
        data = self.tail + chunk
        base = offset - len(self.tail)
        found: list[tuple[str, int]] = []
        for kind, marker in (("begin", self.begin), ("end", self.end)):
            pos = data.find(marker)
            while pos >= 0:
                # Markers wholly inside the old tail were reported with the last chunk.
                if pos + len(marker) > len(self.tail):
                    found.append((kind, base + pos))
                pos = data.find(marker, pos + 1)
        found.sort(key=lambda item: item[1])
        self.tail = data[-self.keep:] if self.keep else b""
        return found


class SerialCapture:
    """Capture one serial port into a bundle until stopped or a duration ends."""

    def __init__(
        self,
        bundle: BundleWriter,
        url: str,
        *,
        baudrate: int = 115200,
        crash_markers: tuple[str, str] | None = None,
        reconnect: bool = True,
        timeout_s: float = 0.05,
        on_data: Callable[[bytes], None] | None = None,
    ) -> None:
        self.bundle = bundle
        self.url = url
        self.baudrate = baudrate
        self.reconnect = reconnect
        self.timeout_s = timeout_s
        self.on_data = on_data
        self.stats = SerialStats()
        self.scanner = (
            _MarkerScanner(crash_markers[0].encode(), crash_markers[1].encode())
            if crash_markers else None
        )
        self._open_crash: dict[str, Any] | None = None
        self._line_start = 0
        self._line_stamp: tuple[str, float] | None = None
        self._gone_at: float | None = None
        self.source = bundle.add_source("serial", {
            "url": url, "baudrate": baudrate, "timeout_s": timeout_s, "reconnect": reconnect,
            "crash_markers": list(crash_markers) if crash_markers else None,
        })
        self.raw: GrowingFile = bundle.open_growing("serial/console.raw", kind="serial-raw",
                                                    source="serial")
        self.chunks = bundle.open_growing("serial/chunks.jsonl", kind="serial-chunk-index",
                                          source="serial")
        self.lines = bundle.open_growing("serial/lines.jsonl", kind="serial-line-index",
                                         source="serial")
        self.crashes = bundle.open_growing("serial/crashes.jsonl", kind="serial-crash-index",
                                           source="serial")
        self.error: str | None = None

    # -- public -----------------------------------------------------------------

    def run(self, stop: threading.Event, duration_s: float | None = None) -> SerialStats:
        """Capture until ``stop`` is set, ``duration_s`` passes, or the port is gone for good."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        port = self._open(first=True)
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if port is None:
                    if not self.reconnect:
                        break
                    time.sleep(RECONNECT_INTERVAL_S)
                    port = self._open(first=False)
                    continue
                try:
                    chunk = read_chunk(port)
                except PortGone as exc:
                    self._disconnected(str(exc))
                    close_port(port)
                    port = None
                    continue
                if chunk:
                    self._ingest(chunk)
        finally:
            if port is not None:
                close_port(port)
            self.close()
        return self.stats

    def close(self) -> None:
        for f in (self.raw, self.chunks, self.lines, self.crashes):
            f.close()
        if self._open_crash is not None:
            self.bundle.mark_partial("serial: a crash log was cut off before its end marker")
        self.bundle.end_source(self.source, error=self.error)

    # -- private -------------------------------------------------------------------

    def _open(self, *, first: bool) -> serial.SerialBase | None:
        try:
            port = open_port(self.url, baudrate=self.baudrate, timeout=self.timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            if first:
                self.bundle.source_event(self.source, "open-failed", error=str(exc))
                if not self.reconnect:
                    self.error = f"cannot open {self.url}: {exc}"
            return None
        if first:
            self.bundle.source_event(self.source, "opened")
        else:
            gap = None if self._gone_at is None else time.monotonic() - self._gone_at
            self.bundle.source_event(self.source, "reconnected", offset=self.stats.bytes,
                                     gap_s=None if gap is None else round(gap, 6))
        return port

    def _disconnected(self, why: str) -> None:
        self.stats.disconnects += 1
        self._gone_at = time.monotonic()
        self.bundle.source_event(self.source, "disconnected", offset=self.stats.bytes, error=why)
        if not self.reconnect:
            self.error = f"port disappeared: {why}"

    def _ingest(self, chunk: bytes) -> None:
        wall = utc_now()
        mono = time.monotonic()
        offset = self.stats.bytes
        self.raw.write(chunk)
        self.stats.bytes += len(chunk)
        self.stats.chunks += 1
        self.chunks.write(json.dumps({"offset": offset, "size": len(chunk), "wall": wall,
                                      "mono": round(mono, 6)}).encode() + b"\n")
        self._index_lines(offset, chunk, wall, mono)
        if self.scanner is not None:
            for kind, at in self.scanner.feed(offset, chunk):
                self._marker(kind, at, wall)
        if self.on_data is not None:
            self.on_data(chunk)

    def _index_lines(self, offset: int, chunk: bytes, wall: str, mono: float) -> None:
        # The hot path of a fast console (a million lines a minute): every line
        # that starts inside this chunk shares the chunk's time stamp, so the
        # JSON is formatted by hand (same text as json.dumps of the dict).
        size = len(chunk)
        if self._line_stamp is None and size:
            self._line_stamp = (wall, mono)  # the current line's first byte is in this chunk
        nl = chunk.find(b"\n")
        if nl < 0:
            return
        first_wall, first_mono = self._line_stamp  # type: ignore[misc]
        end = offset + nl + 1
        out = [_LINE_JSON % (self._line_start, end - self._line_start, json.dumps(first_wall),
                             repr(round(first_mono, 6)))]
        here = _LINE_TAIL % (json.dumps(wall), repr(round(mono, 6)))
        start = end
        pos = nl + 1
        find = chunk.find
        while (nl := find(b"\n", pos)) >= 0:
            end = offset + nl + 1
            out.append(f'{{"offset": {start}, "length": {end - start}{here}')
            start = end
            pos = nl + 1
        self._line_start = start
        self._line_stamp = (wall, mono) if pos < size else None
        self.stats.lines += len(out)
        self.lines.write(("\n".join(out) + "\n").encode())

    def _marker(self, kind: str, at: int, wall: str) -> None:
        if kind == "begin":
            if self._open_crash is not None:
                self._open_crash["complete"] = False
                self.crashes.write(json.dumps(self._open_crash).encode() + b"\n")
            self._open_crash = {"begin_offset": at, "end_offset": None, "begin_wall": wall,
                                "end_wall": None, "complete": False}
            self.stats.crashes_begun += 1
            self.crashes.write(json.dumps(self._open_crash).encode() + b"\n")
            self.bundle.source_event(self.source, "crash-begin", offset=at)
        elif self._open_crash is not None:
            assert self.scanner is not None
            self._open_crash.update(end_offset=at + len(self.scanner.end), end_wall=wall,
                                    complete=True)
            self.stats.crashes_ended += 1
            self.crashes.write(json.dumps(self._open_crash).encode() + b"\n")
            self.bundle.source_event(self.source, "crash-end", offset=at)
            self._open_crash = None
