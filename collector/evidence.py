"""The one internal model every crash source is turned into.

A bundle, a console log, a Zephyr coredump or a CmBacktrace print each have
an adapter that produces a :class:`CrashEvidence`; decoding, unwinding, the
core-file and Zephyr exports and the GDB server work on this model only.

:class:`MemoryImage` is "what we know of the target's memory": captured
regions first, then the read-only parts of the ELF (code and constants,
which the device cannot have changed).  A read of anything else raises
:class:`MemoryNotCaptured`, which says what was asked and what is there, so
an unwinder can stop with a reason instead of guessing.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crashcart.errors import CrashcartError

if TYPE_CHECKING:
    from collector.elf import ElfImage

PF_W = 0x2

# Core register names used everywhere in crashcart (lower case, GDB's
# spelling for the Cortex-M "org.gnu.gdb.arm.m-profile" feature, plus the
# system registers of "org.gnu.gdb.arm.m-system").
CORE_REGISTERS = tuple(f"r{i}" for i in range(13)) + ("sp", "lr", "pc", "xpsr")
SYSTEM_REGISTERS = ("msp", "psp", "primask", "basepri", "faultmask", "control")
FAULT_REGISTERS = ("cfsr", "hfsr", "dfsr", "mmfar", "bfar", "afsr", "shcsr", "icsr",
                   "sfsr", "sfar", "fpccr", "fpcar")


class MemoryNotCaptured(CrashcartError):  # noqa: N818 - it is a fact about evidence, not a bug
    """A read of memory that is neither captured nor read-only in the ELF."""

    exit_status = 1

    def __init__(self, address: int, size: int, known: str) -> None:
        super().__init__(
            f"memory 0x{address:08x}..0x{address + size:08x} ({size} bytes) was not captured",
            remedy=f"captured: {known}" if known else "no memory was captured",
        )
        self.address = address
        self.size = size


@dataclass(frozen=True)
class Region:
    start: int
    data: bytes
    name: str
    origin: str  # "captured" (from the device), "elf" (read-only file data)

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class MemoryImage:
    """Captured memory regions, falling back to the ELF's read-only segments."""

    def __init__(self, regions: list[Region] | None = None, elf: ElfImage | None = None) -> None:
        self._regions: list[Region] = []
        self._starts: list[int] = []
        self.elf = elf
        for region in regions or []:
            self.add(region.start, region.data, region.name, region.origin)

    @property
    def regions(self) -> tuple[Region, ...]:
        """Captured regions, by address."""
        return tuple(self._regions)

    def add(self, start: int, data: bytes, name: str, origin: str = "captured") -> None:
        """Add a region; a later region wins where it overlaps an earlier one."""
        region = Region(start, bytes(data), name, origin)
        index = bisect_right(self._starts, start)
        self._regions.insert(index, region)
        self._starts.insert(index, start)

    def _captured(self, address: int, size: int) -> bytes | None:
        # Regions are few (tens); the newest covering region wins.
        best = None
        for region in self._regions:
            if region.start <= address and address + size <= region.end:
                best = region
        if best is None:
            return None
        offset = address - best.start
        return best.data[offset:offset + size]

    def _readonly_elf(self, address: int, size: int) -> bytes | None:
        if self.elf is None:
            return None
        for seg in self.elf.load_segments:
            if seg.flags & PF_W:
                continue
            if seg.vaddr <= address and address + size <= seg.vaddr + seg.file_size:
                return self.elf.read(address, size)
        return None

    def try_read(self, address: int, size: int) -> bytes | None:
        if size < 0 or address < 0 or address + size > 1 << 32:
            return None
        data = self._captured(address, size)
        if data is None:
            data = self._readonly_elf(address, size)
        return data

    def read(self, address: int, size: int) -> bytes:
        data = self.try_read(address, size)
        if data is None:
            raise MemoryNotCaptured(address, size, self.describe())
        return data

    def origin(self, address: int, size: int = 1) -> str | None:
        """Where a read of this range would come from: 'captured', 'elf' or None."""
        if self._captured(address, size) is not None:
            return "captured"
        if self._readonly_elf(address, size) is not None:
            return "elf"
        return None

    def read_u32(self, address: int) -> int:
        return int(struct.unpack("<I", self.read(address, 4))[0])

    def try_read_u32(self, address: int) -> int | None:
        data = self.try_read(address, 4)
        return None if data is None else int(struct.unpack("<I", data)[0])

    def covers(self, address: int, size: int = 1) -> bool:
        return self.try_read(address, size) is not None

    def describe(self) -> str:
        return ", ".join(f"{r.name} 0x{r.start:08x}..0x{r.end:08x}" for r in self._regions)


@dataclass
class CrashEvidence:
    """One crash, from any source, as crashcart understands it.

    ``registers`` holds whatever is known, by the names in
    :data:`CORE_REGISTERS`, :data:`SYSTEM_REGISTERS` and
    :data:`FAULT_REGISTERS`, plus ``exc_return`` when the source states it.
    ``registers_at`` says what state they describe: ``"handler"`` (the core
    halted in the fault handler: the exception frame is on the stack) or
    ``"stacked"`` (the source already unstacked the frame: ``pc``/``lr``
    are the interrupted code's, as in the fixture crash log, Zephyr and
    CmBacktrace prints).
    """

    source: str                      # "bundle", "serial", "crashlog", "zephyr-log", ...
    origin: str                      # the file or bundle it came from, for messages
    arch: str = "armv7-m"
    registers: dict[str, int] = field(default_factory=dict)
    registers_at: str = "stacked"
    memory: MemoryImage = field(default_factory=MemoryImage)
    fault_name: str | None = None    # what the device itself said ("BusFault", ...)
    firmware_version: str | None = None
    build_id: str | None = None      # hex, as the device reported it
    build_id_origin: str | None = None
    reset_reason: str | None = None
    uptime_ms: int | None = None
    console_lines: list[str] = field(default_factory=list)  # lines around the crash
    crash_line: int | None = None    # index in console_lines where the crash begins
    config: dict[str, Any] | None = None
    config_origin: str | None = None
    threads: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # what the adapter could not do, and why
    extra: dict[str, Any] = field(default_factory=dict)
