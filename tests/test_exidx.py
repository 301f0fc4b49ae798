"""``.ARM.exidx`` / ``.ARM.extab`` unwinding (ARM EHABI, IHI 0038).

The fixture releases are built without ``-funwind-tables``, so their
``.ARM.exidx`` holds one entry.  Here the same sources are built at test
time with ``-funwind-tables`` (same flags otherwise, see
fixtures/firmware/Makefile) and ``.debug_frame`` is removed with objcopy:
every C function then has only its EHABI entry (compact pr0 inline, pr1 in
``.ARM.extab``), the assembly gets the ``EXIDX_CANTUNWIND`` entries GNU ld
inserts.  On the QEMU board, halted in ``fault_handler_c`` for each planted
fault, crashcart's backtrace from the exidx-only ELF must equal gdb's ``bt``.

The oracle is gdb with the same build *with* its ``.debug_frame`` (the code
is byte for byte the same): gdb 13 cannot unwind the exidx-only ELF on
QEMU 7.2.  Its prologue unwinder, which it uses for frame #0 and for frames
an exception interrupted, needs MSP/PSP, which QEMU's gdbstub does not
give, so its ``bt`` ends at #0.  That output is still checked: it must be
a prefix of crashcart's.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.device_config import load_config_file
from collector.elf import ElfImage
from collector.evidence import MemoryImage
from collector.gdbremote import GdbRemote
from collector.symbolize import Symbolizer, read_sections
from collector.unwind import (
    LR,
    PC,
    SP,
    _CfiError,
    _ehabi_execute,
    _parse_exidx,
    _prel31,
    _tables_for,
    unwind,
)
from replay.sim import SimulatedBoard

from .conftest import CONFIG_DIR, FIRMWARE_DIR
from .test_unwind import LONG_RUN_NS, Halted, capture, gdb, gdb_rows, our_rows, wait_stop

CROSS = "arm-none-eabi-"
HAVE_TOOLCHAIN = all(shutil.which(CROSS + t) for t in ("gcc", "objcopy"))
needs_toolchain = pytest.mark.skipif(not HAVE_TOOLCHAIN, reason="arm-none-eabi-gcc missing")

# fixtures/firmware/Makefile's flags for 1.0.0, plus -funwind-tables.
ARCH = ["-mcpu=cortex-m3", "-mthumb"]
CFLAGS = [*ARCH, "-O2", "-g", "-std=gnu11", "-ffunction-sections", "-fdata-sections",
          "-fno-common", "-funwind-tables", "-DFW_VERSION_PATCH=0"]
LDFLAGS = [*ARCH, "-nostartfiles", "-Wl,--build-id=sha1", "-Wl,--gc-sections",
           "-Wl,--no-warn-rwx-segments"]
FAULTS = ("bad-adc-channel", "zero-averaging-window", "wide-filter", "trace-logging",
          "deep-cascade")


@dataclass(frozen=True)
class Build:
    full: Path  # -funwind-tables, .debug_frame kept: gdb's oracle
    exidx: Path  # the same ELF without .debug_frame


def build_exidx_firmware(out: Path) -> Build:
    src = FIRMWARE_DIR / "src"
    prefix = [f"-ffile-prefix-map={FIRMWARE_DIR}=.", f"-fdebug-prefix-map={FIRMWARE_DIR}=."]
    objs = []
    for source in [*sorted(src.glob("*.c")), src / "startup.S"]:
        obj = out / (source.stem + ".o")
        flags = CFLAGS if source.suffix == ".c" else [*ARCH, "-g"]
        subprocess.run([CROSS + "gcc", *flags, *prefix, "-c", str(source.relative_to(
            FIRMWARE_DIR)), "-o", str(obj)], cwd=FIRMWARE_DIR, check=True)
        objs.append(str(obj))
    full, exidx = out / "sensor-node-exidx-full.elf", out / "sensor-node-exidx.elf"
    subprocess.run([CROSS + "gcc", *LDFLAGS, "-T", "sensor-node.ld", "-o", str(full), *objs],
                   cwd=FIRMWARE_DIR, check=True)
    subprocess.run([CROSS + "objcopy", "--remove-section", ".debug_frame", str(full),
                    str(exidx)], check=True)
    return Build(full, exidx)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    if not HAVE_TOOLCHAIN:
        pytest.skip("arm-none-eabi-gcc missing")
    return build_exidx_firmware(tmp_path_factory.mktemp("exidx"))


@pytest.fixture(scope="module")
def exidx_image(build) -> ElfImage:
    return ElfImage(build.exidx)


def section(image: ElfImage, name: str):
    return next(s for s in read_sections(image.data, image.path) if s.name == name)


# -- the real table -------------------------------------------------------------------------


@pytest.mark.toolchain
@needs_toolchain
def test_the_build_has_a_real_table_and_no_debug_frame(build, exidx_image):
    names = {s.name for s in read_sections(exidx_image.data, exidx_image.path)}
    assert ".debug_frame" not in names and ".ARM.extab" in names
    tables = _tables_for(exidx_image)
    assert tables.fdes == [] and tables.exidx_error is None
    entries = {exidx_image.symbol(n).address & ~1: n for n in
               ("adc_read", "sample_tick", "fault_handler_c", "biquad_cascade", "fir_apply")}
    by_start = {e.start: e for e in tables.exidx_entries}
    assert len(tables.exidx_entries) > 50
    assert all(start in by_start for start in entries)
    # pr0 inline (pop {r4, r5, r6, lr}), pr1 in .ARM.extab (pop {r3}; pop {lr}, 0x84 0x00)
    adc = by_start[exidx_image.symbol("adc_read").address & ~1]
    assert adc.table == ".ARM.exidx" and adc.instructions[0] == 0xAA
    tick = by_start[exidx_image.symbol("sample_tick").address & ~1]
    assert tick.table == ".ARM.extab" and tick.instructions.startswith(bytes([0xB1, 0x08]))
    cascade = by_start[exidx_image.symbol("biquad_cascade").address & ~1]
    assert cascade.instructions[:2] == bytes([0x09, 0xAA])  # vsp += 40; pop {r4-r6, lr}
    # the assembly is covered by EXIDX_CANTUNWIND entries that GNU ld inserted
    fault_entry = exidx_image.symbol("fault_entry").address & ~1
    assert tables.exidx(fault_entry).cant_unwind


# -- on the board, against gdb ----------------------------------------------------------------


@dataclass
class HaltedExidx(Halted):
    gdb_bt_exidx_only: str = ""


def halt(target, build: Build, image: ElfImage, config: str) -> Iterator[HaltedExidx]:
    with SimulatedBoard(target, build.exidx,
                        config=load_config_file(CONFIG_DIR / f"{config}.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as board:
        with GdbRemote(*board.gdb_address) as remote:
            bp = image.symbol("fault_handler_c").address & ~1
            remote.insert_breakpoint(bp)
            remote.cont()
            wait_stop(remote)
            remote.remove_breakpoint(bp)
            registers = remote.read_registers()
            memory, physical, scb = capture(remote, image)
        # One gdb session for both ELFs: detaching lets the board run on.
        text = gdb(board.gdb_address[1], "bt", "echo ====\\n", f"file {build.exidx}", "bt",
                   elf=build.full)
        full, exidx_only = text.split("====\n", 1)
        yield HaltedExidx(config, registers, memory, physical, scb, full,
                          gdb_bt_exidx_only=exidx_only)


@pytest.fixture(scope="module", params=FAULTS)
def halted(request, target, build, exidx_image) -> Iterator[HaltedExidx]:
    yield from halt(target, build, exidx_image, request.param)


@pytest.mark.qemu
@pytest.mark.toolchain
@needs_toolchain
def test_exidx_backtrace_equals_gdb_bt(halted, exidx_image):
    # fault_entry left the PSP in r1 (mrs r1, psp): without its .debug_frame signal-frame
    # CFI the exception is crossed by the EXC_RETURN it saved, which needs the PSP.
    regs = {**halted.registers, "psp": halted.registers["r1"]}
    bt = unwind(exidx_image, regs, halted.memory, symbolizer=Symbolizer(exidx_image))
    expected, gdb_stop = gdb_rows(halted.gdb_bt)
    expected = [r for r in expected if r[0] != "<signal handler called>"]
    ours = [r for r in our_rows(bt) if r[0] != "fault_entry"]
    detail = f"gdb (with .debug_frame):\n{halted.gdb_bt}\ncrashcart (exidx only):\n{bt.format()}"
    hows = [f.how for f in bt.frames]
    # fault_handler_c at its first instruction: nothing pushed, so not its exidx entry
    assert hows[:2] == ["registers", "lr"], detail
    assert bt.frames[1].function == "fault_entry"
    interrupted = bt.frames[2]
    assert interrupted.how in ("exception-frame", "scan")
    assert interrupted.exception is not None and interrupted.exception["exc_return"] == 0xFFFFFFFD
    # gdb with the exidx-only ELF on QEMU: only a prefix (it stops at #0, see the docstring)
    gdb_only, _ = gdb_rows(halted.gdb_bt_exidx_only)
    assert gdb_only and our_rows(bt)[:len(gdb_only)] == gdb_only, halted.gdb_bt_exidx_only
    if halted.config == "deep-cascade":
        # the PSP frame is in the MPU guard: gdb stops there, crashcart scans above it
        assert gdb_stop == "Cannot access memory at address 0x200020ec", detail
        assert ours[:len(expected)] == expected, detail
        assert not interrupted.exception["trusted"] and interrupted.how == "scan"
        below = bt.frames[3:12]
        assert [f.function for f in below] == ["biquad_cascade"] * 9, detail
        assert {(f.how, f.cfi_source) for f in below} == {("cfi", ".ARM.exidx")}
        return
    assert ours == expected, detail
    assert bt.stop_reason.startswith("reached main"), detail
    assert interrupted.how == "exception-frame" and interrupted.exception["trusted"]
    below = bt.frames[3:]
    assert {f.how for f in below} <= {"cfi", "tail-call", "lr"}, detail
    cfi = [f for f in below if f.how == "cfi"]
    assert cfi and {f.cfi_source for f in cfi} == {".ARM.exidx"}, detail
    assert bt.to_json()["frames"][-1]["cfi_source"] == ".ARM.exidx"
    if halted.config == "wide-filter":  # through a pr1 entry in .ARM.extab
        assert [f.function for f in cfi][:2] == ["filter_apply", "process_sample"]


# -- the instruction decoder (EHABI 9.3) on hand-made bytes -------------------------------------


STACK = 0x20001000


def run(ins: bytes, regs: dict[int, int] | None = None, stack: list[int] | None = None):
    words = stack if stack is not None else list(range(0x100, 0x140))
    memory = {STACK + 4 * i: w for i, w in enumerate(words)}

    def read(address: int) -> int:
        if address not in memory:
            raise _CfiError(f"read 0x{address:08x} outside the test stack")
        return memory[address]

    return _ehabi_execute(ins, {LR: 0x1235, 4: 4, 7: 0x20001010, **(regs or {})}, STACK, read)


@pytest.mark.parametrize("ins, vsp", [
    (b"\x00", STACK + 4),  # 00xxxxxx: vsp += (x << 2) + 4
    (b"\x3f", STACK + 0x100),
    (b"\x41", STACK - 8),  # 01xxxxxx: vsp -= (x << 2) + 4
    (b"\xb2\x00", STACK + 0x204),  # vsp += 0x204 + (uleb128 << 2)
    (b"\xb2\x81\x01", STACK + 0x204 + (0x81 << 2)),
    (b"\xb3\x12", STACK + 8 * 3 + 4),  # pop VFP D[1]-D[3], FSTMFDX
    (b"\xb9", STACK + 8 * 2 + 4),  # pop VFP D[8]-D[9], FSTMFDX
    (b"\xc8\x01", STACK + 16), (b"\xc9\x02", STACK + 24),  # VPUSH D[16+s].., D[s]..
    (b"\xd2", STACK + 24),  # pop VFP D[8]-D[10], VPUSH
    (b"\xb4", STACK + 4), (b"\xb5", STACK),  # PAC pop / PAC modifier (PACBTI)
])
def test_vsp_adjustments(ins, vsp):
    got, regs, pc_set = run(ins)
    assert got == vsp and not pc_set and regs[LR] == 0x1235


def test_pop_r4_to_r4_plus_n_with_and_without_r14():
    vsp, regs, _ = run(b"\xaa")  # pop {r4-r6, r14}
    assert (regs[4], regs[5], regs[6], regs[LR], vsp) == (0x100, 0x101, 0x102, 0x103, STACK + 16)
    vsp, regs, _ = run(b"\xa2")  # pop {r4-r6}
    assert (regs[6], regs[LR], vsp) == (0x102, 0x1235, STACK + 12)


def test_pop_under_mask_including_pc_and_sp():
    vsp, regs, pc_set = run(b"\x84\x08")  # pop {r7, r14}
    assert (regs[7], regs[LR], vsp, pc_set) == (0x100, 0x101, STACK + 8, False)
    vsp, regs, pc_set = run(b"\x88\x01")  # pop {r4, r15}
    assert (regs[4], regs[PC], pc_set, vsp) == (0x100, 0x101, True, STACK + 8)
    # r13 popped: vsp takes the loaded value after the whole instruction (EHABI 9.3)
    vsp, regs, _ = run(b"\x82\x01", stack=[0x44, 0x20002000, 0x55])  # pop {r4, r13}
    assert regs[4] == 0x44 and vsp == 0x20002000 and SP not in regs
    vsp, regs, _ = run(b"\xb1\x09")  # pop {r0, r3}
    assert (regs[0], regs[3], vsp) == (0x100, 0x101, STACK + 8)


def test_vsp_from_a_register_and_finish():
    vsp, regs, _ = run(b"\x97\x84\x08")  # vsp = r7; pop {r7, r14}
    assert vsp == 0x20001018 and regs[7] == 0x104 and regs[LR] == 0x105
    vsp, regs, _ = run(b"\xb0\xaa")  # finish: what follows is not executed
    assert vsp == STACK and regs[LR] == 0x1235


@pytest.mark.parametrize("ins, message", [
    (b"\x80\x00", "refuses to unwind"),
    (b"\x80", "truncated"), (b"\xb1", "truncated"), (b"\xb3", "truncated"),
    (b"\xb2\x80", "truncated LEB128"),
    (b"\xb1\x00", "reserved"), (b"\xb1\x10", "reserved"),
    (b"\x9d", "reserved"), (b"\x9f", "reserved"),
    (b"\x93", "r3, which is unknown"),
    (b"\xb6", "not supported"), (b"\xc0", "not supported"), (b"\xff", "not supported"),
])
def test_bad_instructions_raise_the_decoders_error(ins, message):
    with pytest.raises(_CfiError, match=message):
        run(ins)


# -- the index table: pr0 / pr1 / pr2, CANTUNWIND, malformed tables --------------------------------


class Flash:
    """ElfImage.read over a few hand-placed words (the extab), None elsewhere."""

    def __init__(self, words: dict[int, int]) -> None:
        self.words = words

    def read(self, address: int, size: int) -> bytes | None:
        out = b""
        for a in range(address, address + size, 4):
            if a not in self.words:
                return None
            out += struct.pack("<I", self.words[a])
        return out


TABLE = 0x1000


def prel31(target: int, place: int) -> int:
    return (target - place) & 0x7FFFFFFF


def table(*entries: tuple[int, int]) -> bytes:
    """(function address, second word) pairs as .ARM.exidx at TABLE."""
    out = b""
    for i, (function, second) in enumerate(entries):
        out += struct.pack("<II", prel31(function, TABLE + 8 * i), second)
    return out


def test_prel31_is_signed():
    assert _prel31(0x7FFFFFFC, 0x1000) == 0xFFC
    assert _prel31(0x10, 0x1000) == 0x1010


def test_table_of_every_entry_kind():
    extab = 0x2000
    flash = Flash({
        extab: 0x81018408, extab + 4: 0xAAB0B0B0,  # pr1, one more word: pop {r7, r14}, ...
        extab + 8: 0x8200A8B0,  # pr2, no more words: pop {r4, r14}; finish
    })
    data = table((0x100, 0x80AAB0B0), (0x200, 1), (0x300, prel31(extab, TABLE + 20)),
                 (0x400, prel31(extab + 8, TABLE + 28)))
    entries, error = _parse_exidx(flash, TABLE, data)
    assert error is None
    assert [(e.start, e.cant_unwind, e.table, e.error) for e in entries] == [
        (0x100, False, ".ARM.exidx", None), (0x200, True, ".ARM.exidx", None),
        (0x300, False, ".ARM.extab", None), (0x400, False, ".ARM.extab", None)]
    assert entries[0].instructions == bytes([0xAA, 0xB0, 0xB0])
    assert entries[2].instructions == bytes([0x84, 0x08, 0xAA, 0xB0, 0xB0, 0xB0])
    assert entries[3].instructions == bytes([0xA8, 0xB0])
    vsp, regs, _ = run(entries[2].instructions)  # pop {r7, r14}; pop {r4-r6, r14}
    assert (regs[7], regs[6], regs[LR], vsp) == (0x100, 0x104, 0x105, STACK + 24)


@pytest.mark.parametrize("words, message", [
    ({}, "outside the ELF's loaded data"),
    ({0x2000: 0x00001234}, "generic personality routine"),
    ({0x2000: 0x81028408, 0x2004: 0xAAB0B0B0}, "truncated: 2 more words"),
    ({0x2000: 0x83000000}, "personality routine index 3"),
])
def test_bad_extab_entries_are_kept_with_a_reason(words, message):
    data = table((0x100, 0x80AAB0B0), (0x200, prel31(0x2000, TABLE + 12)), (0x300, 1))
    entries, error = _parse_exidx(Flash(words), TABLE, data)
    assert error is None and len(entries) == 3  # not dropped: 0x100's entry must not cover 0x200
    assert entries[1].start == 0x200 and message in (entries[1].error or "")


@pytest.mark.parametrize("data, message", [
    (table((0x200, 1), (0x100, 1)), "entries out of order: 0x00000100"),
    (table((0x100, 1))[:-4], "not a multiple of 8"),
    (struct.pack("<II", 0x80000000, 1), "bit 31"),
])
def test_malformed_tables_are_refused(data, message):
    entries, error = _parse_exidx(Flash({}), TABLE, data)
    assert entries == [] and message in (error or "")


# -- malformed tables in a real ELF: a reason, never an exception ------------------------------------


def patched(build: Build, tmp_path: Path, edit) -> ElfImage:
    image = ElfImage(build.exidx)
    sec = section(image, ".ARM.exidx")
    data = bytearray(image.data[sec.offset:sec.offset + sec.size])
    edit(data, sec.address)
    blob, out = tmp_path / "exidx.bin", tmp_path / "patched.elf"
    blob.write_bytes(bytes(data))
    subprocess.run([CROSS + "objcopy", "--update-section", f".ARM.exidx={blob}",
                    str(build.exidx), str(out)], check=True)
    return ElfImage(out)


def call_return(image: ElfImage, caller: str, callee: str) -> int:
    """The Thumb return address of ``caller``'s ``bl callee`` (ARMv7-M ARM A7.7.18)."""
    sym, target = image.symbol(caller), image.symbol(callee).address & ~1
    start = sym.address & ~1
    code = image.read(start, sym.size) or b""
    for off in range(0, len(code) - 3, 2):
        first, second = struct.unpack_from("<HH", code, off)
        if first & 0xF800 != 0xF000 or second & 0xD000 != 0xD000:
            continue
        s = first >> 10 & 1
        i1, i2 = 1 - ((second >> 13 & 1) ^ s), 1 - ((second >> 11 & 1) ^ s)
        imm = s << 24 | i1 << 23 | i2 << 22 | (first & 0x3FF) << 12 | (second & 0x7FF) << 1
        imm -= (1 << 25) if s else 0
        if start + off + 4 + imm == target:
            return (start + off + 4) | 1
    raise AssertionError(f"no bl {callee} in {caller}")


