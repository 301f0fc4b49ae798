"""Zephyr coredumps (Cortex-M): the ``#CD:`` log lines, the binary dump, and a writer.

The logging backend (``subsys/debug/coredump/coredump_backend_logging.c``)
prints ``#CD:BEGIN#``, then each buffer the core hands it as lines of at most
64 hex digits (32 bytes; a new line starts with every buffer), then
``#CD:END#``; when the backend failed it prints ``#CD:ERROR CANNOT DUMP#``
before the end.  Each line may carry a log prefix; the host script
``scripts/coredump/coredump_serial_log_parser.py`` takes the text after the
``#CD:`` it finds anywhere in a line, and so does :func:`find_streams`.

The binary dump (``include/zephyr/debug/coredump.h``, all little-endian,
packed):

* file header ``struct coredump_hdr_t`` (12 bytes): ``'Z' 'E'``,
  ``uint16 hdr_version`` (1 or 2; Zephyr's parser accepts up to
  ``COREDUMP_HDR_VER`` = 2), ``uint16 tgt_code`` (3 = ``COREDUMP_TGT_ARM_CORTEX_M``),
  ``uint8 ptr_size_bits`` (log2 of the pointer width: 5), ``uint8 flag``,
  ``uint32 reason`` (``enum k_fatal_error_reason``);
* arch block ``'A'``: ``struct coredump_arch_hdr_t`` (``char id, uint16
  hdr_version, uint16 num_bytes``) and ``num_bytes`` of registers laid out by
  ``arch/arm/core/cortex_m/coredump.c``: version 1 r0 r1 r2 r3 r12 lr pc xpsr
  sp (36 bytes); version 2 adds r4-r11 (68 bytes); version 3 adds
  ``callee_saved_valid`` and ``callee_saved_offset`` (76 bytes).  The
  registers are the exception frame's (pc/lr of the interrupted code); sp is
  the interrupted code's SP (``z_arm_set_fault_sp()`` adds the frame size;
  older releases stored the frame address, which :func:`to_evidence` detects
  from the dumped stack);
* threads metadata ``'T'``: same header, ``num_bytes`` of the kernel's
  ``_kernel`` struct (layout from the ELF's DWARF; kept raw here);
* memory ``'M'``: ``char id, uint16 hdr_version`` (1), ``uintptr start,
  uintptr end`` and ``end - start`` bytes;
* newer headers also define ``'C'`` (``uint32`` CRC-32/IEEE of everything
  before it, flagged by ``flag`` bit 0) and ``'F'`` (per-CPU register
  snapshot: ``uint16 num_bytes, uint32 cpu_id, uintptr thread``); both are
  read, neither is written (Zephyr's v4.x parser rejects unknown blocks).

:func:`write_zephyr_coredump` and :func:`to_cd_log` produce what Zephyr's
``coredump_serial_log_parser.py`` and ``coredump_gdbserver.py`` accept: header
version 2, arch block version 1 or 2, memory blocks.
"""

from __future__ import annotations

import binascii
import logging
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from collector.evidence import CrashEvidence, MemoryImage
from collector.formats import _zephyr
from collector.formats._common import context_window, split_lines
from crashcart.errors import CrashcartError, InputError

LOG = logging.getLogger(__name__)

FORMAT = "zephyr-coredump"
FORMAT_BINARY = "zephyr-coredump-bin"

PREFIX = "#CD:"
BEGIN = PREFIX + "BEGIN#"
END = PREFIX + "END#"
ERROR = PREFIX + "ERROR CANNOT DUMP#"
LINE_BYTES = 32  # coredump_backend_logging.c LOG_BUF_SZ 64 hex digits

HDR_ID = b"ZE"
HDR_VERSIONS = (1, 2)
HDR = struct.Struct("<2sHHBBI")
TGT_ARM_CORTEX_M = 3
TARGET_CODES = {0: "unknown", 1: "x86", 2: "x86_64", 3: "ARM Cortex-M", 4: "RISC-V",
                5: "Xtensa", 6: "ARM64"}
