"""CmBacktrace prints (armink/CmBacktrace, English strings) into :class:`CrashEvidence`.

``cm_backtrace_fault()`` (cm_backtrace/cm_backtrace.c, v1.4.x; the strings
are in cm_backtrace/Languages/en-US/cmb_en_US.h) prints, one ``cmb_println``
per line::

    Firmware name: %s, hardware version: %s, software version: %s
    Fault on thread %s                                  (OS, fault on PSP)
    Fault on interrupt or bare metal(no OS) environment
    Error: Thread stack(%08x) was overflow              (or "Main stack")
    ===== Thread stack information =====                (CMB_USING_DUMP_STACK_INFO)
      addr: %08x    data: %08x                          (sp .. stack top, one word a line)
    ====================================
    =================== Registers information ====================
      R0 : %08x  R1 : %08x  R2 : %08x  R3 : %08x
      R12: %08x  LR : %08x  PC : %08x  PSR: %08x
    ==============================================================
    <fault diagnosis lines, e.g. "Bus fault is caused by precise data access violation">
    The bus fault occurred address is %08x
    Show more call stack info by run: addr2line -e %s%s -afpiC %.*s

``cm_backtrace_assert()`` prints the firmware line, ``Assert on thread %s`` or
``Assert on interrupt or bare metal(no OS) environment``, the stack and the
call stack, but no registers.  Versions before 1.4 print ``-a -f`` instead of
``-afpiC``.

Facts the adapter relies on (cm_backtrace.c):

* the registers are the hardware-stacked frame of the fault (pc and lr of the
  interrupted code), read from PSP for a thread, MSP otherwise;
* the stack dump starts right after that frame (and after the FP part on
  Cortex-M4/M7 when EXC_RETURN bit 4 is clear), so the interrupted code's SP
  is the first dumped address, plus 4 when the stacked xPSR bit 9 says the
  core realigned the stack (ARMv7-M ARM B1.5.7); CmBacktrace itself ignores
  that padding word;
* ``fault_diagnosis()`` describes MFSR/BFSR/UFSR only when HFSR.FORCED is
  set (the fault escalated to HardFault, CmBacktrace's own handler), one line
  per status bit; the adapter rebuilds CFSR, HFSR and DFSR from them;
* the call stack is PC, then LR - 4 (when it points into code), then every
  stack word minus 4 that is odd and inside the code section: a heuristic,
  kept as ``extra["call_stack"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from collector.evidence import CrashEvidence, MemoryImage
from collector.formats._common import context_window, message_of, parse_hex, split_lines
from crashcart.errors import InputError

FORMAT = "cmbacktrace"

_FIRMWARE = re.compile(
    r"Firmware name: (?P<name>.*?), hardware version: (?P<hw>.*?), software version: (?P<sw>.*)$")
_FAULT_THREAD = re.compile(r"^Fault on thread (?P<name>.*)$")
_FAULT_HANDLER = "Fault on interrupt or bare metal(no OS) environment"
_ASSERT_THREAD = re.compile(r"^Assert on thread (?P<name>.*)$")
_ASSERT_HANDLER = "Assert on interrupt or bare metal(no OS) environment"
_OVERFLOW = re.compile(r"^Error: (?P<which>Thread|Main) stack\((?P<sp>[0-9a-fA-Fx]+)\) was overflow$")
_STACK_TITLES = ("===== Thread stack information =====", "====== Main stack information ======")
_STACK_END = "===================================="
_REGS_TITLE = "=================== Registers information ===================="
_REGS_END = "=============================================================="
_STACK_WORD = re.compile(r"^addr:\s*(?P<addr>\S+)\s+data:\s*(?P<data>\S+)$")
_REG_TOKEN = re.compile(r"(R0|R1|R2|R3|R12|LR|PC|PSR)\s*:\s*(\S+)")
_REG_NAMES = {"R0": "r0", "R1": "r1", "R2": "r2", "R3": "r3", "R12": "r12", "LR": "lr",
              "PC": "pc", "PSR": "xpsr"}
_CALL_STACK = re.compile(
    r"^Show more call stack info by run: addr2line -e (?P<elf>\S+)(?P<opts>(?:\s+-\S+)*)"
    r"(?P<addrs>(?:\s+(?:0x)?[0-9a-fA-F]{1,8})*)\s*$")
_CALL_STACK_ERR = "Dump call stack has an error"

# fault_diagnosis() lines -> (register, bit).  ARMv7-M ARM B3.2.15-B3.2.16, C1.6.1.
_DIAGNOSIS: dict[str, tuple[str, int]] = {
    "Hard fault is caused by failed vector fetch": ("hfsr", 1),
    "Memory management fault is caused by instruction access violation": ("cfsr", 0),
    "Memory management fault is caused by data access violation": ("cfsr", 1),
    "Memory management fault is caused by unstacking error": ("cfsr", 3),
    "Memory management fault is caused by stacking error": ("cfsr", 4),
    "Memory management fault is caused by floating-point lazy state preservation": ("cfsr", 5),
    "Bus fault is caused by instruction access violation": ("cfsr", 8),
    "Bus fault is caused by precise data access violation": ("cfsr", 9),
    "Bus fault is caused by imprecise data access violation": ("cfsr", 10),
    "Bus fault is caused by unstacking error": ("cfsr", 11),
    "Bus fault is caused by stacking error": ("cfsr", 12),
    "Bus fault is caused by floating-point lazy state preservation": ("cfsr", 13),
    "Usage fault is caused by attempts to execute an undefined instruction": ("cfsr", 16),
    "Usage fault is caused by attempts to switch to an invalid state (e.g., ARM)": ("cfsr", 17),
    "Usage fault is caused by attempts to do an exception with a bad value in the EXC_RETURN "
    "number": ("cfsr", 18),
    "Usage fault is caused by attempts to execute a coprocessor instruction": ("cfsr", 19),
    "Usage fault is caused by indicates that a stack overflow (hardware check) has taken place":
        ("cfsr", 20),
    "Usage fault is caused by indicates that an unaligned access fault has taken place":
        ("cfsr", 24),
    "Usage fault is caused by Indicates a divide by zero has taken place (can be set only if "
    "DIV_0_TRP is set)": ("cfsr", 25),
    "Debug fault is caused by halt requested in NVIC": ("dfsr", 0),
    "Debug fault is caused by BKPT instruction executed": ("dfsr", 1),
    "Debug fault is caused by DWT match occurred": ("dfsr", 2),
    "Debug fault is caused by Vector fetch occurred": ("dfsr", 3),
    "Debug fault is caused by EDBGRQ signal asserted": ("dfsr", 4),
}
_MMAR = re.compile(r"^The memory management fault occurred address is (\S+)$")
_BFAR = re.compile(r"^The bus fault occurred address is (\S+)$")


def looks_like(text: str) -> bool:
    """True when ``text`` holds at least one CmBacktrace fault or assert print."""
    return bool(re.search(
        r"Firmware name: .*, hardware version: .*, software version: "
        r"|Fault on interrupt or bare metal\(no OS\) environment|Fault on thread "
        r"|=================== Registers information ====================", text))


def parse_cmbacktrace(text: str, origin: str = "<text>", *,
                      partial_ok: bool = False) -> list[CrashEvidence]:
    """Every CmBacktrace fault/assert print in ``text``, oldest first."""
    lines = split_lines(text)
    prints = _segment(lines, origin)
    out = []
    for index, crash in enumerate(prints):
        problem = crash.missing()
        if problem is not None:
            if not partial_ok:
                raise InputError(
                    f"the CmBacktrace print that starts at line {crash.start + 1} is cut off: "
                    f"{problem}",
                    path=origin, line=crash.last + 1, field="cmbacktrace",
                    remedy="capture the whole print (it ends with 'Show more call stack info "
                           "by run: ...'); pass --partial (crashcart decode) or partial_ok=True to keep what is there")
            crash.notes.append(f"incomplete print: {problem}")
        lower = prints[index - 1].end if index else 0
        upper = prints[index + 1].start if index + 1 < len(prints) else len(lines)
        out.append(crash.evidence(lines, origin, lower, upper))
    return out


@dataclass
class _Print:
    start: int
    last: int = 0
    end: int = 0
    firmware: dict[str, str] | None = None
    kind: str | None = None          # "fault" or "assert"
    thread: str | None = None
    overflow: int | None = None
    section: str | None = None       # "stack", "regs"
    stack: list[tuple[int, int]] = field(default_factory=list)
    registers: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    call_stack: list[int] | None = None
    elf: str | None = None
    call_stack_error: bool = False
    notes: list[str] = field(default_factory=list)
    done: bool = False

    def missing(self) -> str | None:
        frame = [n for n in _REG_NAMES.values() if n in self.registers]
        if self.kind == "fault" and not frame and self.overflow is None:
            return f"no 'Registers information' (print stops after line {self.last + 1})"
        if frame and len(frame) < 8:
            lost = [n for n in _REG_NAMES.values() if n not in self.registers]
            return f"registers {', '.join(lost)} are missing (print stops after line {self.last + 1})"
        if self.kind is None:
            return f"no 'Fault on ...' or 'Assert on ...' line after line {self.start + 1}"
        return None

    def evidence(self, lines: list[str], origin: str, lower: int, upper: int) -> CrashEvidence:
        registers = dict(self.registers)
        notes = list(self.notes)
        memory = MemoryImage()
        for start, data in _runs(self.stack):
            memory.add(start, data, "stack")
        if self.stack and self.overflow is None:
            first = self.stack[0][0]
            registers["sp"] = first + (4 if registers.get("xpsr", 0) & 0x200 else 0)
            if self.thread is not None:
                registers["psp"] = registers["sp"]
        elif self.overflow is not None:
            notes.append(f"CmBacktrace saw a stack overflow (SP 0x{self.overflow:08x}); its stack "
                         "dump is clamped to the stack bounds and no registers are printed")
        reconstructed = sorted(self.status)
        registers.update(self.status)
        if reconstructed:
            notes.append(f"{', '.join(reconstructed)} rebuilt from CmBacktrace's diagnosis lines "
                         "(one line per status bit; printed only when HFSR.FORCED is set)")
        extra: dict[str, Any] = {"line_range": (self.start + 1, self.end)}
        if self.firmware is not None:
            extra["firmware_name"] = self.firmware["name"]
            extra["hardware_version"] = self.firmware["hw"]
        if self.call_stack is not None:
            extra["call_stack"] = list(self.call_stack)
            extra["call_stack_elf"] = self.elf
            notes.append("extra['call_stack'] is CmBacktrace's heuristic (PC, LR-4, then stack "
                         "words that look like return addresses), not an unwound backtrace")
        if self.call_stack_error:
            notes.append("CmBacktrace: Dump call stack has an error")
        if self.details:
            extra["fault_details"] = list(self.details)
        if reconstructed:
            extra["reconstructed"] = reconstructed
        threads = []
        if self.thread is not None:
            threads.append({"name": self.thread, "current": True})
            extra["thread_name"] = self.thread
        extra["context"] = "thread" if self.thread is not None else "handler or bare metal"
        fault_name = "HardFault" if self.kind == "fault" else "assert"
        if self.kind == "fault":
            notes.append("CmBacktrace runs from HardFault_Handler (cmb_fault.s)")
        console, crash_line = context_window(lines, self.start, self.end, lower, upper)
        return CrashEvidence(
            source=FORMAT, origin=origin, arch="armv7-m", registers=registers,
            registers_at="stacked", memory=memory, fault_name=fault_name,
            firmware_version=self.firmware["sw"] if self.firmware else None,
            console_lines=console, crash_line=crash_line, threads=threads, notes=notes,
            extra=extra)


def _runs(words: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """Contiguous runs of (address, word) as (start, little-endian bytes)."""
    runs: list[tuple[int, bytearray]] = []
    for address, value in sorted(words):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].extend(value.to_bytes(4, "little"))
        else:
            runs.append((address, bytearray(value.to_bytes(4, "little"))))
    return [(start, bytes(data)) for start, data in runs]


# RT-Thread ulog / EasyLogger tag before cmb_println's text: "[E/cmb] ", "E/cmb ".
_TAG_PREFIX = re.compile(r"^(?:\[[VADIWE]/[^\]]{1,32}\]\s?|[VADIWE]/\w{1,32}\s+)")


def _segment(lines: list[str], origin: str) -> list[_Print]:
    prints: list[_Print] = []
    current: _Print | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            current.end = current.last + 1
            prints.append(current)
            current = None

    for number, raw in enumerate(lines):
        message = _TAG_PREFIX.sub("", message_of(raw).strip(), count=1).strip()
        if not message:
            continue
        line = number + 1
        m = _FIRMWARE.search(message)
        if m:
            close()
            current = _Print(start=number, last=number,
                             firmware={k: m.group(k).strip() for k in ("name", "hw", "sw")})
            continue
        start_kind = _start_kind(message)
        if start_kind is not None:
            if current is None or current.kind is not None:
                close()
                current = _Print(start=number)
            current.kind, current.thread = start_kind
            current.last = number
            continue
        if current is None:
            continue
        if _take(current, message, line, origin):
            current.last = number
            if current.done:
                close()
    close()
    return prints


def _start_kind(message: str) -> tuple[str, str | None] | None:
    if message == _FAULT_HANDLER:
        return "fault", None
    if message == _ASSERT_HANDLER:
        return "assert", None
    m = _FAULT_THREAD.match(message)
    if m:
        return "fault", m.group("name")
    m = _ASSERT_THREAD.match(message)
    if m:
        return "assert", m.group("name")
    return None


def _take(crash: _Print, message: str, line: int, origin: str) -> bool:
    """Take one line of a print into ``crash``; False when it is not part of one."""
    if message in _STACK_TITLES:
        crash.section = "stack"
        return True
    if message == _REGS_TITLE:
        crash.section = "regs"
        return True
    if message == _REGS_END or message == _STACK_END:
        crash.section = None
        return True
    m = _OVERFLOW.match(message)
    if m:
        crash.overflow = parse_hex(m.group("sp"), source=origin, line=line, field="stack")
        return True
    if crash.section == "stack" and message.startswith("addr:"):
        m = _STACK_WORD.match(message)
        if m is None:
            raise InputError("stack dump line is cut off or damaged",
                             path=origin, line=line, field="addr/data", value=message,
                             remedy="re-capture the console, or repair the line in the file")
        crash.stack.append((_hex8(m.group("addr"), origin, line, "addr"),
                            _hex8(m.group("data"), origin, line, "data")))
        return True
    if crash.section == "regs" or message.startswith(("R0 ", "R0:", "R12")):
        tokens = _REG_TOKEN.findall(message)
        if tokens:
            expected = ("R0", "R1", "R2", "R3") if tokens[0][0] == "R0" else \
                ("R12", "LR", "PC", "PSR")
            if tuple(name for name, _ in tokens) != expected:
                raise InputError(
                    f"register line is cut off or damaged: expected {', '.join(expected)}",
                    path=origin, line=line, field=tokens[0][0], value=message,
                    remedy="re-capture the console, or repair the line in the file")
            for name, value in tokens:
                crash.registers[_REG_NAMES[name]] = _hex8(value, origin, line, name)
            return True
    bit = _DIAGNOSIS.get(message)
    if bit is not None:
        register, position = bit
        crash.status[register] = crash.status.get(register, 0) | 1 << position
        if register == "cfsr":
            crash.status["hfsr"] = crash.status.get("hfsr", 0) | 1 << 30  # FORCED
        elif register == "dfsr":
            crash.status["hfsr"] = crash.status.get("hfsr", 0) | 1 << 31  # DEBUGEVT
        crash.details.append(message)
        return True
    for pattern, name, valid in ((_MMAR, "mmfar", 7), (_BFAR, "bfar", 15)):
        m = pattern.match(message)
        if m:
            crash.registers[name] = _hex8(m.group(1), origin, line, name)
            crash.status["cfsr"] = crash.status.get("cfsr", 0) | 1 << valid  # xxVALID
            crash.details.append(message)
            return True
    m = _CALL_STACK.match(message)
    if m:
        crash.elf = m.group("elf")
        crash.call_stack = [parse_hex(a, source=origin, line=line, field="call stack")
                            for a in m.group("addrs").split()]
        crash.done = True
        return True
    if message.startswith("Show more call stack info by run:"):
        raise InputError("call stack line is cut off or damaged",
                         path=origin, line=line, field="call stack", value=message,
                         remedy="re-capture the console, or repair the line in the file")
    if message == _CALL_STACK_ERR:
        crash.call_stack_error = True
        crash.done = True
        return True
    return False


def _hex8(text: str, origin: str, line: int, name: str) -> int:
    """A ``%08x`` value (no 0x): exactly eight hex digits, fewer means a cut line."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    value = parse_hex(text, source=origin, line=line, field=name)
    if len(digits) != 8:
        raise InputError(f"'{name}' should be 8 hex digits", path=origin, line=line, field=name,
                         value=text, remedy="the line was cut off or garbled in transit; "
                                            "re-capture the console or repair the value")
    return value
