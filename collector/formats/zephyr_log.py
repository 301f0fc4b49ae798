"""Zephyr fatal-error logs (Cortex-M) into :class:`CrashEvidence`.

What Zephyr prints when a Cortex-M thread or ISR faults, in this order:

1. the fault description, ``arch/arm/core/cortex_m/fault.c`` with
   ``CONFIG_FAULT_DUMP=2`` (the default): a header such as
   ``***** BUS FAULT *****`` (``MPU FAULT``, ``USAGE FAULT``, ``HARD FAULT``,
   ``SECURE FAULT``, ``Debug monitor exception``, ``Reserved Exception (n)``,
   ``Spurious interrupt (IRQ n)``), then one indented line per fault status
   bit that is set (``  Precise data bus error``, ``  BFAR Address: 0x...``).
   A HardFault that is an escalation prints ``  Fault escalation (see below)``
   and then the escalated fault's header and lines.  ``CONFIG_FAULT_DUMP=1``
   prints the short form ``Fault! EXC #n`` / ``MMFSR: 0x.., BFSR: 0x..,
   UFSR: 0x..`` instead.
2. the exception stack frame, ``esf_dump()`` in ``arch/arm/core/fatal.c``::

       r0/a1:  0x%08x  r1/a2:  0x%08x  r2/a3:  0x%08x
       r3/a4:  0x%08x r12/ip:  0x%08x r14/lr:  0x%08x
        xpsr:  0x%08x
       s[%2d]:  0x%08x  s[%2d]:  0x%08x  s[%2d]:  0x%08x  s[%2d]:  0x%08x   (FPU_SHARING)
       fpscr:  0x%08x
       r4/v1:  0x%08x  r5/v2:  0x%08x  r6/v3:  0x%08x                   (EXTRA_EXCEPTION_INFO)
       r7/v4:  0x%08x  r8/v5:  0x%08x  r9/v6:  0x%08x
       r10/v7: 0x%08x  r11/v8: 0x%08x    psp:  0x%08x
       EXC_RETURN: 0x%0x
       Faulting instruction address (r15/pc): 0x%08x

3. ``kernel/fatal.c`` ``z_fatal_error()``: ``>>> ZEPHYR FATAL ERROR %d: %s on
   CPU %d`` (before Zephyr 2.7 without " on CPU"), optionally ``Fault during
   interrupt handling``, then ``Current thread: %p (%s)``; then the coredump
   (``#CD:`` lines, :mod:`collector.formats.zephyr_coredump`) and
   ``Halting system`` from the default ``k_sys_fatal_error_handler()``.

The strings follow Zephyr's main branch (fault.c, fatal.c as of v3.5-v4.x;
the fault headers and detail lines are unchanged since v2.1).  Every line may
carry a log prefix (``[00:00:01.234,567] <err> os: ``, ``<err> os: ``, or
``E: ``); :func:`collector.formats._common.message_of` removes it.

The fault status registers are not printed as numbers in the long form.
Each detail line is printed for exactly one status bit, so the adapter
rebuilds CFSR (and HFSR, SFSR) from them and says so in ``notes`` and
``extra["reconstructed"]``: bits of a sub-register Zephyr did not describe
stay unknown (zero).  The printed xPSR is Zephyr's copy of the stacked one,
whose IPSR field ``z_arm_fault()`` rewrites to mark thread mode (0) or a
nested exception.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from collector.evidence import CrashEvidence
from collector.formats import _zephyr
from collector.formats._common import context_window, message_of, parse_hex, split_lines
from crashcart.errors import InputError

LOG = logging.getLogger(__name__)

FORMAT = "zephyr-log"

_HEADER = re.compile(r"^\*\*\*\*\* (?P<name>.+?) \*\*\*\*\*$")
_RESERVED = re.compile(r"^Reserved Exception \(\s*(-?\d+)\)$")
_SPURIOUS = re.compile(r"^Spurious interrupt \(IRQ\s*(-?\d+)\)$")
_SHORT_EXC = re.compile(r"^Fault! EXC #(\d+)$")
_SHORT_FSR = re.compile(r"^MMFSR: (\S+), BFSR: (\S+), UFSR: (\S+)$")
_SHORT_SFSR = re.compile(r"^SFSR: (\S+)$")
_PC = re.compile(r"^Faulting instruction address \(r15/pc\): (\S+)$")
_FATAL = re.compile(r"^>>> ZEPHYR FATAL ERROR (\d+): (.*?)(?: on CPU (\d+))?$")
_THREAD = re.compile(r"^Current thread: (\S+) \((.*)\)$")
_BOOT = re.compile(r"\*\*\* Booting Zephyr OS")
_REG_TOKEN = re.compile(
    r"(?P<name>r\d{1,2}/[a-z]{1,2}\d?|xpsr|psp|fpscr|EXC_RETURN|s\[\s*\d{1,2}\])\s*:\s+"
    r"(?P<value>\S+)")
_D_TOKEN = re.compile(r"d\[\s*(\d{1,2})\]:\s+0x\s*([0-9a-fA-F]{1,16})")
_LINE_START = re.compile(r"^(r0/a1|r3/a4|xpsr|r4/v1|r7/v4|r10/v7|s\[\s*\d{1,2}\]|d\[\s*\d{1,2}\]"
                         r"|fpscr|EXC_RETURN)\s*:")

# esf_dump() line layouts: the first token names the line, the rest must follow.
_LINE_LAYOUTS = {
    "r0/a1": ("r0/a1", "r1/a2", "r2/a3"),
    "r3/a4": ("r3/a4", "r12/ip", "r14/lr"),
    "xpsr": ("xpsr",),
    "r4/v1": ("r4/v1", "r5/v2", "r6/v3"),
    "r7/v4": ("r7/v4", "r8/v5", "r9/v6"),
    "r10/v7": ("r10/v7", "r11/v8", "psp"),
    "fpscr": ("fpscr",),
    "EXC_RETURN": ("EXC_RETURN",),
}
_REG_NAMES = {
    "r0/a1": "r0", "r1/a2": "r1", "r2/a3": "r2", "r3/a4": "r3", "r12/ip": "r12",
    "r14/lr": "lr", "xpsr": "xpsr", "r4/v1": "r4", "r5/v2": "r5", "r6/v3": "r6",
    "r7/v4": "r7", "r8/v5": "r8", "r9/v6": "r9", "r10/v7": "r10", "r11/v8": "r11",
    "psp": "psp", "EXC_RETURN": "exc_return",
}
_FIXED_WIDTH = set(_REG_NAMES) - {"EXC_RETURN"} | {"fpscr"}  # printed with %08x

# Detail lines of fault.c, by the header they follow: text -> (register, bit).
# ARMv7-M ARM B3.2.15 (CFSR), B3.2.16 (HFSR); ARMv8-M ARM 'SFSR'.
_DETAILS: dict[str, dict[str, tuple[str, int]]] = {
    "MPU FAULT": {
        "Stacking error (context area might be not valid)": ("cfsr", 4),   # MSTKERR
        "Unstacking error": ("cfsr", 3),                                  # MUNSTKERR
        "Data Access Violation": ("cfsr", 1),                             # DACCVIOL
        "Instruction Access Violation": ("cfsr", 0),                      # IACCVIOL
        "Floating-point lazy state preservation error": ("cfsr", 5),      # MLSPERR
    },
    "BUS FAULT": {
        "Stacking error": ("cfsr", 12),                                   # STKERR
        "Unstacking error": ("cfsr", 11),                                 # UNSTKERR
        "Precise data bus error": ("cfsr", 9),                            # PRECISERR
        "Imprecise data bus error": ("cfsr", 10),                         # IMPRECISERR
        "Instruction bus error": ("cfsr", 8),                             # IBUSERR
        "Floating-point lazy state preservation error": ("cfsr", 13),     # LSPERR
    },
    "USAGE FAULT": {
        "Division by zero": ("cfsr", 25),                                 # DIVBYZERO
        "Unaligned memory access": ("cfsr", 24),                          # UNALIGNED
        "Stack overflow (context area not valid)": ("cfsr", 20),          # STKOF (v8-M)
        "No coprocessor instructions": ("cfsr", 19),                      # NOCP
        "Illegal load of EXC_RETURN into PC": ("cfsr", 18),               # INVPC
        "Illegal use of the EPSR": ("cfsr", 17),                          # INVSTATE
        "Attempt to execute undefined instruction": ("cfsr", 16),         # UNDEFINSTR
    },
    "SECURE FAULT": {
        "Invalid entry point": ("sfsr", 0),                               # INVEP
        "Invalid integrity signature": ("sfsr", 1),                       # INVIS
        "Invalid exception return": ("sfsr", 2),                          # INVER
        "Attribution unit violation": ("sfsr", 3),                        # AUVIOL
        "Invalid transition": ("sfsr", 4),                                # INVTRAN
        "Lazy state preservation": ("sfsr", 5),                           # LSPERR
        "Lazy state error": ("sfsr", 7),                                  # LSERR
    },
    "HARD FAULT": {
        "Bus fault on vector table read": ("hfsr", 1),                    # VECTTBL
        "Fault escalation (see below)": ("hfsr", 30),                     # FORCED
        "Debug event": ("hfsr", 31),                                      # DEBUGEVT
    },
}
# Address lines: header -> (regex, address register, its VALID bit).
_ADDRESSES = {
    "MPU FAULT": (re.compile(r"^MMFAR Address: (\S+)$"), "mmfar", ("cfsr", 7)),  # MMARVALID
    "BUS FAULT": (re.compile(r"^BFAR Address: (\S+)$"), "bfar", ("cfsr", 15)),   # BFARVALID
    "SECURE FAULT": (re.compile(r"^Address: (\S+)$"), "sfar", ("sfsr", 6)),      # SFARVALID
}
_NOTE_LINES = (
    re.compile(r"^Fault during interrupt handling$"),
    re.compile(r"^(?:Z_)?ARCH_EXCEPT with reason \S+$"),
    re.compile(r"^Exception occurred in Secure State$"),
    re.compile(r"^S instruction address:\s+\S+$"),
    re.compile(r"^SPSEL in thread mode does not indicate PSP$"),
    re.compile(r"^NXP MPU error, port \d+$"),
    re.compile(r"^Mode: .*Address: \S+$"),
    re.compile(r"^Type: .*, Master: .*$"),
)
_V8_BITS = {("cfsr", 20)}


def looks_like(text: str) -> bool:
    """True when ``text`` holds at least one Zephyr Cortex-M fatal-error print."""
    return bool(re.search(
        r"\*\*\*\*\* (?:MPU|BUS|USAGE|HARD|SECURE) FAULT \*\*\*\*\*|>>> ZEPHYR FATAL ERROR \d+"
        r"|Faulting instruction address \(r15/pc\): 0x|r0/a1:  0x[0-9a-fA-F]{8}", text))


def parse_zephyr_log(text: str, origin: str = "<text>", *,
                     partial_ok: bool = False) -> list[CrashEvidence]:
    """Every crash printed in a Zephyr console log, oldest first.

    Coredumps (``#CD:`` lines) that follow a crash's ``Current thread:`` line
    are decoded and merged into that crash (memory, r4-r11, SP).  A crash
    print that is cut off before its registers raises :class:`InputError`
    (with ``partial_ok``, it is kept and its ``notes`` say what is missing).
    """
    from collector.formats import zephyr_coredump  # a sibling that imports us lazily too

    lines = split_lines(text)
    crashes = _segment(lines, origin)
    streams = zephyr_coredump.find_streams(lines)
    out: list[tuple[int, CrashEvidence]] = []
    attached: set[int] = set()
    bounds = [c.start for c in crashes[1:]] + [len(lines)]
    for index, crash in enumerate(crashes):
        problem = crash.missing()
        if problem is not None:
            if not partial_ok:
                raise InputError(
                    f"the Zephyr crash print that starts at line {crash.start + 1} is cut off: "
                    f"{problem}",
                    path=origin, line=crash.last + 1, field="crash",
                    remedy="capture the whole console output (the print ends with "
                           "'Current thread: ...'); pass --partial (crashcart decode) or partial_ok=True to keep what is there",
                )
            crash.notes.append(f"incomplete print: {problem}")
        lower = crashes[index - 1].end if index else 0
        upper = bounds[index]
        evidence = crash.evidence(lines, origin, lower, upper)
        for number, stream in enumerate(streams):
            if crash.end - 1 <= stream.begin_line < upper:
                zephyr_coredump.merge_stream(evidence, stream, origin, partial_ok=partial_ok)
                attached.add(number)
        out.append((crash.start, evidence))
    # A coredump with no fatal-error print before it is a crash of its own.
    for number, stream in enumerate(streams):
        if number not in attached:
            evidence = zephyr_coredump.stream_evidence(stream, origin, partial_ok=partial_ok)
            evidence.console_lines, evidence.crash_line = context_window(
                lines, stream.begin_line, stream.last_line + 1, 0, len(lines))
            out.append((stream.begin_line, evidence))
    return [evidence for _, evidence in sorted(out, key=lambda item: item[0])]


# -- segmentation -------------------------------------------------------------


@dataclass
class _Crash:
    start: int
    last: int = 0
    end: int = 0
    headers: list[str] = field(default_factory=list)
    section: str | None = None
    registers: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)   # reconstructed cfsr/hfsr/sfsr
    exact: set[str] = field(default_factory=set)           # status registers printed as numbers
    fp: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exception_number: int | None = None
    reason: int | None = None
    reason_text: str | None = None
    cpu: int | None = None
    thread: tuple[int | None, str] | None = None
    fatal: bool = False
    halted: bool = False
    arch_hint: str | None = None

    @property
    def has_frame(self) -> bool:
        return "r0" in self.registers or "pc" in self.registers

    def starts_new(self, kind: str, payload: Any) -> bool:
        if self.thread is not None:
            return True
        if kind in ("header", "short_exc"):
            return self.has_frame or self.fatal
        if kind == "regs":
            return (payload[0] == "r0/a1" and "r0" in self.registers) or self.fatal
        if kind == "pc":
            return "pc" in self.registers or self.fatal
        if kind == "fatal":
            return self.fatal
        return False

    def missing(self) -> str | None:
        frame = [n for n in ("r0", "r1", "r2", "r3", "r12", "lr", "xpsr") if n in self.registers]
        if frame and "pc" not in self.registers:
            return ("the register dump has no 'Faulting instruction address (r15/pc)' line "
                    f"(print stops after line {self.last + 1})")
        if self.headers and not self.has_frame and not self.fatal:
            return (f"'***** {self.headers[-1]} *****' is not followed by the register dump "
                    f"(print stops after line {self.last + 1})")
        if "pc" in self.registers and len(frame) < 7 and not self.fatal:
            lost = [n for n in ("r0", "r1", "r2", "r3", "r12", "lr", "xpsr")
                    if n not in self.registers]
            return f"registers {', '.join(lost)} are missing (print stops after line {self.last + 1})"
        return None

    def evidence(self, lines: list[str], origin: str, lower: int, upper: int) -> CrashEvidence:
        registers = dict(self.registers)
        reconstructed = []
        for reg, value in self.status.items():
            registers[reg] = value
            if reg not in self.exact:
                reconstructed.append(reg)
        notes = list(self.notes)
        if reconstructed:
            notes.append(
                f"{', '.join(sorted(reconstructed))} rebuilt from Zephyr's fault description lines "
                "(fault.c prints one line per status bit that is set); bits of sub-registers "
                "Zephyr did not describe are unknown and read as 0")
        fault_name = None
        for header in self.headers:
            fault_name = _zephyr.HEADER_FAULTS.get(header, header)
            break
        if self.exception_number is not None and fault_name is None:
            fault_name = _exception_name(self.exception_number)
        if fault_name is None and self.reason is not None:
            fault_name = _zephyr.reason_fault(self.reason)
        if fault_name == "HardFault" and len(self.headers) > 1:
            notes.append(f"HardFault escalated from {_zephyr.HEADER_FAULTS.get(self.headers[1], self.headers[1])}")
        if "pc" not in registers and self.fatal:
            notes.append("no exception stack frame was printed (Zephyr prints one only for CPU "
                         "exceptions and oopses that have an ESF)")
        console, crash_line = context_window(lines, self.start, self.end, lower, upper)
        extra: dict[str, Any] = {"line_range": (self.start + 1, self.end)}
        if self.headers:
            extra["fault_headers"] = list(self.headers)
        if self.details:
            extra["fault_details"] = list(self.details)
        if self.fp:
            extra["fp_registers"] = dict(self.fp)
        if reconstructed:
            extra["reconstructed"] = sorted(reconstructed)
        if self.reason is not None:
            extra["zephyr_reason"] = self.reason
            extra["zephyr_reason_name"] = _zephyr.reason_name(self.reason)
            extra["zephyr_reason_text"] = self.reason_text
        if self.cpu is not None:
            extra["cpu"] = self.cpu
        if self.exception_number is not None:
            extra["exception_number"] = self.exception_number
        if self.halted:
            extra["halted"] = True
        threads = []
        if self.thread is not None:
            address, name = self.thread
            threads.append({"address": address, "name": name, "current": True})
            extra["thread_name"] = name
        arch = self.arch_hint or ("armv7e-m" if self.fp else "armv7-m")
        return CrashEvidence(
            source=FORMAT, origin=origin, arch=arch, registers=registers,
            registers_at="stacked", fault_name=fault_name, console_lines=console,
            crash_line=crash_line, threads=threads, notes=notes, extra=extra,
        )


def _exception_name(number: int) -> str | None:
    return {3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault", 7: "SecureFault",
            12: "DebugMonitor"}.get(number)


def _segment(lines: list[str], origin: str) -> list[_Crash]:
    crashes: list[_Crash] = []
    current: _Crash | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            current.end = current.last + 1
            crashes.append(current)
            current = None

    for number, raw in enumerate(lines):
        message = message_of(raw).strip()
        if not message:
            continue
        if "#CD:" in message:
            continue  # a coredump line: belongs to the stream, not to the print
        if message == "Halting system":
            target = current if current is not None else (crashes[-1] if crashes else None)
            if target is not None and target.fatal:
                target.halted = True  # printed after the coredump: the print's end stays
            continue
        if _BOOT.search(message):
            close()
            continue
        kind, payload = _classify(message)
        if kind is None:
            if current is not None and _detail(current, message, number, origin):
                current.last = number
            continue
        if current is None or current.starts_new(kind, payload):
            close()
            current = _Crash(start=number)
        _apply(current, kind, payload, number, origin)
        current.last = number
        if kind == "thread":
            close()
    close()
    return crashes


def _classify(message: str) -> tuple[str | None, Any]:
    m = _HEADER.match(message)
    if m:
        return "header", m.group("name")
    m = _SHORT_EXC.match(message)
    if m:
        return "short_exc", int(m.group(1))
    m = _LINE_START.match(message)
    if m:
        first = m.group(1)
        return "regs", (first[0] if first[:2] in ("s[", "d[") else first, message)
    m = _PC.match(message)
    if m:
        return "pc", m.group(1)
    m = _FATAL.match(message)
    if m:
        return "fatal", m
    m = _THREAD.match(message)
    if m:
        return "thread", m
    return None, None


def _apply(crash: _Crash, kind: str, payload: Any, number: int, origin: str) -> None:
    line = number + 1
    if kind == "header":
        name = payload
        crash.headers.append(name)
        crash.section = name if name in _DETAILS else None
        if name == "SECURE FAULT":
            crash.arch_hint = "armv8-m.main"
        if name == "HARD FAULT":
            crash.status.setdefault("hfsr", 0)
        elif name in ("MPU FAULT", "BUS FAULT", "USAGE FAULT"):
            crash.status.setdefault("cfsr", 0)
        elif name == "SECURE FAULT":
            crash.status.setdefault("sfsr", 0)
        m = _RESERVED.match(name) or _SPURIOUS.match(name)
        if m:
            crash.notes.append(f"Zephyr: {name}")
    elif kind == "short_exc":
        crash.exception_number = payload
        crash.section = "short"
    elif kind == "regs":
        _registers(crash, payload[0], payload[1], line, origin)
    elif kind == "pc":
        crash.registers["pc"] = _hex8(payload, origin, line, "r15/pc")
    elif kind == "fatal":
        crash.fatal = True
        crash.reason = int(payload.group(1))
        crash.reason_text = payload.group(2)
        if payload.group(3) is not None:
            crash.cpu = int(payload.group(3))
        crash.section = None
    elif kind == "thread":
        text, name = payload.group(1), payload.group(2)
        address = None if text in ("(nil)", "0", "NULL") else parse_hex(
            text, source=origin, line=line, field="Current thread")
        crash.thread = (address, name)


def _registers(crash: _Crash, first: str, message: str, line: int, origin: str) -> None:
    if first in ("s", "d"):
        _fp_registers(crash, first, message, line, origin)
        return
    tokens = _REG_TOKEN.findall(message)
    names = tuple(name for name, _ in tokens)
    layout = _LINE_LAYOUTS[first]
    if names != layout:
        raise InputError(
            f"register line is cut off or damaged: expected {', '.join(layout)}, "
            f"found {', '.join(names) or 'nothing'}",
            path=origin, line=line, field=first, value=message,
            remedy="re-capture the console (a dropped or garbled UART line), "
                   "or repair the line in the file",
        )
    for name, value in tokens:
        if name == "fpscr":
            crash.fp["fpscr"] = _hex8(value, origin, line, name)
            continue
        number = _hex8(value, origin, line, name) if name in _FIXED_WIDTH else parse_hex(
            value, source=origin, line=line, field=name)
        crash.registers[_REG_NAMES[name]] = number


def _fp_registers(crash: _Crash, kind: str, message: str, line: int, origin: str) -> None:
    if kind == "s":
        tokens = _REG_TOKEN.findall(message)
        if len(tokens) != 4 or not all(n.startswith("s[") for n, _ in tokens):
            raise InputError(
                "FP register line is cut off or damaged: expected four s[n] values",
                path=origin, line=line, field="s[n]", value=message,
                remedy="re-capture the console, or repair the line in the file")
        for name, value in tokens:
            index = int(name[2:-1])
            crash.fp[f"s{index}"] = _hex8(value, origin, line, name.replace(" ", ""))
        crash.arch_hint = crash.arch_hint or "armv7e-m"
        return
    found = _D_TOKEN.findall(message)
    if len(found) != 4:
        raise InputError(
            "FP register line is cut off or damaged: expected four d[n] values",
            path=origin, line=line, field="d[n]", value=message,
            remedy="re-capture the console, or repair the line in the file")
    for index, digits in found:
        crash.fp[f"d{int(index)}"] = int(digits, 16)


def _detail(crash: _Crash, message: str, number: int, origin: str) -> bool:
    """Take a fault description line into ``crash``; False when it is not one."""
    line = number + 1
    section = crash.section
    if any(p.match(message) for p in _NOTE_LINES):
        crash.details.append(message)
        crash.notes.append(f"Zephyr: {message}")
        return True
    if section is None:
        return False
    if section == "short":
        m = _SHORT_FSR.match(message)
        if m:
            mmfsr, bfsr, ufsr = (parse_hex(v.rstrip(","), source=origin, line=line, field=f)
                                 for v, f in zip(m.groups(), ("MMFSR", "BFSR", "UFSR"),
                                                 strict=True))
            crash.status["cfsr"] = (mmfsr & 0xFF) | (bfsr & 0xFF) << 8 | (ufsr & 0xFFFF) << 16
            crash.exact.add("cfsr")
            crash.details.append(message)
            return True
        m = _SHORT_SFSR.match(message)
        if m:
            crash.status["sfsr"] = parse_hex(m.group(1), source=origin, line=line, field="SFSR")
            crash.exact.add("sfsr")
            crash.details.append(message)
            return True
        return False
    bit = _DETAILS[section].get(message)
    if bit is not None:
        register, position = bit
        crash.status[register] = crash.status.get(register, 0) | 1 << position
        crash.details.append(message)
        if bit in _V8_BITS:
            crash.arch_hint = "armv8-m.main"
        return True
    address = _ADDRESSES.get(section)
    if address is not None:
        m = address[0].match(message)
        if m:
            crash.registers[address[1]] = parse_hex(m.group(1), source=origin, line=line,
                                                    field=address[1].upper() + " Address")
            register, position = address[2]
            crash.status[register] = crash.status.get(register, 0) | 1 << position
            crash.details.append(message)
            return True
    return False


def _hex8(text: str, origin: str, line: int, field_name: str) -> int:
    """A ``0x%08x`` value: exactly eight digits (fewer means the line was cut)."""
    value = parse_hex(text, source=origin, line=line, field=field_name)
    if len(text) != 10 or text[:2] != "0x":
        raise InputError(
            f"'{field_name}' should be printed as 0x and 8 hex digits",
            path=origin, line=line, field=field_name, value=text,
            remedy="the line was cut off or garbled in transit; re-capture the console "
                   "or repair the value in the file",
        )
    return value
