"""Unwinding: crashcart's backtrace against gdb-multiarch's ``bt`` on the same halted board,
and the fallbacks (stack scan, missing memory, garbage registers, loops, nested exceptions)
on synthesized memory images.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.device_config import load_config_file
from collector.elf import ElfImage
from collector.evidence import MemoryImage
from collector.gdbremote import GdbMemoryError, GdbRemote
from collector.symbolize import Symbolizer
from collector.unwind import Backtrace, UnwoundFrame, unwind
from crashcart.errors import InputError
from replay.sim import SimulatedBoard

from .conftest import CONFIG_DIR, ELF_DIR

ELF = ELF_DIR / "sensor-node-1.0.0.elf"
RAM, RAM_END = 0x20000000, 0x20005100
SCB_CFSR = 0xE000ED28  # CFSR HFSR DFSR MMFAR BFAR (ARMv7-M ARM B3.2.2)
LONG_RUN_NS = 3_600_000_000_000
PLANTED = ("bad-adc-channel", "zero-averaging-window", "deep-cascade", "wide-filter",
           "trace-logging")


@pytest.fixture(scope="module")
def image() -> ElfImage:
    return ElfImage.open_cached(ELF)


@pytest.fixture(scope="module")
def symbolizer(image) -> Symbolizer:
    return Symbolizer(image)


def addr(image: ElfImage, name: str) -> int:
    return image.symbol(name).address & ~1


# -- gdb-multiarch -----------------------------------------------------------------------

GDB_FRAME = re.compile(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(?:(<signal handler called>)|"
                       r"(\S+) \(.*?\)(?: at (\S+):(\d+))?)$")


def gdb(port: int, *commands: str, elf: Path = ELF) -> str:
    exe = shutil.which("gdb-multiarch")
    if exe is None:
        pytest.skip("gdb-multiarch is not installed")
    args = [exe, "-nx", "-batch", "-ex", f"file {elf}", "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        args += ["-ex", command]
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout
    return done.stdout


def gdb_rows(text: str) -> tuple[list[tuple[str, str | None, int | None]], str | None]:
    """``bt`` output as (function, file, line) rows, and gdb's 'Backtrace stopped' reason."""
    rows: list[tuple[str, str | None, int | None]] = []
    stopped = None
    for line in text.splitlines():
        m = GDB_FRAME.match(line.strip())
        if m:
            if m.group(2):
                rows.append(("<signal handler called>", None, None))
            else:
                rows.append((m.group(3), m.group(4), int(m.group(5)) if m.group(5) else None))
        elif line.startswith("Backtrace stopped:"):
            stopped = line.split(":", 1)[1].strip()
    return rows, stopped


def our_rows(bt: Backtrace) -> list[tuple[str, str | None, int | None]]:
    rows: list[tuple[str, str | None, int | None]] = []
    for frame in bt.frames:
        if frame.signal_frame:
            rows.append(("<signal handler called>", None, None))
            continue
        rows += [(src.function or "??", src.file, src.line) for src in frame.source_frames()]
    return rows


# -- a halted board ----------------------------------------------------------------------


@dataclass
class Halted:
    config: str
    registers: dict[str, int]
    memory: MemoryImage  # RAM as the gdbstub shows it (MPU guard refused)
    physical: MemoryImage  # RAM including the guard (read like a debug access port)
    scb: dict[str, int]
    gdb_bt: str
    board: SimulatedBoard | None = None


