"""Fault decoding: every defined bit, address gating, EXC_RETURN, frames, QEMU cases.

The expected bit lists below were written from the manuals independently of
the tables in collector/faults.py, so the tables are checked, not echoed:
ARMv7-M ARM B3.2.15 (CFSR), B3.2.16 (HFSR), C1.6.1 (DFSR); ARMv8-M ARM
(DDI 0553) for STKOF and SFSR.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.faults import (
    ARCHES,
    BIT_TABLES,
    FP_LAZY,
    FP_NONE,
    FP_SAVED,
    FP_UNKNOWN,
    ExcReturn,
    decode_exc_return,
    decode_fault,
    decode_fpccr,
    decode_register,
    stacked_frame_size,
    unpack_frame,
)
from crashcart.errors import InputError

DOC = Path(__file__).resolve().parent.parent / "docs" / "faults.md"

MAIN = ("armv7-m", "armv7e-m", "armv8-m.main")  # have CFSR and HFSR
FP = ("armv7e-m", "armv8-m.main")  # may have the FP extension
V8 = ("armv8-m.base", "armv8-m.main")

# (register, bit, name, architectures where the bit is defined)
EXPECTED = [
    ("CFSR", 0, "IACCVIOL", MAIN),
    ("CFSR", 1, "DACCVIOL", MAIN),
    ("CFSR", 3, "MUNSTKERR", MAIN),
    ("CFSR", 4, "MSTKERR", MAIN),
    ("CFSR", 5, "MLSPERR", FP),
    ("CFSR", 7, "MMARVALID", MAIN),
    ("CFSR", 8, "IBUSERR", MAIN),
    ("CFSR", 9, "PRECISERR", MAIN),
    ("CFSR", 10, "IMPRECISERR", MAIN),
    ("CFSR", 11, "UNSTKERR", MAIN),
    ("CFSR", 12, "STKERR", MAIN),
    ("CFSR", 13, "LSPERR", FP),
    ("CFSR", 15, "BFARVALID", MAIN),
    ("CFSR", 16, "UNDEFINSTR", MAIN),
    ("CFSR", 17, "INVSTATE", MAIN),
    ("CFSR", 18, "INVPC", MAIN),
    ("CFSR", 19, "NOCP", MAIN),
    ("CFSR", 20, "STKOF", ("armv8-m.main",)),
    ("CFSR", 24, "UNALIGNED", MAIN),
    ("CFSR", 25, "DIVBYZERO", MAIN),
    ("HFSR", 1, "VECTTBL", MAIN),
    ("HFSR", 30, "FORCED", MAIN),
    ("HFSR", 31, "DEBUGEVT", MAIN),
    ("DFSR", 0, "HALTED", ARCHES),
    ("DFSR", 1, "BKPT", ARCHES),
    ("DFSR", 2, "DWTTRAP", ARCHES),
    ("DFSR", 3, "VCATCH", ARCHES),
    ("DFSR", 4, "EXTERNAL", ARCHES),
    ("SFSR", 0, "INVEP", V8),
    ("SFSR", 1, "INVIS", V8),
    ("SFSR", 2, "INVER", V8),
    ("SFSR", 3, "AUVIOL", V8),
    ("SFSR", 4, "INVTRAN", V8),
    ("SFSR", 5, "LSPERR", ("armv8-m.main",)),
    ("SFSR", 6, "SFARVALID", V8),
    ("SFSR", 7, "LSERR", ("armv8-m.main",)),
]
REGISTER_ON = {"CFSR": MAIN, "HFSR": MAIN, "DFSR": ARCHES, "SFSR": V8}
SECTION = {"CFSR": "B3.2.15", "HFSR": "B3.2.16", "DFSR": "C1.6.1", "SFSR": "DDI 0553"}
TABLE = [d for table in BIT_TABLES.values() for d in table]


def test_tables_define_exactly_the_expected_bits():
    assert {(d.register, d.bit, d.name) for d in TABLE} == {e[:3] for e in EXPECTED}
    assert len(TABLE) == len(EXPECTED)
    for reg, bit, name, arches in EXPECTED:
        d = next(d for d in TABLE if (d.register, d.bit) == (reg, bit))
        assert d.arches == frozenset(arches), name


@pytest.mark.parametrize("reg,bit,name,arches", EXPECTED, ids=lambda v: str(v))
@pytest.mark.parametrize("arch", ARCHES)
def test_expected_bit_decodes_on_every_arch(reg, bit, name, arches, arch):
    if arch not in REGISTER_ON[reg]:
        with pytest.raises(InputError):
            decode_register(reg, 1 << bit, arch)
        return
    (found,) = decode_register(reg, 1 << bit, arch)
    assert found.bit == bit and found.register == reg
    if arch in arches:
        assert (found.name, found.reserved) == (name, False)
    else:  # e.g. STKOF on armv7-m: reported, as reserved, never dropped
        assert found.reserved and found.name == "RESERVED" and name in found.meaning


@pytest.mark.parametrize("d", TABLE, ids=lambda d: f"{d.register}.{d.name}")
def test_table_bit_is_explained_by_decode_fault(d):
    arch = max(d.arches)
    report = decode_fault(arch, {d.register.lower(): 1 << d.bit})
    (found,) = report.bits
    assert (found.register, found.name, found.bit) == (d.register, d.name, d.bit)
    assert found.meaning == d.meaning and len(d.meaning) > 30 and d.phrase
    assert SECTION[d.register] in found.section
    assert report.summary  # never empty


@pytest.mark.parametrize("reg", sorted(REGISTER_ON))
def test_every_undefined_bit_is_reported_reserved(reg):
    defined = {bit for r, bit, _, _ in EXPECTED if r == reg}
    arch = "armv8-m.main"
    for bit in set(range(32)) - defined:
        report = decode_fault(arch, {reg.lower(): 1 << bit})
        (found,) = report.bits
        assert found.reserved and found.bit == bit and found.fault is None
        assert any(f"{reg} bit {bit}" in note for note in report.notes)
        assert f"reserved bits set: {reg} bit {bit}" in report.summary


def test_fp_bits_are_reserved_without_fp():
    assert decode_register("CFSR", 1 << 5, "armv7e-m", fp=False)[0].reserved
    assert decode_register("CFSR", 1 << 5, "armv7e-m")[0].name == "MLSPERR"
    with pytest.raises(InputError):
        decode_register("CFSR", 1 << 5, "armv7-m", fp=True)


# --- real QEMU cases (fixtures/firmware/README.md, measured on QEMU 7.2) ----


def test_qemu_precise_busfault():
    r = decode_fault("armv7-m", {"cfsr": 0x00008200, "hfsr": 0, "bfar": 0x40030000,
                                 "mmfar": 0xE000ED34, "dfsr": 0, "shcsr": 0x00070002})
    assert r.summary == "BusFault: precise data bus error at 0x40030000 (PRECISERR, BFARVALID)"
    assert r.kinds == ("BusFault",) and r.primary == "BusFault" and not r.escalated
    assert r.bfar == 0x40030000 and r.mmfar is None  # MMARVALID clear: MMFAR not an address
    assert r.bit_names() == ("PRECISERR", "BFARVALID")
    assert r.frame_trustworthy and r.frame_reasons == ()


def test_qemu_divbyzero():
    r = decode_fault("armv7-m", {"cfsr": 0x02000000, "hfsr": 0, "mmfar": 0, "bfar": 0})
    assert r.summary == "UsageFault: divide by zero (DIVBYZERO)"
    assert r.primary == "UsageFault" and r.mmfar is None and r.bfar is None
    assert r.frame_trustworthy


def test_qemu_forced_hardfault_from_invstate():
    r = decode_fault("armv7-m", {"cfsr": 0x00020000, "hfsr": 0x40000000, "shcsr": 0x00070000})
    assert r.summary == "HardFault (FORCED) escalated from UsageFault: INVSTATE"
    assert r.kinds == ("HardFault", "UsageFault")
    assert r.primary == "UsageFault" and r.escalated
    assert "EPSR" in r.bits[0].meaning
    assert any("USGFAULTENA = 1" in n for n in r.notes)


def test_forced_with_disabled_handler_says_so():
    r = decode_fault("armv7-m", {"cfsr": 0x02000000, "hfsr": 0x40000000, "shcsr": 0})
    assert any("disabled (SHCSR.USGFAULTENA = 0)" in n for n in r.notes)


def test_qemu_memmanage_stack_overflow_into_guard():
    r = decode_fault("armv7-m", {"cfsr": 0x00000092, "mmfar": 0x200020E0, "bfar": 0})
    assert r.summary == ("MemManage: data access violation at 0x200020e0; stacking the "
                         "exception frame faulted (MPU) (DACCVIOL, MSTKERR, MMARVALID)")
    assert r.mmfar == 0x200020E0 and r.bfar is None
    assert not r.frame_trustworthy
    reason = ("CFSR.MSTKERR: stacking the frame on exception entry faulted: the stacked "
              "values may be missing or wrong")
    assert r.frame_reasons == (reason,)


def test_qemu_mstkerr_alone():
    r = decode_fault("armv7-m", {"cfsr": 0x10, "mmfar": 0x12345678})
    assert r.primary == "MemManage" and r.mmfar is None
    assert not r.frame_trustworthy and "stacking" in r.frame_reasons[0]
    assert any("MMARVALID is clear" in n for n in r.notes)


def test_decodes_a_parsed_crash_log():
    # The deep-cascade crash as the fixture firmware prints it (README "Planted bugs").
    from collector.crashlog import parse_crash_log

    log = parse_crash_log("""*** CRASH BEGIN ***
