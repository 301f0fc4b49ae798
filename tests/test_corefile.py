"""ELF core files from crash evidence, checked with pyelftools and gdb-multiarch.

The QEMU tests halt the fixture firmware in its fault handler, take gdb's
own view of the live board (bt, info registers, print device_config), then
capture registers and the target's RAM regions from the same halted board
through the gdbremote client, write a core and ask gdb the same questions.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from collector.corefile import (
    NT_GDB_TDESC,
    PRSTATUS_SIZE,
    SIGBUS,
    SIGFPE,
    SIGTRAP,
    fault_signal,
    memory_runs,
    write_core,
)
from collector.device_config import load_config_file
from collector.elf import ElfImage
from collector.evidence import CORE_REGISTERS, CrashEvidence, MemoryImage
from collector.gdbremote import GdbMemoryError, GdbRemote
from crashcart.errors import InputError
from replay.sim import SimulatedBoard
from targets import Target

from .conftest import CONFIG_DIR

LONG_RUN_NS = 3_600_000_000_000
QEMU_PAGE = 1024
# SCB fault registers (ARMv7-M ARM B3.2.15-B3.2.19), read as memory.
SCB_FAULT_REGISTERS = {"cfsr": 0xE000ED28, "hfsr": 0xE000ED2C, "mmfar": 0xE000ED34,
                       "bfar": 0xE000ED38}
SECTIONS = ("bt", "registers", "config")
# What gdb is asked, live and on the export; "@@name" markers split the answers.
QUESTIONS = ("echo @@bt\\n", "bt", "echo @@registers\\n", "info registers",
             "echo @@config\\n", "print device_config", "echo @@end\\n")


# -- helpers shared with test_gdbserver -------------------------------------------------


def gdb_path() -> str:
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        pytest.skip("gdb-multiarch is not installed")
    return gdb


@dataclass
class GdbRun:
    stdout: str
    stderr: str
    sections: dict[str, str]


def run_gdb(*args: str, commands: tuple[str, ...] = (), timeout_s: float = 60) -> GdbRun:
    """gdb-multiarch in batch mode; ``echo @@name\\n`` markers split stdout into sections."""
    argv = [gdb_path(), "-nx", "-batch", *args]
    for command in commands:
        argv += ["-ex", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    sections = {}
    for chunk in done.stdout.split("@@")[1:]:
        name, _, text = chunk.partition("\n")
        sections[name] = text
    return GdbRun(done.stdout, done.stderr, sections)


@dataclass
class HaltedCapture:
    """gdb's answers on the live halted board, and what was captured from it."""

    live: GdbRun
    registers: dict[str, int]
    regions: list[tuple[int, bytes, str]]


def capture_regions(target: Target, image: ElfImage) -> list[tuple[str, int, int]]:
    """The target's capture.ram_regions as (name, start, end) for this ELF."""
    out = []
    for region in target.capture_regions:
        if region.start_symbol is not None and region.end_symbol is not None:
            start = image.symbol(region.start_symbol).address
            end = image.symbol(region.end_symbol).address
        else:
            assert region.start is not None and region.size is not None
            start, end = region.start, region.start + region.size
        out.append((region.name, start, end))
    return out


def read_like_gdb(gdb: GdbRemote, start: int, end: int) -> list[tuple[int, bytes]]:
    """Read page by page, leaving out what the gdbstub refuses (the MPU guard)."""
    pieces: list[tuple[int, bytes]] = []
    for page in range(start, end, QEMU_PAGE):
        try:
            data = gdb.read_memory(page, min(QEMU_PAGE, end - page))
        except GdbMemoryError:
            continue
        if pieces and pieces[-1][0] + len(pieces[-1][1]) == page:
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + data)
        else:
            pieces.append((page, data))
    return pieces