def adc_read_case(image: ElfImage) -> tuple[dict[str, int], MemoryImage]:
    """Halted inside adc_read after its push {r4, r5, r6, lr}; its caller is sample_tick."""
    adc = image.symbol("adc_read").address & ~1
    memory = MemoryImage(elf=image)
    memory.add(0x20003F00, struct.pack("<4I", 4, 5, 6, call_return(image, "sample_tick",
                                                                   "adc_read")), "psp")
    return {"pc": adc + 0x10, "sp": 0x20003F00, "lr": 0xFFFFFFFD}, memory


@pytest.mark.toolchain
@needs_toolchain
def test_exidx_step_in_a_synthesized_frame(exidx_image):
    regs, memory = adc_read_case(exidx_image)
    bt = unwind(exidx_image, regs, memory, max_frames=2)
    assert [(f.function, f.how, f.cfi_source) for f in bt.frames] == [
        ("adc_read", "registers", None), ("sample_tick", "cfi", ".ARM.exidx")], bt.format()
    assert bt.frames[1].sp == 0x20003F10 and bt.frames[1].registers["r4"] == 4


@pytest.mark.toolchain
@needs_toolchain
def test_out_of_order_table_gives_a_reason(build, tmp_path):
    def swap(data: bytearray, address: int) -> None:  # entries 2 and 3, offsets re-based
        a, b = bytes(data[16:24]), bytes(data[24:32])
        fa, fb = (_prel31(struct.unpack_from("<I", a)[0], address + 16),
                  _prel31(struct.unpack_from("<I", b)[0], address + 24))
        struct.pack_into("<I", data, 16, prel31(fb, address + 16))
        struct.pack_into("<I", data, 24, prel31(fa, address + 24))

    image = patched(build, tmp_path, swap)
    regs, memory = adc_read_case(image)
    bt = unwind(image, {k: v for k, v in regs.items() if k != "lr"}, memory)
    assert ".ARM.exidx is malformed (entries out of order" in bt.stop_reason
    assert bt.frames[-1].how != "cfi"


