"""A GDB remote-serial-protocol server over captured crash evidence.

``crashcart gdbserver SOURCE --elf fw.elf --port 3333`` and then, in
gdb-multiarch, ``target remote :3333``: gdb debugs the crash as if the board
were halted in front of it.  Registers come from the evidence, memory from
its captured regions and then from the ELF's read-only segments (code and
constants the device cannot have changed), exactly as
:class:`~collector.evidence.MemoryImage` answers.  Everything else is
refused with ``E14`` and logged, so gdb says "Cannot access memory at
address 0x..." instead of showing invented bytes.

The evidence is read-only: writes (``G``, ``P``, ``M``, ``X``) are refused
with ``E01``; ``c``/``s``/``vCont`` print "crashcart: this is captured
evidence; it cannot run" on gdb's console and stop at once, with SIGTRAP
for ``continue`` and SIGSTOP for ``step`` (a SIGTRAP there would make gdb's
line stepping ask for another step forever, the PC never moving).

Protocol: GDB manual, appendix E "GDB Remote Serial Protocol" (cited "RSP,
section"), target descriptions appendix G.  The engine
(:class:`EvidenceGdbServer`) is transport-free; :func:`serve_tcp` and
:func:`serve_pipe` run it over one TCP client or over stdin/stdout
(``target remote | crashcart gdbserver ... --pipe``).  One client is
served; the server returns when it detaches, kills or disconnects.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import click

from collector.corefile import export_registers, require_matching_build, target_description
from collector.evidence import (
    CORE_REGISTERS,
    FAULT_REGISTERS,
    PF_W,
    CrashEvidence,
)
from crashcart.errors import InputError, TargetError

LOG = logging.getLogger(__name__)

PACKET_SIZE = 0x4000                      # what qSupported advertises (payload bytes)
MAX_READ_BYTES = (PACKET_SIZE - 16) // 2  # an 'm' reply is hex: two characters a byte
MAX_GARBAGE_BYTES = 1 << 16               # an unterminated packet longer than this is dropped
THREAD_ID = 1
CANNOT_RUN = "crashcart: this is captured evidence; it cannot run\n"
# Error numbers in replies are errno values (RSP E.1 "Standard Replies").
E_PERM = b"E01"      # writes to read-only evidence
E_FAULT = b"E14"     # memory not captured
E_INVAL = b"E16"     # malformed request
# gdb's own signal numbers (gdb/signals.def), not the host's.
SIGTRAP, SIGSTOP = 5, 17
# EXC_RETURN values are 0xF0000000 and up (ARMv7-M ARM B1.5.8, ARMv8-M D1.2.95).
EXC_RETURN_BASE = 0xF0000000

# Register numbers: QEMU's for the M-profile core (xpsr 25, so 'g' holds
# r0-r15 and xpsr in 68 bytes), the numbers ST-Link/QEMU stubs use for the
# m-system feature, then crashcart's own feature for the fault registers.
_M_PROFILE = "org.gnu.gdb.arm.m-profile"
_M_SYSTEM = "org.gnu.gdb.arm.m-system"
_FAULT_FEATURE = "org.crashcart.arm.m-fault"
_REGNUMS: dict[str, tuple[int, str]] = {
    **{name: (i, _M_PROFILE) for i, name in enumerate(CORE_REGISTERS[:-1])},
    "xpsr": (25, _M_PROFILE),
    "msp": (26, _M_SYSTEM), "psp": (27, _M_SYSTEM), "primask": (28, _M_SYSTEM),
    "basepri": (29, _M_SYSTEM), "faultmask": (30, _M_SYSTEM), "control": (31, _M_SYSTEM),
    **{name: (32 + i, _FAULT_FEATURE) for i, name in enumerate(FAULT_REGISTERS + ("exc_return",))},
}


class Channel(Protocol):
    """A byte stream to one gdb: ``recv`` returns b"" at end of stream."""

    def recv(self) -> bytes: ...

    def send(self, data: bytes) -> None: ...


@dataclass
class ServerStats:
    packets: int = 0
    bad_checksums: int = 0
    garbage_bytes: int = 0
    retransmits: int = 0
    missing_reads: list[tuple[int, int]] = field(default_factory=list)  # (address, length)


class EvidenceGdbServer:
    """The protocol engine for one piece of evidence; construction does no I/O.

    :meth:`serve` runs one client session over a :class:`Channel` and says
    how it ended: ``"detach"``, ``"kill"`` or ``"disconnect"``.
    """

    def __init__(self, evidence: CrashEvidence) -> None:
        self.evidence = evidence
        self.stats = ServerStats()
        regs = export_registers(evidence)
        self._known = {name: regs[name] & 0xFFFFFFFF for name in _REGNUMS if name in regs}
        extra = sorted((num, name, feature) for name, (num, feature) in _REGNUMS.items()
                       if name in self._known and feature != _M_PROFILE)
        self.target_xml = target_description(tuple((n, num, f) for num, n, f in extra)).encode()
        # Register order in 'g': by number (RSP E.4 "g"; gdb sorts by regnum).
        self._g_order = [name for name, _ in sorted(
            ((n, num) for n, (num, f) in _REGNUMS.items()
             if f == _M_PROFILE or n in self._known), key=lambda item: item[1])]
        self._by_regnum = {_REGNUMS[name][0]: name for name in self._g_order}
        self._ack = True
        self._last_reply = b""
        self._warned: set[int] = set()

    # -- public ----------------------------------------------------------------

    def serve(self, channel: Channel) -> str:
        """Answer packets until gdb detaches, kills or goes away."""
        buffer = bytearray()
        self._ack = True
        while True:
            data = channel.recv()
            if not data:
                LOG.info("gdb disconnected")
                return "disconnect"
            buffer += data
            while buffer:
                ended = self._consume(buffer, channel)
                if ended == "more":
                    break
                if ended is not None:
                    return ended

    def handle(self, payload: bytes) -> tuple[list[bytes], str | None]:
        """Replies to one packet payload, and "detach"/"kill" when the session ends."""
        try:
            return self._dispatch(payload)
        except (ValueError, IndexError):
            LOG.warning("malformed packet %r", payload[:60])
            return [E_INVAL], None

    # -- private: framing (RSP E.1 "Overview", E.11 "Packet Acknowledgment") -------

    def _consume(self, buffer: bytearray, channel: Channel) -> str | None:
        """Handle what starts ``buffer``; "more" when a packet is incomplete."""
        first = buffer[0]
        if first == ord("+"):
            del buffer[:1]
            return None
        if first == ord("-"):
            del buffer[:1]
            if self._ack and self._last_reply:
                self.stats.retransmits += 1
                channel.send(self._last_reply)
            return None
        if first == 0x03:
            # Interrupt (RSP E.8): the "target" never runs, there is nothing to stop.
            del buffer[:1]
            LOG.debug("ignoring an interrupt: the evidence is always stopped")
            return None
        if first != ord("$"):
            skip = buffer.find(b"$")
            skip = len(buffer) if skip < 0 else skip
            self.stats.garbage_bytes += skip
            LOG.debug("skipping %d bytes outside packets: %r", skip, bytes(buffer[:skip])[:40])
            del buffer[:skip]
            return None
        end = buffer.find(b"#")
        if end < 0 or len(buffer) < end + 3:
            if len(buffer) > MAX_GARBAGE_BYTES:
                LOG.warning("dropping %d bytes: a packet without an end", len(buffer))
                self.stats.garbage_bytes += len(buffer)
                buffer.clear()
                self._nak(channel)
            return "more"
        body = bytes(buffer[1:end])
        checksum = bytes(buffer[end + 1:end + 3])
        del buffer[:end + 3]
        try:
            good = int(checksum, 16) == sum(body) & 0xFF
        except ValueError:
            good = False
        if not good:
            self.stats.bad_checksums += 1
            LOG.warning("packet with a bad checksum %r: %r", checksum, body[:60])
            self._nak(channel)
            return None
        if self._ack:
            channel.send(b"+")
        self.stats.packets += 1
        replies, ended = self.handle(body)
        for reply in replies:
            frame = _frame(reply)
            self._last_reply = frame
            channel.send(frame)
        if body == b"QStartNoAckMode":
            self._ack = False  # from the packet after the OK (RSP E.11)
        return ended

    def _nak(self, channel: Channel) -> None:
        if self._ack:
            channel.send(b"-")

    # -- private: packets ------------------------------------------------------------

    def _dispatch(self, p: bytes) -> tuple[list[bytes], str | None]:
        head = p[:1]
        if p == b"?":
            return [self._stop_reply(SIGTRAP)], None
        if p == b"g":
            return [b"".join(self._register_hex(name) for name in self._g_order)], None
        if head == b"p":
            name = self._by_regnum.get(int(p[1:], 16))
            return [E_INVAL if name is None else self._register_hex(name)], None
        if head == b"m":
            address, length = (int(x, 16) for x in p[1:].split(b","))
            return [self._memory(address, length)], None
        if head in (b"G", b"P", b"M", b"X") or p.startswith((b"Z", b"z")):
            LOG.info("refused %r: the evidence is read-only", p[:1].decode())
            return [E_PERM], None
        if head in (b"c", b"C", b"s", b"S") or (p.startswith(b"vCont;")):
            stepping = head in (b"s", b"S") or b";s" in p or b";S" in p or b";r" in p
            return [b"O" + CANNOT_RUN.encode().hex().encode(),
                    self._stop_reply(SIGSTOP if stepping else SIGTRAP)], None
        if p == b"vCont?":
            return [b"vCont;c;C;s;S"], None
        if head == b"D":
            return [b"OK"], "detach"
        if p == b"k":
            return [], "kill"
        if p.startswith(b"vKill"):
            return [b"OK"], "kill"
        if head == b"H":
            return [b"OK" if self._is_our_thread(p[2:], any_ok=True) else b"E02"], None
        if head == b"T":
            return [b"OK" if self._is_our_thread(p[1:], any_ok=False) else b"E02"], None
        if p.startswith((b"q", b"Q")):
            return [self._query(p)], None
        # Unsupported: an empty reply (RSP E.1), e.g. vMustReplyEmpty, '!', vRun.
        LOG.debug("unsupported packet %r", p[:40])
        return [b""], None

    def _query(self, p: bytes) -> bytes:
        if p.startswith(b"qSupported"):
            return (b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+;vContSupported+"
                    % PACKET_SIZE)
        if p == b"QStartNoAckMode":
            return b"OK"
        if p.startswith(b"qXfer:features:read:"):
            annex, _, span = p[len(b"qXfer:features:read:"):].partition(b":")
            offset, length = (int(x, 16) for x in span.split(b","))
            if annex != b"target.xml":
                return b"E00"
            chunk = self.target_xml[offset:offset + min(length, PACKET_SIZE - 16)]
            more = offset + len(chunk) < len(self.target_xml)
            return (b"m" if more else b"l") + chunk
        if p.startswith(b"qAttached"):
            return b"1"  # "attached to an existing process": quitting gdb detaches
        if p == b"qC":
            return b"QC%x" % THREAD_ID
        if p == b"qfThreadInfo":
            return b"m%x" % THREAD_ID
        if p == b"qsThreadInfo":
            return b"l"
        if p.startswith(b"qThreadExtraInfo,"):
            return self._describe().encode().hex().encode()
        if p.startswith(b"qSymbol"):
            return b"OK"
        if p.startswith(b"qRcmd,"):
            return self._monitor(bytes.fromhex(p[6:].decode()).decode("utf-8", "replace"))
        return b""  # qOffsets, qTStatus, qL, ...: unsupported

    def _monitor(self, command: str) -> bytes:
        words = command.split()
        if words == ["info"]:
            return self._monitor_text(self._info_text())
        if words in ([], ["help"]):
            return self._monitor_text("monitor info: where this evidence came from, its "
                                      "registers and captured memory\n")
        return self._monitor_text(f"crashcart: unknown monitor command {command!r}; "
                                  "try 'monitor help'\n")

    @staticmethod
    def _monitor_text(text: str) -> bytes:
        # qRcmd output goes back hex-encoded without the 'O' prefix when it is
        # the whole reply (RSP E.4 "qRcmd"); gdb prints it.
        return text.encode().hex().encode()

    def _info_text(self) -> str:
        ev = self.evidence
        lines = [f"evidence: {ev.source} from {ev.origin} ({ev.arch}, registers at {ev.registers_at})"]
        if ev.fault_name:
            lines.append(f"fault: {ev.fault_name}")
        if ev.firmware_version or ev.build_id:
            lines.append(f"firmware: {ev.firmware_version or '?'} build-id {ev.build_id or '?'}")
        lines.append("registers: " + ", ".join(self._known))
        missing = [n for n in CORE_REGISTERS if n not in self._known]
        if missing:
            lines.append("not in the evidence (gdb shows <unavailable>): " + ", ".join(missing))
        lines.append("memory: " + (ev.memory.describe() or "nothing captured"))
        if ev.memory.elf is not None:
            lines.append(f"read-only memory from {ev.memory.elf.path.name}")
        for note in ev.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines) + "\n"

    def _describe(self) -> str:
        ev = self.evidence
        what = ev.fault_name or "crash"
        return f"crashcart {ev.source}: {what}" + (
            f", firmware {ev.firmware_version}" if ev.firmware_version else "")

    def _stop_reply(self, signal: int) -> bytes:
        return b"T%02xthread:%x;" % (signal, THREAD_ID)

    def _is_our_thread(self, text: bytes, *, any_ok: bool) -> bool:
        value = int(text, 16) if text not in (b"-1", b"") else -1
        return value == THREAD_ID or (any_ok and value in (0, -1))

    def _register_hex(self, name: str) -> bytes:
        value = self._known.get(name)
        if value is None:
            return b"xxxxxxxx"  # unavailable (RSP E.4 "g")
        return value.to_bytes(4, "little").hex().encode()

    def _memory(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        length = min(length, MAX_READ_BYTES, (1 << 32) - address)
        if length <= 0:
            return E_FAULT
        data = readable_prefix(self.evidence, address, length)
        if not data:
            self.stats.missing_reads.append((address, length))
            if address >= EXC_RETURN_BASE:
                # gdb reads "code" at an EXC_RETURN value when it meets one as a
                # return address (ARMv7-M ARM B1.5.8): nothing is there to capture.
                LOG.debug("gdb read 0x%08x (%d bytes): an EXC_RETURN value, not memory",
                          address, length)
            elif address not in self._warned:
                self._warned.add(address)
                LOG.warning("gdb read 0x%08x (%d bytes): not captured (captured: %s)",
                            address, length, self.evidence.memory.describe() or "nothing")
            return E_FAULT
        if len(data) < length:
            LOG.debug("read at 0x%08x: %d of %d bytes captured", address, len(data), length)
        return data.hex().encode()


def readable_prefix(evidence: CrashEvidence, address: int, length: int) -> bytes:
    """The longest start of ``address..address+length`` the evidence's memory has.

    Reads cross region boundaries (captured RAM next to ELF constants, two
    adjacent captures); each piece is read through ``MemoryImage.try_read``
    so the region that answers is the one crashcart itself would use.
    """
    memory = evidence.memory
    whole = memory.try_read(address, length)
    if whole is not None:
        return whole
    spans = [(r.start, r.end) for r in memory.regions]
    if memory.elf is not None:
        spans += [(s.vaddr, s.vaddr + s.file_size) for s in memory.elf.load_segments
                  if not s.flags & PF_W]
    out = bytearray()
    pos, end = address, address + length
    while pos < end:
        reach = max((hi for lo, hi in spans if lo <= pos < hi), default=None)
        if reach is None:
            break
        piece = memory.try_read(pos, min(reach, end) - pos)
        if piece is None:
            break
        out += piece
        pos += len(piece)
    return bytes(out)


def _frame(payload: bytes) -> bytes:
    """``$payload#checksum`` with ``# $ } *`` escaped (RSP E.1)."""
    escaped = bytearray()
    for byte in payload:
        if byte in b"#$}*":
            escaped += bytes([0x7D, byte ^ 0x20])
        else:
            escaped.append(byte)
    return b"$" + bytes(escaped) + b"#%02x" % (sum(escaped) & 0xFF)