def wait_stop(remote: GdbRemote, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while remote.poll_stop(0.05) is None:
        assert time.monotonic() < deadline, "the board did not stop at the breakpoint"


def capture(remote: GdbRemote, image: ElfImage) -> tuple[MemoryImage, MemoryImage, dict]:
    memory, physical = MemoryImage(elf=image), MemoryImage(elf=image)
    for start in range(RAM, RAM_END, 256):
        try:
            data = remote.read_memory(start, 256)
            memory.add(start, data, "ram")
        except GdbMemoryError:  # the MPU guard: QEMU applies the MPU to debugger reads
            data = remote.read_physical_memory(start, 256)
        physical.add(start, data, "ram")
    cfsr, hfsr, dfsr, mmfar, bfar = struct.unpack("<5I", remote.read_memory(SCB_CFSR, 20))
    return memory, physical, {"cfsr": cfsr, "hfsr": hfsr, "dfsr": dfsr, "mmfar": mmfar,
                              "bfar": bfar}


def halt_in_fault_handler(target, image: ElfImage, config: str) -> Iterator[Halted]:
    with SimulatedBoard(target, ELF, config=load_config_file(CONFIG_DIR / f"{config}.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as board:
        with GdbRemote(*board.gdb_address) as remote:
            bp = addr(image, "fault_handler_c")
            remote.insert_breakpoint(bp)
            remote.cont()
            wait_stop(remote)
            remote.remove_breakpoint(bp)
            registers = remote.read_registers()
            memory, physical, scb = capture(remote, image)
        # close() leaves the VM stopped; gdb-multiarch attaches to the same halted core.
        text = gdb(board.gdb_address[1], "bt")
        yield Halted(config, registers, memory, physical, scb, text)


@pytest.fixture(scope="module", params=PLANTED)
def halted(request, target, image) -> Iterator[Halted]:
    yield from halt_in_fault_handler(target, image, request.param)


# -- acceptance: equal to gdb's bt ---------------------------------------------------------


@pytest.mark.qemu
def test_backtrace_equals_gdb_bt(halted, image, symbolizer):
    bt = unwind(image, halted.registers, halted.memory, symbolizer=symbolizer)
    expected, gdb_stop = gdb_rows(halted.gdb_bt)
    ours = our_rows(bt)
    assert expected[0][0] == "fault_handler_c", halted.gdb_bt
    assert bt.frames[0].how == "registers"
    if halted.config == "deep-cascade":
        # gdb stops where the stacked frame lies in the MPU guard; so must the CFI walk.
        assert gdb_stop == "Cannot access memory at address 0x200020ec"
        assert ours[:len(expected)] == expected, bt.format()
        exc = bt.frames[2].exception
        assert exc is not None and exc["trusted"] is False
        assert "0x200020ec" in exc["why_untrusted"][0]
        assert bt.frames[2].how == "scan"  # below it: the fallback, not CFI
        return
    assert ours == expected, f"gdb:\n{halted.gdb_bt}\ncrashcart:\n{bt.format()}"
    assert bt.stop_reason.startswith("reached main")
    # Frames below the exception frame: the interrupted code, then CFI (and tail calls).
    signal = next(i for i, f in enumerate(bt.frames) if f.signal_frame)
    interrupted = bt.frames[signal + 1]
    assert interrupted.how == "exception-frame"
    exc = interrupted.exception
    assert exc is not None and exc["trusted"], exc
    assert exc["found_by"] == "signal-frame-cfi"
    # The firmware's main loop runs on the PSP: EXC_RETURN follows from the evidence.
    assert exc["exc_return"] == 0xFFFFFFFD and exc["stack"] == "PSP"
    assert exc["frame_address"] == halted.registers["r1"]  # fault_entry: r1 = PSP
    assert exc["stacked"]["pc"] == interrupted.pc
    assert {f.how for f in bt.frames[signal + 2:]} <= {"cfi", "tail-call", "lr"}


@pytest.mark.qemu
def test_untrusted_frame_falls_back_to_scan_even_when_memory_is_readable(target, image,
                                                                          symbolizer):
    """deep-cascade with the guard read physically: the words there are stale, CFSR says so."""
    for h in halt_in_fault_handler(target, image, "deep-cascade"):
        assert h.scb["cfsr"] == 0x92
        regs = {**h.registers, "cfsr": h.scb["cfsr"]}
        bt = unwind(image, regs, h.physical, symbolizer=symbolizer, max_frames=12)
        exc = bt.frames[2].exception
        assert exc is not None and not exc["trusted"]
        assert any("MSTKERR" in why for why in exc["why_untrusted"])
        assert exc["frame_address"] == 0x200020D0
        scanned = bt.frames[2]
        assert scanned.how == "scan" and scanned.function == "biquad_cascade"
        assert scanned.sp is not None and scanned.sp > 0x20002100  # above the guard
        # after re-synchronising, CFI walks the recursion
        assert [f.function for f in bt.frames[3:]] == ["biquad_cascade"] * 9
        assert {f.how for f in bt.frames[3:]} == {"cfi"}
        assert bt.stop_reason == "max_frames (12) reached"
        assert any("stack scan" in w for w in bt.warnings)


@pytest.mark.qemu
def test_stripped_cfi_scans_and_crosses_the_exception_by_exc_return(target, image, tmp_path):
    """No .debug_frame: lr, then a scan that finds the handler's saved EXC_RETURN; PSP given."""
    stripped = tmp_path / "stripped.elf"
    subprocess.run(["arm-none-eabi-objcopy", "--remove-section", ".debug_frame", str(ELF),
                    str(stripped)], check=True)
    stripped_image = ElfImage(stripped)
    for h in halt_in_fault_handler(target, image, "bad-adc-channel"):
        # fault_entry left the PSP in r1 (mrs r1, psp): the 'registers given' source.
        regs = {**h.registers, "psp": h.registers["r1"]}
        memory = MemoryImage(list(h.memory.regions), elf=stripped_image)
        bt = unwind(stripped_image, regs, memory)
        expected = [r for r in gdb_rows(h.gdb_bt)[0] if r[0] != "<signal handler called>"]
        ours = [r for r in our_rows(bt) if r[0] != "fault_entry"]
        assert [r[0] for r in ours] == [r[0] for r in expected], bt.format()
        hows = [f.how for f in bt.frames]
        assert hows == ["registers", "lr", "exception-frame", "lr", "scan", "scan"], hows
        exc = bt.frames[2].exception
        assert exc is not None and exc["exc_return"] == 0xFFFFFFFD
        assert exc["stack_pointer_source"] == "registers"
        assert bt.frames[2].line == 92 and bt.frames[2].function == "adc_read"
        # without the PSP the walk stops and says what to give
        del regs["psp"]
        bt = unwind(stripped_image, regs, memory)
        assert "PSP is unknown" in bt.stop_reason and len(bt.frames) == 2


@pytest.mark.qemu
def test_nested_exception_fault_in_systick_unwinds_to_thread_code(target, image, symbolizer):
    """A BusFault inside SysTick_Handler: two exception frames (MSP, then PSP) crossed.

    The fault is made by halting in SysTick_Handler after it loaded its
    pointer and replacing the pointer with an address that faults on AN385.
    PSP comes from the firmware's crash record (halted after it is written).
    gdb's own M-profile unwinder cannot follow the second frame without PSP,
    so gdb checks the thread-mode part from the registers crashcart recovered.
    """
    with SimulatedBoard(target, ELF, config=load_config_file(CONFIG_DIR / "default.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as board:
        with GdbRemote(*board.gdb_address) as remote:
            systick = addr(image, "SysTick_Handler") + 2  # after 'ldr r2, =uptime'
            remote.insert_breakpoint(systick)
            remote.cont()
            wait_stop(remote)
            remote.remove_breakpoint(systick)
            remote.write_register("r2", 0x30000000)  # unassigned: precise BusFault
            reset = addr(image, "board_system_reset")
            remote.insert_breakpoint(reset)
            remote.cont()
            wait_stop(remote)
            registers = remote.read_registers()
            memory, _, scb = capture(remote, image)
        assert scb["cfsr"] == 0x8200 and scb["bfar"] == 0x30000000
        bt = unwind(image, registers, memory, symbolizer=symbolizer,
                    crash_record_symbol="crash_record")
        funcs = [f.function for f in bt.frames]
        assert funcs[:4] == ["board_system_reset", "fault_handler_c", "fault_entry",
                             "SysTick_Handler"], bt.format()
        first, second = bt.frames[3], bt.frames[4]
        assert first.exception is not None and second.exception is not None
        assert first.exception["exc_return"] == 0xFFFFFFF1  # interrupted a handler, on MSP
        assert first.exception["exc_return_source"] == "crash record"
        assert second.how == "exception-frame"
        assert second.exception["found_by"] == "exc-return"
        assert second.exception["exc_return"] == 0xFFFFFFFD
        assert second.exception["stack"] == "PSP"
        assert second.exception["stack_pointer_source"] == "crash record"
        assert second.exception["trusted"]
        assert bt.stop_reason.startswith("reached main")

        # gdb agrees down to SysTick_Handler ...
        text = gdb(board.gdb_address[1], "bt 4")
        assert our_rows(bt)[:4] == gdb_rows(text)[0][:4], text
        # ... and, given the thread context crashcart unstacked, on the rest.
        stacked = second.exception["stacked"]
        sets = [f"set ${r} = {stacked[r]:#x}" for r in ("r0", "r1", "r2", "r3", "r12", "lr")]
        sets += [f"set $sp = {second.sp:#x}", f"set $pc = {second.pc:#x}"]
        text = gdb(board.gdb_address[1], *sets, "bt")
        thread = [r for f in bt.frames[4:] for r in our_rows(Backtrace([f], "", []))]
        assert thread == gdb_rows(text)[0], f"gdb:\n{text}\ncrashcart:\n{bt.format()}"


# -- synthesized evidence (no QEMU) ----------------------------------------------------------


def words(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def nested_case(image: ElfImage) -> tuple[dict[str, int], MemoryImage]:
    """Halted in Default_Handler, which was entered from SysTick_Handler (handler mode,
    frame on the MSP), which interrupted adc_read in thread mode (frame on the PSP)."""
    msp, psp = 0x20005000, 0x20003F00
    adc_pc = 0x1BC  # inside adc_read, after its push {r4, r5, r6, lr}
    memory = MemoryImage(elf=image)
    # MSP: SysTick_Handler's frame (r0-r3, r12, lr = EXC_RETURN thread/PSP, pc, xPSR IPSR 15)
    memory.add(msp, words(1, 2, 3, 4, 12, 0xFFFFFFFD, 0x26A, 0x0100000F), "msp")
    # PSP: adc_read's frame, then adc_read's push (r4 r5 r6 lr), sample_tick's push (r3 lr),
    # app_run's push (r7 lr).
    memory.add(psp, words(5, 6, 7, 8, 9, 0x1793, adc_pc, 0x01000000)
               + words(0x44, 0x55, 0x66, 0x1793) + words(0x33, 0x247) + words(0x77, 0x164B),
               "psp")
    regs = {f"r{n}": n for n in range(13)}
    regs.update(sp=msp, lr=0xFFFFFFF1, pc=addr(image, "Default_Handler"), xpsr=0x01000005)
    return regs, memory


def test_nested_exception_frames_synthesized(image, symbolizer):
    regs, memory = nested_case(image)
    bt = unwind(image, {**regs, "psp": 0x20003F00}, memory, symbolizer=symbolizer)
    assert [(f.function, f.how) for f in bt.frames] == [
        ("Default_Handler", "registers"), ("SysTick_Handler", "exception-frame"),
        ("adc_read", "exception-frame"), ("sample_tick", "cfi"), ("app_run", "cfi"),
        ("main", "cfi")], bt.format()
    inner, outer = bt.frames[1].exception, bt.frames[2].exception
    assert inner["exc_return"] == 0xFFFFFFF1 and inner["stack"] == "MSP"
    assert inner["frame_address"] == 0x20005000 and inner["return_mode"] == "Handler"
    assert outer["exc_return"] == 0xFFFFFFFD and outer["stack"] == "PSP"
    assert outer["frame_address"] == 0x20003F00 and outer["stack_pointer_source"] == "registers"
    assert bt.frames[2].sp == 0x20003F20 and bt.frames[2].line == 92
    assert bt.frames[2].registers["lr"] == 0x1793
    assert bt.frames[3].sp == 0x20003F30 and bt.frames[5].sp == 0x20003F40
    text = bt.format()
    assert "interrupted by an exception" in text and "EXC_RETURN 0xfffffffd" in text
    json = bt.to_json()
    assert json["frames"][2]["exception"]["exc_return"] == 0xFFFFFFFD
    assert json["frames"][0]["registers"]["pc"] == addr(image, "Default_Handler")


def crash_record(image: ElfImage, *, msp: int, psp: int, exc_return: int) -> tuple[int, bytes]:
    sym = image.symbol("crash_record")
    record = bytearray(sym.size)
    struct.pack_into("<IHH", record, 0, 0x48535243, 1, sym.size)
    struct.pack_into("<III", record, 84, exc_return, msp, psp)
    return sym.address, bytes(record)


def test_psp_from_the_crash_record_when_it_matches(image, symbolizer):
    regs, memory = nested_case(image)
    memory.add(*crash_record(image, msp=0x20005000, psp=0x20003F00, exc_return=0xFFFFFFF1),
               name="crash_record")
    bt = unwind(image, regs, memory, symbolizer=symbolizer, crash_record_symbol="crash_record")
    assert [f.function for f in bt.frames][-1] == "main", bt.format()
    assert bt.frames[2].exception["stack_pointer_source"] == "crash record"


def test_stale_crash_record_is_not_used(image, symbolizer):
    regs, memory = nested_case(image)
    memory.add(*crash_record(image, msp=0x20004FE0, psp=0x20003000, exc_return=0xFFFFFFF1),
               name="crash_record")
    bt = unwind(image, regs, memory, symbolizer=symbolizer, crash_record_symbol="crash_record")
    assert len(bt.frames) == 2
    assert "PSP is unknown" in bt.stop_reason
    assert any("earlier crash" in w for w in bt.warnings)


def test_missing_stack_memory_stops_with_a_reason(image, symbolizer):
    regs, memory = nested_case(image)
    bare = MemoryImage([r for r in memory.regions if r.name == "msp"], elf=image)
    bt = unwind(image, {**regs, "psp": 0x20003F00}, bare, symbolizer=symbolizer)
    assert [f.function for f in bt.frames] == ["Default_Handler", "SysTick_Handler"]
    assert bt.stop_reason.startswith("exception frame at 0x20003f00 unusable (not captured: "
                                     "memory 0x20003f00"), bt.stop_reason
    assert "no captured memory" in bt.stop_reason
    # nothing captured at all: the first frame, then a reason
    bt = unwind(image, regs, MemoryImage(elf=image), symbolizer=symbolizer)
    assert len(bt.frames) == 1 and "not captured" in bt.stop_reason


def test_garbage_registers_give_a_reason_not_an_exception(image, symbolizer):
    regs = {f"r{n}": 0xDEADBEEF for n in range(13)}
    regs.update(sp=0x20004000, lr=0xDEADBEEF, pc=0x12345678, xpsr=0x01000000)
    memory = MemoryImage([], elf=image)
    memory.add(0x20004000, bytes(64), "stack")
    bt = unwind(image, regs, memory, symbolizer=symbolizer)
    assert len(bt.frames) == 1
    frame = bt.frames[0]
    assert frame.pc == 0x12345678 and frame.function is None and frame.how == "registers"
    assert "outside the firmware's code" in bt.stop_reason
    assert "no return address" in bt.stop_reason or "ran out" in bt.stop_reason


def test_loop_guard_stops_when_sp_does_not_move(image, symbolizer):
    # pc and lr inside SysTick_Handler (CFA = sp, return address = lr): the caller would be
    # the same frame again.
    regs = {"pc": 0x26A, "lr": 0x26B, "sp": 0x20004000, "xpsr": 0x0100000F}
    bt = unwind(image, regs, MemoryImage([], elf=image), symbolizer=symbolizer)
    assert len(bt.frames) == 1
    assert bt.stop_reason.startswith("loop:")


def test_scan_checks_the_instruction_before_the_return_address(image, symbolizer):
    """Words that are odd code addresses but do not follow a BL/BLX are not frames."""
    # 0x1795 is in sample_tick but after 'subs' (not a call); 0x1793 follows 'bl adc_read'.
    memory = MemoryImage([], elf=image)
    memory.add(0x20004000, words(0x1795, 0x11111111, 0x1793, 0x247), "stack")
    regs = {"pc": 0x12345678, "sp": 0x20004000}
    bt = unwind(image, regs, memory, symbolizer=symbolizer)
    assert bt.frames[1].how == "scan" and bt.frames[1].pc == 0x1792
    assert bt.frames[1].sp == 0x2000400C
    assert bt.frames[1].function == "sample_tick"


def test_stacked_registers_use_exc_return_and_psp(image, symbolizer):
    """A crash log's registers (pc/lr already unstacked) plus exc_return and psp."""
    _, memory = nested_case(image)
    regs = {"pc": 0x1BC, "lr": 0x1793, "xpsr": 0x01000000, "exc_return": 0xFFFFFFFD,
            "psp": 0x20003F00, "msp": 0x20005000}
    bt = unwind(image, regs, memory, registers_at="stacked", symbolizer=symbolizer)
    assert [f.function for f in bt.frames] == ["adc_read", "sample_tick", "app_run", "main"]
    assert bt.frames[0].sp == 0x20003F20
    assert bt.frames[0].exception["stack"] == "PSP"
    # without a way to the stack pointer it says so
    bt = unwind(image, {"pc": 0x1BC, "lr": 0x1793}, memory, registers_at="stacked",
                symbolizer=symbolizer)
    assert len(bt.frames) == 1 and "stack pointer" in bt.stop_reason


def test_format_numbers_inline_frames_like_gdb(image, symbolizer):
    _, memory = nested_case(image)
    regs = {"pc": 0x16F6, "lr": 0x1793, "sp": 0x20003F20, "exc_return": 0xFFFFFFFD}
    bt = unwind(image, regs, memory, symbolizer=symbolizer, max_frames=1)
    text = bt.format().splitlines()
    assert text[0].startswith("#0  window_mean () at src/sampler.c:54")
    assert text[1] == "#1  averager_push () at src/sampler.c:77"
    assert text[2] == "#2  process_sample () at src/sampler.c:104"
    assert bt.stop_reason == "max_frames (1) reached"
    assert [f.function for f in bt.frames[0].inlined] == ["window_mean", "averager_push"]


@pytest.mark.parametrize("kwargs, field", [
    ({"arch": "armv9-m"}, "arch"),
    ({"registers_at": "somewhere"}, "registers_at"),
    ({"max_frames": 0}, "max_frames"),
    ({"registers": {"pc": -1}}, "registers.pc"),
    ({"registers": {"pc": 1 << 32}}, "registers.pc"),
    ({"registers": {"sp": 0x20000000}}, "registers"),
    ({"registers": {"pc": "0x100"}}, "registers.pc"),
])
def test_bad_arguments_are_input_errors(image, kwargs, field):
    registers = kwargs.pop("registers", {"pc": 0x1BC, "sp": 0x20003F00})
    with pytest.raises(InputError) as err:
        unwind(image, registers, MemoryImage(elf=image), **kwargs)
    assert err.value.field == field


def test_unwound_frame_json_is_plain_data(image, symbolizer):
    regs, memory = nested_case(image)
    bt = unwind(image, {**regs, "psp": 0x20003F00}, memory, symbolizer=symbolizer)
    import json

    data = json.loads(json.dumps(bt.to_json()))
    assert data["stop_reason"] == bt.stop_reason
    assert [f["how"] for f in data["frames"]] == [f.how for f in bt.frames]
    assert isinstance(bt.frames[0], UnwoundFrame)


def test_entry_sp_is_the_handlers_cfa_wherever_pc_is():
    """``entry_sp``: SP on entry (the exception frame's address for a handler halted
    with lr = EXC_RETURN), from .debug_frame; checked against the handler's own code."""
    from collector.unwind import entry_sp

    image = ElfImage.open_cached(ELF)
    handler = image.symbol("UART0_RX_Handler")
    start = handler.address & ~1
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn",
                          f"--start-address={start}", f"--stop-address={start + handler.size}",
                          str(ELF)], capture_output=True, text=True, check=True).stdout
    insns = [(int(m[1], 16), m[2]) for m in re.finditer(r"^\s+([0-9a-f]+):\s+(\S.*)$", out, re.M)]
    push = next(a for a, text in insns if text.startswith("push"))
    pop = next(a for a, text in insns if text.startswith("pop"))
    after_push = next(a for a, _ in insns if a > push)
    after_pop = next(a for a, _ in insns if a > pop)
    sp = 0x20005000
    assert entry_sp(image, start, {"sp": sp}) == (sp, "sp+0 (the handler's CFA at pc, .debug_frame)")
    assert entry_sp(image, push, {"sp": sp})[0] == sp
    assert entry_sp(image, after_push, {"sp": sp})[0] == sp + 12    # push {r4, r5, r6}
    assert entry_sp(image, pop, {"sp": sp})[0] == sp + 12
    assert entry_sp(image, after_pop, {"sp": sp})[0] == sp
    assert entry_sp(image, after_push, {}) is None                  # SP unknown
    assert entry_sp(image, 0x20000000, {"sp": sp}) is None          # RAM: no CFI
    # 0x0 is the vector table; ld left FDEs of gc-ed functions there (pc=0..0x38)
    assert entry_sp(image, 0x10, {"sp": sp}) is None