PTR_SIZE_BITS = 5  # 2**5 = 32-bit pointers
FLAG_CRC = 0x01
ARCH_HDR = struct.Struct("<cHH")
MEM_HDR = struct.Struct("<cH")
MEM_VERSION = 1
MEM_RANGE = struct.Struct("<II")
CRC_BLOCK = struct.Struct("<cHI")
CPU_SNAPSHOT_HDR = struct.Struct("<cHHII")
ARCH_LAYOUTS = {
    1: ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr", "sp"),
    2: ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr", "sp",
        "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11"),
    3: ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr", "sp",
        "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11",
        "callee_saved_valid", "callee_saved_offset"),
}
_FRAME = ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr")


@dataclass(frozen=True)
class MemoryBlock:
    start: int
    data: bytes
    offset: int  # of the block header in the dump

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class Coredump:
    """A decoded binary dump (possibly a partial one, see ``problem``)."""

    hdr_version: int
    target_code: int
    pointer_bits: int
    flag: int
    reason: int
    size: int
    arch_version: int | None = None
    registers: dict[str, int] = field(default_factory=dict)
    callee_saved_offset: int | None = None
    memory: list[MemoryBlock] = field(default_factory=list)
    threads_metadata: bytes | None = None
    threads_metadata_version: int | None = None
    crc: int | None = None
    crc_ok: bool | None = None
    cpu_snapshots: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # set when the dump ends early (partial_ok)

    def summary(self) -> str:
        parts = ["header"]
        if self.arch_version is not None:
            parts.append(f"arch block v{self.arch_version}")
        if self.threads_metadata is not None:
            parts.append("threads metadata")
        total = sum(len(b.data) for b in self.memory)
        parts.append(f"{len(self.memory)} memory block(s) ({total} bytes of memory)")
        return ", ".join(parts)


@dataclass
class Stream:
    """One ``#CD:BEGIN#`` ... ``#CD:END#`` run of a console log."""

    begin_line: int            # 0-based index of the BEGIN line (or the first data line)
    last_line: int
    data: bytearray = field(default_factory=bytearray)
    data_lines: int = 0
    ended: bool = False
    device_error: bool = False
    problem: InputError | None = None


# -- reading ----------------------------------------------------------------------


_CD_LINE = re.compile(r"#CD:(?:BEGIN#|END#|ERROR CANNOT DUMP#|[0-9a-fA-F]{8,64}\s*$)", re.MULTILINE)


def looks_like_log(text: str) -> bool:
    """True when ``text`` has coredump log lines (a BEGIN/END marker or hex data)."""
    return _CD_LINE.search(text) is not None


def looks_like_binary(data: bytes) -> bool:
    if len(data) < HDR.size or data[:2] != HDR_ID:
        return False
    _, version, target, bits, _, _ = HDR.unpack_from(data)
    return version in HDR_VERSIONS and target in TARGET_CODES and bits in (5, 6)


def find_streams(lines: list[str]) -> list[Stream]:
    """Every coredump in a console log, in order; problems are recorded, not raised."""
    streams: list[Stream] = []
    current: Stream | None = None
    for number, line in enumerate(lines):
        at = line.find(PREFIX)
        if at < 0:
            continue
        body = line[at + len(PREFIX):].strip()
        if body == "BEGIN#":
            if current is not None and current.problem is None and not current.ended:
                current.problem = _stream_error(current, "a new '#CD:BEGIN#' starts before "
                                                f"'#CD:END#' (line {number + 1})")
            current = Stream(begin_line=number, last_line=number)
            streams.append(current)
            continue
        if current is None or current.ended:
            current = Stream(begin_line=number, last_line=number)
            current.problem = InputError(
                "coredump data without '#CD:BEGIN#' before it: the start of the dump was lost",
                path=None, line=number + 1, field="#CD", value=body[:40],
                remedy="capture the console from before the crash, so the dump starts "
                       "with '#CD:BEGIN#'")
            streams.append(current)
        current.last_line = number
        if current.problem is not None:
            if body == "END#":
                current.ended = True
            continue
        if body == "END#":
            current.ended = True
            continue
        if body == "ERROR CANNOT DUMP#":
            current.device_error = True
            continue
        try:
            chunk = binascii.unhexlify(body)
        except (binascii.Error, ValueError):
            current.problem = InputError(
                f"coredump line is not hex ({len(body)} characters) after "
                f"{len(current.data)} bytes from {current.data_lines} line(s)",
                line=number + 1, field="#CD", value=body[:80],
                remedy="the line was garbled or cut in transit; re-capture the console, or "
                       "pass --partial (crashcart decode) or partial_ok=True to decode the bytes before it")
            continue
        current.data += chunk
        current.data_lines += 1
    for stream in streams:
        if stream.problem is None and not stream.ended:
            stream.problem = _stream_error(
                stream, "no '#CD:END#': the log was cut off")
    return streams


