"""The few GDB remote serial protocol packets replay's stimulus needs.

A deliberately small client for QEMU's gdbstub (GDB manual, appendix E
"GDB Remote Serial Protocol"): breakpoints and watchpoints (``Z``/``z``),
memory reads and writes (``m``/``M``), continue (``c``) and stop replies.
The collector's full GDB remote client (``collector/gdbremote.py``) is the
one to use for evidence capture; this one only drives a simulated board
at fixed points of its execution.

QEMU 7.2 facts (architecture notes): the stub answers one client; attaching
stops the VM; memory packets need the VM stopped; reads of more than about
2040 bytes fail, so reads and writes are chunked.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass

from crashcart.errors import TargetError

LOG = logging.getLogger(__name__)

CHUNK_BYTES = 1024

# Z/z packet types (GDB manual E.2 "Packets", 'Z type,addr,kind').
SOFTWARE_BREAKPOINT = 0
HARDWARE_BREAKPOINT = 1
WRITE_WATCHPOINT = 2
READ_WATCHPOINT = 3
ACCESS_WATCHPOINT = 4


@dataclass(frozen=True)
class StopReply:
    """A stop reply packet (GDB manual E.3 "Stop Reply Packets")."""

    packet: str
    signal: int | None  # T/S packets; None for W/X (process ended)
    watch_address: int | None = None  # for watchpoint stops ("watch", "rwatch", "awatch")
    exited: bool = False

    @property
    def is_trap(self) -> bool:
        return self.signal == 5


def _checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) & 0xFF)


def parse_stop_reply(packet: str) -> StopReply:
    if packet[:1] in ("W", "X"):
        return StopReply(packet, None, exited=True)
    if packet[:1] not in ("T", "S") or len(packet) < 3:
        raise TargetError(f"unexpected stop reply from the gdbstub: {packet[:80]!r}")
    signal = int(packet[1:3], 16)
    watch = None
    for field in packet[3:].split(";"):
        key, _, value = field.partition(":")
        if key in ("watch", "rwatch", "awatch") and value:
            watch = int(value, 16)
    return StopReply(packet, signal, watch)


class GdbStub:
    """A connection to a gdbstub; packets are sent and answered in order.

    Stop replies can arrive at any time after a continue (the board may also
    be stopped by others, e.g. a guest reset pausing QEMU); a reader thread
    queues them for :meth:`wait_stop`.
    """

    def __init__(self, address: tuple[str, int], *, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sock = socket.create_connection(address, timeout=timeout_s)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TargetError(f"cannot connect to the gdbstub at {address[0]}:"
                                      f"{address[1]}") from None
                time.sleep(0.01)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stops: queue.Queue[str | None] = queue.Queue()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="gdbstub", daemon=True)
        self._reader.start()
        self._lock = threading.Lock()
        self._expect_stop_reply = False
        # Ask why the target stopped: this consumes QEMU's initial stop state.
        self.query("?")
        while True:  # drain any unsolicited stop reply sent on attach
            try:
                item = self._stops.get(timeout=0.02)
            except queue.Empty:
                break
            if item is None:
                break

    # -- public --------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=2)

    def query(self, payload: str) -> str:
        """Send a packet and return its reply (stop replies go to :meth:`wait_stop`)."""
        with self._lock:
            if payload == "?":
                self._expect_stop_reply = True
            self._send(payload)
            try:
                reply = self._replies.get(timeout=self.timeout_s)
            except queue.Empty:
                raise TargetError(f"the gdbstub did not answer {payload[:20]!r}") from None
            if reply is None:
                raise TargetError("the gdbstub closed the connection")
            return reply

    def read_memory(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            n = min(size, CHUNK_BYTES)
            reply = self.query(f"m{address:x},{n:x}")
            if reply.startswith("E") or len(reply) != 2 * n:
                raise TargetError(f"gdbstub memory read at 0x{address:08x} failed ({reply[:8]})")
            out += bytes.fromhex(reply)
            address += n
            size -= n
        return bytes(out)

    def write_memory(self, address: int, data: bytes) -> None:
        for start in range(0, len(data), CHUNK_BYTES):
            piece = data[start:start + CHUNK_BYTES]
            reply = self.query(f"M{address + start:x},{len(piece):x}:{piece.hex()}")
            if reply != "OK":
                raise TargetError(f"gdbstub memory write at 0x{address + start:08x} failed "
                                  f"({reply[:8]})")

    def insert(self, kind: int, address: int, length: int = 2) -> None:
        reply = self.query(f"Z{kind},{address:x},{length:x}")
        if reply != "OK":
            raise TargetError(f"gdbstub refused Z{kind} at 0x{address:08x} ({reply or 'empty'})")

    def remove(self, kind: int, address: int, length: int = 2) -> None:
        reply = self.query(f"z{kind},{address:x},{length:x}")
        if reply != "OK":
            raise TargetError(f"gdbstub refused z{kind} at 0x{address:08x} ({reply or 'empty'})")

    def cont(self) -> None:
        """Resume; the next stop arrives through :meth:`wait_stop`."""
        with self._lock:
            self._send("c")

    def step(self, timeout_s: float | None = None) -> StopReply:
        """Execute one instruction and return the stop reply."""
        with self._lock:
            self._send("s")
        stop = self.wait_stop(timeout_s if timeout_s is not None else self.timeout_s)
        if stop is None:
            raise TargetError("the gdbstub did not stop after a single step")
        return stop

    def wait_stop(self, timeout_s: float | None = None) -> StopReply | None:
        """The next stop reply; None on timeout or when the connection closed."""
        try:
            item = self._stops.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if item is None:
            self._stops.put(None)
            return None
        return parse_stop_reply(item)

    def registers(self) -> list[int]:
        """r0-r15 and xpsr from the 'g' packet (QEMU's 68-byte M-profile layout)."""
        reply = self.query("g")
        raw = bytes.fromhex(reply)
        return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, min(len(raw), 68), 4)]

    # -- private -------------------------------------------------------------

    def _send(self, payload: str) -> None:
        data = payload.encode()
        try:
            self.sock.sendall(b"$" + data + b"#" + _checksum(data))
        except OSError as exc:
            raise TargetError(f"gdbstub connection lost: {exc}") from None

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if self._closed:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while buf:
                if buf[:1] in (b"+", b"-"):
                    buf = buf[1:]
                    continue
                start = buf.find(b"$")
                if start < 0:
                    buf = b""
                    break
                end = buf.find(b"#", start)
                if end < 0 or len(buf) < end + 3:
                    buf = buf[start:]
                    break
                payload = buf[start + 1:end].decode("latin-1")
                buf = buf[end + 3:]
                try:
                    self.sock.sendall(b"+")
                except OSError:
                    pass
                self._dispatch(payload)
        self._replies.put(None)
        self._stops.put(None)

    def _dispatch(self, payload: str) -> None:
        is_stop = payload[:1] in ("T", "S", "W", "X") and (
            len(payload) >= 3 and all(c in "0123456789abcdefABCDEF" for c in payload[1:3]))
        if is_stop and self._expect_stop_reply:
            self._expect_stop_reply = False
            self._replies.put(payload)
        elif is_stop:
            self._stops.put(payload)
        else:
            self._replies.put(payload)
