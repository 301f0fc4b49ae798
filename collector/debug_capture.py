"""Debug-port evidence capture: the same evidence over SWD (pyocd) or GDB remote.

A :class:`DebugLink` is what the capture needs from a debug connection:
attach without reset, halt and resume, core registers, memory reads.  Two
links implement it: :class:`PyocdLink` (any pyocd probe: ST-Link, CMSIS-DAP,
J-Link, and crashcart's simulated-board probe ``qemu:HOST:PORT``) and
:class:`GdbLink` (a GDB remote serial protocol server: OpenOCD, J-Link GDB
server, pyocd gdbserver, QEMU's gdbstub).

:func:`capture_debug` writes, under ``<kind>/`` in the bundle:

==========================  ====================================================
``state.json``              what the core was doing when we came (running,
                            halted, locked up, DHCSR), whether we halted it
``registers.json``          core and system registers; the ones the link
                            cannot give, with the reason
``scb.bin``                 the System Control Block 0xE000ED00-0xE000ED8F raw
``fault-registers.json``    CFSR, HFSR, DFSR, MMFAR, BFAR, AFSR, SHCSR, ICSR, ...
``memory/NAME@ADDR.bin``    each RAM region of the target file, and the active
                            stacks when they lie outside those regions
``crash-record.bin/.json``  the firmware's crash record (raw, and decoded through
                            DWARF when the ELF is given)
``firmware.json``           version and build ID read from the device's memory,
                            vendor registers (reset cause), the config block
``exception-frame.json``    the stacked frame, from the stack EXC_RETURN names
==========================  ====================================================

Each file is written as soon as it is read, so an interrupted capture keeps
everything read before the interruption.  Nothing is written to the target
except the debug registers a halt needs (pyocd writes DHCSR; a GDB server
is asked to stop).  The core is left as it was found (a running core is
resumed) unless ``leave_halted``.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collector.crashlog import STACKED_REGISTERS
from crashcart.errors import CrashcartError, InputError, TargetError

if TYPE_CHECKING:
    from collector.bundle import BundleWriter
    from collector.elf import ElfImage
    from targets import Target

LOG = logging.getLogger(__name__)

SCB_BASE, SCB_SIZE = 0xE000ED00, 0x90
DHCSR, DEMCR = 0xE000EDF0, 0xE000EDFC
FPCCR, FPCAR = 0xE000EF34, 0xE000EF38
S_LOCKUP, S_HALT, S_SLEEP, S_RETIRE_ST, S_RESET_ST = 1 << 19, 1 << 17, 1 << 18, 1 << 24, 1 << 25
# Offsets in the SCB (ARMv7-M B3.2.2, ARMv8-M D1.2): name -> offset from 0xE000ED00.
SCB_REGISTERS = {
    "cpuid": 0x00, "icsr": 0x04, "vtor": 0x08, "aircr": 0x0C, "scr": 0x10, "ccr": 0x14,
    "shcsr": 0x24, "cfsr": 0x28, "hfsr": 0x2C, "dfsr": 0x30, "mmfar": 0x34, "bfar": 0x38,
    "afsr": 0x3C, "cpacr": 0x88,
}
V6M_SCB = ("cpuid", "icsr", "vtor", "aircr", "scr", "ccr", "shcsr", "dfsr")
SECURITY_REGISTERS = {"sfsr": 0xE000EDE4, "sfar": 0xE000EDE8}
CORE_NAMES = tuple(f"r{i}" for i in range(13)) + ("sp", "lr", "pc", "xpsr")
SYSTEM_NAMES = ("msp", "psp", "control", "primask", "basepri", "faultmask")
STACK_WINDOW = 4096  # bytes captured above a stack pointer that no region covers
READ_CHUNK = 16 * 1024


class DebugLink(ABC):
    """One debug connection, as the capture uses it."""

    kind = "debug"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the manifest records about this source."""

    @abstractmethod
    def attach(self) -> None:
        """Connect without resetting the target."""

    @abstractmethod
    def is_halted(self) -> bool: ...

    @abstractmethod
    def halt(self) -> None: ...

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def read_registers(self) -> tuple[dict[str, int], dict[str, str]]:
        """(values by lower-case name, {name: why it is not available})."""

    @abstractmethod
    def read_memory(self, address: int, size: int) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def read_u32(self, address: int) -> int:
        return int(struct.unpack("<I", self.read_memory(address, 4))[0])

    def attach_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Things that happened while attaching, for the manifest."""
        return []


class PyocdLink(DebugLink):
    """A pyocd session: ``connect_mode='attach'``, ``resume_on_disconnect=False``."""

    kind = "swd"

    def __init__(self, unique_id: str, *, target_type: str = "cortex_m",
                 frequency_hz: int | None = None) -> None:
        self.unique_id = unique_id
        self.target_type = target_type
        self.frequency_hz = frequency_hz
        self.session: Any = None
        self.core: Any = None

    def settings(self) -> dict[str, Any]:
        return {"transport": "pyocd", "probe": self.unique_id, "target_type": self.target_type,
                "connect_mode": "attach", "resume_on_disconnect": False,
                **({"frequency_hz": self.frequency_hz} if self.frequency_hz else {})}

    def attach(self) -> None:
        from pyocd.core import exceptions
        from pyocd.core.helpers import ConnectHelper

        options: dict[str, Any] = {"connect_mode": "attach", "resume_on_disconnect": False,
                                   "target_override": self.target_type}
        if self.frequency_hz:
            options["frequency"] = self.frequency_hz
        cwd = os.getcwd()
        try:
            session = ConnectHelper.session_with_chosen_probe(
                unique_id=self.unique_id, blocking=False, options=options,
                project_dir=cwd, no_config=True)
            if session is None:
                raise TargetError(
                    f"no debug probe with ID '{self.unique_id}' is connected",
                    remedy="list probes with `pyocd list`; for a simulated board use "
                           "qemu:HOST:PORT as printed by `crashcart sim serve`")
            session.open()
        except exceptions.Error as exc:
            raise TargetError(f"pyocd could not attach through {self.unique_id}: {exc}",
                              remedy="check the probe's USB connection and target power; "
                                     "pyocd attaches without reset (connect_mode=attach)") from None
        finally:
            os.chdir(cwd)  # pyocd's Session changes to project_dir
        self.session = session
        self.core = session.target.selected_core or session.target.cores[0]

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from pyocd.core import exceptions

        try:
            return fn()
        except exceptions.Error as exc:
            raise TargetError(f"{what} through {self.unique_id} failed: {exc}") from None

    def is_halted(self) -> bool:
        return bool(self._call("reading the core state", self.core.is_halted))

    def halt(self) -> None:
        self._call("halting the core", self.core.halt)

    def resume(self) -> None:
        self._call("resuming the core", self.core.resume)

    def read_registers(self) -> tuple[dict[str, int], dict[str, str]]:
        from pyocd.core import exceptions

        values: dict[str, int] = {}
        missing: dict[str, str] = {}
        values.update(zip(CORE_NAMES, self._call(
            "reading core registers",
            lambda: self.core.read_core_registers_raw(list(CORE_NAMES))), strict=True))
        for name in SYSTEM_NAMES:
            try:
                values[name] = int(self.core.read_core_register_raw(name))
            except (exceptions.Error, KeyError, ValueError) as exc:
                missing[name] = f"pyocd: {exc}"
        return values, missing

    def read_memory(self, address: int, size: int) -> bytes:
        return bytes(self._call(f"reading memory at 0x{address:08x}",
                                lambda: self.core.read_memory_block8(address, size)))

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001 - closing must not lose the capture
                LOG.warning("closing the pyocd session: %s", exc)

    def attach_events(self) -> list[tuple[str, dict[str, Any]]]:
        probe = getattr(self.session, "probe", None)
        events = getattr(probe, "events", None) or []
        return [("probe: " + e.kind, {"detail": e.detail}) for e in events
                if e.kind.startswith("attach")]

    def target_writes(self) -> list[Any]:
        """The simulated probe's write log (None for hardware probes)."""
        probe = getattr(self.session, "probe", None)
        return list(getattr(probe, "writes", []))