def _stream_error(stream: Stream, what: str) -> InputError:
    return InputError(
        f"coredump starting at line {stream.begin_line + 1}: {what} after "
        f"{len(stream.data)} bytes from {stream.data_lines} line(s)",
        line=stream.last_line + 1, field="#CD",
        remedy="capture until '#CD:END#' (the device prints it when the dump is complete), "
               "or pass --partial (crashcart decode) or partial_ok=True to decode what is there")


def decode_coredump(data: bytes, origin: str = "<bytes>", *, partial_ok: bool = False,
                    first_line: int | None = None) -> Coredump:
    """Decode a binary Zephyr coredump.  Bad headers raise; a short dump raises unless
    ``partial_ok`` (then ``problem`` says where it stops)."""
    where = f" (the dump starts at line {first_line})" if first_line else ""
    if len(data) < HDR.size:
        raise InputError(
            f"a Zephyr coredump starts with a {HDR.size}-byte header; only {len(data)} "
            f"byte(s) are there{where}",
            path=origin, field="coredump_hdr_t", value=data.hex(),
            remedy="the dump was cut off right after it started; re-capture it")
    ident, version, target, bits, flag, reason = HDR.unpack_from(data)
    if ident != HDR_ID:
        raise InputError(
            f"not a Zephyr coredump: the header starts with {ident!r} at offset 0, "
            f"expected b'ZE'{where}",
            path=origin, field="coredump_hdr_t.id", value=ident.hex(),
            remedy="pass the bytes between '#CD:BEGIN#' and '#CD:END#' (or the output of "
                   "coredump_serial_log_parser.py), not another file")
    if version not in HDR_VERSIONS:
        raise InputError(
            f"unknown Zephyr coredump header version {version} at offset 2 "
            f"(known: {', '.join(map(str, HDR_VERSIONS))}){where}",
            path=origin, field="coredump_hdr_t.hdr_version", value=version,
            remedy="the dump is newer than crashcart knows or damaged; check it with "
                   "Zephyr's scripts/coredump/coredump_gdbserver.py")
    if target != TGT_ARM_CORTEX_M:
        raise InputError(
            f"this coredump is for target code {target} "
            f"({TARGET_CODES.get(target, 'unknown')}), not ARM Cortex-M (3){where}",
            path=origin, field="coredump_hdr_t.tgt_code", value=target,
            remedy="crashcart decodes Cortex-M dumps only; use Zephyr's "
                   "coredump_gdbserver.py for other architectures")
    if bits != PTR_SIZE_BITS:
        raise InputError(
            f"pointer size 2**{bits} bits at offset 6; Cortex-M dumps use 32-bit pointers "
            f"(ptr_size_bits 5){where}",
            path=origin, field="coredump_hdr_t.ptr_size_bits", value=bits,
            remedy="the header is damaged; re-capture the dump")
    dump = Coredump(version, target, bits, flag, reason, len(data))
    offset = HDR.size
    try:
        while offset < len(data):
            offset = _block(dump, data, offset, origin, where)
            if dump.crc is not None:
                break
        if flag & FLAG_CRC and dump.crc is None:
            raise _Short(offset, "the header announces a CRC-32 trailer ('C' block) that is "
                         "missing")
    except _Short as short:
        text = (f"the Zephyr coredump is cut off at offset {short.offset} of {len(data)} "
                f"bytes: {short.what}; decoded so far: {dump.summary()}{where}")
        if not partial_ok:
            raise InputError(
                text, path=origin, field="coredump", value=len(data),
                remedy="capture the whole dump (up to '#CD:END#'), or pass --partial (crashcart decode) or partial_ok=True to "
                       "keep the registers and memory decoded so far") from None
        dump.problem = text
    return dump


