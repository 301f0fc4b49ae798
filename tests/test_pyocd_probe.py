"""The QEMU probe plugin with the real pyocd 0.46 and the real QEMU board.

No pyocd mocks: sessions are real pyocd sessions, `pyocd list` and `pyocd
commander` run as subprocesses, and what pyocd reads is compared with the
gdbremote client and with gdb-multiarch on the same halted board.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyocd.core import exceptions
from pyocd.core.helpers import ConnectHelper
from pyocd.core.session import Session
from pyocd.core.target import Target
from pyocd.probe.aggregator import DebugProbeAggregator

from collector.device_config import load_config_file
from collector.elf import ElfImage
from collector.gdbremote import GdbRemote
from collector.pyocd_probe import (
    AP_BASE_VALUE,
    AP_IDR_VALUE,
    DPIDR_VALUE,
    ENV_PROBES,
    ROM_BASE,
    QemuLinkLost,
    QemuMemoryFault,
    QemuProbe,
    QemuProbePlugin,
)
from crashcart.errors import TargetError
from replay.sim import SimulatedBoard

from .conftest import CONFIG_DIR

RAM = 0x20000000
RAM_READ = 64 * 1024
LONG_RUN_NS = 3_600_000_000_000
QEMU_PAGE = 1024  # TARGET_PAGE_SIZE of qemu-system-arm
CORE_REGS = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "xpsr"]
# Debug registers pyocd may set up; anything else written is a target write.
DEBUG_REGISTERS = re.compile(r"^(DHCSR|DCRSR|DEMCR|DFSR|DWT_\w+|FP_\w+|ITM_\w+)$")
PYOCD = [sys.executable, "-m", "pyocd"]

# DP/AP register addresses and bits (ADIv5.2 B2.2, C2.6).
DP_CTRL_STAT, DP_SELECT, DP_RDBUFF = 0x4, 0x8, 0xC
POWER_REQ = (1 << 30) | (1 << 28)
POWER_ACK = (1 << 31) | (1 << 29)
CSW, TAR, DRW, BD0 = 0x00, 0x04, 0x0C, 0x10
CSW_32_INC, CSW_8_INC = 0x03000012, 0x03000010


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def vm_status(board: SimulatedBoard) -> str:
    assert board.qmp is not None
    return str(board.qmp.command("query-status")["status"])


@pytest.fixture
def board(target, elf_100) -> Iterator[SimulatedBoard]:
    """The fixture firmware with the default config on QEMU, paused at reset, gdbstub open."""
    with SimulatedBoard(target, elf_100, config=load_config_file(CONFIG_DIR / "default.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as b:
        yield b


@pytest.fixture
def running_board(board) -> SimulatedBoard:
    board.resume()
    wait_for(lambda: b"crashcart sensor-node" in board.transcript)
    return board


@pytest.fixture
def open_session(tmp_path, monkeypatch) -> Iterator[Callable[..., Session]]:
    """Open pyocd sessions the evidence way: attach, no resume, generic Cortex-M, no config.

    ``Session`` changes directory to ``project_dir``; monkeypatch restores it.
    """
    monkeypatch.chdir(tmp_path)
    sessions: list[Session] = []

    def start(probe: QemuProbe, **options: object) -> Session:
        session = Session(probe, options={"connect_mode": "attach",
                                          "resume_on_disconnect": False,
                                          "target_override": "cortex_m", **options},
                          project_dir=str(tmp_path), no_config=True)
        session.open()
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        if session.is_open:
            session.close()


def probe_for(board: SimulatedBoard) -> QemuProbe:
    return QemuProbe(*board.gdb_address)


def address_of(elf: Path, name: str) -> int:
    return ElfImage.open_cached(elf).symbol(name).address


def gdb_multiarch(port: int, *commands: str, timeout_s: float = 60) -> str:
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        pytest.skip("gdb-multiarch is not installed")
    args = [gdb, "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        args += ["-ex", command]
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stdout
    return done.stdout  # with stderr: gdb prints monitor output there in batch mode


def run_pyocd(*args: str, env: dict[str, str] | None = None,
              timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PYOCD + list(args), capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})}, check=False)


# -- probe discovery (no QEMU needed) ----------------------------------------------


def test_probes_exist_for_listed_and_explicit_ids(monkeypatch):
    monkeypatch.setenv(ENV_PROBES, "127.0.0.1:4001, localhost:4002,nonsense")
    listed = QemuProbe.get_all_connected_probes()
    assert [p.unique_id for p in listed] == ["qemu:127.0.0.1:4001", "qemu:localhost:4002"]
    assert QemuProbe.get_probe_with_id("127.0.0.1:4001").unique_id == "qemu:127.0.0.1:4001"
    # An unlisted gdbstub exists only when asked for explicitly ("qemu:" prefix).
    assert QemuProbe.get_probe_with_id("127.0.0.1:4999") is None
    assert QemuProbe.get_probe_with_id("127.0.0.1:4999", is_explicit=True) is not None
    assert QemuProbe.get_probe_with_id("no-port", is_explicit=True) is None
    found = DebugProbeAggregator.get_all_connected_probes("qemu:127.0.0.1:4999")
    assert [type(p) for p in found] == [QemuProbe]
    assert found[0].unique_id == "qemu:127.0.0.1:4999"
    assert not found[0].is_open  # listing does not connect
    assert QemuProbePlugin().name == "qemu" and QemuProbePlugin().load() is QemuProbe


def test_pyocd_list_shows_the_probes_in_the_environment():
    done = run_pyocd("list", env={ENV_PROBES: "127.0.0.1:4001,127.0.0.1:4002"})
    assert done.returncode == 0, done.stderr
    assert "qemu:127.0.0.1:4001" in done.stdout
    assert "qemu:127.0.0.1:4002" in done.stdout
    assert "QEMU gdbstub" in done.stdout


# -- DP/AP emulation (emulated registers only: no QEMU needed) -------------------


def powered_probe() -> QemuProbe:
    probe = QemuProbe("127.0.0.1", 9)  # never opened: only emulated registers are used
    probe.connect()
    probe.write_dp(DP_CTRL_STAT, POWER_REQ)
    return probe


def test_dp_identifies_and_acknowledges_power_up():
    probe = QemuProbe("127.0.0.1", 9)
    probe.connect()
    assert probe.wire_protocol == QemuProbe.Protocol.SWD
    assert probe.read_dp(0x0) == DPIDR_VALUE
    assert probe.read_dp(DP_CTRL_STAT) & POWER_ACK == 0
    with pytest.raises(exceptions.TransferError, match="power"):
        probe.read_ap(0xFC)  # AP access before the power-up handshake
    probe.write_dp(DP_CTRL_STAT, POWER_REQ)
    assert probe.read_dp(DP_CTRL_STAT) & POWER_ACK == POWER_ACK


def test_mem_ap_identifies_and_reads_the_rom_table_with_deferred_reads():
    probe = powered_probe()
    probe.write_dp(DP_SELECT, 0xF0)  # APSEL 0, bank 0xF
    assert probe.read_ap(0xFC) == AP_IDR_VALUE
    assert probe.read_ap(0xF8) == AP_BASE_VALUE
    assert probe.read_ap(0xF4) == 0  # CFG: 32-bit addresses, little-endian
    probe.write_dp(DP_SELECT, 0x01000000 | 0xF0)
    assert probe.read_ap(0xFC) == 0  # no AP #1
    probe.write_dp(DP_SELECT, 0)
    probe.write_ap(CSW, CSW_32_INC)
    probe.write_ap(TAR, ROM_BASE)
    # pyocd queues reads (now=False) before resolving any: each is done at issue time.
    pending = [probe.read_ap(DRW, now=False) for _ in range(5)]
    assert probe.read_ap(TAR) == ROM_BASE + 20  # TAR auto-incremented by 4 per DRW read
    assert [read() for read in pending] == [0xFFF0F003, 0xFFF02003, 0xFFF03003, 0xFFF01003, 0]
    assert probe.read_dp(DP_RDBUFF) == ROM_BASE + 20  # RDBUFF holds the last AP read
    # CIDR0-3 at 0xFF0 through the banked data registers (APBANKSEL 1): no increment.
    probe.write_ap(TAR, ROM_BASE + 0xFF0)
    probe.write_dp(DP_SELECT, 0x10)
    assert [probe.read_ap(BD0 + 4 * n) for n in range(4)] == [0x0D, 0x10, 0x05, 0xB1]
    probe.write_dp(DP_SELECT, 0)
    assert probe.read_ap(TAR) == ROM_BASE + 0xFF0
    assert probe.read_ap_multiple(DRW, 2) == [0x0D, 0x10]


def test_csw_size_tar_wrap_and_byte_lanes():
    probe = powered_probe()
    probe.write_dp(DP_SELECT, 0)
    probe.write_ap(CSW, CSW_32_INC | 0x3)  # 64-bit transfers: not implemented, size kept
    assert probe.read_ap(CSW) & 0x7 == 2
    assert probe.read_ap(CSW) & (1 << 6)  # DeviceEn
    # Auto-increment carries through TAR[11:0] only (4 KB, as this AHB-AP on silicon).
    probe.write_ap(TAR, ROM_BASE + 0x3FC)
    probe.read_ap(DRW)
    assert probe.read_ap(TAR) == ROM_BASE + 0x400
    probe.write_ap(TAR, ROM_BASE + 0xFFC)
    probe.read_ap(DRW)
    assert probe.read_ap(TAR) == ROM_BASE
    # 8-bit reads return the byte in its lane and advance TAR by one: the first ROM
    # table entry is 0xFFF0F003, so byte 1 is 0xF0 in lane 1 and byte 3 is 0xFF in lane 3.
    probe.write_ap(CSW, CSW_8_INC)
    probe.write_ap(TAR, ROM_BASE + 1)
    assert probe.read_ap(DRW) == 0xF0 << 8
    assert probe.read_ap(DRW) == 0xF0 << 16
    assert probe.read_ap(DRW) == 0xFF << 24
    assert probe.read_ap(TAR) == ROM_BASE + 4


def test_dwt_and_fpb_keep_their_read_only_fields():
    probe = powered_probe()
    probe.bus_write(0xE0001000, 0x00000001, 32, "test")  # DWT_CTRL: CYCCNTENA
    assert probe.bus_read(0xE0001000, 32) == 0x40000001  # NUMCOMP=4 kept
    probe.bus_write(0xE0001000, 0xFFFFFFFF & ~0xF0000000, 32, "test")
    assert probe.bus_read(0xE0001000, 32) >> 24 == 0x40
    probe.bus_write(0xE0002000, 0x1, 32, "test")  # FP_CTRL ENABLE without KEY: ignored
    assert probe.bus_read(0xE0002000, 32) == 0x260
    probe.bus_write(0xE0002000, 0x3, 32, "test")
    assert probe.bus_read(0xE0002000, 32) == 0x261
    probe.bus_write(0xE0002000, 0x2, 32, "test")
    assert probe.bus_read(0xE0002000, 32) == 0x260
    assert all(w.register and not w.reached_target for w in probe.writes)


# -- pyocd sessions on the QEMU board ---------------------------------------------


def parse_gdb_registers(text: str) -> dict[str, int]:
    regs = {}
    for line in text.splitlines():
        m = re.match(r"^(r\d+|sp|lr|pc|xpsr)\s+(0x[0-9a-f]+)", line)
        if m:
            regs[m.group(1)] = int(m.group(2), 16)
    return regs


def parse_xp_bytes(text: str) -> bytes:
    out = bytearray()
    for line in text.splitlines():
        head, sep, values = line.partition(":")
        if sep and re.fullmatch(r"[0-9a-f]{16}", head.strip()):
            out += bytes(int(v, 16) for v in values.split())
    return bytes(out)


@pytest.mark.qemu
def test_pyocd_reads_what_gdbremote_and_gdb_read(running_board, open_session, tmp_path, elf_100):
    probe = probe_for(running_board)
    session = open_session(probe)
    gdb_client = probe.gdb
    assert gdb_client is not None
    core = session.target.selected_core
    assert core.name == "Cortex-M3"
    assert session.target.get_state() == Target.State.RUNNING  # attaching did not halt it
    session.target.halt()
    assert session.target.get_state() == Target.State.HALTED
    assert core.get_halt_reason() == Target.HaltReason.DEBUG
    regs = dict(zip(CORE_REGS, session.target.read_core_registers_raw(CORE_REGS), strict=True))
    memory = bytes(session.target.read_memory_block8(RAM, RAM_READ))
    # The halt lands wherever the core was: in the superloop (Thread mode, where SP may
    # be MSP or PSP and QEMU's gdbstub does not say which) or in the SysTick or UART RX
    # handler (Handler mode always runs on MSP). Both cases are answered honestly.
    if regs["xpsr"] & 0x1FF:
        assert core.read_core_register("msp") == regs["sp"]
    else:
        with pytest.raises(exceptions.CoreRegisterAccessError, match="msp"):
            core.read_core_register("msp")
    with pytest.raises(exceptions.CoreRegisterAccessError, match="control"):
        core.read_core_register("control")
    session.close()

    # Nothing but debug registers was written; the gdbstub client wrote nothing at all.
    assert probe.writes, "pyocd sets up DHCSR at least"
    for write in probe.writes:
        assert not write.reached_target, write
        assert DEBUG_REGISTERS.match(write.register or ""), write
    assert gdb_client.writes == [] and gdb_client.register_writes == []
    halts = [w for w in probe.writes if w.register == "DHCSR" and w.value & 0x2]
    assert len(halts) == 1 and halts[0].value == 0xA05F0003
    kinds = [e.kind for e in probe.events]
    assert kinds[:2] == ["attach-stopped-vm", "resumed-after-attach"]
    assert kinds.count("halt") == 1
    assert "register-unavailable" in kinds
    assert kinds[-1] == "left-halted"
    assert vm_status(running_board) == "paused"

    # The same halted board through the gdbremote client ...
    with GdbRemote(*running_board.gdb_address) as gdb:
        assert not gdb.was_running_at_attach  # still halted by the pyocd session
        assert gdb.read_registers() == regs
        assert gdb.read_memory(RAM, RAM_READ, physical_fallback=True) == memory

    # ... and through gdb-multiarch (QEMU takes one client at a time, so one after another).
    # gdb cannot read the 1 KiB page holding the MPU guard either (QEMU checks debug
    # reads against the MPU, a page at a time): take it from QEMU's physical-memory
    # monitor command.
    page = address_of(elf_100, "__stack_guard_start") & ~(QEMU_PAGE - 1)
    before, after = tmp_path / "before.bin", tmp_path / "after.bin"
    out = gdb_multiarch(
        running_board.gdb_address[1],
        "info registers",
        f"dump binary memory {before} {RAM:#x} {page:#x}",
        f"monitor xp /{QEMU_PAGE}xb {page:#x}",
        f"dump binary memory {after} {page + QEMU_PAGE:#x} {RAM + RAM_READ:#x}",
        "disconnect")
    assert parse_gdb_registers(out) == regs
    from_gdb = before.read_bytes() + parse_xp_bytes(out) + after.read_bytes()
    assert len(from_gdb) == RAM_READ
    assert from_gdb == memory
    assert memory[:4] == b"CCFG"


@pytest.mark.qemu
def test_drw_path_reads_like_the_fast_path(running_board, open_session):
    probe = probe_for(running_board)
    session = open_session(probe, **{"qemu.accelerated_memory": False})
    session.target.halt()
    # RAM+0xF00..RAM+0x1100 crosses a 4 KB boundary: pyocd rewrites TAR there.
    words = session.target.read_memory_block32(RAM + 0xF00, 0x80)
    odd = bytes(session.target.read_memory_block8(RAM + 0x11, 7))
    half = session.target.read16(RAM + 0x6)
    with pytest.raises(exceptions.TransferFaultError) as info:
        session.target.read32(0xFFFF0000)
    assert isinstance(info.value, TargetError) and info.value.fault_address == 0xFFFF0000
    assert probe.read_dp(DP_CTRL_STAT) & (1 << 5) == 0  # pyocd cleared STICKYERR via ABORT
    session.close()
    with GdbRemote(*running_board.gdb_address) as gdb:
        data = gdb.read_memory(RAM + 0xF00, 0x200)
        assert words == [int.from_bytes(data[i:i + 4], "little") for i in range(0, 0x200, 4)]
        assert odd == gdb.read_memory(RAM + 0x11, 7)
        assert half == int.from_bytes(gdb.read_memory(RAM + 0x6, 2), "little")
    assert all(not w.reached_target for w in probe.writes)


@pytest.mark.qemu
def test_reading_a_running_board_stops_and_resumes_it(running_board, open_session):
    probe = probe_for(running_board)
    session = open_session(probe)
    assert session.target.get_state() == Target.State.RUNNING
    before = len(probe.events)
    data = bytes(session.target.read_memory_block8(RAM, 4096))
    assert data[:4] == b"CCFG"
    kinds = [e.kind for e in probe.events[before:]]
    assert kinds == ["stopped-for-access", "resumed-after-access"]
    assert probe.events[before].address == RAM
    assert session.target.get_state() == Target.State.RUNNING
    wait_for(lambda: vm_status(running_board) == "running")
    session.close()
    assert probe.events[-1].kind == "left-running"
    assert vm_status(running_board) == "running"


@pytest.mark.qemu
def test_attaching_to_a_stopped_board_leaves_it_stopped(board, open_session):
    probe = probe_for(board)  # board paused at reset, never resumed
    session = open_session(probe)
    assert session.target.get_state() == Target.State.HALTED
    assert [e.kind for e in probe.events][:1] == ["attached-halted"]
    pc = session.target.read_core_register("pc")
    assert pc == address_of(board.firmware, "Reset_Handler") & ~1
    session.close()
    assert vm_status(board) == "prelaunch"
    assert not any(e.kind.startswith("resume") for e in probe.events)


@pytest.mark.qemu
def test_breakpoint_halts_in_handler_mode_where_msp_is_sp(running_board, open_session):
    probe = probe_for(running_board)
    session = open_session(probe)
    target = session.target
    systick = address_of(running_board.firmware, "SysTick_Handler") & ~1
    target.halt()
    assert target.set_breakpoint(systick, Target.BreakpointType.HW)
    target.resume()  # pyocd programs the FPB comparator now -> Z1 in the gdbstub
    assert ("breakpoint-set", systick) in [(e.kind, e.address) for e in probe.events]
    wait_for(lambda: target.get_state() == Target.State.HALTED)
    assert probe.events[-1].kind == "stopped" and probe.events[-1].address == systick
    assert target.get_halt_reason() == Target.HaltReason.BREAKPOINT
    assert target.read_core_register("pc") == systick
    assert target.read_core_register("ipsr") == 15  # SysTick exception
    # Handler mode always runs on the main stack (ARMv7-M B1.4.7): MSP is SP.
    assert target.read_core_register("msp") == target.read_core_register("sp")
    with pytest.raises(exceptions.CoreRegisterAccessError, match="psp"):
        target.read_core_register("psp")
    target.remove_breakpoint(systick)
    target.resume()  # pyocd clears the comparator now -> z1
    assert ("breakpoint-removed", systick) in [(e.kind, e.address) for e in probe.events]
    time.sleep(0.1)  # SysTick fires every simulated ms; no breakpoint stops it any more
    assert target.get_state() == Target.State.RUNNING
    assert all(not w.reached_target for w in probe.writes)
    session.close()


@pytest.mark.qemu
def test_core_register_writes_reach_qemu_and_are_logged(running_board, open_session):
    probe = probe_for(running_board)
    session = open_session(probe)
    session.target.halt()
    r12 = session.target.read_core_register("r12")
    session.target.write_core_register("r12", r12 ^ 0x5A5A)
    session.close()
    reached = [(w.register, w.value) for w in probe.writes if w.reached_target]
    assert reached == [("r12", r12 ^ 0x5A5A)]
    with GdbRemote(*running_board.gdb_address) as gdb:
        assert gdb.read_register("r12") == r12 ^ 0x5A5A


@pytest.mark.qemu
def test_memory_fault_through_the_fast_path(running_board, open_session):
    probe = probe_for(running_board)
    session = open_session(probe)
    session.target.halt()
    with pytest.raises(QemuMemoryFault) as info:
        session.target.read_memory_block32(0xFFFF0000, 4)
    assert isinstance(info.value, exceptions.TransferFaultError)
    assert info.value.fault_address == 0xFFFF0000
    assert "0xffff0000" in str(info.value)
    session.close()


@pytest.mark.qemu
def test_qemu_going_away_gives_link_lost(running_board):
    probe = probe_for(running_board)
    probe.open()
    try:
        probe.connect()
        probe.write_dp(DP_CTRL_STAT, POWER_REQ)
        assert probe.bus_read(RAM, 32) == int.from_bytes(b"CCFG", "little")
        running_board.close()
        started = time.monotonic()
        with pytest.raises(QemuLinkLost) as info:
            probe.bus_read(RAM, 32)
        assert time.monotonic() - started < 5
        assert isinstance(info.value, exceptions.ProbeDisconnected)
        assert isinstance(info.value, TargetError) and info.value.exit_status == 4
    finally:
        probe.close()


@pytest.mark.qemu
def test_connect_helper_finds_the_probe_by_unique_id(running_board, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = running_board.gdb_address[1]
    session = ConnectHelper.session_with_chosen_probe(
        unique_id=f"qemu:127.0.0.1:{port}",
        options={"connect_mode": "attach", "resume_on_disconnect": False,
                 "target_override": "cortex_m", "project_dir": str(tmp_path),
                 "no_config": True})
    assert session is not None
    with session:
        assert isinstance(session.probe, QemuProbe)
        assert session.probe.unique_id == f"qemu:127.0.0.1:{port}"
        assert session.target.read32(0xE000ED00) == 0x410FC231  # CPUID: Cortex-M3 r0p1


@pytest.mark.qemu
def test_pyocd_commander_reads_registers_and_memory(running_board, tmp_path):
    port = running_board.gdb_address[1]
    done = run_pyocd("commander", "-u", f"qemu:127.0.0.1:{port}", "-t", "cortex_m",
                     "-O", "resume_on_disconnect=false", "--project", str(tmp_path),
                     "-c", "halt", "-c", "reg", "-c", "read32 0x20000000 16", "-c", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"pc: 0x[0-9a-f]{8}", done.stdout), done.stdout
    assert re.search(r"xpsr: 0x[0-9a-f]{8}", done.stdout)
    assert "20000000:  47464343" in done.stdout  # "CCFG", the config magic
    assert "Halted" in done.stdout
    assert vm_status(running_board) == "paused"  # resume_on_disconnect=false, probe left it


@pytest.mark.qemu
def test_registers_and_64k_agree_pyocd_vs_gdbremote(running_board, open_session, capsys):
    """r0-r15/xpsr + 64 KiB of RAM both ways agree; prints the times (run with -s to see them)."""
    probe = probe_for(running_board)
    session = open_session(probe)
    session.target.halt()
    started = time.perf_counter()
    session.target.read_core_registers_raw(CORE_REGS)
    via_pyocd = bytes(session.target.read_memory_block8(RAM, RAM_READ))
    pyocd_s = time.perf_counter() - started
    session.close()
    with GdbRemote(*running_board.gdb_address) as gdb:
        started = time.perf_counter()
        gdb.read_registers()
        via_gdb = gdb.read_memory(RAM, RAM_READ, physical_fallback=True)
        gdb_s = time.perf_counter() - started
    assert via_pyocd == via_gdb
    with capsys.disabled():
        print(f"\nregisters + 64 KiB: pyocd {pyocd_s * 1000:.1f} ms, "
              f"gdbremote {gdb_s * 1000:.1f} ms (the ratio is bench/bench_collect.py's job)")
