"""A pyocd debug probe that presents a QEMU board's gdbstub as an SWD target.

pyocd expects an ADIv5 debug port, a MEM-AP, a ROM table and the Cortex-M
debug registers; QEMU 7.2's gdbstub has none of them, only core registers
r0-r15/xpsr, memory, stop and continue.  :class:`QemuProbe` therefore
emulates the debug side of a Cortex-M3 and forwards what belongs to the
target to the gdbstub (:mod:`collector.gdbremote`):

======================================  ===========================================
emulated in this module                 taken from / sent to QEMU's gdbstub
======================================  ===========================================
SW-DP: DPIDR, CTRL/STAT power-up         memory outside the emulated blocks
handshake, SELECT, RDBUFF, ABORT         (RAM, flash, peripherals, the rest of
                                         the SCS: CPUID, CFSR, HFSR, BFAR, ...)
AHB-AP: CSW, TAR (auto-increment),       r0-r12, sp, lr, pc, xpsr (``g``/``P``)
DRW, BD0-3, CFG, BASE, IDR
ROM table at 0xE00FF000                  halt (0x03), resume (``c``), step (``s``)
DHCSR, DCRSR, DCRDR, DEMCR, DFSR bits   FPB comparators as hardware breakpoints (``Z1``)
DWT, FPB, ITM registers and ID blocks
======================================  ===========================================

QEMU 7.2's gdbstub has no MSP, PSP, CONTROL, PRIMASK, BASEPRI or FAULTMASK.
A DCRSR read of one of them completes (S_REGRDY=1) only when the value is
known: MSP in Handler mode is SP (ARMv7-M B1.4.7: Handler mode always uses
the main stack).  Otherwise the transfer does not complete, S_REGRDY stays
0 and pyocd reports ``failed to read register msp`` instead of a made-up
value.  A capture that needs them reads the firmware's crash record.

Reads arrive with ``now=False`` and are resolved later, several at a time:
every read is done when it is issued and a callable returns the value.

Every write that reaches the target or an emulated register is logged in
:attr:`QemuProbe.writes` (address, value, path, register, whether it reached
QEMU), and every stop, resume and stop-for-access in :attr:`QemuProbe.events`.
Unique IDs are ``qemu:HOST:PORT``; ``pyocd list`` shows the ones named in
the environment variable ``CRASHCART_QEMU_PROBES`` (``HOST:PORT,...``).
docs/simulated-probe.md has the details and the QEMU 7.2 limits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Importing pyocd loads its probe plugins, this module among them.  When this
# module is imported first, pyocd asks for QemuProbePlugin while this module is
# still importing pyocd: it gets a stand-in that declines to load, and the real
# class registers itself at the end of this module (see _register_late()).
_BOOTSTRAPPING = True
_REGISTER_LATE = False


def __getattr__(name: str) -> Any:
    global _REGISTER_LATE
    if name == "QemuProbePlugin" and _BOOTSTRAPPING:
        from pyocd.core.plugin import Plugin as _Plugin

        class _NotYet(_Plugin):
            def should_load(self) -> bool:
                return False

        _REGISTER_LATE = True
        return _NotYet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from pyocd.core import exceptions
from pyocd.core.memory_interface import MemoryInterface
from pyocd.core.options import OptionInfo
from pyocd.core.plugin import Plugin
from pyocd.probe.debug_probe import DebugProbe

from collector.gdbremote import (
    DEFAULT_TIMEOUT_S,
    GdbConnectionLost,
    GdbMemoryError,
    GdbRemote,
    GdbRemoteError,
    StopReply,
)
from crashcart.errors import TargetError

LOG = logging.getLogger(__name__)

PROBE_PREFIX = "qemu"
ENV_PROBES = "CRASHCART_QEMU_PROBES"

# -- ADIv5.2 values (IHI 0031E) ------------------------------------------------
DPIDR_VALUE = 0x2BA01477  # Arm SW-DP v1, as on Cortex-M3 silicon
AP_IDR_VALUE = 0x24770011  # AHB-AP, MEM-AP class, Arm
AP_BASE_VALUE = 0xE00FF003  # ROM table at 0xE00FF000, ADIv5 format, present

DP_ABORT = 0x0  # write; reads at 0x0 are DPIDR
DP_CTRL_STAT = 0x4
DP_SELECT = 0x8  # write; reads at 0x8 are RESEND
DP_RDBUFF = 0xC

CSYSPWRUPACK = 1 << 31
CSYSPWRUPREQ = 1 << 30
CDBGPWRUPACK = 1 << 29
CDBGPWRUPREQ = 1 << 28
CDBGRSTACK = 1 << 27
CDBGRSTREQ = 1 << 26
STICKYERR = 1 << 5
STICKYCMP = 1 << 4
STICKYORUN = 1 << 1
# CSYSPWRUPREQ, CDBGPWRUPREQ, CDBGRSTREQ, TRNCNT, MASKLANE, TRNMODE, ORUNDETECT (ADIv5.2 B2.2.2)
CTRL_STAT_WRITABLE = CSYSPWRUPREQ | CDBGPWRUPREQ | CDBGRSTREQ | 0x00FFFF0D

ABORT_STKCMPCLR = 1 << 1
ABORT_STKERRCLR = 1 << 2
ABORT_ORUNERRCLR = 1 << 4

# MEM-AP registers (ADIv5.2 C2.6) and CSW fields.
AP_CSW, AP_TAR, AP_TAR_HI, AP_DRW = 0x00, 0x04, 0x08, 0x0C
AP_BD0, AP_BD3 = 0x10, 0x1C
AP_CFG, AP_BASE, AP_IDR = 0xF4, 0xF8, 0xFC
CSW_SIZE_MASK = 0x7
CSW_ADDRINC_SHIFT = 4
CSW_DEVICEEN = 1 << 6
CSW_WRITABLE = 0xFF000F37 & ~(1 << 23)  # Size, AddrInc, Mode, Prot, DbgSwEnable
CSW_RESET = 0x03000040 | 2  # HPROT data/privileged, DeviceEn, 32-bit
# TAR auto-increment carries through 12 bits on this AHB-AP, as on Cortex-M3/M4 silicon
# (ADIv5.2 C2.2.2 guarantees only 10; pyocd's AP table knows IDR 0x24770011 wraps at 4 KB).
TAR_AUTOINC_WRAP = 0x1000

# -- ARMv7-M debug (DDI 0403E, C1.6) -------------------------------------------
DFSR = 0xE000ED30
DHCSR = 0xE000EDF0
DCRSR = 0xE000EDF4
DCRDR = 0xE000EDF8
DEMCR = 0xE000EDFC
DBGKEY = 0xA05F << 16
C_DEBUGEN = 1 << 0
C_HALT = 1 << 1
C_STEP = 1 << 2
C_MASKINTS = 1 << 3
C_SNAPSTALL = 1 << 5
S_REGRDY = 1 << 16
S_HALT = 1 << 17
S_RETIRE_ST = 1 << 24
DCRSR_REGWNR = 1 << 16
DFSR_HALTED = 1 << 0
DFSR_BKPT = 1 << 1
DFSR_EXTERNAL = 1 << 4

ITM_BASE = 0xE0000000
DWT_BASE = 0xE0001000
FPB_BASE = 0xE0002000
SCS_BASE = 0xE000E000
ROM_BASE = 0xE00FF000

DWT_CTRL_RESET = 0x40000000  # NUMCOMP=4, cycle counter and profiling counters present
DWT_CTRL_READ_ONLY = 0xFF000000
DWT_NUM_COMP = 4
FP_CTRL_RESET = 0x260  # rev 1, NUM_CODE=6, NUM_LIT=2
FP_CTRL_KEY = 1 << 1
FP_NUM_CODE = 6
FP_NUM_COMP = 8
ITM_LAR_KEY = 0xC5ACCE55

# CoreSight identification (PIDR 64-bit as pyocd forms it, CIDR) per component.
ROM_PIDR, ROM_CIDR = 0x4000BB4C3, 0xB105100D
SCS_PIDR = 0x4000BB000
DWT_PIDR = 0x4003BB002
FPB_PIDR = 0x4002BB003
ITM_PIDR = 0x4003BB001
GENERIC_CIDR = 0xB105E00D
# ROM table entries: offsets from 0xE00FF000 to SCS, DWT, FPB, ITM; then the end.
ROM_ENTRIES = (0xFFF0F003, 0xFFF02003, 0xFFF03003, 0xFFF01003, 0)
ROM_MEMTYPE = 0x1  # system memory present on the bus

# Emulated windows: (start, end, name).  Everything else is QEMU's memory.
EMULATED = (
    (ITM_BASE, ITM_BASE + 0x1000, "ITM"),
    (DWT_BASE, DWT_BASE + 0x1000, "DWT"),
    (FPB_BASE, FPB_BASE + 0x1000, "FPB"),
    (DFSR, DFSR + 4, "DFSR"),
    (DHCSR, DEMCR + 4, "debug"),
    (SCS_BASE + 0xFD0, SCS_BASE + 0x1000, "SCS-ID"),
    (ROM_BASE, ROM_BASE + 0x1000, "ROM"),
)

# Peripheral, device and PPB regions of the ARMv7-M default memory map (B3.1).
DEVICE_REGIONS = ((0x40000000, 0x60000000), (0xA0000000, 0x100000000))

# DCRSR REGSEL (ARMv7-M C1.6.3) -> gdbstub register name.
_GDB_REGS = {**{n: f"r{n}" for n in range(13)}, 13: "sp", 14: "lr", 15: "pc", 16: "xpsr"}
REGSEL_MSP, REGSEL_PSP, REGSEL_SPECIAL, REGSEL_FPSCR = 17, 18, 20, 33
_UNAVAILABLE = {
    REGSEL_MSP: "MSP (QEMU 7.2's gdbstub has no MSP; it is SP only in Handler mode)",
    REGSEL_PSP: "PSP (QEMU 7.2's gdbstub has no PSP)",
    REGSEL_SPECIAL: "CONTROL/FAULTMASK/BASEPRI/PRIMASK (not in QEMU 7.2's gdbstub)",
    REGSEL_FPSCR: "FPSCR (Cortex-M3 has no FPU)",
}


class QemuProbeError(TargetError, exceptions.ProbeError):
    """The gdbstub behind the probe failed or answered nonsense."""


class QemuLinkLost(TargetError, exceptions.ProbeDisconnected):
    """The gdbstub connection closed (QEMU exited or another client took over)."""


class QemuMemoryFault(TargetError, exceptions.TransferFaultError):
    """A memory access QEMU refused: nothing is mapped at the address."""

    def __init__(self, message: str, *, fault_address: int, length: int) -> None:
        super().__init__(message, value=f"0x{fault_address:08x}+{length}")
        self.fault_address = fault_address
        self.fault_length = length

    def __str__(self) -> str:
        return TargetError.__str__(self)


@dataclass(frozen=True)
class TargetWrite:
    """One write the probe performed on the target's bus.

    ``via`` is the path (``DRW``, ``BD0``-``BD3``, ``memory-interface``,
    ``DCRSR``); ``register`` names the emulated debug register or core
    register it landed in, None for target memory; ``reached_target`` is
    True when it went to QEMU through the gdbstub.
    """

    address: int
    value: int
    size_bits: int
    via: str
    register: str | None
    reached_target: bool


@dataclass(frozen=True)
class ProbeEvent:
    """A run-control event: halt, resume, step, stop-for-access, stop seen, attach."""

    kind: str
    detail: str = ""
    address: int | None = None


def _parse_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (optionally prefixed ``qemu:``) -> (host, port), or None."""
    if text.lower().startswith(PROBE_PREFIX + ":"):
        text = text[len(PROBE_PREFIX) + 1:]
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _listed_addresses() -> list[tuple[str, int]]:
    found = []
    for item in os.environ.get(ENV_PROBES, "").split(","):
        if not item.strip():
            continue
        address = _parse_address(item)
        if address is None:
            LOG.warning("%s: ignoring %r (expected HOST:PORT)", ENV_PROBES, item)
        else:
            found.append(address)
    return found