# -- transports ----------------------------------------------------------------------


class SocketChannel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            LOG.info("gdb went away while the server was answering")


class FdChannel:
    """Raw file descriptors (stdin/stdout for ``target remote | ...``)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    def recv(self) -> bytes:
        try:
            return os.read(self.read_fd, 65536)
        except OSError:
            return b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.write_fd, view):]
        except (BrokenPipeError, OSError):
            LOG.info("gdb went away while the server was answering")


def serve_tcp(server: EvidenceGdbServer, host: str = "127.0.0.1", port: int = 0, *,
              on_listening: Callable[[str, int], None] | None = None) -> str:
    """Listen on ``host:port`` (0: a free port), serve the first gdb that connects.

    ``on_listening(host, port)`` is called once the socket listens (before
    waiting for gdb).  Returns how the session ended.
    """
    try:
        listener = socket.create_server((host, port))
    except OSError as exc:
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          remedy="pick another --port (0 picks a free one)") from None
    with listener:
        bound_host, bound_port = listener.getsockname()[:2]
        LOG.info("listening on %s:%d", bound_host, bound_port)
        if on_listening is not None:
            on_listening(bound_host, bound_port)
        conn, peer = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        LOG.info("gdb connected from %s:%d", peer[0], peer[1])
        return server.serve(SocketChannel(conn))


def serve_pipe(server: EvidenceGdbServer, read_fd: int = 0, write_fd: int = 1) -> str:
    """Serve gdb over two file descriptors (stdin/stdout by default)."""
    return server.serve(FdChannel(read_fd, write_fd))


# -- command line ----------------------------------------------------------------------


def pick_crash(crashes: list[CrashEvidence], number: int | None, source: Path) -> CrashEvidence:
    """The ``number``-th (1-based) crash; the only one when ``number`` is None."""
    if not crashes:
        raise InputError("no crash found", path=source,
                         remedy="pass a bundle, console log or dump that holds a crash")
    listing = "; ".join(f"{i}: {c.fault_name or 'crash'} ({c.source})"
                        for i, c in enumerate(crashes, 1))
    if number is None:
        if len(crashes) > 1:
            raise InputError(f"{len(crashes)} crashes found", path=source,
                             remedy=f"pick one with --crash N ({listing})")
        return crashes[0]
    if not 1 <= number <= len(crashes):
        raise InputError(f"there is no crash {number}", path=source, field="--crash",
                         remedy=f"choose 1..{len(crashes)} ({listing})")
    return crashes[number - 1]


@click.command("gdbserver")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--elf", "elf_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The firmware ELF of the build that crashed.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port to serve one gdb on (0: pick a free one and print it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on with --port.")
@click.option("--pipe", is_flag=True,
              help="Serve over stdin/stdout: in gdb, target remote | crashcart gdbserver ... --pipe")
@click.option("--crash", "crash_number", type=click.IntRange(1, None), default=None,
              help="Which crash of SOURCE (1 = first); needed when it holds several.")
@click.option("--target", "target_name", metavar="NAME|FILE", default=None,
              help="Target description, for console logs with the target's own crash markers.")
def gdbserver_command(source: Path, elf_path: Path, port: int | None, host: str, pipe: bool,
                      crash_number: int | None, target_name: str | None) -> None:
    """Serve the crash in SOURCE to gdb as a halted target (read-only).

    \b
    crashcart gdbserver bundle/ --elf fw.elf --port 3333
    gdb-multiarch fw.elf -ex 'target remote :3333'
    gdb-multiarch fw.elf -ex 'target remote | crashcart gdbserver bundle/ --elf fw.elf --pipe'

    Registers come from the evidence, memory from what was captured and the
    ELF's read-only sections; gdb gets "Cannot access memory" for anything
    else.  The server ends when gdb detaches or disconnects.
    """
    if pipe == (port is not None):
        raise InputError("give exactly one of --port N and --pipe",
                         remedy="--port 0 picks a free port; --pipe is for gdb's "
                                "'target remote | ...'")
    from collector.elf import ElfImage
    from collector.sources import load_evidence

    target = None
    if target_name is not None:
        from targets import load_target

        target = load_target(target_name)
    image = ElfImage(elf_path)
    evidence = pick_crash(load_evidence(source, image, target), crash_number, source)
    require_matching_build(evidence, image)
    server = EvidenceGdbServer(evidence)
    if pipe:
        ended = serve_pipe(server)
    else:
        def announce(bound_host: str, bound_port: int) -> None:
            click.echo(f"crashcart gdbserver: listening on {bound_host}:{bound_port}; "
                       f"in gdb: target remote {bound_host}:{bound_port}")
            sys.stdout.flush()

        ended = serve_tcp(server, host, port or 0, on_listening=announce)
    missing = server.stats.missing_reads
    click.echo(f"crashcart gdbserver: gdb {'detached' if ended == 'detach' else ended}"
               + (f"; {len(missing)} read(s) of memory that was not captured" if missing else ""),
               err=True)