class _Short(Exception):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset = offset
        self.what = what


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise _Short(offset, f"{what} needs {size} bytes, {len(data) - offset} left")


def _block(dump: Coredump, data: bytes, offset: int, origin: str, where: str) -> int:
    ident = data[offset:offset + 1]
    if ident in (b"A", b"T"):
        name = "arch block" if ident == b"A" else "threads metadata block"
        _need(data, offset, ARCH_HDR.size, f"the {name} header")
        _, version, size = ARCH_HDR.unpack_from(data, offset)
        body = offset + ARCH_HDR.size
        _need(data, body, size, f"the {name} (version {version}, {size} bytes)")
        payload = data[body:body + size]
        if ident == b"T":
            dump.threads_metadata = payload
            dump.threads_metadata_version = version
        else:
            _arch(dump, version, payload, offset, origin, where)
        return body + size
    if ident == b"M":
        index = len(dump.memory) + 1
        _need(data, offset, MEM_HDR.size + MEM_RANGE.size, f"memory block #{index}'s header")
        _, version = MEM_HDR.unpack_from(data, offset)
        if version != MEM_VERSION:
            raise InputError(
                f"memory block #{index} at offset {offset} has version {version}, "
                f"expected {MEM_VERSION}{where}",
                path=origin, field=f"memory[{index}].hdr_version", value=version,
                remedy="the dump is damaged or from an unknown Zephyr; re-capture it")
        start, end = MEM_RANGE.unpack_from(data, offset + MEM_HDR.size)
        if end < start:
            raise InputError(
                f"memory block #{index} at offset {offset} ends (0x{end:08x}) before it "
                f"starts (0x{start:08x}){where}",
                path=origin, field=f"memory[{index}].end", value=hex(end),
                remedy="the dump is damaged; re-capture it")
        body = offset + MEM_HDR.size + MEM_RANGE.size
        _need(data, body, end - start,
              f"memory block #{index} (0x{start:08x}..0x{end:08x}, {end - start} bytes)")
        dump.memory.append(MemoryBlock(start, data[body:body + end - start], offset))
        return body + end - start
    if ident == b"C":
        _need(data, offset, CRC_BLOCK.size, "the CRC-32 trailer")
        _, _version, crc = CRC_BLOCK.unpack_from(data, offset)
        dump.crc = crc
        dump.crc_ok = zlib.crc32(data[:offset]) == crc
        return offset + CRC_BLOCK.size
    if ident == b"F":
        _need(data, offset, CPU_SNAPSHOT_HDR.size, "a CPU snapshot header")
        _, version, size, cpu, thread = CPU_SNAPSHOT_HDR.unpack_from(data, offset)
        body = offset + CPU_SNAPSHOT_HDR.size
        _need(data, body, size, f"the CPU {cpu} snapshot ({size} bytes)")
        dump.cpu_snapshots.append({"cpu": cpu, "thread": thread, "version": version,
                                   "data": data[body:body + size]})
        return body + size
    raise InputError(
        f"unknown block id {ident!r} at offset {offset} of {len(data)} bytes; "
        f"decoded so far: {dump.summary()}{where}",
        path=origin, field="block id", value=ident.hex(),
        remedy="the dump is damaged (or the log lost a line in the middle); re-capture it")


def _arch(dump: Coredump, version: int, payload: bytes, offset: int, origin: str,
          where: str) -> None:
    layout = ARCH_LAYOUTS.get(version)
    if layout is None:
        raise InputError(
            f"unknown Cortex-M arch block version {version} at offset {offset} "
            f"(known: 1, 2, 3){where}",
            path=origin, field="arch.hdr_version", value=version,
            remedy="the dump is newer than crashcart knows or damaged")
    if len(payload) != 4 * len(layout):
        raise InputError(
            f"Cortex-M arch block version {version} at offset {offset} has "
            f"{len(payload)} bytes, expected {4 * len(layout)}{where}",
            path=origin, field="arch.num_bytes", value=len(payload),
            remedy="the dump is damaged; re-capture it")
    if dump.arch_version is not None:
        raise InputError(f"a second arch block at offset {offset}{where}", path=origin,
                         field="arch", remedy="the dump is damaged; re-capture it")
    values = dict(zip(layout, struct.unpack(f"<{len(layout)}I", payload), strict=True))
    dump.arch_version = version
    if version == 3:
        valid = values.pop("callee_saved_valid")
        callee_offset = values.pop("callee_saved_offset")
        if valid:
            dump.callee_saved_offset = callee_offset
        else:  # coredump.c leaves r4-r11 zero when it had no callee-saved registers
            for name in ("r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11"):
                values.pop(name)
    dump.registers = values