def _id_register(offset: int, pidr: int, cidr: int) -> int:
    """CoreSight PIDR4-7 (0xFD0), PIDR0-3 (0xFE0), CIDR0-3 (0xFF0); 0 elsewhere."""
    if 0xFD0 <= offset < 0xFE0:
        return (pidr >> (32 + 8 * ((offset - 0xFD0) // 4))) & 0xFF
    if 0xFE0 <= offset < 0xFF0:
        return (pidr >> (8 * ((offset - 0xFE0) // 4))) & 0xFF
    if 0xFF0 <= offset < 0x1000:
        return (cidr >> (8 * ((offset - 0xFF0) // 4))) & 0xFF
    return 0


class QemuProbe(DebugProbe):
    """A QEMU board's gdbstub presented to pyocd as an SWD probe and target.

    Create through :meth:`get_probe_with_id` / :meth:`get_all_connected_probes`
    (pyocd's probe plugin API) or directly with ``QemuProbe(host, port)``.
    ``open()`` connects to the gdbstub; QEMU stops a running VM when a
    client connects, so the probe resumes it when it was running
    (session option ``qemu.resume_after_attach``, default true): attaching
    does not halt the core, as on an SWD probe.  ``close()`` leaves the
    VM as it is (halted stays halted; QEMU's detach would resume it).
    """

    def __init__(self, host: str, port: int, *, timeout_s: float | None = None) -> None:
        super().__init__()
        self.host = host
        self.port = int(port)
        self.timeout_s = timeout_s
        self.writes: list[TargetWrite] = []
        self.events: list[ProbeEvent] = []
        self.gdb: GdbRemote | None = None
        self._protocol: DebugProbe.Protocol | None = None
        self._clock_hz = 1_000_000
        self._memif = QemuMemoryInterface(self)
        self._reset_debug_state()

    # -- pyocd probe discovery --------------------------------------------------

    @classmethod
    def get_all_connected_probes(cls, unique_id: str | None = None,
                                 is_explicit: bool = False) -> list[QemuProbe]:
        """Probes named in ``CRASHCART_QEMU_PROBES``, plus an explicitly given ``qemu:`` id.

        A gdbstub cannot be discovered by scanning; only named ones exist.
        """
        addresses = _listed_addresses()
        if is_explicit and unique_id:
            address = _parse_address(unique_id)
            if address is not None and address not in addresses:
                addresses.append(address)
        return [cls(host, port) for host, port in addresses]

    @classmethod
    def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False) -> QemuProbe | None:
        address = _parse_address(unique_id)
        if address is None:
            return None
        if is_explicit or address in _listed_addresses():
            return cls(*address)
        return None

    # -- pyocd probe properties -------------------------------------------------

    @property
    def unique_id(self) -> str:
        return f"{PROBE_PREFIX}:{self.host}:{self.port}"

    @property
    def vendor_name(self) -> str:
        return "crashcart"

    @property
    def product_name(self) -> str:
        return f"QEMU gdbstub {self.host}:{self.port} as SWD"

    @property
    def supported_wire_protocols(self) -> list[DebugProbe.Protocol]:
        return [DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD]

    @property
    def wire_protocol(self) -> DebugProbe.Protocol | None:
        return self._protocol

    @property
    def is_open(self) -> bool:
        return self.gdb is not None and self.gdb.is_open

    @property
    def capabilities(self) -> set[DebugProbe.Capability]:
        # No MANAGED_AP_SELECTION: pyocd writes DP SELECT, as with a CMSIS-DAP probe.
        return {DebugProbe.Capability.SWJ_SEQUENCE}

    @property
    def is_halted(self) -> bool:
        """Whether QEMU's VM is stopped (as the gdbstub last said)."""
        self._poll()
        return self.gdb is not None and not self.gdb.running

    # -- pyocd probe lifecycle --------------------------------------------------

    def open(self) -> None:
        """Connect to the gdbstub; resume the VM if connecting stopped it (see class doc)."""
        if self.is_open:
            return
        timeout = self.timeout_s or float(self._option("qemu.timeout", DEFAULT_TIMEOUT_S))
        gdb = GdbRemote(self.host, self.port, timeout_s=timeout)
        with self._translated():
            gdb.open()
        self.gdb = gdb
        self._reset_debug_state()
        if gdb.was_running_at_attach:
            self._event("attach-stopped-vm", "QEMU stops a running VM when a gdb client connects")
            if self._option("qemu.resume_after_attach", True):
                with self._translated():
                    gdb.cont()
                self._event("resumed-after-attach", "restoring the run state found at attach")
        else:
            self._event("attached-halted", "the VM was not running when the probe attached")

    def close(self) -> None:
        """Disconnect from the gdbstub without detaching: the VM stays as it is."""
        gdb, self.gdb = self.gdb, None
        if gdb is None:
            return
        try:
            gdb.poll_stop()
        except GdbRemoteError:
            pass
        self._event("left-running" if gdb.running else "left-halted")
        gdb.close()

    def connect(self, protocol: DebugProbe.Protocol | None = None) -> None:
        if protocol not in (None, DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD):
            raise exceptions.ProbeError(f"{self.unique_id} only speaks SWD, not {protocol.name}")
        self._protocol = DebugProbe.Protocol.SWD

    def disconnect(self) -> None:
        self._protocol = None

    def swj_sequence(self, length: int, bits: int) -> None:
        """Line resets and the JTAG-to-SWD sequence: nothing to switch on an emulated SW-DP."""

    def set_clock(self, frequency: float) -> None:
        self._clock_hz = int(frequency)

    def reset(self) -> None:
        raise exceptions.ProbeError(
            f"{self.unique_id} has no nRESET line; use a software reset (SYSRESETREQ) "
            "or restart the simulated board")

    def assert_reset(self, asserted: bool) -> None:
        if asserted:
            self.reset()

    def is_reset_asserted(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def get_memory_interface_for_ap(self, ap_address: Any) -> MemoryInterface | None:
        """Direct memory access for AP #0 (skips CSW/TAR/DRW), unless ``qemu.accelerated_memory`` is off."""
        if getattr(ap_address, "apsel", None) != 0:
            return None
        if not self._option("qemu.accelerated_memory", True):
            return None
        return self._memif

    # -- pyocd DAP access -------------------------------------------------------

    def read_dp(self, addr: int, now: bool = True) -> int | Callable[[], int]:
        return self._deferred(lambda: self._read_dp(addr), now)

    def write_dp(self, addr: int, data: int) -> None:
        with self._lock:
            self._write_dp(addr, data & 0xFFFFFFFF)

    def read_ap(self, addr: int, now: bool = True) -> int | Callable[[], int]:
        return self._deferred(lambda: self._read_ap(addr), now)

    def write_ap(self, addr: int, data: int) -> None:
        with self._lock:
            self._write_ap(addr, data & 0xFFFFFFFF)

    def read_ap_multiple(self, addr: int, count: int = 1,
                         now: bool = True) -> Sequence[int] | Callable[[], Sequence[int]]:
        return self._deferred(lambda: [self._read_ap(addr) for _ in range(count)], now)

    def write_ap_multiple(self, addr: int, values: Sequence[int]) -> None:
        with self._lock:
            for value in values:
                self._write_ap(addr, value & 0xFFFFFFFF)

    # -- the target's bus (shared by DRW and the memory interface) --------------

    def bus_read(self, address: int, size_bits: int) -> int:
        """Read 8/16/32 bits at ``address`` as the AHB-AP would."""
        data = self.bus_read_block(address, size_bits // 8)
        return int.from_bytes(data, "little")

    def bus_read_block(self, address: int, length: int) -> bytes:
        """Read bytes: emulated debug blocks word by word, the rest from QEMU in one go."""
        out = bytearray()
        with self._lock, self._access():
            for start, end, emulated in self._segments(address, length):
                if not emulated:
                    out += self._target_read(start, end - start)
                    continue
                first = start & ~3
                words = b"".join(self._read_emulated(a).to_bytes(4, "little")
                                 for a in range(first, end, 4))
                out += words[start - first:end - first]
        return bytes(out)

    def bus_write(self, address: int, value: int, size_bits: int, via: str) -> None:
        """Write 8/16/32 bits at ``address``."""
        self.bus_write_block(address, (value & ((1 << size_bits) - 1)).to_bytes(size_bits // 8,
                                                                                  "little"), via)

    def bus_write_block(self, address: int, data: bytes, via: str) -> None:
        with self._lock, self._access():
            for start, end, emulated in self._segments(address, len(data)):
                part = data[start - address:end - address]
                if not emulated:
                    self._target_write(start, part, via)
                    continue
                # Emulated registers are words; merge partial writes into the current value.
                for word in range(start & ~3, end, 4):
                    lo, hi = max(word, start), min(word + 4, end)
                    current = bytearray(self._read_emulated(word).to_bytes(4, "little")) \
                        if (lo, hi) != (word, word + 4) else bytearray(4)
                    current[lo - word:hi - word] = part[lo - start:hi - start]
                    self._write_emulated(word, int.from_bytes(current, "little"), via,
                                         (hi - lo) * 8)

    # -- private: state -----------------------------------------------------------

    def _reset_debug_state(self) -> None:
        self._ctrl_stat = 0
        self._select = 0
        self._rdbuff = 0
        self._csw = CSW_RESET
        self._tar = 0
        self._dhcsr_ctrl = 0
        self._regrdy = False
        self._retired = False
        self._dcrdr = 0
        self._demcr = 0
        self._dfsr = 0
        self._registers: dict[str, int] | None = None
        self._dwt: dict[int, int] = {0x000: DWT_CTRL_RESET}
        self._fp_ctrl_enable = 0
        self._fp_comp = [0] * FP_NUM_COMP
        self._breakpoints: set[int] = set()
        self._itm: dict[int, int] = {}
        self._itm_locked = True
        self._access_depth = 0
        self._access_stopped = False

    def _option(self, name: str, default: Any) -> Any:
        session = self.session
        if session is None:
            return default
        try:
            value = session.options.get(name)
        except KeyError:
            return default
        return default if value is None else value

    def _event(self, kind: str, detail: str = "", address: int | None = None) -> None:
        LOG.debug("%s: %s %s", self.unique_id, kind, detail)
        self.events.append(ProbeEvent(kind, detail, address))

    def _require_gdb(self) -> GdbRemote:
        if self.gdb is None or not self.gdb.is_open:
            raise QemuProbeError(f"probe {self.unique_id} is not open",
                                 remedy="open the probe (pyocd does this when a session opens)")
        return self.gdb

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """gdbremote errors -> pyocd exception types that are also crashcart TargetErrors."""
        try:
            yield
        except GdbConnectionLost as err:
            raise QemuLinkLost(err.message, remedy=err.remedy) from err
        except GdbMemoryError as err:
            raise QemuMemoryFault(err.message, fault_address=err.memory_address,
                                  length=err.length) from err
        except GdbRemoteError as err:
            raise QemuProbeError(err.message, value=err.reply, remedy=err.remedy) from err

    def _deferred(self, read: Callable[[], Any], now: bool) -> Any:
        """Do the read now; hand pyocd either the value or a callable returning it."""
        with self._lock:
            try:
                value = read()
                error: BaseException | None = None
            except exceptions.Error as err:
                value, error = None, err
        if now:
            if error is not None:
                raise error
            return value

        def result() -> Any:
            if error is not None:
                raise error
            return value
        return result

    def _poll(self) -> None:
        """Notice a stop that happened without us (breakpoint, QMP stop, guest pause)."""
        gdb = self.gdb
        if gdb is None or not gdb.running:
            return
        with self._translated():
            stop = gdb.poll_stop()
        if stop is not None:
            self._stopped_by_itself(stop)

    def _stopped_by_itself(self, stop: StopReply) -> None:
        self._registers = None
        pc = None
        try:
            pc = self._core_registers().get("pc")
        except exceptions.Error:
            pass
        if pc is not None and pc in self._breakpoints:
            self._dfsr |= DFSR_BKPT
            self._event("stopped", f"breakpoint ({stop.raw})", pc)
        else:
            self._dfsr |= DFSR_EXTERNAL
            self._event("stopped", f"stopped outside the debugger ({stop.raw})", pc)

    @contextmanager
    def _access(self) -> Iterator[None]:
        """One bus access: if it reaches QEMU while the VM runs, stop the VM once for all of
        it and continue it at the end (QEMU's gdbstub is all-stop)."""
        self._access_depth += 1
        try:
            yield
        finally:
            self._access_depth -= 1
            if self._access_depth == 0 and self._access_stopped:
                self._access_stopped = False
                if self.gdb is not None and self.gdb.is_open:
                    with self._translated():
                        self.gdb.cont()
                    self._retired = True
                    self._event("resumed-after-access")

    def _ready_for_access(self, kind: str, address: int) -> GdbRemote:
        """The gdbstub client, with the VM stopped (recorded when we had to stop it)."""
        gdb = self._require_gdb()
        self._poll()
        if gdb.running:
            with self._translated():
                gdb.interrupt()
            self._registers = None
            self._access_stopped = self._access_depth > 0
            self._event("stopped-for-access",
                        f"{kind}: QEMU's gdbstub reaches memory only while the VM is stopped",
                        address)
            if not self._access_stopped:  # not inside _access(): nobody would resume it
                raise QemuProbeError("internal: target access outside _access()")
        return gdb

    # -- private: DP and AP -------------------------------------------------------

    def _read_dp(self, addr: int) -> int:
        reg = addr & 0xC
        if reg == 0x0:
            return DPIDR_VALUE
        if reg == DP_CTRL_STAT:
            if self._select & 0xF:
                return 0  # DLCR, TARGETID, ... (other DPBANKSEL banks): not emulated
            value = self._ctrl_stat
            if value & CSYSPWRUPREQ:
                value |= CSYSPWRUPACK
            if value & CDBGPWRUPREQ:
                value |= CDBGPWRUPACK
            if value & CDBGRSTREQ:
                value |= CDBGRSTACK
            return value
        return self._rdbuff  # RESEND (0x8) and RDBUFF (0xC): the last AP read

    def _write_dp(self, addr: int, value: int) -> None:
        reg = addr & 0xC
        if reg == DP_ABORT:
            if value & ABORT_STKERRCLR:
                self._ctrl_stat &= ~STICKYERR
            if value & ABORT_STKCMPCLR:
                self._ctrl_stat &= ~STICKYCMP
            if value & ABORT_ORUNERRCLR:
                self._ctrl_stat &= ~STICKYORUN
        elif reg == DP_CTRL_STAT:
            if not self._select & 0xF:
                sticky = self._ctrl_stat & (STICKYERR | STICKYCMP | STICKYORUN)
                self._ctrl_stat = (value & CTRL_STAT_WRITABLE) | sticky
        elif reg == DP_SELECT:
            self._select = value

    def _check_ap_power(self) -> None:
        powered = CSYSPWRUPREQ | CDBGPWRUPREQ
        if self._ctrl_stat & powered != powered:
            raise exceptions.TransferError(
                "AP access while the debug and system power domains are off "
                "(CTRL/STAT CDBGPWRUPREQ/CSYSPWRUPREQ not set)")

    def _ap_register(self, addr: int) -> tuple[int, int]:
        # ADIv5: APSEL is SELECT[31:24], APBANKSEL SELECT[7:4], A[3:2] from the request.
        return (self._select >> 24) & 0xFF, (self._select & 0xF0) | (addr & 0xC)

    def _read_ap(self, addr: int) -> int:
        self._check_ap_power()
        apsel, reg = self._ap_register(addr)
        value = 0
        if apsel == 0:
            if reg == AP_CSW:
                value = self._csw | CSW_DEVICEEN
            elif reg == AP_TAR:
                value = self._tar
            elif reg == AP_DRW:
                value = self._drw_read(self._tar, advance=True)
            elif AP_BD0 <= reg <= AP_BD3:
                value = self._drw_read((self._tar & ~0xF) | (reg & 0xC), advance=False)
            elif reg == AP_BASE:
                value = AP_BASE_VALUE
            elif reg == AP_IDR:
                value = AP_IDR_VALUE
            # CFG (0xF4) = 0: no large address/data, little-endian; TAR_HI, MBT, BASE_HI: 0.
        self._rdbuff = value
        return value

    def _write_ap(self, addr: int, value: int) -> None:
        self._check_ap_power()
        apsel, reg = self._ap_register(addr)
        if apsel != 0:
            return
        if reg == AP_CSW:
            size = value & CSW_SIZE_MASK
            if size > 2:  # 64-bit and larger: not implemented, the field keeps its value
                size = self._csw & CSW_SIZE_MASK
            self._csw = (value & CSW_WRITABLE & ~CSW_SIZE_MASK) | size
        elif reg == AP_TAR:
            self._tar = value
        elif reg == AP_DRW:
            self._drw_write(self._tar, value, "DRW", advance=True)
        elif AP_BD0 <= reg <= AP_BD3:
            self._drw_write((self._tar & ~0xF) | (reg & 0xC), value, f"BD{(reg - AP_BD0) // 4}",
                            advance=False)

    def _transfer_shape(self, address: int) -> tuple[int, int]:
        """(bytes to transfer, bytes to advance TAR) for the CSW size and AddrInc."""
        size = 1 << (self._csw & CSW_SIZE_MASK)
        packed = (self._csw >> CSW_ADDRINC_SHIFT) & 3 == 2
        if packed and size < 4:
            count = 4 - (address & 3)
            return count - (count % size), count - (count % size)
        return size, size

    def _advance_tar(self, step: int) -> None:
        if (self._csw >> CSW_ADDRINC_SHIFT) & 3 == 0:
            return
        wrap = TAR_AUTOINC_WRAP
        self._tar = (self._tar & ~(wrap - 1)) | ((self._tar + step) & (wrap - 1))

    def _drw_read(self, address: int, *, advance: bool) -> int:
        nbytes, step = self._transfer_shape(address)
        lane = address & 3 if nbytes < 4 else 0
        try:
            data = self.bus_read_block(address, nbytes)
        except exceptions.TransferFaultError:
            self._ctrl_stat |= STICKYERR
            raise
        if advance:
            self._advance_tar(step)
        return int.from_bytes(data, "little") << (8 * lane)

    def _drw_write(self, address: int, value: int, via: str, *, advance: bool) -> None:
        nbytes, step = self._transfer_shape(address)
        lane = address & 3 if nbytes < 4 else 0
        data = ((value >> (8 * lane)) & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")
        try:
            self.bus_write_block(address, data, via)
        except exceptions.TransferFaultError:
            self._ctrl_stat |= STICKYERR
            raise
        if advance:
            self._advance_tar(step)

    # -- private: QEMU memory -----------------------------------------------------

    @staticmethod
    def _segments(address: int, length: int) -> Iterator[tuple[int, int, bool]]:
        """Split [address, address+length) into emulated and QEMU-backed pieces."""
        pos, end = address, address + length
        while pos < end:
            inside = next(((s, e) for s, e, _ in EMULATED if s <= pos < e), None)
            if inside is not None:
                stop = min(end, inside[1])
                yield pos, stop, True
            else:
                stop = min([end] + [s for s, _, _ in EMULATED if s > pos])
                yield pos, stop, False
            pos = stop

    def _target_read(self, address: int, length: int) -> bytes:
        gdb = self._ready_for_access("read", address)
        with self._translated():
            return gdb.read_memory(address, length, physical_fallback=True)

    def _target_write(self, address: int, data: bytes, via: str) -> None:
        self.writes.append(TargetWrite(address, int.from_bytes(data, "little"), len(data) * 8,
                                       via, None, True))
        if any(lo <= address < hi for lo, hi in DEVICE_REGIONS):
            LOG.warning("%s: write to device memory at 0x%08x: QEMU 7.2's gdbstub writes "
                        "only RAM and ROM and drops it without an error", self.unique_id, address)
        gdb = self._ready_for_access("write", address)
        with self._translated():
            gdb.write_memory(address, data)

    def _core_registers(self) -> dict[str, int]:
        if self._registers is None:
            with self._translated():
                self._registers = self._require_gdb().read_registers()
        return self._registers

    # -- private: emulated debug registers ----------------------------------------

    def _read_emulated(self, address: int) -> int:
        offset = address & 0xFFF
        if ROM_BASE <= address < ROM_BASE + 0x1000:
            if offset < 4 * len(ROM_ENTRIES):
                return ROM_ENTRIES[offset // 4]
            if offset == 0xFCC:
                return ROM_MEMTYPE
            return _id_register(offset, ROM_PIDR, ROM_CIDR)
        if address >= SCS_BASE + 0xFD0 and address < SCS_BASE + 0x1000:
            return _id_register(offset, SCS_PIDR, GENERIC_CIDR)
        if address == DHCSR:
            return self._read_dhcsr()
        if address == DCRSR:
            return 0  # write-only
        if address == DCRDR:
            return self._dcrdr
        if address == DEMCR:
            return self._demcr
        if address == DFSR:
            # QEMU's own DFSR (BKPT/VCATCH it records for the firmware) plus our debug events.
            qemu = int.from_bytes(self._target_read(DFSR, 4), "little")
            return qemu | self._dfsr
        if DWT_BASE <= address < DWT_BASE + 0x1000:
            if offset >= 0xFD0:
                return _id_register(offset, DWT_PIDR, GENERIC_CIDR)
            return self._dwt.get(offset, 0)
        if FPB_BASE <= address < FPB_BASE + 0x1000:
            if offset >= 0xFD0:
                return _id_register(offset, FPB_PIDR, GENERIC_CIDR)
            if offset == 0x000:
                return FP_CTRL_RESET | self._fp_ctrl_enable
            if 0x008 <= offset < 0x008 + 4 * FP_NUM_COMP:
                return self._fp_comp[(offset - 0x008) // 4]
            return 0
        if ITM_BASE <= address < ITM_BASE + 0x1000:
            if offset >= 0xFD0:
                return _id_register(offset, ITM_PIDR, GENERIC_CIDR)
            if offset < 0x80:
                return 1  # stimulus port FIFO ready
            if offset == 0xFB4:
                return 0x3 if self._itm_locked else 0x1  # LSR: lock implemented (+ locked)
            return self._itm.get(offset, 0)
        return 0

    def _write_emulated(self, address: int, value: int, via: str, size_bits: int) -> None:
        offset = address & 0xFFF
        name = self._emulated_name(address)
        self.writes.append(TargetWrite(address, value, size_bits, via, name, False))
        if address == DHCSR:
            self._write_dhcsr(value)
        elif address == DCRSR:
            self._write_dcrsr(value)
        elif address == DCRDR:
            self._dcrdr = value
        elif address == DEMCR:
            self._demcr = value & 0x010F07F1  # TRCENA, MON_*, VC_* (ARMv7-M C1.6.5)
        elif address == DFSR:
            self._dfsr &= ~value  # write one to clear
        elif DWT_BASE <= address < DWT_BASE + 0x1000 and offset < 0xFD0:
            if offset == 0x000:
                value = (DWT_CTRL_RESET & DWT_CTRL_READ_ONLY) | (value & ~DWT_CTRL_READ_ONLY)
            elif offset == 0x01C:
                return  # PCSR is read-only
            elif offset >= 0x20 and (offset - 0x20) % 16 == 8:
                value &= ~(1 << 24)  # FUNCTION.MATCHED is read-only
            if offset < 0x20 + 16 * DWT_NUM_COMP:
                self._dwt[offset] = value
        elif FPB_BASE <= address < FPB_BASE + 0x1000 and offset < 0xFD0:
            if offset == 0x000:
                if value & FP_CTRL_KEY:  # ENABLE changes only with KEY=1 (ARMv7-M C1.11.3)
                    self._fp_ctrl_enable = value & 1
            elif 0x008 <= offset < 0x008 + 4 * FP_NUM_COMP:
                self._fp_comp[(offset - 0x008) // 4] = value
            self._sync_breakpoints()
        elif ITM_BASE <= address < ITM_BASE + 0x1000 and offset < 0xFD0:
            if offset == 0xFB0:
                self._itm_locked = value != ITM_LAR_KEY
            elif offset >= 0x80 and not self._itm_locked:
                self._itm[offset] = value & (~(1 << 23) if offset == 0xE80 else 0xFFFFFFFF)

    @staticmethod
    def _emulated_name(address: int) -> str:
        fixed = {DHCSR: "DHCSR", DCRSR: "DCRSR", DCRDR: "DCRDR", DEMCR: "DEMCR", DFSR: "DFSR",
                 DWT_BASE: "DWT_CTRL", FPB_BASE: "FP_CTRL", ITM_BASE + 0xFB0: "ITM_LAR",
                 ITM_BASE + 0xE80: "ITM_TCR", ITM_BASE + 0xE00: "ITM_TER"}
        if address in fixed:
            return fixed[address]
        offset = address & 0xFFF
        if DWT_BASE <= address < DWT_BASE + 0x1000 and offset >= 0x20:
            n, reg = divmod(offset - 0x20, 16)
            return f"DWT_{('COMP', 'MASK', 'FUNCTION', '?')[reg // 4]}{n}"
        if FPB_BASE <= address < FPB_BASE + 0x1000 and offset >= 0x8:
            return f"FP_COMP{(offset - 0x8) // 4}"
        block = next(n for s, e, n in EMULATED if s <= address < e)
        return f"{block}+0x{offset:03x}"

    def _read_dhcsr(self) -> int:
        self._poll()
        halted = self.gdb is not None and not self.gdb.running
        value = self._dhcsr_ctrl
        if halted:
            value |= C_HALT | S_HALT
        if self._regrdy:
            value |= S_REGRDY
        if self._retired:
            value |= S_RETIRE_ST
            self._retired = False  # cleared by reading (ARMv7-M C1.6.2)
        return value

    def _write_dhcsr(self, value: int) -> None:
        """DHCSR write (ARMv7-M C1.6.2): only with DBGKEY; halt/step/resume via the gdbstub."""
        if value & 0xFFFF0000 != DBGKEY:
            LOG.debug("DHCSR write 0x%08x without DBGKEY ignored", value)
            return
        gdb = self._require_gdb()
        self._poll()
        self._dhcsr_ctrl = value & (C_DEBUGEN | C_STEP | C_MASKINTS | C_SNAPSTALL)
        halted = not gdb.running
        if not value & C_DEBUGEN:
            if halted:
                self._resume("C_DEBUGEN cleared")
            return
        if value & C_HALT:
            if not halted:
                with self._translated():
                    stop = gdb.interrupt()
                self._registers = None
                self._dfsr |= DFSR_HALTED
                self._event("halt", f"DHCSR C_HALT ({stop.raw})")
        elif halted and value & C_STEP:
            with self._translated():
                stop = gdb.step()
            self._registers = None
            self._retired = True
            self._dfsr |= DFSR_HALTED
            self._event("step", f"DHCSR C_STEP ({stop.raw})")
        elif halted:
            self._resume("DHCSR C_HALT=0")

    def _resume(self, why: str) -> None:
        with self._translated():
            self._require_gdb().cont()
        self._registers = None
        self._regrdy = False
        self._retired = True
        self._event("resume", why)

    def _write_dcrsr(self, value: int) -> None:
        """A core register transfer (ARMv7-M C1.6.3), done at once; S_REGRDY says if it worked."""
        regsel = value & 0x7F
        self._regrdy = False
        gdb = self._require_gdb()
        self._poll()
        if gdb.running:
            LOG.warning("%s: DCRSR transfer while the core runs (not in Debug state)",
                        self.unique_id)
            return
        if value & DCRSR_REGWNR:
            name = _GDB_REGS.get(regsel)
            if name is None:
                self._unavailable(regsel, "written")
                return
            self.writes.append(TargetWrite(regsel, self._dcrdr, 32, "DCRSR", name, True))
            with self._translated():
                gdb.write_register(name, self._dcrdr)
            self._registers = None
            self._regrdy = True
            return
        read = self._core_register(regsel)
        if read is None:
            self._unavailable(regsel, "read")
            return
        self._dcrdr = read
        self._regrdy = True

    def _core_register(self, regsel: int) -> int | None:
        regs = self._core_registers()
        name = _GDB_REGS.get(regsel)
        if name is not None:
            return regs.get(name)
        if regsel == REGSEL_MSP and regs.get("xpsr", 0) & 0x1FF:
            return regs.get("sp")  # Handler mode runs on the main stack (ARMv7-M B1.4.7)
        return None

    def _unavailable(self, regsel: int, verb: str) -> None:
        what = _UNAVAILABLE.get(regsel, f"core register REGSEL {regsel}")
        LOG.warning("%s: %s cannot be %s through QEMU's gdbstub; DCRSR transfer not completed "
                    "(S_REGRDY=0)", self.unique_id, what, verb)
        self._event("register-unavailable", f"{what} ({verb})")

    def _sync_breakpoints(self) -> None:
        """Mirror enabled FPB code comparators into gdbstub hardware breakpoints (Z1)."""
        wanted: set[int] = set()
        if self._fp_ctrl_enable:
            for comp in self._fp_comp[:FP_NUM_CODE]:
                if not comp & 1:
                    continue
                base = comp & 0x1FFFFFFC  # FPB rev 1 (ARMv7-M C1.11.5): REPLACE picks halfwords
                replace = comp >> 30
                if replace in (1, 3):
                    wanted.add(base)
                if replace in (2, 3):
                    wanted.add(base | 2)
        if wanted == self._breakpoints:
            return
        with self._access():
            gdb = self._ready_for_access("breakpoint", min(wanted ^ self._breakpoints))
            with self._translated():
                for address in sorted(self._breakpoints - wanted):
                    gdb.remove_breakpoint(address)
                    self._event("breakpoint-removed", "FPB comparator -> gdbstub z1", address)
                for address in sorted(wanted - self._breakpoints):
                    gdb.insert_breakpoint(address)
                    self._event("breakpoint-set", "FPB comparator -> gdbstub Z1", address)
        self._breakpoints = wanted


class QemuMemoryInterface(MemoryInterface):
    """pyocd's accelerated memory path for AP #0: straight to :meth:`QemuProbe.bus_read_block`."""

    def __init__(self, probe: QemuProbe) -> None:
        self._probe = probe

    def write_memory(self, addr: int, data: int, transfer_size: int = 32, **attrs: Any) -> None:
        self._probe.bus_write(addr, data, transfer_size, "memory-interface")

    def read_memory(self, addr: int, transfer_size: int = 32, now: bool = True,
                    **attrs: Any) -> Any:
        probe = self._probe
        return probe._deferred(lambda: probe.bus_read(addr, transfer_size), now)

    def read_memory_block32(self, addr: int, size: int, **attrs: Any) -> list[int]:
        data = self._probe.bus_read_block(addr, size * 4)
        return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]

    def write_memory_block32(self, addr: int, data: Sequence[int], **attrs: Any) -> None:
        blob = b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in data)
        self._probe.bus_write_block(addr, blob, "memory-interface")

    def read_memory_block8(self, addr: int, size: int, **attrs: Any) -> list[int]:
        return list(self._probe.bus_read_block(addr, size))

    def write_memory_block8(self, addr: int, data: Sequence[int], **attrs: Any) -> None:
        self._probe.bus_write_block(addr, bytes(data), "memory-interface")


class QemuProbePlugin(Plugin):
    """pyocd probe plugin (entry point ``pyocd.probe`` -> ``qemu``)."""

    def load(self) -> type[QemuProbe]:
        return QemuProbe

    @property
    def name(self) -> str:
        return PROBE_PREFIX

    @property
    def description(self) -> str:
        return "QEMU gdbstub presented as an SWD probe (crashcart)"

    @property
    def options(self) -> list[OptionInfo]:
        return [
            OptionInfo("qemu.resume_after_attach", bool, True,
                       "Resume the VM when connecting to QEMU's gdbstub stopped it (QEMU stops "
                       "a running VM on connect; an SWD attach does not halt the core)."),
            OptionInfo("qemu.accelerated_memory", bool, True,
                       "Give pyocd a direct memory interface instead of MEM-AP CSW/TAR/DRW "
                       "transfers."),
            OptionInfo("qemu.timeout", float, DEFAULT_TIMEOUT_S,
                       "Seconds to wait for each answer from the gdbstub."),
        ]


def _register_late() -> None:
    """Register the probe class when pyocd met the stand-in (module imported before pyocd)."""
    global _BOOTSTRAPPING
    _BOOTSTRAPPING = False
    if not _REGISTER_LATE:
        return
    from pyocd.core.options import add_option_set
    from pyocd.probe.aggregator import PROBE_CLASSES

    PROBE_CLASSES.setdefault(PROBE_PREFIX, QemuProbe)
    add_option_set(QemuProbePlugin().options)


_register_late()
