"""Cortex-M fault decoding: fault status registers, EXC_RETURN, the stacked frame.

Pure functions over register values and stack bytes; no device I/O.

* :func:`decode_fault` explains CFSR (MMFSR, BFSR, UFSR), HFSR, DFSR and SFSR,
  gates MMFAR/BFAR/SFAR on their VALID bits and says whether the stacked frame
  can be trusted.
* :func:`decode_exc_return` reads the EXC_RETURN value a handler finds in LR.
* :func:`stacked_frame_size` and :func:`unpack_frame` read the exception frame.

The bit tables (:data:`BIT_TABLES`) are data: names from the Architecture
Reference Manuals, a plain-language meaning and the section each comes from.
Manuals cited: ARMv7-M ARM (DDI 0403E), ARMv8-M ARM (DDI 0553), ARMv6-M ARM
(DDI 0419).  Register sections of DDI 0553 are cited by the register's name
because their numbers differ between issues of that manual.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from crashcart.errors import InputError

LOG = logging.getLogger(__name__)

ARCHES = ("armv6-m", "armv7-m", "armv7e-m", "armv8-m.base", "armv8-m.main")
"""Architecture names accepted by every function here."""

_MAINLINE = frozenset({"armv7-m", "armv7e-m", "armv8-m.main"})  # CFSR, HFSR, MMFAR, BFAR
_V8 = frozenset({"armv8-m.base", "armv8-m.main"})
_FP_POSSIBLE = frozenset({"armv7e-m", "armv8-m.main"})  # the FP extension exists only here
_ALL = frozenset(ARCHES)

_CFSR_REF = "ARMv7-M ARM B3.2.15; ARMv8-M ARM (DDI 0553) D1.2 'CFSR'"
_HFSR_REF = "ARMv7-M ARM B3.2.16; ARMv8-M ARM (DDI 0553) D1.2 'HFSR'"
_DFSR_REF = "ARMv7-M ARM C1.6.1; ARMv6-M ARM (DDI 0419) 'DFSR'; ARMv8-M ARM (DDI 0553) D1.2 'DFSR'"
_SFSR_REF = "ARMv8-M ARM (DDI 0553) D1.2 'SFSR'"
_EXC_RETURN_V7_REF = "ARMv7-M ARM B1.5.8 (ARMv6-M ARM B1.5.8)"
_EXC_RETURN_V8_REF = "ARMv8-M ARM (DDI 0553) D1.2 'EXC_RETURN, Exception Return Payload'"

FP_NONE = "none"  # basic frame: no FP state
FP_SAVED = "saved"  # extended frame, S0-S15 and FPSCR written
FP_LAZY = "reserved, not written (lazy stacking)"  # FPCCR.LSPACT: space reserved only
FP_UNKNOWN = "unknown (FPCCR not captured)"  # extended frame, could have been lazy


@dataclass(frozen=True)
class BitDefinition:
    """One architecturally defined bit of a fault status register."""

    register: str  # "CFSR", "HFSR", "DFSR", "SFSR"
    bit: int
    name: str  # the manual's name, "PRECISERR"
    subregister: str | None  # "MMFSR", "BFSR", "UFSR" for CFSR bits
    fault: str  # fault kind the bit reports: "BusFault", "HardFault", "debug", ...
    phrase: str  # short form for one-line summaries
    meaning: str  # plain-language explanation
    section: str  # where the bit is defined
    arches: frozenset[str]
    needs: str | None = None  # "FP extension" when the bit exists only with it
    validates: str | None = None  # the address register this VALID bit vouches for
    address: str | None = None  # the address register that holds this fault's address
    frame: str | None = None  # "stacking", "unstacking" or "lazy FP" if it concerns a frame


def _row(bit: int, name: str, sub: str | None, fault: str, phrase: str, meaning: str,
         **opts: object) -> tuple[int, str, str | None, str, str, str, dict[str, object]]:
    return bit, name, sub, fault, phrase, meaning, opts


def _bits(register: str, ref: str, arches: frozenset[str],
          rows: Iterable[tuple[int, str, str | None, str, str, str, dict[str, object]]],
          ) -> tuple[BitDefinition, ...]:
    out = []
    for bit, name, sub, fault, phrase, meaning, opts in rows:
        kw = dict(opts)
        row_arches = kw.pop("arches", arches)
        out.append(BitDefinition(register, bit, name, sub, fault, phrase, meaning, ref,
                                 row_arches, **kw))  # type: ignore[arg-type]
    return tuple(out)


_FP = {"arches": _FP_POSSIBLE, "needs": "FP extension", "frame": "lazy FP"}
_FP_V8 = {"arches": frozenset({"armv8-m.main"}), "needs": "FP extension", "frame": "lazy FP"}

CFSR_BITS: tuple[BitDefinition, ...] = _bits("CFSR", _CFSR_REF, _MAINLINE, [
    _row(0, "IACCVIOL", "MMFSR", "MemManage", "instruction access violation",
     "An instruction fetch from a location the MPU (or the default memory map's "
     "execute-never regions) does not allow. The stacked PC is the faulting "
     "instruction. MMFAR is not written."),
    _row(1, "DACCVIOL", "MMFSR", "MemManage", "data access violation",
     "A load or store the MPU does not allow. The stacked PC is the faulting "
     "instruction; MMFAR holds the data address when MMARVALID is set.",
     address="MMFAR"),
    _row(3, "MUNSTKERR", "MMFSR", "MemManage",
     "unstacking on exception return faulted (MPU)",
     "Unstacking on exception return hit an MPU violation. The return was "
     "abandoned and SP not adjusted: the frame is still on the stack, but the "
     "context being returned to is suspect. MMFAR is not written.",
     frame="unstacking"),
    _row(4, "MSTKERR", "MMFSR", "MemManage", "stacking the exception frame faulted (MPU)",
     "Stacking on exception entry hit an MPU violation. SP was still adjusted, "
     "but the stacked values may be missing or wrong. MMFAR is not written.",
     frame="stacking"),
    _row(5, "MLSPERR", "MMFSR", "MemManage",
     "lazy floating-point state preservation faulted (MPU)",
     "An MPU violation while lazily writing S0-S15/FPSCR into the space reserved "
     "in an earlier extended exception frame. FP extension only.", **_FP),
    _row(7, "MMARVALID", "MMFSR", "MemManage", "MMFAR valid",
     "MMFAR holds the address of the faulting data access.", validates="MMFAR"),
    _row(8, "IBUSERR", "BFSR", "BusFault", "instruction bus error",
     "An instruction prefetch got a bus error and the instruction was about to "
     "execute. BFAR is not written."),
    _row(9, "PRECISERR", "BFSR", "BusFault", "precise data bus error",
     "A load or store got a bus error. The stacked PC is the faulting "
     "instruction; BFAR holds the address when BFARVALID is set.",
     address="BFAR"),
    _row(10, "IMPRECISERR", "BFSR", "BusFault", "imprecise data bus error",
     "A buffered write got a bus error after its instruction had completed. The "
     "stacked PC is not the faulting instruction and no address is recorded."),
    _row(11, "UNSTKERR", "BFSR", "BusFault", "unstacking on exception return faulted (bus)",
     "Unstacking on exception return got a bus error. The return was abandoned "
     "and SP not adjusted: the context being returned to is suspect. BFAR is not "
     "written.", frame="unstacking"),
    _row(12, "STKERR", "BFSR", "BusFault", "stacking the exception frame faulted (bus)",
     "Stacking on exception entry got a bus error. SP was still adjusted, but "
     "the stacked values may be missing or wrong. BFAR is not written.",
     frame="stacking"),
    _row(13, "LSPERR", "BFSR", "BusFault",
     "lazy floating-point state preservation faulted (bus)",
     "A bus error while lazily writing S0-S15/FPSCR into the space reserved in an "
     "earlier extended exception frame. FP extension only.", **_FP),
    _row(15, "BFARVALID", "BFSR", "BusFault", "BFAR valid",
     "BFAR holds the address of the faulting data access.", validates="BFAR"),
    _row(16, "UNDEFINSTR", "UFSR", "UsageFault", "undefined instruction",
     "The processor tried to execute an undefined instruction. The stacked PC is "
     "that instruction."),
    _row(17, "INVSTATE", "UFSR", "UsageFault", "invalid EPSR state",
     "An instruction executed with an invalid EPSR, usually T = 0 after a branch "
     "to an even address (a NULL or data pointer called as a function) or bad "
     "IT bits. The stacked PC is the instruction that could not execute."),
    _row(18, "INVPC", "UFSR", "UsageFault", "invalid PC load on exception return",
     "An exception return with an illegal EXC_RETURN value, or one inconsistent "
     "with the exception state (for example IPSR or Thread/Handler mismatch)."),
    _row(19, "NOCP", "UFSR", "UsageFault", "coprocessor absent or disabled",
     "An instruction used a coprocessor (usually the FPU) that is absent or "
     "disabled by CPACR/NSACR."),
    _row(20, "STKOF", "UFSR", "UsageFault", "stack limit violated",
     "A stack pointer went below MSPLIM/PSPLIM, by an instruction or while "
     "stacking an exception frame. Pushes below the limit are not performed and "
     "SP is set to the limit, so the frame may be incomplete. ARMv8-M Mainline "
     "only.", arches=frozenset({"armv8-m.main"}), frame="stacking"),
    _row(24, "UNALIGNED", "UFSR", "UsageFault", "unaligned access",
     "An unaligned access while CCR.UNALIGN_TRP is set, or an unaligned "
     "LDM/STM/LDRD/STRD/exclusive access, which must always be aligned."),
    _row(25, "DIVBYZERO", "UFSR", "UsageFault", "divide by zero",
     "SDIV or UDIV with a zero divisor while CCR.DIV_0_TRP is set. The stacked PC "
     "is the divide instruction."),
])

HFSR_BITS: tuple[BitDefinition, ...] = _bits("HFSR", _HFSR_REF, _MAINLINE, [
    _row(1, "VECTTBL", None, "HardFault", "vector table read faulted",
     "A bus fault on a vector table read during exception entry. Always a "
     "HardFault. The stacked PC is the instruction the exception preempted."),
    _row(30, "FORCED", None, "HardFault", "escalated configurable fault",
     "A configurable fault (MemManage, BusFault, UsageFault; SecureFault on "
     "ARMv8-M) was escalated to HardFault because its handler was disabled or its "
     "priority did not let it preempt. CFSR (or SFSR) holds the cause."),
    _row(31, "DEBUGEVT", None, "HardFault", "debug event escalated",
     "A debug event (typically BKPT) happened while neither halting debug nor "
     "the DebugMonitor could take it, so it escalated to HardFault. DFSR says "
     "which event."),
])

DFSR_BITS: tuple[BitDefinition, ...] = _bits("DFSR", _DFSR_REF, _ALL, [
    _row(0, "HALTED", None, "debug", "halt request or step",
     "A debugger halted the core (DHCSR.C_HALT) or single-stepped it. Expected "
     "when a probe halted the board to capture evidence."),
    _row(1, "BKPT", None, "debug", "breakpoint",
     "A BKPT instruction executed or an FPB breakpoint matched."),
    _row(2, "DWTTRAP", None, "debug", "watchpoint",
     "A DWT comparator matched (data watchpoint or PC match)."),
    _row(3, "VCATCH", None, "debug", "vector catch",
     "A debugger asked to halt on entry to this exception (DEMCR.VC_*); the "
     "fault status registers say which fault."),
    _row(4, "EXTERNAL", None, "debug", "external debug request",
     "The external debug request signal (EDBGRQ, for example a cross-trigger) "
     "halted the core."),
])

SFSR_BITS: tuple[BitDefinition, ...] = _bits("SFSR", _SFSR_REF, _V8, [
    _row(0, "INVEP", None, "SecureFault", "invalid Secure entry point",
     "Non-secure code branched to a Secure address that is not a valid entry "
     "point (no SG instruction in a Non-secure callable region)."),
    _row(1, "INVIS", None, "SecureFault", "invalid integrity signature",
     "On exception return the integrity signature of the Secure additional state "
     "context did not match: the Secure stack frame is corrupt or EXC_RETURN does "
     "not describe it.", frame="unstacking"),
    _row(2, "INVER", None, "SecureFault", "invalid exception return",
     "A Non-secure handler returned with an EXC_RETURN that claims a Secure "
     "exception (ES = 1) or has DCRS = 0."),
    _row(3, "AUVIOL", None, "SecureFault", "attribution unit violation",
     "Non-secure code, or stacking for it, accessed an address the SAU/IDAU marks "
     "Secure. SFAR holds the address when SFARVALID is set.", address="SFAR"),
    _row(4, "INVTRAN", None, "SecureFault", "invalid Secure to Non-secure transition",
     "A branch into Non-secure memory from Secure code that was not flagged as a "
     "domain crossing (BX/BLX instead of BXNS/BLXNS)."),
    _row(5, "LSPERR", None, "SecureFault",
     "lazy floating-point state preservation faulted (SAU)",
     "An SAU/IDAU violation while lazily preserving floating-point state.",
     address="SFAR", **_FP_V8),
    _row(6, "SFARVALID", None, "SecureFault", "SFAR valid",
     "SFAR holds the address of the access that caused the SecureFault.",
     validates="SFAR"),
    _row(7, "LSERR", None, "SecureFault", "lazy floating-point state error",
     "Lazy floating-point state activation or deactivation was inconsistent "
     "(for example FPCCR.LSPACT set while FP context was active).", **_FP_V8),
])

BIT_TABLES: dict[str, tuple[BitDefinition, ...]] = {
    "CFSR": CFSR_BITS, "HFSR": HFSR_BITS, "DFSR": DFSR_BITS, "SFSR": SFSR_BITS,
}
_DEFS = {(d.register, d.bit): d for table in BIT_TABLES.values() for d in table}

# Which architectures have each register at all (ARMv6-M has no CFSR/HFSR/MMFAR/
# BFAR; ARMv8-M Baseline neither: they need the Main Extension; SFSR/SFAR need
# the Security Extension, which only ARMv8-M has).
REGISTER_ARCHES: dict[str, frozenset[str]] = {
    "CFSR": _MAINLINE, "HFSR": _MAINLINE, "MMFAR": _MAINLINE, "BFAR": _MAINLINE,
    "DFSR": _ALL, "SFSR": _V8, "SFAR": _V8, "SHCSR": _ALL, "ICSR": _ALL,
}

# Exception numbers, ARMv7-M ARM B1.5.2 (SecureFault: ARMv8-M).
_EXCEPTIONS = {1: "Reset", 2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault",
               6: "UsageFault", 7: "SecureFault", 11: "SVCall", 12: "DebugMonitor",
               14: "PendSV", 15: "SysTick"}
_KIND_ORDER = ("HardFault", "MemManage", "BusFault", "UsageFault", "SecureFault", "debug")
_CONFIGURABLE = ("MemManage", "BusFault", "UsageFault", "SecureFault")
# SHCSR (ARMv7-M ARM B3.2 'SHCSR'): active and enable bits of configurable faults.
_SHCSR_ACTIVE = {"MemManage": 0, "BusFault": 1, "UsageFault": 3, "SecureFault": 4}
_SHCSR_ENABLE = {"MemManage": (16, "MEMFAULTENA"), "BusFault": (17, "BUSFAULTENA"),
                 "UsageFault": (18, "USGFAULTENA"), "SecureFault": (19, "SECUREFAULTENA")}
_FAULT_REGISTERS = ("cfsr", "hfsr", "dfsr", "mmfar", "bfar", "sfsr", "sfar", "shcsr", "icsr")


@dataclass(frozen=True)
class FaultBit:
    """A bit found set in a fault status register."""

    register: str
    name: str  # the manual's name, or "RESERVED"
    bit: int
    meaning: str
    fault: str | None = None  # the fault kind it reports; None for reserved bits
    reserved: bool = False
    section: str = ""


@dataclass(frozen=True)
class ExcReturn:
    """What an EXC_RETURN value says about the exception frame and the return."""

    value: int
    arch: str
    return_mode: str  # "Thread" or "Handler"
    stack: str | None  # MSP/PSP (v6/v7-M), MSP_S/PSP_S/MSP_NS/PSP_NS (v8-M); None if not said
    extended_frame: bool  # FType == 0: room for FP state (S0-S15, FPSCR) in the frame
    security_state: str | None  # v8-M bit S: state of the interrupted code
    exception_security_state: str | None  # v8-M bit ES: state the exception was taken to
    dcrs: bool | None  # v8-M bit DCRS (default callee register stacking rules)
    callee_registers_stacked: bool  # integrity signature + r4-r11 sit below the frame
    section: str
    notes: tuple[str, ...] = ()

    @property
    def frame_type(self) -> str:
        return "extended" if self.extended_frame else "basic"

    @property
    def frame_words(self) -> int:
        """Words of the caller-saved frame: 8 basic, 26 extended (without S16-S31)."""
        return 26 if self.extended_frame else 8


@dataclass(frozen=True)
class Fpccr:
    """FPCCR fields that matter for reading a frame (ARMv7-M ARM B3.2 'FPCCR')."""

    value: int
    lspact: bool  # bit 0: lazy state preservation active, FP space reserved not written
    lspen: bool  # bit 30: lazy state preservation enabled
    aspen: bool  # bit 31: CONTROL.FPCA set automatically, FP state stacked on entry
    ts: bool  # bit 26 (ARMv8-M Security Extension): Secure frames hold S16-S31 too


@dataclass(frozen=True)
class ExceptionFrame:
    """The hardware-stacked exception frame, unpacked."""

    frame_address: int | None  # the SP value EXC_RETURN points at, if given
    r0: int
    r1: int
    r2: int
    r3: int
    r12: int
    lr: int
    pc: int
    xpsr: int
    size_bytes: int  # everything the exception pushed, padding word included
    padding_bytes: int  # 4 when stacked xPSR bit 9 says SP was realigned
    sp_before_exception: int | None  # frame_address + size_bytes
    callee_saved: Mapping[str, int] | None = None  # r4-r11 of the additional state context
    integrity_signature: int | None = None
    integrity_signature_ok: bool | None = None
    fp_state: str = FP_NONE
    s_registers: tuple[int, ...] | None = None  # raw S0-S15 (S0-S31 with FPCCR.TS)
    fpscr: int | None = None
    fp_area_address: int | None = None  # where FPCAR points for this frame
    notes: tuple[str, ...] = ()

    @property
    def registers(self) -> dict[str, int]:
        regs = {"r0": self.r0, "r1": self.r1, "r2": self.r2, "r3": self.r3,
                "r12": self.r12, "lr": self.lr, "pc": self.pc, "xpsr": self.xpsr}
        regs.update(self.callee_saved or {})
        return regs


@dataclass(frozen=True)
class FaultReport:
    """Everything the fault registers say, explained."""

    arch: str
    summary: str  # one line
    kinds: tuple[str, ...]  # fault kinds with status bits set, HardFault first
    primary: str | None  # the fault kind that is the cause (for FORCED: the escalated one)
    escalated: bool  # HFSR.FORCED: the primary fault was escalated to HardFault
    cause: str  # plain-language cause
    bits: tuple[FaultBit, ...]  # every set bit, reserved ones included
    mmfar: int | None  # only when MMARVALID is set
    bfar: int | None  # only when BFARVALID is set
    sfar: int | None  # only when SFARVALID is set
    frame_trustworthy: bool
    frame_reasons: tuple[str, ...]  # why the stacked frame is not trustworthy
    active_exception: str | None = None  # from ICSR.VECTACTIVE, when given
    exc_return: ExcReturn | None = None
    notes: tuple[str, ...] = ()

    def bit_names(self, register: str | None = None) -> tuple[str, ...]:
        return tuple(b.name for b in self.bits if register in (None, b.register))


# --- public functions ------------------------------------------------------


def decode_register(register: str, value: int, arch: str, *,
                    fp: bool | None = None) -> tuple[FaultBit, ...]:
    """Every set bit of CFSR, HFSR, DFSR or SFSR, reserved bits included."""
    _check_arch(arch)
    fp = _check_fp(arch, fp)
    reg = register.upper()
    if reg not in BIT_TABLES:
        raise InputError(f"no bit table for register {register!r}", field="register",
                         value=register, remedy=f"use one of {', '.join(BIT_TABLES)}")
    if arch not in REGISTER_ARCHES[reg]:
        raise InputError(f"{arch} has no {reg}", field=reg.lower(), value=value)
    _check_u32(reg.lower(), value)
    return tuple(_set_bits(reg, value, arch, fp))


def decode_fault(arch: str, regs: Mapping[str, int], *, fp: bool | None = None,
                 security: bool | None = None) -> FaultReport:
    """Explain the fault registers captured from one crash.

    ``regs`` may hold any of cfsr, hfsr, dfsr, mmfar, bfar, sfsr, sfar, shcsr,
    icsr and exc_return (names are case-insensitive; other keys, such as r0,
    are ignored).  ``fp`` / ``security`` say whether the FP / Security
    Extension is implemented, None when unknown.
    """
    _check_arch(arch)
    fp = _check_fp(arch, fp)
    _check_security(arch, security)
    values: dict[str, int] = {}
    for key, value in regs.items():
        name = str(key).lower()
        if name in _FAULT_REGISTERS or name == "exc_return":
            _check_u32(name, value)
            values[name] = value
    notes: list[str] = []
    exc = None
    if "exc_return" in values:
        exc = decode_exc_return(values["exc_return"], arch, fp=fp, security=security)

    for name in _FAULT_REGISTERS:
        absent = arch not in REGISTER_ARCHES[name.upper()] or (
            security is False and name in ("sfsr", "sfar"))
        if name in values and absent:
            value = values.pop(name)
            if value:
                without = " without the Security Extension" if arch in _V8 else ""
                notes.append(f"{name.upper()} = 0x{value:08x} ignored: {arch}{without} has "
                             f"no {name.upper()}, so the value cannot come from the hardware")
    bits: list[FaultBit] = []
    for reg in BIT_TABLES:
        if reg.lower() in values:
            bits.extend(_set_bits(reg, values[reg.lower()], arch, fp))
    for b in bits:
        if b.reserved:
            notes.append(f"{b.register} bit {b.bit} is set but reserved on {arch}: "
                         "the value is corrupt or from another architecture")
    present = {(b.register, b.name) for b in bits if not b.reserved}

    addresses: dict[str, int | None] = {}
    for flag, reg in (("MMARVALID", "MMFAR"), ("BFARVALID", "BFAR"), ("SFARVALID", "SFAR")):
        owner = "SFSR" if reg == "SFAR" else "CFSR"
        raw = values.get(reg.lower())
        if (owner, flag) in present:
            addresses[reg] = raw
            if raw is None:
                notes.append(f"{flag} is set but {reg} was not captured")
        elif raw is not None and arch in REGISTER_ARCHES[reg]:
            notes.append(f"{reg} = 0x{raw:08x} ignored: {flag} is clear, so it does not "
                         "hold a fault address")

    active = None
    if "icsr" in values:
        active = _exception_name(values["icsr"] & 0x1FF)
    kinds = _kinds(bits, arch)
    primary, escalated, cause, summary = _explain(arch, bits, present, addresses, values,
                                                  active, notes)
    reserved = ", ".join(f"{b.register} bit {b.bit}" for b in bits if b.reserved)
    if reserved:
        summary += f"; reserved bits set: {reserved}"
    if primary == "HardFault" and "HardFault" not in kinds:
        kinds = ("HardFault",) + kinds
    reasons = _frame_reasons(bits)
    if arch not in _MAINLINE:
        notes.append(f"{arch} records no stacking errors: the frame cannot be checked "
                     "from fault registers")
    if any(b.name in ("MLSPERR", "LSPERR") for b in bits):
        notes.append("lazy FP state preservation faulted: the FP part of the frame it "
                     "was writing holds no valid FP registers")
    for line in notes:
        LOG.debug("decode_fault: %s", line)
    return FaultReport(
        arch=arch, summary=summary, kinds=kinds, primary=primary, escalated=escalated,
        cause=cause, bits=tuple(bits), mmfar=addresses.get("MMFAR"),
        bfar=addresses.get("BFAR"), sfar=addresses.get("SFAR"),
        frame_trustworthy=not reasons, frame_reasons=reasons, active_exception=active,
        exc_return=exc, notes=tuple(notes))


def decode_exc_return(value: int, arch: str, *, fp: bool | None = None,
                      security: bool | None = None) -> ExcReturn:
    """Decode an EXC_RETURN value; raise InputError for values that are not one.

    ``fp``: FP extension implemented (None: unknown, allowed where the
    architecture permits it).  ``security``: ARMv8-M Security Extension
    implemented (None: unknown).
    """
    _check_arch(arch)
    fp = _check_fp(arch, fp)
    _check_security(arch, security)
    _check_u32("exc_return", value)
    if arch in _V8:
        return _exc_return_v8(value, arch, fp, security)
    return _exc_return_v7(value, arch, fp)


def decode_fpccr(value: int, arch: str) -> Fpccr:
    """The FPCCR bits that decide what an extended frame holds."""
    _check_arch(arch)
    _check_u32("fpccr", value)
    return Fpccr(value, lspact=bool(value & 1), lspen=bool(value >> 30 & 1),
                 aspen=bool(value >> 31 & 1), ts=arch in _V8 and bool(value >> 26 & 1))


def stacked_frame_size(exc_return: int | ExcReturn, arch: str, *, xpsr: int | None = None,
                       fpccr: int | None = None, fp: bool | None = None,
                       security: bool | None = None) -> int:
    """Bytes the exception pushed, from the frame address to the SP before it.

    0x20 basic frame, 0x68 extended (S0-S15, FPSCR, a reserved word; ARMv7-M
    ARM B1.5.6), 0xA8 for Secure extended frames with FPCCR.TS (ARMv8-M), plus
    0x28 of additional state (integrity signature, reserved, r4-r11) when
    EXC_RETURN says the callee registers were stacked, plus 4 when the stacked
    ``xpsr`` has bit 9 set (SP was realigned to 8 bytes, ARMv7-M ARM B1.5.7).
    Without ``xpsr`` the padding word is not counted.  The FP space is counted
    even when lazy stacking left it unwritten: it is reserved on the stack.
    """
    exc = _as_exc_return(exc_return, arch, fp, security)
    additional, state, _ = _layout(exc, _fpccr_or_none(fpccr, arch))
    if xpsr is not None:
        _check_u32("xpsr", xpsr)
    return additional + state + _padding(xpsr)


def unpack_frame(data: bytes, exc_return: int | ExcReturn, arch: str, *,
                 frame_address: int | None = None, fpccr: int | None = None,
                 fpcar: int | None = None, fp: bool | None = None,
                 security: bool | None = None) -> ExceptionFrame:
    """Unpack the frame from ``data`` read at the stack pointer EXC_RETURN selects.

    ``frame_address`` is that stack pointer (gives sp_before_exception).  With
    ``fpccr`` (and ``fpcar``), an extended frame whose FP space was only
    reserved by lazy stacking (FPCCR.LSPACT, FPCAR at this frame's FP space) is
    reported as not saved: the FP registers were never written to the stack.
    """
    exc = _as_exc_return(exc_return, arch, fp, security)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError("frame data must be bytes", field="data", value=type(data).__name__)
    data = bytes(data)
    if frame_address is not None:
        _check_u32("frame_address", frame_address)
    if fpcar is not None:
        _check_u32("fpcar", fpcar)
    fpccr_state = _fpccr_or_none(fpccr, arch)
    additional, state, fp_words = _layout(exc, fpccr_state)
    notes: list[str] = []
    fp_area = None if frame_address is None else (frame_address + additional + 0x20) & 0xFFFFFFFF

    fp_state = FP_NONE
    if exc.extended_frame:
        if fpccr_state is None:
            fp_state = FP_UNKNOWN
            notes.append("extended frame but FPCCR not given: if lazy stacking was "
                         "active (FPCCR.LSPACT) the FP values read here were never written")
        elif fpccr_state.lspact and (fpcar is None or fp_area is None
                                     or fpcar & ~7 == fp_area & ~7):
            fp_state = FP_LAZY
            notes.append("FPCCR.LSPACT: FP space reserved at FPCAR but not written; the "
                         "interrupted context's S0-S15/FPSCR are still in the FPU")
        else:
            fp_state = FP_SAVED
    needed = additional + (0x20 if fp_state in (FP_NONE, FP_LAZY) else state)
    if len(data) < needed:
        raise InputError(f"the frame needs {needed} bytes from the stack pointer, got "
                         f"{len(data)}", field="data", value=len(data),
                         remedy=f"read at least {needed} bytes at the stack pointer "
                         f"EXC_RETURN 0x{exc.value:08x} selects")
    words = struct.unpack_from(f"<{needed // 4}I", data)

    callee = signature = sig_ok = None
    if additional:
        signature = words[0]
        expected = 0xFEFA125A if exc.extended_frame else 0xFEFA125B
        sig_ok = signature == expected
        callee = {f"r{n}": words[n - 2] for n in range(4, 12)}
        if not sig_ok:
            notes.append(f"integrity signature 0x{signature:08x} is not 0x{expected:08x}: "
                         "the additional state context is corrupt or EXC_RETURN does "
                         "not describe this frame")
    base = additional // 4
    r0, r1, r2, r3, r12, lr, pc, xpsr = words[base:base + 8]
    s_regs = fpscr = None
    if fp_state in (FP_SAVED, FP_UNKNOWN):
        fp_base = base + 8
        s_regs = words[fp_base:fp_base + 16]
        fpscr = words[fp_base + 16]
        if fp_words == 32:  # S16-S31 follow FPSCR and the reserved word
            s_regs += words[fp_base + 18:fp_base + 34]
    padding = _padding(xpsr)
    size = additional + state + padding
    sp_before = None
    if frame_address is not None:
        sp_before = (frame_address + size) & 0xFFFFFFFF
        if frame_address % 8:
            notes.append(f"frame address 0x{frame_address:08x} is not 8-byte aligned; "
                         "exception entry always aligns the frame (B1.5.7)")
    return ExceptionFrame(
        frame_address=frame_address, r0=r0, r1=r1, r2=r2, r3=r3, r12=r12, lr=lr, pc=pc,
        xpsr=xpsr, size_bytes=size, padding_bytes=padding, sp_before_exception=sp_before,
        callee_saved=callee, integrity_signature=signature, integrity_signature_ok=sig_ok,
        fp_state=fp_state, s_registers=s_regs, fpscr=fpscr,
        fp_area_address=fp_area if exc.extended_frame else None, notes=tuple(notes))


# --- checks ----------------------------------------------------------------


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise InputError("unknown architecture", field="arch", value=arch,
                         remedy=f"use one of {', '.join(ARCHES)}")


def _check_fp(arch: str, fp: bool | None) -> bool | None:
    if fp is None:
        return False if arch not in _FP_POSSIBLE else None
    if fp and arch not in _FP_POSSIBLE:
        raise InputError(f"{arch} has no FP extension (only armv7e-m and armv8-m.main do)",
                         field="fp", value=fp)
    return bool(fp)


def _check_security(arch: str, security: bool | None) -> None:
    if security and arch not in _V8:
        raise InputError(f"{arch} has no Security Extension (only ARMv8-M has)",
                         field="security", value=security)


def _check_u32(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InputError("a register value must be an integer from 0 to 0xFFFFFFFF",
                         field=name, value=value)


def _fpccr_or_none(fpccr: int | None, arch: str) -> Fpccr | None:
    return None if fpccr is None else decode_fpccr(fpccr, arch)


def _as_exc_return(exc_return: int | ExcReturn, arch: str, fp: bool | None,
                   security: bool | None) -> ExcReturn:
    if isinstance(exc_return, ExcReturn):
        _check_arch(arch)
        if exc_return.arch != arch:
            raise InputError(f"EXC_RETURN was decoded for {exc_return.arch}, not {arch}",
                             field="arch", value=arch)
        return exc_return
    return decode_exc_return(exc_return, arch, fp=fp, security=security)


# --- EXC_RETURN ------------------------------------------------------------

# ARMv7-M ARM B1.5.8: bits [31:5] are ones; bit 4 is FType
# (0 = extended frame, FP extension only); bits [3:0] give mode and stack.
_V7_LOW = {0x1: ("Handler", "MSP"), 0x9: ("Thread", "MSP"), 0xD: ("Thread", "PSP")}


def _not_exc_return(value: int, arch: str, why: str) -> InputError:
    if arch in _V8:
        valid = "0xFFFFFFxx with the bit fields of DDI 0553 'EXC_RETURN'"
    elif arch in _FP_POSSIBLE:
        valid = "0xFFFFFFF1, 0xFFFFFFF9, 0xFFFFFFFD, or with FP 0xFFFFFFE1/E9/ED"
    else:
        valid = "0xFFFFFFF1, 0xFFFFFFF9 or 0xFFFFFFFD"
    return InputError(f"0x{value:08x} is not an EXC_RETURN value on {arch}: {why}",
                      field="exc_return", value=f"0x{value:08x}",
                      remedy=f"pass LR as read on entry to the handler ({valid})")


def _exc_return_v7(value: int, arch: str, fp: bool | None) -> ExcReturn:
    if value >> 5 != 0x7FFFFFF:
        raise _not_exc_return(value, arch, "bits [31:5] must all be 1 (B1.5.8)")
    extended = not value & 0x10
    low = value & 0xF
    if low not in _V7_LOW:
        raise _not_exc_return(value, arch, f"bits [3:0] = 0x{low:x} are reserved (B1.5.8)")
    if extended and fp is False:
        raise _not_exc_return(value, arch, "bit 4 = 0 (extended frame) needs the FP "
                              "extension")
    mode, stack = _V7_LOW[low]
    return ExcReturn(value, arch, mode, stack, extended, None, None, None, False,
                     _EXC_RETURN_V7_REF)


def _exc_return_v8(value: int, arch: str, fp: bool | None,
                   security: bool | None) -> ExcReturn:
    prefix = value >> 24
    if prefix == 0xFE and value >> 1 == 0x7F7FFFFF:
        raise _not_exc_return(value, arch, "it is FNC_RETURN, the Secure function return "
                              "payload (DDI 0553 'FNC_RETURN'), not EXC_RETURN")
    if prefix != 0xFF:
        raise _not_exc_return(value, arch, "the prefix, bits [31:24], must be 0xFF")
    if (value >> 7) & 0x1FFFF != 0x1FFFF:
        raise _not_exc_return(value, arch, "bits [23:7] are RES1")
    if value & 0x2:
        raise _not_exc_return(value, arch, "bit 1 is RES0")
    s, dcrs, ftype = bool(value & 0x40), bool(value & 0x20), bool(value & 0x10)
    thread, spsel, es = bool(value & 0x8), bool(value & 0x4), bool(value & 0x1)
    if not es and not dcrs:
        raise _not_exc_return(value, arch, "DCRS = 0 with ES = 0: a Non-secure handler "
                              "return with it takes a SecureFault (INVER)")
    if security is False and (s or es or not dcrs):
        raise _not_exc_return(value, arch, "without the Security Extension S and ES must "
                              "be 0 and DCRS 1")
    if not ftype and fp is False:
        raise _not_exc_return(value, arch, "FType = 0 (extended frame) needs the FP "
                              "extension")
    notes: list[str] = []
    # Callee registers are on the stack when Secure code was interrupted by a
    # Non-secure exception, or after a tail-chain back to Secure (DCRS = 0).
    callee = s and (not es or not dcrs)
    suffix = "" if security is False else ("_S" if s else "_NS")
    if not thread:
        stack: str | None = "MSP" + suffix
    elif s == es:
        stack = ("PSP" if spsel else "MSP") + suffix
    else:
        stack = None
        notes.append("Thread mode with S != ES: SPSEL is the CONTROL.SPSEL of the "
                     "exception's state; the frame is on the MSP or PSP that "
                     f"CONTROL{suffix}.SPSEL of the interrupted state selects")
    if not s and not dcrs:
        notes.append("DCRS = 0 with S = 0 is not produced by exception entry")
    state = None if security is False else ("Secure" if s else "Non-secure")
    exc_state = None if security is False else ("Secure" if es else "Non-secure")
    return ExcReturn(value, arch, "Thread" if thread else "Handler", stack, not ftype,
                     state, exc_state, dcrs, callee, _EXC_RETURN_V8_REF, tuple(notes))


# --- frame layout ----------------------------------------------------------


def _layout(exc: ExcReturn, fpccr: Fpccr | None) -> tuple[int, int, int]:
    """(additional state bytes, state bytes, FP data registers in the frame)."""
    additional = 0x28 if exc.callee_registers_stacked else 0
    if not exc.extended_frame:
        return additional, 0x20, 0
    if fpccr is not None and fpccr.ts and exc.security_state == "Secure":
        return additional, 0xA8, 32
    return additional, 0x68, 16


def _padding(xpsr: int | None) -> int:
    # ARMv7-M ARM B1.5.7: stacked xPSR bit 9 records the 4-byte realignment.
    return 4 if xpsr is not None and xpsr & (1 << 9) else 0


# --- fault explanation -----------------------------------------------------


def _set_bits(reg: str, value: int, arch: str, fp: bool | None) -> list[FaultBit]:
    out = []
    for bit in range(32):
        if not value >> bit & 1:
            continue
        d = _DEFS.get((reg, bit))
        if d is not None and arch in d.arches and not (d.needs and fp is False):
            out.append(FaultBit(reg, d.name, bit, d.meaning, d.fault, False, d.section))
            continue
        why = f"bit {bit} of {reg} is reserved on {arch}"
        if d is not None:
            needs = f" with the {d.needs}" if d.needs else ""
            where = ", ".join(sorted(d.arches))
            why = f"bit {bit} of {reg} is {d.name} only on {where}{needs}; {why}"
        section = BIT_TABLES[reg][0].section
        out.append(FaultBit(reg, "RESERVED", bit, why + ": a set reserved bit means the "
                            "value is corrupt or from another architecture", None, True,
                            section))
    return out


def _kinds(bits: list[FaultBit], arch: str) -> tuple[str, ...]:
    found = {b.fault for b in bits if b.fault}
    if arch == "armv8-m.base" and "SecureFault" in found:
        found.discard("SecureFault")  # no SecureFault exception: it is a HardFault
        found.add("HardFault")
    return tuple(k for k in _KIND_ORDER if k in found)


def _exception_name(number: int) -> str | None:
    if number == 0:
        return None
    return _EXCEPTIONS.get(number, f"IRQ {number - 16}" if number >= 16 else
                           f"reserved exception {number}")


def _group_text(group: list[FaultBit], addresses: Mapping[str, int | None]) -> str:
    """'precise data bus error at 0x40030000' for the cause bits of one fault."""
    phrases = []
    placed = False
    for b in group:
        d = _DEFS[(b.register, b.bit)]
        if d.validates:
            continue
        text = d.phrase
        addr = addresses.get(d.address) if d.address else None
        if addr is not None and not placed:
            text += f" at 0x{addr:08x}"
            placed = True
        phrases.append(text)
    if not placed:
        for b in group:
            d = _DEFS[(b.register, b.bit)]
            addr = addresses.get(d.validates) if d.validates else None
            if addr is not None:
                phrases.append(f"{d.validates} 0x{addr:08x}")
    return "; ".join(phrases) or "address register valid, no cause bit set"


def _names(group: list[FaultBit]) -> str:
    return ", ".join(b.name for b in group)


def _address_suffix(group: list[FaultBit], addresses: Mapping[str, int | None]) -> str:
    for b in group:
        d = _DEFS[(b.register, b.bit)]
        reg = d.validates or d.address
        if reg and addresses.get(reg) is not None:
            return f" at 0x{addresses[reg]:08x}"
    return ""


def _explain(arch: str, bits: list[FaultBit], present: set[tuple[str, str]],
             addresses: Mapping[str, int | None], values: Mapping[str, int],
             active: str | None, notes: list[str]) -> tuple[str | None, bool, str, str]:
    """(primary fault, escalated, cause, summary)."""
    groups: dict[str, list[FaultBit]] = {}
    for b in bits:
        if b.fault in _CONFIGURABLE:
            groups.setdefault(b.fault, []).append(b)
    debug = [b.name for b in bits if b.fault == "debug"]
    shcsr = values.get("shcsr")
    chosen = _choose_group(groups, active, shcsr, notes)

    if arch == "armv6-m" or arch == "armv8-m.base":
        if chosen == "SecureFault":  # Baseline: security violations are HardFaults
            group = groups[chosen]
            cause = "security violation: " + _group_text(group, addresses)
            return "HardFault", False, cause, f"HardFault from a {cause} ({_names(group)})"
        if active not in (None, "HardFault"):
            return None, False, "no fault", f"no fault recorded; active exception: {active}"
        cause = (f"not recorded by hardware: {arch} has no CFSR/HFSR/MMFAR/BFAR and "
                 "HardFault is its only fault exception")
        extra = f"; DFSR: {', '.join(debug)}" if debug else ""
        if "BKPT" in debug:
            notes.append("DFSR.BKPT: a BKPT executed with no debugger to halt on it "
                         "escalates to HardFault")
        summary = f"HardFault: cause not recorded by hardware ({arch} has no CFSR/HFSR){extra}"
        return "HardFault", False, cause, summary

    if ("HFSR", "VECTTBL") in present:
        flags = ", ".join(n for n in ("VECTTBL", "FORCED", "DEBUGEVT") if ("HFSR", n) in present)
        cause = "a vector table read faulted during exception entry"
        return "HardFault", False, cause, f"HardFault: {cause} ({flags})"
    if ("HFSR", "FORCED") in present:
        if chosen is None:
            cause = "escalated configurable fault, but no CFSR/SFSR cause bit is set"
            notes.append("HFSR.FORCED without a CFSR cause: the status was cleared by "
                         "software, or (QEMU 7.2) a BKPT ran without a debugger")
            return "HardFault", True, cause, f"HardFault (FORCED): {cause}"
        group = groups[chosen]
        _why_escalated(chosen, shcsr, notes)
        causes = [b.name for b in group if not _DEFS[(b.register, b.bit)].validates]
        cause = _group_text(group, addresses)
        summary = (f"HardFault (FORCED) escalated from {chosen}: "
                   f"{', '.join(causes) or _names(group)}{_address_suffix(group, addresses)}")
        return chosen, True, cause, summary
    if ("HFSR", "DEBUGEVT") in present:
        cause = "a debug event no debugger or DebugMonitor could take: " + (
            ", ".join(debug) or "DFSR not captured or clear")
        return "HardFault", False, cause, f"HardFault (DEBUGEVT): {cause}"
    if chosen is not None:
        group = groups[chosen]
        cause = _group_text(group, addresses)
        return chosen, False, cause, f"{chosen}: {cause} ({_names(group)})"
    if debug:
        text = "; ".join(f"{_DEFS[('DFSR', b.bit)].phrase} ({b.name})"
                         for b in bits if b.fault == "debug")
        return "debug", False, text, f"no fault recorded; debug event: {text}"
    where = f"; active exception: {active}" if active else ""
    if active == "HardFault":
        notes.append("HardFault is active but HFSR is zero (cleared by software?)")
    return None, False, "no fault", f"no fault recorded (no fault status bit set){where}"


def _choose_group(groups: Mapping[str, list[FaultBit]], active: str | None,
                  shcsr: int | None, notes: list[str]) -> str | None:
    if not groups:
        return None
    if len(groups) > 1:
        notes.append(f"status bits of several faults are set ({', '.join(groups)}); they "
                     "are sticky, so earlier faults may not have been cleared")
    if active in groups:
        return active
    if shcsr is not None:
        live = [k for k in groups if shcsr >> _SHCSR_ACTIVE[k] & 1]
        if len(live) == 1:
            return live[0]
    return next(k for k in _CONFIGURABLE if k in groups)


def _why_escalated(kind: str, shcsr: int | None, notes: list[str]) -> None:
    # ARMv7-M ARM B1.5.4 (priority escalation): a configurable fault becomes a
    # HardFault when its handler is disabled or cannot preempt.
    if shcsr is None:
        return
    bit, name = _SHCSR_ENABLE[kind]
    if not shcsr >> bit & 1:
        notes.append(f"{kind} escalated because its handler is disabled (SHCSR.{name} = 0)")
    else:
        notes.append(f"{kind} handler is enabled (SHCSR.{name} = 1): it escalated because "
                     "its priority could not preempt (PRIMASK/FAULTMASK set, or raised in "
                     "a handler of equal or higher priority)")


def _frame_reasons(bits: list[FaultBit]) -> tuple[str, ...]:
    reasons = []
    for b in bits:
        d = _DEFS.get((b.register, b.bit))
        if b.reserved or d is None or d.frame not in ("stacking", "unstacking"):
            continue
        if d.frame == "stacking":
            what = ("stacking the frame on exception entry faulted: the stacked values "
                    "may be missing or wrong")
        else:
            what = ("unstacking on exception return faulted: the context being returned "
                    "to is suspect")
        reasons.append(f"{b.register}.{b.name}: {what}")
    return tuple(reasons)