fault: MemManage
uptime_ms: 10
r0: 0x00000000 r1: 0x00000000 r2: 0x00000000 r3: 0x00000000
r12: 0x00000000 lr: 0x00000000 pc: 0x00000000 xpsr: 0x00000000
exc_return: 0xfffffffd msp: 0x20005100 psp: 0x200020d0
cfsr: 0x00000092 hfsr: 0x00000000 dfsr: 0x00000000 shcsr: 0x00070001
mmfar: 0x200020e0 bfar: 0x00000000
frame: unavailable (stacking failed)
*** CRASH END ***""")
    r = decode_fault("armv7-m", log.registers)
    assert r.primary == "MemManage" and r.mmfar == 0x200020E0 and not r.frame_trustworthy
    assert r.exc_return is not None and r.exc_return.stack == "PSP"


def test_reserved_bit_next_to_a_real_fault_is_in_the_summary():
    r = decode_fault("armv7-m", {"cfsr": 0x8240, "bfar": 0x40})
    assert r.summary.endswith("(PRECISERR, BFARVALID); reserved bits set: CFSR bit 6")
    assert [b.reserved for b in r.bits] == [True, False, False]


def test_watchdog_nmi_has_no_fault():
    r = decode_fault("armv7-m", {"cfsr": 0, "hfsr": 0, "icsr": 0x00000802})
    assert r.kinds == () and r.primary is None and r.active_exception == "NMI"
    assert r.summary == "no fault recorded (no fault status bit set); active exception: NMI"


@pytest.mark.parametrize("arch", ["armv6-m", "armv8-m.base"])
def test_no_cfsr_architectures(arch):
    r = decode_fault(arch, {"dfsr": 0x2, "cfsr": 0x8200, "hfsr": 0x40000000})
    assert r.kinds == ("HardFault", "debug") and r.primary == "HardFault"
    assert "cause not recorded by hardware" in r.summary and "no CFSR/HFSR" in r.summary
    assert "BKPT" in r.summary and r.bit_names() == ("BKPT",)
    assert any(n.startswith("CFSR = 0x00008200 ignored") for n in r.notes)
    assert r.bfar is None and r.mmfar is None


def test_armv6m_with_nothing_captured_still_says_hardfault_only():
    r = decode_fault("armv6-m", {})
    assert r.summary == "HardFault: cause not recorded by hardware (armv6-m has no CFSR/HFSR)"
    assert "only fault exception" in r.cause


def test_baseline_security_violation_is_a_hardfault():
    r = decode_fault("armv8-m.base", {"sfsr": 0x48, "sfar": 0x10000000})
    assert r.kinds == ("HardFault",) and r.sfar == 0x10000000
    assert "attribution unit violation at 0x10000000" in r.summary


# --- address validity gating ----------------------------------------------


@pytest.mark.parametrize("cfsr,mmfar,bfar", [
    (0x02, None, None),  # DACCVIOL without MMARVALID
    (0x82, 0x1000, None),
    (0x200, None, None),  # PRECISERR without BFARVALID
    (0x8200, None, 0x2000),
    (0x8282, 0x1000, 0x2000),
])
def test_addresses_only_with_valid_bits(cfsr, mmfar, bfar):
    r = decode_fault("armv7-m", {"cfsr": cfsr, "mmfar": 0x1000, "bfar": 0x2000})
    assert (r.mmfar, r.bfar) == (mmfar, bfar)


def test_sfar_gated_by_sfarvalid():
    assert decode_fault("armv8-m.main", {"sfsr": 0x08, "sfar": 0x1}).sfar is None
    r = decode_fault("armv8-m.main", {"sfsr": 0x48, "sfar": 0x1})
    assert r.sfar == 1 and r.summary.startswith("SecureFault: attribution unit violation")


def test_valid_bit_without_captured_address():
    r = decode_fault("armv7-m", {"cfsr": 0x8200})
    assert r.bfar is None and any("BFAR was not captured" in n for n in r.notes)


# --- frame trust ----------------------------------------------------------


@pytest.mark.parametrize("arch,regs,which", [
    ("armv7-m", {"cfsr": 1 << 4}, ("CFSR.MSTKERR", "stacking")),
    ("armv7-m", {"cfsr": 1 << 12}, ("CFSR.STKERR", "stacking")),
    ("armv8-m.main", {"cfsr": 1 << 20}, ("CFSR.STKOF", "stacking")),
    ("armv7-m", {"cfsr": 1 << 3}, ("CFSR.MUNSTKERR", "unstacking")),
    ("armv7-m", {"cfsr": 1 << 11}, ("CFSR.UNSTKERR", "unstacking")),
    ("armv8-m.main", {"sfsr": 1 << 1}, ("SFSR.INVIS", "unstacking")),
])
def test_untrustworthy_frame(arch, regs, which):
    r = decode_fault(arch, regs)
    assert not r.frame_trustworthy
    (reason,) = r.frame_reasons
    name, kind = which
    assert reason.startswith(name)
    assert ("returned to is suspect" in reason) == (kind == "unstacking")


def test_stkof_on_v7_is_reserved_not_a_stack_error():
    r = decode_fault("armv7-m", {"cfsr": 1 << 20})
    assert r.frame_trustworthy and r.bits[0].reserved


def test_lazy_fp_error_does_not_condemn_the_integer_frame():
    r = decode_fault("armv7e-m", {"cfsr": 1 << 13 | 1 << 5})
    assert r.frame_trustworthy and any("lazy FP" in n for n in r.notes)


# --- EXC_RETURN -------------------------------------------------------------


@pytest.mark.parametrize("value,mode,stack,extended", [
    (0xFFFFFFF1, "Handler", "MSP", False),
    (0xFFFFFFF9, "Thread", "MSP", False),
    (0xFFFFFFFD, "Thread", "PSP", False),
    (0xFFFFFFE1, "Handler", "MSP", True),
    (0xFFFFFFE9, "Thread", "MSP", True),
    (0xFFFFFFED, "Thread", "PSP", True),
])
def test_exc_return_v7(value, mode, stack, extended):
    e = decode_exc_return(value, "armv7e-m")
    assert (e.return_mode, e.stack, e.extended_frame) == (mode, stack, extended)
    assert e.frame_words == (26 if extended else 8)
    assert e.frame_type == ("extended" if extended else "basic")
    assert not e.callee_registers_stacked and e.security_state is None
    assert "B1.5.8" in e.section
    if not extended:
        assert decode_exc_return(value, "armv6-m") == ExcReturn(
            value, "armv6-m", mode, stack, False, None, None, None, False, e.section)


@pytest.mark.parametrize("value,arch", [
    (0xFFFFFFE1, "armv7-m"), (0xFFFFFFED, "armv6-m"),  # FP frames without FP
    (0xFFFFFFF5, "armv7-m"), (0xFFFFFFE5, "armv7e-m"),  # Handler with PSP
    (0xFFFFFFF0, "armv7-m"), (0xFFFFFFFF, "armv7-m"), (0xFFFFFFFB, "armv7-m"),
    (0x7FFFFFFD, "armv7-m"), (0xFFFFFF7D, "armv7-m"), (0x00000000, "armv7-m"),
    (0x0800_1235, "armv6-m"),  # an ordinary return address
])
def test_exc_return_v7_rejects(value, arch):
    with pytest.raises(InputError) as info:
        decode_exc_return(value, arch)
    assert info.value.field == "exc_return" and f"0x{value:08x}" in str(info.value)
    assert info.value.remedy


def test_exc_return_fp_frame_rejected_when_fp_absent():
    with pytest.raises(InputError):
        decode_exc_return(0xFFFFFFED, "armv7e-m", fp=False)


# (value, mode, stack, extended, S, ES, DCRS, callee stacked)
V8_CASES = [
    (0xFFFFFFBC, "Thread", "PSP_NS", False, "Non-secure", "Non-secure", True, False),
    (0xFFFFFFB8, "Thread", "MSP_NS", False, "Non-secure", "Non-secure", True, False),
    (0xFFFFFFB0, "Handler", "MSP_NS", False, "Non-secure", "Non-secure", True, False),
    (0xFFFFFFAC, "Thread", "PSP_NS", True, "Non-secure", "Non-secure", True, False),
    (0xFFFFFFFD, "Thread", "PSP_S", False, "Secure", "Secure", True, False),
    (0xFFFFFFF9, "Thread", "MSP_S", False, "Secure", "Secure", True, False),
    (0xFFFFFFF1, "Handler", "MSP_S", False, "Secure", "Secure", True, False),
    (0xFFFFFFED, "Thread", "PSP_S", True, "Secure", "Secure", True, False),
    # Secure code interrupted by a Non-secure exception: r4-r11 stacked
    (0xFFFFFFF0, "Handler", "MSP_S", False, "Secure", "Non-secure", True, True),
    (0xFFFFFFFC, "Thread", None, False, "Secure", "Non-secure", True, True),
    # tail-chained back to a Secure exception: DCRS = 0, r4-r11 already stacked
    (0xFFFFFFDD, "Thread", "PSP_S", False, "Secure", "Secure", False, True),
    (0xFFFFFFC9, "Thread", "MSP_S", True, "Secure", "Secure", False, True),
    # Non-secure code, Secure handler: no callee registers
    (0xFFFFFFBD, "Thread", None, False, "Non-secure", "Secure", True, False),
]


@pytest.mark.parametrize("case", V8_CASES, ids=lambda c: f"0x{c[0]:08x}")
def test_exc_return_v8(case):
    value, mode, stack, extended, s, es, dcrs, callee = case
    e = decode_exc_return(value, "armv8-m.main")
    assert (e.return_mode, e.stack, e.extended_frame) == (mode, stack, extended)
    assert (e.security_state, e.exception_security_state, e.dcrs) == (s, es, dcrs)
    assert e.callee_registers_stacked is callee
    assert (e.stack is None) == bool(e.notes)  # S != ES in Thread mode: explained


def test_exc_return_v8_without_security_extension():
    e = decode_exc_return(0xFFFFFFBC, "armv8-m.main", security=False)
    assert e.stack == "PSP" and e.security_state is None
    with pytest.raises(InputError):
        decode_exc_return(0xFFFFFFFD, "armv8-m.main", security=False)
    with pytest.raises(InputError):
        decode_exc_return(0xFFFFFFF9, "armv7-m", security=True)


@pytest.mark.parametrize("value,arch,why", [
    (0xFEFFFFFF, "armv8-m.main", "FNC_RETURN"),
    (0xFEFFFFFE, "armv8-m.base", "FNC_RETURN"),
    (0xEFFFFFBC, "armv8-m.main", "prefix"),
    (0xFF00003C, "armv8-m.main", "[23:7]"),
    (0xFFFFFFBE, "armv8-m.main", "bit 1"),
    (0xFFFFFFFF, "armv8-m.main", "bit 1"),
    (0xFFFFFF9C, "armv8-m.main", "INVER"),  # ES = 0 with DCRS = 0
    (0xFFFFFFAC, "armv8-m.base", "FP"),  # Baseline has no FP extension
    (0x00001235, "armv8-m.main", "prefix"),
])
def test_exc_return_v8_rejects(value, arch, why):
    with pytest.raises(InputError) as info:
        decode_exc_return(value, arch)
    assert why in info.value.message and info.value.field == "exc_return"


def test_decode_fault_rejects_bad_exc_return_and_keeps_good_one():
    with pytest.raises(InputError) as info:
        decode_fault("armv7-m", {"cfsr": 0, "exc_return": 0x08001235})
    assert info.value.field == "exc_return"
    r = decode_fault("armv7-m", {"cfsr": 0x8200, "exc_return": 0xFFFFFFFD, "r0": 5})
    assert r.exc_return is not None and r.exc_return.stack == "PSP"


# --- frame size and unpacking -------------------------------------------------


@pytest.mark.parametrize("exc,arch,kw,size", [
    (0xFFFFFFFD, "armv7-m", {}, 0x20),
    (0xFFFFFFFD, "armv7-m", {"xpsr": 0x01000200}, 0x24),
    (0xFFFFFFF9, "armv6-m", {"xpsr": 0x21000000}, 0x20),
    (0xFFFFFFED, "armv7e-m", {}, 0x68),
    (0xFFFFFFE9, "armv7e-m", {"xpsr": 0x200}, 0x6C),
    (0xFFFFFFED, "armv7e-m", {"fpccr": 0xC0000001}, 0x68),  # lazy: space still reserved
    (0xFFFFFFBC, "armv8-m.main", {}, 0x20),
    (0xFFFFFFAC, "armv8-m.main", {"xpsr": 0x200}, 0x6C),
    (0xFFFFFFF0, "armv8-m.main", {}, 0x48),  # + integrity signature, reserved, r4-r11
    (0xFFFFFFDD, "armv8-m.main", {"xpsr": 0x200}, 0x4C),
    (0xFFFFFFED, "armv8-m.main", {"fpccr": 1 << 26}, 0xA8),  # TS: S16-S31 too
    (0xFFFFFFE0, "armv8-m.main", {"fpccr": 1 << 26}, 0xD0),
    (0xFFFFFFAC, "armv8-m.main", {"fpccr": 1 << 26}, 0x68),  # TS only for Secure frames
])
def test_stacked_frame_size(exc, arch, kw, size):
    assert stacked_frame_size(exc, arch, **kw) == size


def _words(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


BASIC = (0xA0, 0xA1, 0xA2, 0xA3, 0xAC, 0x00001751, 0x000001BC, 0x01000000)


def test_unpack_basic_frame():
    f = unpack_frame(_words(*BASIC) + b"extra", 0xFFFFFFFD, "armv7-m", frame_address=0x20001FE0)
    assert (f.r0, f.r1, f.r2, f.r3, f.r12, f.lr, f.pc, f.xpsr) == BASIC
    assert f.size_bytes == 0x20 and f.padding_bytes == 0
    assert f.sp_before_exception == 0x20002000
    assert f.fp_state == FP_NONE and f.s_registers is None and f.callee_saved is None
    assert f.registers["pc"] == 0x1BC


def test_unpack_frame_with_alignment_padding():
    words = BASIC[:7] + (0x01000200,)
    f = unpack_frame(_words(*words), 0xFFFFFFF9, "armv7-m", frame_address=0x20001FE0)
    assert f.padding_bytes == 4 and f.sp_before_exception == 0x20002004


def test_unpack_extended_frame_saved():
    s = tuple(range(0x100, 0x110))
    data = _words(*BASIC, *s, 0x03000000, 0)
    f = unpack_frame(data, 0xFFFFFFED, "armv7e-m", frame_address=0x20001000,
                     fpccr=0xC0000000)
    assert f.fp_state == FP_SAVED and f.s_registers == s and f.fpscr == 0x03000000
    assert f.size_bytes == 0x68 and f.sp_before_exception == 0x20001068
    assert f.fp_area_address == 0x20001020


def test_unpack_extended_frame_without_fpccr_is_marked_unknown():
    f = unpack_frame(_words(*BASIC, *range(18)), 0xFFFFFFE9, "armv7e-m")
    assert f.fp_state == FP_UNKNOWN and f.s_registers == tuple(range(16)) and f.notes


def test_lazy_stacking_fp_not_saved():
    # LSPACT with FPCAR at this frame's FP area: reserved, never written.
    f = unpack_frame(_words(*BASIC), 0xFFFFFFED, "armv7e-m", frame_address=0x20001000,
                     fpccr=0xC0000001, fpcar=0x20001020)
    assert f.fp_state == FP_LAZY and f.s_registers is None and f.fpscr is None
    assert f.size_bytes == 0x68 and f.sp_before_exception == 0x20001068
    assert any("LSPACT" in n for n in f.notes)
    fpccr = decode_fpccr(0xC0000001, "armv7e-m")
    assert fpccr.lspact and fpccr.lspen and fpccr.aspen and not fpccr.ts


def test_lazy_state_of_another_frame_leaves_this_one_saved():
    data = _words(*BASIC, *range(18))
    f = unpack_frame(data, 0xFFFFFFED, "armv7e-m", frame_address=0x20001000,
                     fpccr=0xC0000001, fpcar=0x20000F00)
    assert f.fp_state == FP_SAVED


def test_unpack_v8_additional_state_context():
    callee = tuple(range(0x40, 0x48))
    data = _words(0xFEFA125B, 0, *callee, *BASIC)
    f = unpack_frame(data, 0xFFFFFFF0, "armv8-m.main", frame_address=0x30000F00)
    assert f.integrity_signature_ok and f.callee_saved == {
        f"r{n}": v for n, v in zip(range(4, 12), callee, strict=True)}
    assert f.pc == BASIC[6] and f.size_bytes == 0x48
    assert f.sp_before_exception == 0x30000F48 and f.registers["r11"] == 0x47


def test_unpack_v8_bad_integrity_signature_is_noted():
    data = _words(0xDEADBEEF, 0, *range(8), *BASIC)
    f = unpack_frame(data, 0xFFFFFFDD, "armv8-m.main")
    assert f.integrity_signature_ok is False and "integrity signature" in f.notes[0]


def test_unpack_v8_secure_fp_frame_with_ts():
    s = tuple(range(0x200, 0x220))
    data = _words(*BASIC, *s[:16], 0xF, 0, *s[16:])
    f = unpack_frame(data, 0xFFFFFFED, "armv8-m.main", fpccr=1 << 26, frame_address=0x1000)
    assert f.s_registers == s and f.fpscr == 0xF and f.size_bytes == 0xA8


def test_unpack_frame_too_short():
    with pytest.raises(InputError) as info:
        unpack_frame(b"\0" * 0x20, 0xFFFFFFED, "armv7e-m", fpccr=0)
    assert info.value.field == "data" and "needs 104 bytes" in info.value.message


def test_unpack_accepts_a_decoded_exc_return():
    e = decode_exc_return(0xFFFFFFFD, "armv7-m")
    assert unpack_frame(_words(*BASIC), e, "armv7-m").pc == BASIC[6]
    with pytest.raises(InputError):
        unpack_frame(_words(*BASIC), e, "armv7e-m")


# --- invalid input ------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: decode_fault("armv7", {}),
    lambda: decode_fault("armv7-m", {"cfsr": -1}),
    lambda: decode_fault("armv7-m", {"cfsr": 1 << 32}),
    lambda: decode_fault("armv7-m", {"hfsr": "0x40000000"}),  # type: ignore[dict-item]
    lambda: decode_fault("armv7-m", {"bfar": True}),
    lambda: decode_fault("armv7-m", {}, fp=True),
    lambda: decode_fault("armv6-m", {}, security=True),
    lambda: decode_register("MMFSR", 1, "armv7-m"),
    lambda: stacked_frame_size(0xFFFFFFFD, "armv7-m", xpsr=-4),
    lambda: unpack_frame("not bytes", 0xFFFFFFFD, "armv7-m"),  # type: ignore[arg-type]
])
def test_invalid_input_is_an_input_error(call):
    with pytest.raises(InputError):
        call()


u32 = st.integers(0, 0xFFFFFFFF)
anything = st.one_of(u32, st.integers(), st.text(max_size=3), st.none(), st.booleans())
REG_NAMES = ("cfsr", "hfsr", "dfsr", "mmfar", "bfar", "sfsr", "sfar", "shcsr", "icsr",
             "exc_return", "r0")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ARCHES), st.dictionaries(st.sampled_from(REG_NAMES), u32),
       st.sampled_from([None, True, False]), st.sampled_from([None, True, False]))
def test_fuzz_any_register_values(arch, regs, fp, security):
    try:
        r = decode_fault(arch, regs, fp=fp, security=security)
    except InputError:
        return
    assert r.summary and "\n" not in r.summary
    assert r.frame_trustworthy == (r.frame_reasons == ())
    assert r.mmfar is None or regs.get("cfsr", 0) & 0x80


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ARCHES), st.dictionaries(st.sampled_from(REG_NAMES), anything))
def test_fuzz_garbage_values(arch, regs):
    try:
        decode_fault(arch, regs)
    except InputError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ARCHES), u32, st.binary(max_size=0xE0), st.none() | u32,
       st.none() | u32)
def test_fuzz_exc_return_and_frames(arch, value, data, fpccr, xpsr):
    try:
        e = decode_exc_return(value, arch)
        stacked_frame_size(e, arch, fpccr=fpccr, xpsr=xpsr)
        f = unpack_frame(data, e, arch, frame_address=0x20000000, fpccr=fpccr)
    except InputError:
        return
    assert f.size_bytes in (0x20, 0x24, 0x48, 0x4C, 0x68, 0x6C, 0x90, 0x94, 0xA8, 0xAC,
                            0xD0, 0xD4)


# --- the reference page ---------------------------------------------------------


def test_reference_page_lists_every_bit():
    text = DOC.read_text()
    sections = {m.group(1): m.start() for m in re.finditer(r"^## (\w+)", text, re.MULTILINE)}
    for d in TABLE:
        start = sections[d.register]
        end = min((pos for pos in sections.values() if pos > start), default=len(text))
        rows = text[start:end]
        assert re.search(rf"^\| {d.bit} \| {d.name} \|", rows, re.MULTILINE), (d.register, d.name)