class GdbLink(DebugLink):
    """A GDB remote serial protocol server, through :class:`collector.gdbremote.GdbRemote`."""

    kind = "gdb"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.gdb: Any = None
        self._events: list[tuple[str, dict[str, Any]]] = []

    def settings(self) -> dict[str, Any]:
        return {"transport": "gdb-remote", "address": f"{self.host}:{self.port}"}

    def attach(self) -> None:
        from collector.gdbremote import GdbRemote, GdbRemoteError

        gdb = GdbRemote(self.host, self.port)
        try:
            gdb.open()
        except GdbRemoteError as exc:
            raise TargetError(str(exc)) from None
        self.gdb = gdb
        if gdb.was_running_at_attach:
            self._events.append(("stopped by the GDB server on attach",
                                 {"detail": "a GDB remote server stops the target when a client "
                                            "connects (all-stop); counted as a halt by crashcart"}))

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from collector.gdbremote import GdbRemoteError

        try:
            return fn()
        except GdbRemoteError as exc:
            raise TargetError(f"{what} over GDB remote {self.host}:{self.port} failed: {exc}") \
                from None

    def was_running_at_attach(self) -> bool:
        return bool(self.gdb.was_running_at_attach)

    def is_halted(self) -> bool:
        return not self.gdb.running

    def halt(self) -> None:
        self._call("halting the target", self.gdb.interrupt)

    def resume(self) -> None:
        self._call("resuming the target", self.gdb.cont)

    def read_registers(self) -> tuple[dict[str, int], dict[str, str]]:
        raw = self._call("reading registers", self.gdb.read_registers)
        values = {name.lower(): int(v) for name, v in raw.items()}
        if "cpsr" in values and "xpsr" not in values:
            values["xpsr"] = values.pop("cpsr")
        missing = {name: "the GDB server's target description has no such register"
                   for name in (*CORE_NAMES, *SYSTEM_NAMES) if name not in values}
        return values, missing

    def read_memory(self, address: int, size: int) -> bytes:
        return bytes(self._call(
            f"reading memory at 0x{address:08x}",
            lambda: self.gdb.read_memory(address, size, physical_fallback=True)))

    def close(self) -> None:
        gdb, self.gdb = self.gdb, None
        if gdb is not None:
            gdb.close()

    def attach_events(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._events)