@pytest.mark.toolchain
@needs_toolchain
def test_prel31_outside_the_elf_and_cantunwind_give_reasons(build, exidx_image, tmp_path):
    adc = exidx_image.symbol("adc_read").address & ~1
    index = [e.start for e in _tables_for(exidx_image).exidx_entries].index(adc)

    def far(data: bytearray, address: int) -> None:
        struct.pack_into("<I", data, 8 * index + 4, 0x30000000)  # prel31 far past the ELF

    image = patched(build, tmp_path, far)
    regs, memory = adc_read_case(image)
    no_lr = {k: v for k, v in regs.items() if k != "lr"}
    bt = unwind(image, no_lr, MemoryImage(elf=image))
    assert "outside the ELF's loaded data" in bt.stop_reason, bt.stop_reason
    # with the stack captured the scan still finds sample_tick, and says why it scanned
    bt = unwind(image, no_lr, memory, max_frames=2)
    assert bt.frames[1].how == "scan" and bt.frames[1].function == "sample_tick"
    assert any("outside the ELF's loaded data" in w for w in bt.warnings)

    def cantunwind(data: bytearray, address: int) -> None:
        struct.pack_into("<I", data, 8 * index + 4, 1)

    image = patched(build, tmp_path, cantunwind)
    bt = unwind(image, no_lr, MemoryImage(elf=image))
    assert "EXIDX_CANTUNWIND" in bt.stop_reason and len(bt.frames) == 1