def to_evidence(dump: Coredump, origin: str) -> CrashEvidence:
    """The crash a decoded dump describes."""
    memory = MemoryImage()
    for index, block in enumerate(dump.memory, start=1):
        memory.add(block.start, block.data, f"coredump-memory-{index}")
    registers = dict(dump.registers)
    notes: list[str] = []
    if dump.problem:
        notes.append(dump.problem)
    if not registers:
        notes.append("the dump has no arch block: Zephyr dumped without an exception frame")
    elif "sp" in registers:
        _fix_sp(registers, memory, notes)
    extra: dict[str, Any] = {
        "zephyr_reason": dump.reason,
        "zephyr_reason_name": _zephyr.reason_name(dump.reason),
        "coredump": {"hdr_version": dump.hdr_version, "arch_version": dump.arch_version,
                     "memory_blocks": len(dump.memory), "bytes": dump.size,
                     "complete": dump.problem is None},
    }
    if dump.callee_saved_offset is not None:
        extra["callee_saved_offset"] = dump.callee_saved_offset
    if dump.threads_metadata is not None:
        extra["threads_metadata"] = dump.threads_metadata
        notes.append(f"threads metadata block ({len(dump.threads_metadata)} bytes of _kernel) "
                     "kept raw: its layout comes from the firmware's DWARF")
    if dump.crc is not None:
        extra["crc_ok"] = dump.crc_ok
        if not dump.crc_ok:
            notes.append("the dump's CRC-32 trailer does not match its contents: "
                         "some bytes were damaged in transit")
    if dump.cpu_snapshots:
        extra["cpu_snapshots"] = dump.cpu_snapshots
    return CrashEvidence(
        source=FORMAT, origin=origin, arch="armv7-m", registers=registers,
        registers_at="stacked", memory=memory, fault_name=_zephyr.reason_fault(dump.reason),
        notes=notes, extra=extra)


def _fix_sp(registers: dict[str, int], memory: MemoryImage, notes: list[str]) -> None:
    """Make ``sp`` the interrupted code's SP whatever Zephyr release wrote the dump.

    Current Zephyr stores the SP after the exception frame (``z_arm_set_fault_sp``);
    older releases stored the frame's own address.  When the dumped stack holds
    the frame (r0-r3, r12, lr, pc) right at ``sp``, the dump is of the older kind.
    """
    sp = registers["sp"]
    raw = memory.try_read(sp, 28)
    if raw is None:
        return
    words = struct.unpack("<7I", raw)
    if all(registers.get(n) == w for n, w in zip(_FRAME[:7], words, strict=True)):
        size = 32 + (4 if registers.get("xpsr", 0) & 0x200 else 0)
        registers["sp"] = sp + size
        notes.append(f"the arch block's sp 0x{sp:08x} is the exception frame's address (Zephyr "
                     f"releases before z_arm_set_fault_sp()); sp set to 0x{sp + size:08x}, "
                     "after the frame")


# -- from logs --------------------------------------------------------------------


