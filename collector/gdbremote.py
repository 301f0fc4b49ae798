"""A client for the GDB Remote Serial Protocol over TCP.

:class:`GdbRemote` talks to a gdbstub (QEMU's, OpenOCD's, a J-Link GDB
server's): it frames packets with checksums and acknowledgements, reads the
target description, reads and writes registers and memory, stops and
continues the target, and detaches.  Every socket read has a deadline, so a
stub that goes quiet, closes the connection or sends garbage gives a
:class:`GdbRemoteError` (a :class:`~crashcart.errors.TargetError`), never a
hang.

The protocol is the one in the GDB manual, appendix E "GDB Remote Serial
Protocol" (cited below as "RSP, section").  Behaviour of QEMU 7.2's stub that
the client relies on or works around (measured here):

* On connect QEMU stops a running VM and sends an unsolicited ``T02`` stop
  reply; a VM that was already paused sends nothing.  :meth:`GdbRemote.open`
  drains it and records :attr:`GdbRemote.was_running_at_attach`.
* ``p`` answers empty until ``target.xml`` has been read
  (``qXfer:features:read``); afterwards ``g`` is r0-r15 plus xpsr (68 bytes)
  and xpsr is register number 25.
* ``m`` of more than 2048 bytes fails with ``E22``: reads are chunked.
* All-stop: when the VM runs, the first byte of any packet stops it and is
  discarded, and a ``T02`` stop reply is sent instead of an answer.  The
  client keeps track of whether it resumed the target, and when a stop reply
  arrives in place of an answer (somebody else resumed the VM, e.g. QMP
  ``cont``) it notes the stop and sends the packet again.
* ``D`` (detach) resumes the VM; closing the socket without ``D`` leaves it
  as it is.  :meth:`GdbRemote.close` therefore does not detach.
"""

from __future__ import annotations

import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

from crashcart.errors import TargetError

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
# QEMU 7.2 answers E22 to an 'm' of more than 0x800 bytes; stay below it.
MAX_MEMORY_CHUNK = 2048
# Longest packet accepted before the stream is declared garbage.
MAX_PACKET_BYTES = 1 << 20
# Attempts to send one packet when the stub answers '-' (RSP E.1 "Overview").
MAX_RETRANSMITS = 3
# How long open() waits for QEMU's unsolicited stop reply after connecting.
ATTACH_DRAIN_S = 0.2
# The ARM M-profile register numbering gdb uses when the stub gives no target.xml.
_FALLBACK_REGISTERS = tuple(
    [(f"r{i}", i) for i in range(13)] + [("sp", 13), ("lr", 14), ("pc", 15), ("xpsr", 25)]
)
_XINCLUDE = "{http://www.w3.org/2001/XInclude}include"


class GdbRemoteError(TargetError):
    """The gdbstub did not answer, answered nonsense, or reported an error."""

    def __init__(self, message: str, *, address: tuple[str, int] | None = None,
                 reply: str | None = None, remedy: str | None = None) -> None:
        where = f"gdbstub {address[0]}:{address[1]}: " if address else ""
        super().__init__(where + message, value=reply, remedy=remedy)
        self.address = address
        self.reply = reply


class GdbConnectionLost(GdbRemoteError):
    """The gdbstub closed the connection (the board or simulator went away)."""


class GdbMemoryError(GdbRemoteError):
    """The stub refused a memory access (``Exx``): nothing is mapped there."""

    def __init__(self, message: str, *, memory_address: int, length: int,
                 address: tuple[str, int] | None = None, reply: str | None = None) -> None:
        super().__init__(message, address=address, reply=reply)
        self.memory_address = memory_address
        self.length = length


@dataclass(frozen=True)
class StopReply:
    """A stop reply packet (RSP E.3 "Stop Reply Packets").

    ``kind`` is ``T``/``S`` (stopped with ``signal``), ``W`` (exited with
    status ``signal``) or ``X`` (terminated by ``signal``).
    """

    kind: str
    signal: int
    fields: dict[str, str]
    raw: str

    @property
    def ended(self) -> bool:
        """True when the target process is gone (W/X): nothing more to debug."""
        return self.kind in "WX"