# -- the capture -----------------------------------------------------------------


@dataclass
class RegionPlan:
    name: str
    start: int
    size: int
    why: str


def plan_regions(target: Target, image: ElfImage | None) -> tuple[list[RegionPlan], list[str]]:
    """The memory regions to read: the target file's, resolved through the ELF's symbols."""
    plans: list[RegionPlan] = []
    notes: list[str] = []
    for region in target.capture_regions:
        if region.start is not None and region.size is not None:
            plans.append(RegionPlan(region.name, region.start, region.size, "target file"))
            continue
        if image is None:
            notes.append(f"region {region.name}: bounds are ELF symbols "
                         f"({region.start_symbol}..{region.end_symbol}) and no --elf was given")
            continue
        start = image.get_symbol(region.start_symbol or "")
        end = image.get_symbol(region.end_symbol or "")
        if start is None or end is None or end.address <= start.address:
            notes.append(f"region {region.name}: symbols {region.start_symbol}/"
                         f"{region.end_symbol} missing or empty in {image.path.name}")
            continue
        plans.append(RegionPlan(region.name, start.address, end.address - start.address,
                                f"{region.start_symbol}..{region.end_symbol}"))
    if not plans:
        for mem in target.memory:
            if mem.kind == "ram":
                plans.append(RegionPlan(mem.name, mem.start, mem.size,
                                        "whole RAM region of the target file"))
        if plans:
            notes.append("no symbol-based regions could be resolved; capturing whole RAM regions")
    return plans, notes