def stream_evidence(stream: Stream, origin: str, *, partial_ok: bool) -> CrashEvidence:
    """Decode one ``#CD:`` stream; raise its problem unless ``partial_ok``."""
    if stream.device_error and not partial_ok:
        raise InputError(
            f"the device reported '#CD:ERROR CANNOT DUMP#': the coredump starting at line "
            f"{stream.begin_line + 1} is not usable ({len(stream.data)} bytes before it)",
            path=origin, line=stream.last_line + 1, field="#CD",
            remedy="the coredump backend failed on the device; use the fatal-error print "
                   "instead, or pass --partial (crashcart decode) or partial_ok=True to decode the bytes that came through")
    if stream.problem is not None and not partial_ok:
        problem = stream.problem
        raise InputError(problem.message, path=origin, line=problem.line, field=problem.field,
                         value=problem.value, remedy=problem.remedy)
    if not stream.data and stream.problem is not None:
        raise InputError(stream.problem.message, path=origin, line=stream.problem.line,
                         field="#CD", remedy="nothing of the dump came through; re-capture it")
    dump = decode_coredump(bytes(stream.data), origin, partial_ok=partial_ok or
                           stream.problem is not None, first_line=stream.begin_line + 1)
    evidence = to_evidence(dump, origin)
    if stream.problem is not None:
        evidence.notes.insert(0, f"line {stream.problem.line}: {stream.problem.message}")
    if stream.device_error:
        evidence.notes.insert(0, "the device reported '#CD:ERROR CANNOT DUMP#'")
    evidence.extra["coredump"]["line_range"] = (stream.begin_line + 1, stream.last_line + 1)
    return evidence


def merge_stream(evidence: CrashEvidence, stream: Stream, origin: str, *,
                 partial_ok: bool) -> None:
    """Add a coredump's memory and registers to the crash printed just before it."""
    dumped = stream_evidence(stream, origin, partial_ok=partial_ok)
    for region in dumped.memory.regions:
        evidence.memory.add(region.start, region.data, region.name, region.origin)
    for name, value in dumped.registers.items():
        known = evidence.registers.get(name)
        if known is None:
            evidence.registers[name] = value
        elif known != value and not (name == "xpsr" and (known ^ value) & ~0x1FF == 0):
            evidence.notes.append(f"the log prints {name} 0x{known:08x}, the coredump has "
                                  f"0x{value:08x}; the log's value is kept")
    evidence.notes.extend(dumped.notes)
    for key, value in dumped.extra.items():
        evidence.extra.setdefault(key, value)


def parse_cd_log(text: str, origin: str = "<text>", *,
                 partial_ok: bool = False) -> list[CrashEvidence]:
    """Every coredump in a console log (``#CD:`` lines), with the console around each."""
    lines = split_lines(text)
    streams = find_streams(lines)
    out = []
    for index, stream in enumerate(streams):
        evidence = stream_evidence(stream, origin, partial_ok=partial_ok)
        lower = streams[index - 1].last_line + 1 if index else 0
        upper = streams[index + 1].begin_line if index + 1 < len(streams) else len(lines)
        evidence.console_lines, evidence.crash_line = context_window(
            lines, stream.begin_line, stream.last_line + 1, lower, upper)
        out.append(evidence)
    return out


def parse_coredump_bin(data: bytes, origin: str = "<bytes>", *,
                       partial_ok: bool = False) -> list[CrashEvidence]:
    """A binary dump (as ``coredump_serial_log_parser.py`` writes it)."""
    evidence = to_evidence(decode_coredump(data, origin, partial_ok=partial_ok), origin)
    evidence.source = FORMAT_BINARY
    return [evidence]


# -- writing ----------------------------------------------------------------------


def write_zephyr_coredump(evidence: CrashEvidence, *, arch_version: int = 2,
                          reason: int | None = None) -> bytes:
    """The crash as a binary Zephyr coredump (header v2, arch block v1/v2, memory blocks).

    Registers must describe the interrupted code (``registers_at == "stacked"``);
    evidence taken in the fault handler is unstacked first from its captured
    exception frame.  Every captured memory region becomes a memory block.
    """
    if arch_version not in (1, 2):
        raise InputError("Zephyr's Cortex-M coredump parser reads arch block versions 1 and 2",
                         field="arch_version", value=arch_version,
                         remedy="use arch_version=1 (r0-r3, r12, lr, pc, xpsr, sp) or 2 "
                                "(also r4-r11)")
    registers = _stacked_registers(evidence)
    layout = ARCH_LAYOUTS[arch_version]
    missing = [name for name in layout if name not in registers]
    if missing:
        hint = (" (r4-r11 are only in arch block version 2: use arch_version=1)"
                if set(missing) <= set(ARCH_LAYOUTS[2][9:]) else "")
        raise InputError(
            f"the crash evidence lacks {', '.join(missing)}, needed for arch block version "
            f"{arch_version}{hint}",
            path=evidence.origin, field="registers", value=sorted(registers),
            remedy="export evidence that has the exception frame's registers and SP")
    if reason is None:
        reason = int(evidence.extra.get("zephyr_reason", 0))
    out = bytearray(HDR.pack(HDR_ID, 2, TGT_ARM_CORTEX_M, PTR_SIZE_BITS, 0, reason))
    values = [registers[name] & 0xFFFFFFFF for name in layout]
    out += ARCH_HDR.pack(b"A", arch_version, 4 * len(layout))
    out += struct.pack(f"<{len(layout)}I", *values)
    for region in evidence.memory.regions:
        if region.origin != "captured" or not region.data:
            continue
        if region.end > 1 << 32:
            raise InputError(f"memory region {region.name} ends beyond 4 GiB",
                             path=evidence.origin, field="memory", value=hex(region.start))
        out += MEM_HDR.pack(b"M", MEM_VERSION) + MEM_RANGE.pack(region.start, region.end)
        out += region.data
    return bytes(out)