@dataclass(frozen=True)
class RegisterInfo:
    """One register from the target description (GDB manual G.2 "Target Description Format")."""

    name: str
    regnum: int
    bitsize: int
    feature: str


@dataclass(frozen=True)
class MemoryWrite:
    """A memory write the client sent to the target (before it was acknowledged)."""

    address: int
    data: bytes


@dataclass(frozen=True)
class RegisterWrite:
    """A core-register write the client sent to the target."""

    name: str
    regnum: int
    value: int


@dataclass
class _Stats:
    packets_sent: int = 0
    packets_received: int = 0
    retransmits: int = 0
    garbage_bytes: int = 0
    async_stops: int = 0
    resent_after_stop: int = 0


class GdbRemote:
    """A GDB remote client for one TCP connection; use as a context manager.

    Lifecycle: ``open()`` (connect, ``qSupported``, drain the attach stop
    reply, read ``target.xml``), then register/memory/run-control calls,
    then ``close()`` (leaves the target as it is) or ``detach()`` (the stub
    resumes the target, QEMU does).  The constructor does no I/O.

    Memory and register access need the target stopped (all-stop mode);
    :meth:`stopped` stops it for a block of accesses and continues it after,
    if it was running.

    :param timeout_s: deadline for each answer from the stub.
    :param connect_timeout_s: deadline for the TCP connection.

    Every memory write is appended to :attr:`writes` (and register writes to
    :attr:`register_writes`) before it is sent, so a caller can check that
    a capture wrote nothing.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.host = host
        self.port = int(port)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.writes: list[MemoryWrite] = []
        self.register_writes: list[RegisterWrite] = []
        self.stats = _Stats()
        self.packet_size = 0
        self.features: dict[str, str | bool] = {}
        self.registers: tuple[RegisterInfo, ...] = ()
        self.target_xml: str | None = None
        self.vcont_actions: frozenset[str] = frozenset()
        self.was_running_at_attach = False
        self.last_stop: StopReply | None = None
        self._sock: socket.socket | None = None
        self._rx = bytearray()
        self._running = False
        self._by_name: dict[str, RegisterInfo] = {}

    # -- public: lifecycle ----------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def running(self) -> bool:
        """True after :meth:`cont` until a stop reply has been seen."""
        return self._running

    @property
    def max_read_size(self) -> int:
        """Bytes per ``m`` packet: what fits the stub's PacketSize, at most 2048."""
        fit = (self.packet_size - 16) // 2 if self.packet_size else 1024
        return max(4, min(MAX_MEMORY_CHUNK, fit) & ~3)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect and do the handshake; raises :class:`GdbRemoteError`."""
        if self._sock is not None:
            return
        try:
            self._sock = socket.create_connection(self.address, timeout=self.connect_timeout_s)
        except OSError as err:
            raise GdbRemoteError(
                f"cannot connect: {err.strerror or err}", address=self.address,
                remedy="check that the board's gdbstub listens there and no other debugger "
                       "is attached (QEMU takes one client at a time)",
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection without detaching: the target stays as it is."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._rx.clear()

    def detach(self) -> None:
        """Send ``D`` (the stub lets the target run; QEMU resumes the VM) and close."""
        if self._sock is None:
            return
        try:
            if self._running:
                # Detaching from a running target: the stub is not reading
                # packets; closing leaves it running, which is what D would do.
                return
            reply = self._command(b"D")
            if reply not in (b"OK", b""):
                LOG.warning("%s:%d: detach answered %r", self.host, self.port, reply)
            self._running = True
        finally:
            self.close()

    # -- public: run control --------------------------------------------------

    def halt_reason(self) -> StopReply:
        """Ask why the target stopped (``?``); stops a running QEMU VM."""
        reply = self._command(b"?", expect_stop=True)
        stop = self._parse_stop(reply)
        self._note_stop(stop)
        return stop

    def interrupt(self, timeout_s: float | None = None) -> StopReply:
        """Stop a running target (``0x03``, RSP E.8 "Interrupts") and return its stop reply."""
        sock = self._require_open()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self._drain_async()
        if not self._running and self.last_stop is not None:
            return self.last_stop
        try:
            sock.sendall(b"\x03")
        except OSError as err:
            raise self._lost(err) from None
        try:
            payload = self._read_packet(time.monotonic() + min(timeout, 1.0))
        except GdbConnectionLost:
            raise
        except GdbRemoteError:
            # No stop reply: the stub ignores 0x03 when the target is already
            # stopped (QEMU does).  Any packet stops a running VM, so ask.
            return self.halt_reason()
        while not self._is_stop(payload):
            LOG.debug("ignoring %r while waiting for a stop reply", payload[:40])
            payload = self._read_packet(time.monotonic() + timeout)
        stop = self._parse_stop(payload)
        self._note_stop(stop)
        return stop

    def cont(self) -> None:
        """Let the target run (``vCont;c`` if the stub has it, else ``c``); returns at once."""
        if self._running:
            return
        payload = b"vCont;c" if "c" in self.vcont_actions else b"c"
        self._send(payload)
        self._running = True
        self.last_stop = None

    def step(self) -> StopReply:
        """Execute one instruction (``s``) and return the stop reply."""
        if self._running:
            raise GdbRemoteError("cannot step a running target; stop it first", address=self.address)
        self._send(b"s")
        self._running = True
        payload = self._read_packet(time.monotonic() + self.timeout_s)
        while not self._is_stop(payload):
            payload = self._read_packet(time.monotonic() + self.timeout_s)
        stop = self._parse_stop(payload)
        self._note_stop(stop)
        return stop

    def poll_stop(self, timeout_s: float = 0.0) -> StopReply | None:
        """Return a stop reply if the running target stopped (within ``timeout_s``), else None."""
        if not self._running:
            return None
        self._drain_async(timeout_s)
        return None if self._running else self.last_stop

    @contextmanager
    def stopped(self) -> Iterator[bool]:
        """Stop the target for a block of accesses, continue it after if it was running.

        Yields True when the target had to be stopped.
        """
        self._drain_async()
        was_running = self._running
        if was_running:
            self.interrupt()
        try:
            yield was_running
        finally:
            if was_running and self._sock is not None and not self._running:
                self.cont()

    def insert_breakpoint(self, address: int, *, hardware: bool = True, kind: int = 2) -> None:
        """``Z1`` (hardware) or ``Z0`` (software) breakpoint at ``address``."""
        reply = self._command(b"Z%d,%x,%x" % (1 if hardware else 0, address, kind))
        if reply != b"OK":
            raise GdbRemoteError(f"breakpoint at 0x{address:08x} refused",
                                 address=self.address, reply=reply.decode("latin-1"))

    def remove_breakpoint(self, address: int, *, hardware: bool = True, kind: int = 2) -> None:
        reply = self._command(b"z%d,%x,%x" % (1 if hardware else 0, address, kind))
        if reply != b"OK":
            raise GdbRemoteError(f"removing breakpoint at 0x{address:08x} refused",
                                 address=self.address, reply=reply.decode("latin-1"))

    # -- public: registers ----------------------------------------------------

    def register(self, name_or_regnum: str | int) -> RegisterInfo:
        """The target description's entry for a register name or number."""
        if isinstance(name_or_regnum, int):
            for info in self.registers:
                if info.regnum == name_or_regnum:
                    return info
        elif name_or_regnum.lower() in self._by_name:
            return self._by_name[name_or_regnum.lower()]
        raise GdbRemoteError(f"the target description has no register {name_or_regnum!r}",
                             address=self.address,
                             remedy="registers: " + ", ".join(r.name for r in self.registers))

    def read_registers(self) -> dict[str, int]:
        """All registers ``g`` returns, by name (QEMU 7.2 M-profile: r0-r12, sp, lr, pc, xpsr)."""
        reply = self._command(b"g")
        self._raise_if_error(reply, "reading registers")
        data = self._unhex(reply, "g")
        values: dict[str, int] = {}
        pos = 0
        for info in sorted(self.registers, key=lambda r: r.regnum):
            size = info.bitsize // 8
            if pos + size > len(data):
                break
            values[info.name] = int.from_bytes(data[pos:pos + size], "little")
            pos += size
        if pos != len(data):
            raise GdbRemoteError(
                f"'g' returned {len(data)} bytes; the target description accounts for {pos}",
                address=self.address, reply=reply[:80].decode("latin-1"))
        return values

    def read_register(self, name_or_regnum: str | int) -> int:
        """One register with ``p`` (numbers from the target description)."""
        info = self.register(name_or_regnum)
        reply = self._command(b"p%x" % info.regnum)
        self._raise_if_error(reply, f"reading register {info.name}")
        if not reply:
            raise GdbRemoteError(f"the stub does not return register {info.name} ('p' is empty)",
                                 address=self.address)
        return int.from_bytes(self._unhex(reply, "p"), "little")

    def write_register(self, name_or_regnum: str | int, value: int) -> None:
        """Write one register with ``P``; recorded in :attr:`register_writes`."""
        info = self.register(name_or_regnum)
        data = (value & ((1 << info.bitsize) - 1)).to_bytes(info.bitsize // 8, "little")
        self.register_writes.append(RegisterWrite(info.name, info.regnum, value))
        reply = self._command(b"P%x=%s" % (info.regnum, data.hex().encode()))
        if reply != b"OK":
            raise GdbRemoteError(f"writing register {info.name} refused", address=self.address,
                                 reply=reply.decode("latin-1"))

    # -- public: memory -------------------------------------------------------

    def read_memory(self, address: int, length: int, *, physical_fallback: bool = False) -> bytes:
        """Read ``length`` bytes at ``address`` in ``m`` packets of :attr:`max_read_size`.

        QEMU's stub checks its reads against the MPU, as the CPU would
        (silicon's debug access port does not), so an MPU guard region
        answers ``E14``.  With ``physical_fallback`` a refused chunk is read
        again with the QEMU monitor's physical-memory ``xp`` command, which
        bypasses the MPU like a debug access port does.
        """
        out = bytearray()
        chunk = self.max_read_size
        while len(out) < length:
            here = address + len(out)
            n = min(chunk, length - len(out))
            reply = self._command(b"m%x,%x" % (here, n))
            if reply[:1] == b"E" and len(reply) == 3:
                if physical_fallback:
                    out += self.read_physical_memory(here, n)
                    continue
                raise GdbMemoryError(
                    f"memory read at 0x{here:08x} ({n} bytes) failed",
                    memory_address=here, length=n, address=self.address,
                    reply=reply.decode("latin-1"))
            data = self._unhex(reply, "m")
            if len(data) != n:
                raise GdbRemoteError(f"asked for {n} bytes at 0x{here:08x}, got {len(data)}",
                                     address=self.address)
            out += data
        return bytes(out)

    def read_physical_memory(self, address: int, length: int) -> bytes:
        """Read system memory with QEMU's monitor command ``xp`` (no MPU check).

        QEMU-only.  Slower than ``m`` (about five characters per byte); meant
        for the few regions ``m`` refuses.
        """
        out = bytearray()
        while len(out) < length:
            here = address + len(out)
            n = min(1024, length - len(out))
            text = self.monitor(f"xp /{n}xb 0x{here:x}")
            got = bytearray()
            for line in text.splitlines():
                head, sep, values = line.partition(":")
                if not sep or "Cannot access" in values:
                    continue
                try:
                    int(head.strip(), 16)
                    got += bytes(int(v, 16) for v in values.split())
                except ValueError:
                    continue
            if len(got) != n:
                raise GdbMemoryError(
                    f"memory read at 0x{here + len(got):08x} failed (also through the "
                    "monitor's physical read)", memory_address=here + len(got),
                    length=n - len(got), address=self.address, reply=text.strip()[-80:] or None)
            out += got
        return bytes(out)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write ``data`` at ``address`` with ``M``; recorded in :attr:`writes` first."""
        data = bytes(data)
        self.writes.append(MemoryWrite(address, data))
        chunk = self.max_read_size
        for pos in range(0, len(data), chunk):
            part = data[pos:pos + chunk]
            reply = self._command(b"M%x,%x:%s" % (address + pos, len(part), part.hex().encode()))
            if reply != b"OK":
                raise GdbMemoryError(
                    f"memory write at 0x{address + pos:08x} ({len(part)} bytes) failed",
                    memory_address=address + pos, length=len(part), address=self.address,
                    reply=reply.decode("latin-1"))

    def monitor(self, command: str) -> str:
        """Run a stub monitor command (``qRcmd``) and return its output."""
        reply = self._command(b"qRcmd," + command.encode().hex().encode())
        text = bytearray()
        while reply.startswith(b"O") and reply != b"OK":
            text += self._unhex(reply[1:], "qRcmd output")
            reply = self._read_packet(time.monotonic() + self.timeout_s)
        self._raise_if_error(reply, f"monitor {command!r}")
        return text.decode("utf-8", "replace")

    # -- private: handshake ---------------------------------------------------

    def _handshake(self) -> None:
        # QEMU stops a running VM when a client connects and says so (T02).
        try:
            payload = self._read_packet(time.monotonic() + ATTACH_DRAIN_S)
        except GdbConnectionLost:
            raise
        except GdbRemoteError:
            payload = None
        if payload is not None:
            if self._is_stop(payload):
                self.was_running_at_attach = True
                self.last_stop = self._parse_stop(payload)
                LOG.info("%s:%d: the stub stopped the running target on attach (%s)",
                         self.host, self.port, self.last_stop.raw)
            else:
                LOG.debug("ignoring unsolicited packet on attach: %r", payload[:40])
        reply = self._command(b"qSupported:multiprocess-;swbreak-;hwbreak-;vContSupported+")
        self.features = self._parse_features(reply)
        size = self.features.get("PacketSize")
        self.packet_size = int(size, 16) if isinstance(size, str) else 0
        if self.features.get("qXfer:features:read"):
            self.target_xml = self._read_xfer("target.xml")
            self.registers = tuple(self._parse_target_xml(self.target_xml))
        if not self.registers:
            self.registers = tuple(RegisterInfo(n, i, 32, "fallback") for n, i in _FALLBACK_REGISTERS)
        self._by_name = {r.name.lower(): r for r in self.registers}
        reply = self._command(b"vCont?")
        if reply.startswith(b"vCont"):
            self.vcont_actions = frozenset(a.decode("latin-1") for a in reply.split(b";")[1:])
        if self.last_stop is None:
            self.halt_reason()

    def _parse_features(self, reply: bytes) -> dict[str, str | bool]:
        features: dict[str, str | bool] = {}
        for item in reply.decode("latin-1").split(";"):
            if not item:
                continue
            if "=" in item:
                key, value = item.split("=", 1)
                features[key] = value
            else:
                features[item[:-1] if item[-1] in "+-?" else item] = item.endswith("+")
        return features

    def _read_xfer(self, annex: str) -> str:
        data = bytearray()
        step = max(256, (self.packet_size or 1024) - 32)
        while True:
            reply = self._command(b"qXfer:features:read:%s:%x,%x" % (annex.encode(), len(data), step))
            if not reply or reply[:1] not in b"lm":
                raise GdbRemoteError(f"reading {annex} failed", address=self.address,
                                     reply=reply[:40].decode("latin-1"))
            data += reply[1:]
            if len(data) > MAX_PACKET_BYTES:
                raise GdbRemoteError(f"{annex} is larger than {MAX_PACKET_BYTES} bytes",
                                     address=self.address)
            if reply[:1] == b"l":
                return data.decode("utf-8", "replace")

    def _parse_target_xml(self, text: str, counter: list[int] | None = None,
                          depth: int = 0) -> list[RegisterInfo]:
        """Registers of a target description; unnumbered ones follow the previous (G.2)."""
        counter = [0] if counter is None else counter
        # QEMU uses the xi: prefix without declaring its namespace.
        text = text.replace("<xi:include", "<xi_include")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            raise GdbRemoteError(f"target description is not XML: {err}",
                                 address=self.address) from None
        regs: list[RegisterInfo] = []
        feature = root.get("name", "") if root.tag == "feature" else ""
        for elem in root.iter():
            if elem.tag in (_XINCLUDE, "xi_include") and depth < 4:
                regs += self._parse_target_xml(self._read_xfer(elem.get("href", "")),
                                               counter, depth + 1)
            elif elem.tag == "feature":
                feature = elem.get("name", "")
            elif elem.tag == "reg":
                regnum = int(elem.get("regnum", counter[0]))
                counter[0] = regnum + 1
                regs.append(RegisterInfo(elem.get("name", f"r{regnum}"), regnum,
                                         int(elem.get("bitsize", "32")), feature))
        return regs

    # -- private: packets -----------------------------------------------------

    def _require_open(self) -> socket.socket:
        if self._sock is None:
            raise GdbRemoteError("not connected", address=self.address)
        return self._sock

    def _lost(self, err: object) -> GdbConnectionLost:
        self.close()
        return GdbConnectionLost(
            f"connection lost ({err})", address=self.address,
            remedy="the board or simulator probably exited; check its log")

    def _command(self, payload: bytes, *, expect_stop: bool = False) -> bytes:
        """Send a packet and return the answer, handling async stop replies."""
        self._drain_async()
        if self._running and not expect_stop:
            raise GdbRemoteError(
                f"target is running; '{payload[:1].decode()}' needs it stopped",
                address=self.address, remedy="stop it first (interrupt() or stopped())")
        for _ in range(2):
            acked = self._send(payload)
            deadline = time.monotonic() + self.timeout_s
            reply = self._read_packet(deadline)
            while self._is_stop(reply) and not expect_stop:
                # The target was running behind our back (someone resumed it):
                # QEMU stopped it on our '$', dropped the packet and said so.
                stop = self._parse_stop(reply)
                self.stats.async_stops += 1
                LOG.info("%s:%d: target was running (resumed outside this client); "
                         "the stub stopped it: %s", self.host, self.port, stop.raw)
                self._note_stop(stop)
                if not acked:
                    break
                reply = self._read_packet(deadline)
            else:
                return reply
            self.stats.resent_after_stop += 1
        raise GdbRemoteError(f"no answer to {payload[:20]!r}", address=self.address)

    def _send(self, payload: bytes) -> bool:
        """Send one packet; True when acknowledged, False when a packet came instead of '+'."""
        sock = self._require_open()
        frame = b"$" + payload + b"#%02x" % (sum(payload) & 0xFF)
        for _attempt in range(MAX_RETRANSMITS):
            try:
                sock.sendall(frame)
            except OSError as err:
                raise self._lost(err) from None
            self.stats.packets_sent += 1
            ack = self._wait_ack(time.monotonic() + self.timeout_s)
            if ack == "+":
                return True
            if ack == "$":
                return False
            self.stats.retransmits += 1
        raise GdbRemoteError(f"the stub rejected {payload[:20]!r} {MAX_RETRANSMITS} times",
                             address=self.address)

    def _wait_ack(self, deadline: float) -> str:
        while True:
            for i, byte in enumerate(self._rx):
                if byte in b"+-":
                    del self._rx[:i + 1]
                    return chr(byte)
                if byte == ord("$"):
                    del self._rx[:i]
                    return "$"
            self.stats.garbage_bytes += len(self._rx)
            self._rx.clear()
            self._fill(deadline, "an acknowledgement")

    def _read_packet(self, deadline: float) -> bytes:
        """The next well-formed packet's payload (acknowledged), garbage skipped."""
        naks = 0
        while True:
            start = self._rx.find(b"$")
            if start < 0:
                self.stats.garbage_bytes += len(self._rx)
                self._rx.clear()
                self._fill(deadline, "a packet")
                continue
            if start:
                self.stats.garbage_bytes += start
                del self._rx[:start]
            end = self._rx.find(b"#")
            if end < 0 or len(self._rx) < end + 3:
                if len(self._rx) > MAX_PACKET_BYTES:
                    raise GdbRemoteError(f"no packet end within {MAX_PACKET_BYTES} bytes",
                                         address=self.address)
                self._fill(deadline, "the rest of a packet")
                continue
            body = bytes(self._rx[1:end])
            checksum = bytes(self._rx[end + 1:end + 3])
            del self._rx[:end + 3]
            try:
                good = int(checksum, 16) == sum(body) & 0xFF
            except ValueError:
                good = False
            if not good:
                naks += 1
                self._ack(b"-")
                if naks >= MAX_RETRANSMITS:
                    raise GdbRemoteError(f"{naks} packets with bad checksums in a row",
                                         address=self.address,
                                         reply=body[:40].decode("latin-1"))
                continue
            self._ack(b"+")
            self.stats.packets_received += 1
            payload = self._decode(body)
            if payload.startswith(b"O") and payload != b"OK" and self._running:
                LOG.debug("console output from stub: %r", payload[1:])
                continue
            return payload

    def _ack(self, byte: bytes) -> None:
        try:
            self._require_open().sendall(byte)
        except OSError as err:
            raise self._lost(err) from None

    def _fill(self, deadline: float, waiting_for: str) -> None:
        sock = self._require_open()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GdbRemoteError(
                f"timed out waiting for {waiting_for}"
                + (f" ({self.stats.garbage_bytes} bytes of garbage so far)"
                   if self.stats.garbage_bytes else ""),
                address=self.address,
                remedy="check that a gdbstub (not another service) listens there")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return  # the caller loops and reports the timeout with its context
        except OSError as err:
            raise self._lost(err) from None
        if not data:
            raise self._lost("closed by the stub")
        self._rx += data

    def _drain_async(self, timeout_s: float = 0.0) -> None:
        """Handle stop replies that arrived while we were not asking (target stopped)."""
        if self._sock is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            if b"$" not in self._rx:
                sock = self._sock
                if sock is None:
                    return
                sock.settimeout(max(0.0, deadline - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, TimeoutError):
                    return
                except OSError as err:
                    raise self._lost(err) from None
                finally:
                    if self._sock is not None:
                        self._sock.settimeout(self.timeout_s)
                if not data:
                    raise self._lost("closed by the stub")
                self._rx += data
                continue
            payload = self._read_packet(time.monotonic() + self.timeout_s)
            if self._is_stop(payload):
                self._note_stop(self._parse_stop(payload))
                if not self._running:
                    return
            else:
                LOG.debug("ignoring unsolicited packet %r", payload[:40])

    @staticmethod
    def _decode(body: bytes) -> bytes:
        """Undo escapes (``}`` xor 0x20) and run-length encoding (RSP E.1)."""
        if b"}" not in body and b"*" not in body:
            return body
        out = bytearray()
        i = 0
        while i < len(body):
            byte = body[i]
            if byte == 0x7D and i + 1 < len(body):
                out.append(body[i + 1] ^ 0x20)
                i += 2
            elif byte == 0x2A and out and i + 1 < len(body):
                out += bytes([out[-1]]) * (body[i + 1] - 29)
                i += 2
            else:
                out.append(byte)
                i += 1
        return bytes(out)

    @staticmethod
    def _is_stop(payload: bytes) -> bool:
        return len(payload) >= 3 and payload[:1] in (b"T", b"S", b"W", b"X") and all(
            c in b"0123456789abcdefABCDEF" for c in payload[1:3])

    def _parse_stop(self, payload: bytes) -> StopReply:
        text = payload.decode("latin-1")
        fields: dict[str, str] = {}
        for item in text[3:].split(";"):
            if ":" in item:
                key, value = item.split(":", 1)
                fields[key] = value
        return StopReply(text[0], int(text[1:3], 16), fields, text)

    def _note_stop(self, stop: StopReply) -> None:
        self._running = False
        self.last_stop = stop
        if stop.ended:
            self.close()
            raise GdbConnectionLost(
                f"the target ended ({stop.raw}: {'exit status' if stop.kind == 'W' else 'signal'} "
                f"{stop.signal})", address=self.address,
                remedy="the simulator or debug server stopped the target; restart it")

    def _raise_if_error(self, reply: bytes, doing: str) -> None:
        if reply[:1] == b"E" and len(reply) == 3:
            raise GdbRemoteError(f"{doing} failed", address=self.address,
                                 reply=reply.decode("latin-1"))

    def _unhex(self, reply: bytes, what: str) -> bytes:
        try:
            return bytes.fromhex(reply.decode("latin-1"))
        except ValueError:
            raise GdbRemoteError(f"'{what}' answer is not hex", address=self.address,
                                 reply=reply[:40].decode("latin-1")) from None