def _locate(image: ElfImage | None, target: Target, loc: Any,
            default_size: int | None = None) -> tuple[int, int] | None:
    if loc is None:
        return None
    if loc.address is not None:
        return loc.address, loc.size or default_size or 4
    if image is None:
        return None
    sym = image.get_symbol(loc.symbol)
    if sym is None:
        return None
    if loc.end_symbol:
        end = image.get_symbol(loc.end_symbol)
        if end is None:
            return None
        return sym.address, end.address - sym.address
    return sym.address, loc.size or sym.size or default_size or 4


def parse_build_id_note(data: bytes) -> str | None:
    """The descriptor of an ELF note of type NT_GNU_BUILD_ID (3), owner "GNU"."""
    if len(data) < 12:
        return None
    namesz, descsz, ntype = struct.unpack_from("<III", data)
    name_end = 12 + ((namesz + 3) & ~3)
    if ntype != 3 or data[12:12 + namesz].rstrip(b"\0") != b"GNU" or descsz > 64:
        return None
    desc = data[name_end:name_end + descsz]
    return desc.hex() if len(desc) == descsz else None


class _Capture:
    def __init__(self, link: DebugLink, bundle: BundleWriter, target: Target,
                 image: ElfImage | None, prefix: str, say: Callable[[str], None]) -> None:
        self.link, self.bundle, self.target, self.image = link, bundle, target, image
        self.prefix = prefix
        self.say = say
        self.source: dict[str, Any] = {}
        self.summary: dict[str, Any] = {"source": prefix, "files": [], "problems": []}
        self.captured: list[tuple[int, int]] = []

    def event(self, what: str, **details: Any) -> None:
        self.bundle.source_event(self.source, what, **details)

    def problem(self, what: str) -> None:
        self.summary["problems"].append(what)
        self.bundle.mark_partial(f"{self.prefix}: {what}")
        self.say(f"{self.prefix}: {what}")

    def write_json(self, name: str, value: Any, kind: str) -> None:
        self.bundle.write_json(f"{self.prefix}/{name}", value, kind=kind, source=self.prefix)
        self.summary["files"].append(f"{self.prefix}/{name}")

    def write_bin(self, name: str, data: bytes, kind: str, meta: dict[str, Any]) -> None:
        self.bundle.write_file(f"{self.prefix}/{name}", data, kind=kind, source=self.prefix,
                               meta=meta)
        self.summary["files"].append(f"{self.prefix}/{name}")

    # -- steps ---------------------------------------------------------------

    def state(self, was_running: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"running_at_attach": was_running}
        try:
            dhcsr = self.link.read_u32(DHCSR)
        except CrashcartError as exc:
            state["dhcsr"] = None
            state["dhcsr_error"] = str(exc)
        else:
            state["dhcsr"] = dhcsr
            state["lockup"] = bool(dhcsr & S_LOCKUP)
            state["sleeping"] = bool(dhcsr & S_SLEEP)
            state["reset_since_last_read"] = bool(dhcsr & S_RESET_ST)
        return state

    def registers(self) -> dict[str, int]:
        values, missing = self.link.read_registers()
        self.write_json("registers.json", {
            "registers": values,
            "hex": {k: f"0x{v:08x}" for k, v in values.items()},
            "unavailable": missing,
        }, kind="registers")
        self.say(f"{self.prefix}: registers pc=0x{values.get('pc', 0):08x} "
                 f"lr=0x{values.get('lr', 0):08x} sp=0x{values.get('sp', 0):08x}")
        return values

    def fault_registers(self) -> dict[str, int]:
        arch = self.target.architecture
        names = V6M_SCB if arch.startswith("armv6") else tuple(SCB_REGISTERS)
        size = SCB_SIZE if not arch.startswith("armv6") else 0x40
        out: dict[str, int] = {}
        try:
            raw = self.link.read_memory(SCB_BASE, size)
        except CrashcartError as exc:
            self.problem(f"System Control Block not read: {exc}")
            return out
        self.write_bin("scb.bin", raw, kind="memory",
                       meta={"address": SCB_BASE, "region": "scb"})
        for name in names:
            off = SCB_REGISTERS[name]
            if off + 4 <= len(raw):
                out[name] = int(struct.unpack_from("<I", raw, off)[0])
        extra = {}
        if self.target.fpu:
            extra.update({"fpccr": FPCCR, "fpcar": FPCAR})
        if arch.startswith("armv8"):
            extra.update(SECURITY_REGISTERS)
        extra["dhcsr"], extra["demcr"] = DHCSR, DEMCR
        unavailable = {}
        for name, address in extra.items():
            try:
                out[name] = self.link.read_u32(address)
            except CrashcartError as exc:
                unavailable[name] = str(exc)
        self.write_json("fault-registers.json", {
            "registers": out, "hex": {k: f"0x{v:08x}" for k, v in out.items()},
            "unavailable": unavailable, "architecture": arch}, kind="fault-registers")
        self.say(f"{self.prefix}: CFSR=0x{out.get('cfsr', 0):08x} HFSR=0x{out.get('hfsr', 0):08x}")
        return out

    def memory(self, plans: list[RegionPlan]) -> None:
        for plan in plans:
            data = bytearray()
            error = None
            try:
                while len(data) < plan.size:
                    n = min(READ_CHUNK, plan.size - len(data))
                    data += self.link.read_memory(plan.start + len(data), n)
            except CrashcartError as exc:
                error = str(exc)
            name = f"memory/{plan.name}@0x{plan.start:08x}.bin"
            if data:
                self.write_bin(name, bytes(data), kind="memory",
                               meta={"address": plan.start, "region": plan.name,
                                     "requested": plan.size, "why": plan.why})
                self.captured.append((plan.start, plan.start + len(data)))
            if error:
                self.problem(f"region {plan.name} 0x{plan.start:08x}+{plan.size}: read "
                             f"{len(data)} bytes, then: {error}")
            else:
                self.say(f"{self.prefix}: {plan.name} 0x{plan.start:08x} {plan.size} bytes")

    def stacks(self, regs: dict[str, int]) -> None:
        """Capture above each stack pointer that the regions left out."""
        for name in ("sp", "msp", "psp"):
            sp = regs.get(name)
            if sp is None or any(lo <= sp < hi for lo, hi in self.captured):
                continue
            region = self.target.region_at(sp)
            if region is None or region.kind != "ram":
                self.summary["problems"].append(f"{name}=0x{sp:08x} is outside the RAM regions")
                continue
            size = min(STACK_WINDOW, region.end - sp)
            self.memory([RegionPlan(f"stack-{name}", sp & ~3, size, f"above {name}")])

    def read_location(self, what: str, loc: Any, default_size: int | None = None) -> \
            tuple[int, bytes] | None:
        where = _locate(self.image, self.target, loc, default_size)
        if where is None:
            if loc is not None:
                self.summary["problems"].append(f"{what}: cannot locate {loc.describe()} "
                                                "without the ELF (--elf)")
            return None
        address, size = where
        try:
            return address, self.link.read_memory(address, size)
        except CrashcartError as exc:
            self.problem(f"{what} at 0x{address:08x} not read: {exc}")
            return None

    def decoded(self, symbol: str | None, data: bytes) -> Any:
        if self.image is None or symbol is None or not self.image.has_dwarf:
            return None
        from collector.dwarf_types import decode, find_global_type

        try:
            return decode(find_global_type(self.image, symbol), data)
        except (InputError, struct.error, IndexError) as exc:
            self.summary["problems"].append(f"{symbol}: not decoded through DWARF: {exc}")
            return None

    def firmware(self) -> dict[str, Any]:
        t = self.target
        info: dict[str, Any] = {}
        got = self.read_location("crash record", t.crash_record)
        if got is not None:
            address, raw = got
            self.write_bin("crash-record.bin", raw, kind="crash-record",
                           meta={"address": address, "symbol": t.crash_record.symbol})
            value = self.decoded(t.crash_record.symbol, raw)
            if value is not None:
                self.write_json("crash-record.json", _jsonable(value), kind="crash-record-decoded")
            info["crash_record"] = {"address": address, "size": len(raw)}
        got = self.read_location("build ID", t.build_id)
        if got is not None:
            info["build_id"] = parse_build_id_note(got[1])
            info["build_id_address"] = got[0]
            if info["build_id"] is None:
                self.summary["problems"].append(
                    f"no GNU build-ID note at 0x{got[0]:08x} on the device")
        got = self.read_location("version", t.version)
        if got is not None:
            value = self.decoded(t.version.symbol, got[1])
            if isinstance(value, dict):
                info["version"] = value.get("version")
                info["version_block"] = _jsonable(value)
        vendor: dict[str, Any] = {}
        for reg in t.vendor_registers:
            got = self.read_location(f"vendor register {reg.name}", reg.location, reg.size)
            if got is None:
                continue
            raw = int.from_bytes(got[1][:reg.size], "little")
            value = reg.decode(raw)
            vendor[reg.name] = {"value": value, "raw": raw, "meaning": reg.values.get(value),
                                "address": got[0]}
        info["vendor_registers"] = vendor
        if t.config is not None:
            size = None
            if self.image is not None:
                sym = self.image.get_symbol(t.config.symbol)
                size = sym.size if sym is not None else None
            from targets import Location

            got = self.read_location("config block", Location(symbol=t.config.symbol, size=size))
            if got is not None:
                self.write_bin("config.bin", got[1], kind="config",
                               meta={"address": got[0], "symbol": t.config.symbol})
                value = self.decoded(t.config.symbol, got[1])
                if value is not None:
                    info["config"] = _jsonable(value)
        if self.image is not None:
            info["elf"] = {"path": str(self.image.path), "build_id": self.image.build_id}
            device = info.get("build_id")
            info["build_id_match"] = None if device is None or self.image.build_id is None \
                else device == self.image.build_id
        self.write_json("firmware.json", info, kind="firmware")
        if info.get("version") or info.get("build_id"):
            self.say(f"{self.prefix}: firmware {info.get('version')} build-id "
                     f"{info.get('build_id')}")
        return info

    def _handler_entry_sp(self, regs: dict[str, int], ipsr: int, vtor: int
                          ) -> tuple[int, str] | None:
        """Main-stack SP at the entry of the handler ``pc`` is in (so the frame address).

        From the ELF's CFI at ``pc`` when there is one; without it only when ``pc``
        is the handler's first instruction (the entry for ``ipsr`` in the vector
        table at ``vtor``).
        """
        pc = regs.get("pc")
        sp = regs.get("sp")
        if pc is None or sp is None:
            return None
        if self.image is not None:
            from collector.unwind import entry_sp

            try:
                found = entry_sp(self.image, pc, regs)
            except CrashcartError:
                found = None
            if found is not None:
                return found
        try:
            vector = self.link.read_u32((vtor & ~0x7F) + 4 * ipsr)
        except CrashcartError:
            return None
        if vector & ~1 == pc:
            return sp, "sp (pc is the handler's first instruction, from the vector table)"
        return None

    def exception_frame(self, regs: dict[str, int], faults: dict[str, int],
                        firmware: dict[str, Any]) -> None:
        from collector.faults import decode_exc_return, stacked_frame_size, unpack_frame

        arch = self.target.architecture
        ipsr = regs.get("xpsr", 0) & 0x1FF
        exc_return, origin = None, None
        # Where the frame is when lr holds EXC_RETURN: SP at the handler's entry, which
        # is SP itself only until the handler pushes something (then its CFA).
        at_entry: tuple[int, str] | None = None
        lr = regs.get("lr", 0)
        inside = ""
        if ipsr and lr >> 24 == 0xFF:
            # VTOR from the SCB already read (an ARMv6-M core without one reads 0).
            at_entry = self._handler_entry_sp(regs, ipsr, faults.get("vtor", 0))
            if at_entry is not None:
                exc_return, origin = lr, "lr (EXC_RETURN, halted in the handler)"
            else:
                inside = (f"lr is EXC_RETURN 0x{lr:08x} but pc 0x{regs.get('pc', 0):08x} is "
                          "past the handler's entry and no CFI says what it pushed; ")
        record = _jsonable_read(self.bundle, f"{self.prefix}/crash-record.json")
        from_record = exc_return is None and isinstance(record, dict) and \
            isinstance(record.get("exc_return"), int) and record["exc_return"] >> 24 == 0xFF
        if from_record:
            exc_return, origin = record["exc_return"], "the firmware's crash record"
        out: dict[str, Any] = {"ipsr": ipsr, "in_handler": bool(ipsr)}
        if exc_return is None:
            out["note"] = (inside or "no EXC_RETURN known (lr is not one and no crash record "
                           "has one); ") + "the decoder unwinds the handler with CFI"
            self.write_json("exception-frame.json", out, kind="exception-frame")
            return
        try:
            exc = decode_exc_return(exc_return, arch, fp=self.target.fpu)
        except InputError as err:
            out["note"] = f"EXC_RETURN 0x{exc_return:08x} from {origin}: {err}"
            self.write_json("exception-frame.json", out, kind="exception-frame")
            return
        stack_name = "psp" if (exc.stack or "").upper().startswith("PSP") else "msp"
        sp: int | None = None
        sp_origin = ""
        if from_record:
            # The stack pointers the firmware saved on entry go with its EXC_RETURN; the
            # live MSP has moved on (the handler's own pushes, or a reboot since).
            if isinstance(record, dict) and isinstance(record.get(stack_name), int):
                sp, sp_origin = record[stack_name], "the firmware's crash record"
            elif stack_name == "psp" and regs.get("psp") is not None:
                sp, sp_origin = regs["psp"], "registers (psp)"
        elif stack_name == "msp":
            assert at_entry is not None
            sp, sp_origin = at_entry
        elif regs.get("psp") is not None:
            sp, sp_origin = regs["psp"], "registers (psp)"
        out.update({"exc_return": exc_return, "exc_return_origin": origin, "stack": stack_name})
        if sp is None:
            out["note"] = (f"the frame is on the {stack_name.upper()}, whose value this link "
                           "cannot read (QEMU's gdbstub has no MSP/PSP) and no crash record "
                           "gives; the decoder unwinds the handler with CFI")
        else:
            out.update({"frame_address": sp, "frame_address_origin": sp_origin})
            size = stacked_frame_size(exc, arch)
            try:
                raw = self.link.read_memory(sp, size)
                frame = dict(unpack_frame(raw, exc, arch).registers)
                out["frame_source"] = "stack"
            except (CrashcartError, struct.error) as err:
                out["note"] = f"frame at 0x{sp:08x} not read: {err}"
                frame = {}
            if from_record:
                # The record keeps its own copy of the stacked registers.  If the stack
                # no longer holds them the board has run on (or rebooted) since: the
                # record's copy is the evidence, the stack's bytes are not.
                copy = {k: record[k] for k in STACKED_REGISTERS
                        if isinstance(record.get(k), int)}
                if copy and any(frame.get(k) != v for k, v in copy.items()):
                    out["frame_source"] = "crash-record"
                    out["note"] = (f"the stack at 0x{sp:08x} no longer holds the frame the "
                                   "crash record saved (the board ran on after the crash); "
                                   "the record's copy is given")
                    frame = copy
            if frame:
                out["frame"] = frame
                out["frame_hex"] = {k: f"0x{v:08x}" for k, v in frame.items()}
        cfsr = faults.get("cfsr", 0)
        untrusted = [name for bit, name in ((1 << 4, "MSTKERR"), (1 << 12, "STKERR"),
                                            (1 << 20, "STKOF"), (1 << 11, "UNSTKERR"),
                                            (1 << 3, "MUNSTKERR")) if cfsr & bit]
        out["trusted"] = not untrusted
        if untrusted:
            out["untrusted_because"] = untrusted
        self.write_json("exception-frame.json", out, kind="exception-frame")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _jsonable_read(bundle: BundleWriter, rel: str) -> Any:
    import json

    path = bundle.path / rel
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def capture_debug(links: list[DebugLink], bundle: BundleWriter, target: Target,
                  image: ElfImage | None, *, leave_halted: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Capture through each link in turn (a board serves one debugger at a time).

    The core stays halted from the first halt to the end of the last link's
    capture, so every source reads the same state; then it is resumed if it
    was running when the first link attached (unless ``leave_halted``).
    """
    say = progress or (lambda _m: None)
    plans, plan_notes = plan_regions(target, image)
    summaries: dict[str, Any] = {}
    first_state: bool | None = None  # was the core running when we first came?
    for i, link in enumerate(links):
        last = i == len(links) - 1
        cap = _Capture(link, bundle, target, image, link.kind, say)
        cap.source = bundle.add_source(link.kind, link.settings())
        summaries[link.kind] = cap.summary
        cap.summary["problems"].extend(plan_notes)
        error = None
        try:
            t0 = time.monotonic()
            link.attach()
            for what, details in link.attach_events():
                cap.event(what, **details)
            if isinstance(link, GdbLink):
                running = link.was_running_at_attach()
            else:
                running = not link.is_halted()
            if first_state is None:
                first_state = running
            state = cap.state(running)
            cap.event("attached", running=running, lockup=state.get("lockup"))
            if not link.is_halted():
                link.halt()
                cap.event("halted by crashcart",
                          reason="registers and memory are read from a halted core, so that "
                                 "they form one consistent snapshot")
            state["halted_by_capture"] = running
            cap.write_json("state.json", state, kind="debug-state")
            regs = cap.registers()
            faults = cap.fault_registers()
            cap.memory(plans)
            cap.stacks(regs)
            firmware = cap.firmware()
            cap.exception_frame(regs, faults, firmware)
            cap.summary.update({"registers": len(regs), "seconds": time.monotonic() - t0,
                                "firmware": {k: firmware.get(k) for k in
                                             ("version", "build_id", "build_id_match")}})
            if last and first_state and not leave_halted:
                link.resume()
                cap.event("resumed", reason="the core was running when crashcart attached; "
                                            "it is left as found")
            elif last:
                cap.event("left halted", reason="--leave-halted" if leave_halted and first_state
                          else "the core was halted when crashcart attached")
        except CrashcartError as exc:
            error = str(exc)
            cap.summary["problems"].append(error)
            say(f"{link.kind}: FAILED: {exc}")
        except KeyboardInterrupt:
            bundle.end_source(cap.source, error="interrupted")
            link.close()
            raise
        if hasattr(link, "target_writes"):
            writes = link.target_writes()  # type: ignore[attr-defined]
            if writes:
                cap.write_json("target-writes.json", [_jsonable(dict(vars(w))) for w in writes],
                               kind="probe-write-log")
        link.close()
        bundle.end_source(cap.source, error=error)
    return summaries