def _stacked_registers(evidence: CrashEvidence) -> dict[str, int]:
    registers = dict(evidence.registers)
    if evidence.registers_at == "stacked":
        return registers
    from collector.faults import stacked_frame_size, unpack_frame

    exc_return = registers.get("exc_return", registers.get("lr"))
    if exc_return is None or exc_return >> 24 != 0xFF:
        raise InputError(
            "the registers were taken in the fault handler and EXC_RETURN is not known, "
            "so the exception frame cannot be found",
            path=evidence.origin, field="registers.exc_return",
            remedy="capture exc_return (LR on handler entry) with the registers")
    stack = "psp" if exc_return & 0x4 else "msp"
    frame_address = registers.get(stack)
    if frame_address is None:
        raise InputError(f"the exception frame is on the {stack.upper()}, which was not captured",
                         path=evidence.origin, field=f"registers.{stack}",
                         remedy=f"capture {stack} with the registers")
    try:
        size = stacked_frame_size(exc_return, evidence.arch)
        data = evidence.memory.read(frame_address, size + 4)
        frame = unpack_frame(data, exc_return, evidence.arch, frame_address=frame_address)
    except CrashcartError as err:
        raise InputError(f"cannot unstack the exception frame at 0x{frame_address:08x}: "
                         f"{err.message}", path=evidence.origin, field="memory",
                         remedy=err.remedy) from err
    registers.update(frame.registers)
    if frame.sp_before_exception is not None:
        registers["sp"] = frame.sp_before_exception
    return registers


def to_cd_log(data: bytes, *, prefix: str = "") -> str:
    """``data`` as the logging backend prints it: BEGIN, hex lines, END.

    A new line starts at each block boundary, as with Zephyr's one
    ``coredump_buffer_output()`` call per header and per block body.
    ``prefix`` goes before every line (e.g. ``"[00:00:00.012,000] <err> coredump: "``).
    """
    lines = [prefix + BEGIN]
    for chunk in _output_calls(data):
        for at in range(0, len(chunk), LINE_BYTES):
            lines.append(prefix + PREFIX + chunk[at:at + LINE_BYTES].hex())
    lines.append(prefix + END)
    return "\n".join(lines) + "\n"


def _output_calls(data: bytes) -> list[bytes]:
    """Split a dump the way coredump.c hands it to the backend (header, block header, body)."""
    calls: list[bytes] = []
    offset = HDR.size
    if not looks_like_binary(data):
        return [data[i:i + LINE_BYTES] for i in range(0, len(data), LINE_BYTES)]
    calls.append(data[:offset])
    while offset < len(data):
        ident = data[offset:offset + 1]
        if ident in (b"A", b"T") and offset + ARCH_HDR.size <= len(data):
            size = ARCH_HDR.unpack_from(data, offset)[2]
            head = ARCH_HDR.size
        elif ident == b"M" and offset + MEM_HDR.size + MEM_RANGE.size <= len(data):
            start, end = MEM_RANGE.unpack_from(data, offset + MEM_HDR.size)
            size, head = max(0, end - start), MEM_HDR.size + MEM_RANGE.size
        else:
            calls.append(data[offset:])
            break
        calls.append(data[offset:offset + head])
        if size:
            calls.append(data[offset + head:offset + head + size])
        offset += head + size
    return [c for c in calls if c]
