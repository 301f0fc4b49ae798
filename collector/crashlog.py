"""The fixture firmware's console crash log and boot banner, parsed.

Format (fixtures/firmware/README.md)::

    *** CRASH BEGIN ***
    fault: BusFault
    firmware: 1.0.0 build-id 3f2a...
    uptime_ms: 12
    r0: 0x00000000 r1: 0x... r2: 0x... r3: 0x...
    ...
    cfsr: 0x00008200 hfsr: 0x00000000 dfsr: 0x00000000 shcsr: 0x00070002
    mmfar: 0xe000ed34 bfar: 0x40030000
    *** CRASH END ***

Other crash formats (Zephyr, CmBacktrace) get their own adapters into the
same model; this one is the first.  Malformed lines are reported with their
line number inside the log, never raised as a parsing traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PAIR = re.compile(r"([a-z][a-z0-9_]*):\s+(0x[0-9a-fA-F]+|\d+)(?=\s|$)")
_FIRMWARE = re.compile(r"^firmware:\s+(\S+)\s+build-id\s+([0-9a-f]+)\s*$")

#: The registers the core stacks on exception entry (the basic frame), in order.
STACKED_REGISTERS = ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr")
REGISTER_NAMES = STACKED_REGISTERS + (
    "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11",
    "exc_return", "msp", "psp", "cfsr", "hfsr", "dfsr", "shcsr", "mmfar", "bfar",
)


@dataclass(frozen=True)
class ParsedCrashLog:
    fault: str | None
    firmware_version: str | None
    build_id: str | None
    uptime_ms: int | None
    registers: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # lines that could not be read, with their line number

    @property
    def complete(self) -> bool:
        return all(name in self.registers for name in REGISTER_NAMES)


def parse_crash_log(text: str) -> ParsedCrashLog:
    """Parse one crash log (the text between and including the markers)."""
    fault = version = build_id = None
    uptime = None
    regs: dict[str, int] = {}
    notes: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("***"):
            continue
        if line.startswith("fault:"):
            fault = line.split(":", 1)[1].strip() or None
            continue
        m = _FIRMWARE.match(line)
        if m:
            version, build_id = m.group(1), m.group(2)
            continue
        pairs = _PAIR.findall(line)
        if not pairs:
            notes.append(line)
            continue
        for key, value in pairs:
            number_value = int(value, 16) if value.startswith("0x") else int(value)
            if key == "uptime_ms":
                uptime = number_value
            elif key in REGISTER_NAMES:
                regs[key] = number_value
            else:
                problems.append(f"line {number}: unknown field '{key}'")
    return ParsedCrashLog(fault, version, build_id, uptime, regs, tuple(notes), tuple(problems))


@dataclass(frozen=True)
class Banner:
    version: str
    build_id: str
    reset_reason: str | None


def parse_banner(text: str, pattern: re.Pattern[str]) -> list[Banner]:
    """Every boot banner in a console transcript (one per boot)."""
    banners: list[Banner] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if not m:
            continue
        reset = None
        if i + 1 < len(lines) and lines[i + 1].startswith("reset:"):
            reset = lines[i + 1].split(":", 1)[1].strip()
        banners.append(Banner(m.group("version"), m.group("build_id"), reset))
    return banners