def halt_and_capture(target: Target, elf: Path, config: str, breakpoint: str, *,
                     physical: bool = True, extra: tuple[tuple[int, int], ...] = (),
                     after: Callable[[GdbRemote], dict[str, int]] | None = None,
                     ) -> HaltedCapture:
    """Run ``config`` to ``breakpoint``, ask gdb, then capture the same halted board.

    ``physical``: read the MPU guard through QEMU's monitor (as crashcart's
    collector does); otherwise leave out what gdb itself cannot read.
    ``extra``: further (start, end) ranges to capture.  ``after(gdb)``, run
    once everything is captured, may return more registers.
    """
    image = ElfImage.open_cached(elf)
    with SimulatedBoard(target, elf, config=load_config_file(CONFIG_DIR / f"{config}.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as board:
        live = run_gdb(str(elf), commands=(
            f"target remote 127.0.0.1:{board.gdb_address[1]}", f"break {breakpoint}",
            "continue", *QUESTIONS, "disconnect"))
        assert "Breakpoint 1," in live.stdout, live.stdout + live.stderr
        with GdbRemote(*board.gdb_address) as gdb:
            assert not gdb.was_running_at_attach  # still halted where gdb left it
            registers = gdb.read_registers()
            for name, address in SCB_FAULT_REGISTERS.items():
                registers[name] = int.from_bytes(gdb.read_memory(address, 4), "little")
            regions: list[tuple[int, bytes, str]] = []
            ranges = [*capture_regions(target, image), *(("extra", lo, hi) for lo, hi in extra)]
            for name, start, end in ranges:
                if physical:
                    regions.append((start, gdb.read_memory(start, end - start,
                                                           physical_fallback=True), name))
                else:
                    regions += [(lo, data, name) for lo, data in read_like_gdb(gdb, start, end)]
            assert gdb.writes == [] and gdb.register_writes == []
            if after is not None:
                registers.update(after(gdb))
    return HaltedCapture(live, registers, regions)


def evidence_from(capture: HaltedCapture, image: ElfImage, *,
                  drop: tuple[str, ...] = ()) -> CrashEvidence:
    memory = MemoryImage(elf=image)
    for start, data, name in capture.regions:
        memory.add(start, data, name)
    registers = {k: v for k, v in capture.registers.items() if k not in drop}
    return CrashEvidence(source="gdb", origin="qemu gdbstub", registers=registers,
                         registers_at="handler", memory=memory, build_id=image.build_id)


def notes_of(core: Path) -> dict[int, tuple[str, bytes]]:
    """Notes of a core, by type: (owner, raw descriptor)."""
    data = core.read_bytes()
    out = {}
    with core.open("rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_NOTE":
                continue
            pos, end = seg["p_offset"], seg["p_offset"] + seg["p_filesz"]
            while pos < end:
                namesz, descsz, kind = struct.unpack_from("<3I", data, pos)
                name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0").decode()
                desc_at = pos + 12 + (namesz + 3) // 4 * 4
                out[kind] = (name, data[desc_at:desc_at + descsz])
                pos = desc_at + (descsz + 3) // 4 * 4
    return out


# -- without QEMU ---------------------------------------------------------------------


@pytest.fixture
def image(elf_100) -> ElfImage:
    return ElfImage.open_cached(elf_100)


def synthetic(image: ElfImage, **registers: int) -> CrashEvidence:
    regs = {name: 0x1000 + i for i, name in enumerate(CORE_REGISTERS)}
    regs.update(registers)
    memory = MemoryImage(elf=image)
    memory.add(0x20000000, bytes(range(256)) * 4, "ram-a")
    memory.add(0x20000400, b"\x11" * 64, "ram-b")            # adjacent: merged with ram-a
    memory.add(0x20000100, b"\xee" * 16, "patch")            # overlapping: wins
    memory.add(0x20004000, b"\x22" * 32, "stack")
    return CrashEvidence(source="test", origin="synthetic", registers=regs, memory=memory)


def test_core_layout_follows_arm_linux_prstatus(image, tmp_path):
    evidence = synthetic(image, cfsr=0x8200, bfar=0x7220504C)
    result = write_core(evidence, image, tmp_path / "core")
    with (tmp_path / "core").open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_ARM"
        assert elf.elfclass == 32 and elf.little_endian
        assert elf["e_flags"] == image.elf["e_flags"]
        loads = [(s["p_vaddr"], s.data()) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    notes = notes_of(tmp_path / "core")
    owner, prstatus = notes[1]
    assert owner == "CORE" and len(prstatus) == PRSTATUS_SIZE == 148
    assert struct.unpack_from("<H", prstatus, 12)[0] == SIGBUS       # pr_cursig
    assert struct.unpack_from("<I", prstatus, 24)[0] == 1            # pr_pid
    words = struct.unpack_from("<18I", prstatus, 72)                 # pr_reg
    assert list(words[:17]) == [evidence.registers[n] for n in CORE_REGISTERS]
    assert words[17] == 0xFFFFFFFF                                   # orig_r0
    owner, psinfo = notes[3]
    assert owner == "CORE" and len(psinfo) == 124
    assert psinfo[28:44] == image.path.name.encode()[:16]
    assert psinfo[44:124].rstrip(b"\0") == image.path.name.encode()
    owner, tdesc = notes[NT_GDB_TDESC]
    assert owner == "GDB" and b"org.gnu.gdb.arm.m-profile" in tdesc
    assert b'name="xpsr"' in tdesc and b"m-system" not in tdesc

    # Adjacent regions merge into one PT_LOAD; the overlapping patch wins, as in MemoryImage.
    assert [(a, len(d)) for a, d in loads] == [(0x20000000, 0x440), (0x20004000, 32)]
    merged = loads[0][1]
    assert merged[0x100:0x110] == b"\xee" * 16 == evidence.memory.read(0x20000100, 16)
    assert merged[0xFF] == 0xFF and merged[0x110] == 0x10 and merged[0x400:] == b"\x11" * 64
    assert [s.names for s in result.segments] == [("ram-a", "patch", "ram-b"), ("stack",)]
    assert result.missing_registers == () and result.signal == SIGBUS


def test_gdb_reads_the_core(image, elf_100, tmp_path):
    config = load_config_file(CONFIG_DIR / "bad-adc-channel.yaml")
    assert config["adc_channel"] == 6
    evidence = synthetic(image, pc=image.symbol("adc_read").address & ~1, sp=0x20004000,
                         cfsr=0x8200)
    del evidence.registers["r7"]
    core = tmp_path / "core"
    result = write_core(evidence, image, core)
    assert result.missing_registers == ("r7",)
    run = run_gdb(str(elf_100), str(core), commands=(
        "echo @@regs\\n", "info registers r0 r7 pc xpsr", "echo @@mem\\n",
        "x/2xw 0x20000100", "echo @@bss\\n", "x/xw 0x20000440", "echo @@x\\n",
        "x/xw 0x30000000", "echo @@end\\n"))
    assert "Program terminated with signal SIGBUS, Bus error." in run.stdout
    regs = run.sections["regs"]
    assert "r0             0x1000" in regs
    assert "r7             0x0 " in regs        # not in the evidence: zero in the core
    assert "<adc_read>" in regs and "xpsr           0x1010" in regs
    assert "0xeeeeeeee\t0xeeeeeeee" in run.sections["mem"]
    # Not captured but inside an ELF section (.bss): gdb falls back to the ELF
    # and reads zeros (docs/gdb-interop.md, "Limits"); outside every section
    # it cannot read at all.
    assert run.sections["bss"] == "0x20000440 <bq_state+692>:\t0x00000000\n"
    assert "Cannot access memory at address 0x30000000" in run.stderr


def test_core_needs_pc_and_sp(image, tmp_path):
    evidence = synthetic(image)
    del evidence.registers["pc"]
    with pytest.raises(InputError, match="no PC") as info:
        write_core(evidence, image, tmp_path / "core")
    assert info.value.field == "registers.pc"
    assert not (tmp_path / "core").exists()


def test_core_refuses_another_build(image, tmp_path):
    evidence = synthetic(image)
    evidence.build_id = "3f2a" + "0" * 36
    with pytest.raises(InputError, match="does not match") as info:
        write_core(evidence, image, tmp_path / "core")
    assert "3f2a" in str(info.value) and str(image.build_id) in str(info.value)
    assert "pass the ELF of the build" in str(info.value)
    # A matching prefix (devices may print a short build ID) is a match.
    evidence.build_id = str(image.build_id)[:16]
    write_core(evidence, image, tmp_path / "core")


def test_core_to_unwritable_path_is_input_error(image, tmp_path):
    with pytest.raises(InputError, match="cannot write the core file"):
        write_core(synthetic(image), image, tmp_path / "no-such-dir" / "core")
    assert list(tmp_path.iterdir()) == []


def test_signal_follows_the_fault_bits(image):
    assert fault_signal(synthetic(image, cfsr=0x02000000)) == SIGFPE      # DIVBYZERO
    assert fault_signal(synthetic(image, cfsr=0x00008200)) == SIGBUS      # PRECISERR
    assert fault_signal(synthetic(image, cfsr=0x00020000, hfsr=0x40000000)) == 4  # INVSTATE
    assert fault_signal(synthetic(image, cfsr=0x00000092)) == 11          # DACCVIOL
    assert fault_signal(synthetic(image)) == SIGTRAP
    named = synthetic(image)
    named.fault_name = "NMI/watchdog"
    assert fault_signal(named) == 6


def test_memory_runs_of_empty_memory(image):
    evidence = CrashEvidence(source="t", origin="t", registers={"pc": 0, "sp": 0})
    assert memory_runs(evidence) == []


# -- against the halted QEMU board --------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize("config", ["bad-adc-channel", "zero-averaging-window",
                                    "trace-logging", "wide-filter"])
def test_core_gives_gdb_the_live_answers(target, elf_100, image, tmp_path, config):
    capture = halt_and_capture(target, elf_100, config, "fault_handler_c")
    core = tmp_path / "core"
    write_core(evidence_from(capture, image), image, core)
    exported = run_gdb(str(elf_100), str(core), commands=QUESTIONS)
    for section in SECTIONS:
        assert capture.live.sections[section].strip(), section
        assert exported.sections[section] == capture.live.sections[section], section
    bt = capture.live.sections["bt"]
    assert bt.startswith("#0  fault_handler_c (ctx=0x200050d0) at src/regs.h:135\n")
    assert "#1  <signal handler called>" in bt and "main () at src/main.c:32" in bt
    assert "\nxpsr " in capture.live.sections["registers"]


def test_crash_log_evidence_gets_its_sp_from_exc_return(image, elf_100, tmp_path):
    """A crash log states the stacked registers, EXC_RETURN, MSP and PSP, but no SP."""
    from collector.corefile import export_registers
    from collector.sources import load_evidence

    from .conftest import ROOT

    log = ROOT / "fixtures" / "incident" / "evidence" / "node-1" / "serial" / "console.raw"
    evidence = load_evidence(log, image)[0]
    assert evidence.registers_at == "stacked" and "sp" not in evidence.registers
    regs = export_registers(evidence)
    # EXC_RETURN 0xfffffffd: thread mode, frame on the PSP; 8 words, xPSR[9] clear.
    assert evidence.registers["exc_return"] == 0xFFFFFFFD
    assert regs["sp"] == evidence.registers["psp"] + 0x20
    result = write_core(evidence, image, tmp_path / "core")
    assert result.missing_registers == () and result.signal == SIGBUS
    run = run_gdb(str(elf_100), str(tmp_path / "core"), commands=(
        "echo @@bt\\n", "bt 1", "echo @@sp\\n", "info registers sp", "echo @@end\\n"))
    assert run.sections["bt"].startswith(
        "#0  0x000001bc in adc_read (ch=<optimized out>, gain_index=<optimized out>, "
        "timeout_ms=10) at src/adc.c:92\n")
    assert f"0x{regs['sp']:x}" in run.sections["sp"]


def test_core_command_writes_a_core_gdb_opens(elf_100, tmp_path):
    from click.testing import CliRunner

    from collector.corefile import core_command

    from .conftest import ROOT

    log = ROOT / "fixtures" / "incident" / "evidence" / "node-1" / "serial" / "console.raw"
    out = tmp_path / "crash.core"
    result = CliRunner().invoke(core_command, [str(log), "--elf", str(elf_100), "--crash", "1",
                                               "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"gdb-multiarch {elf_100} {out}" in result.output
    run = run_gdb(str(elf_100), str(out), commands=("echo @@bt\\n", "bt 1", "echo @@end\\n"))
    assert run.sections["bt"].startswith("#0  0x000001bc in adc_read (")
    several = CliRunner().invoke(core_command, [str(log), "--elf", str(elf_100), "-o", str(out)])
    assert isinstance(several.exception, InputError)
    assert "pick one with --crash N" in str(several.exception)
