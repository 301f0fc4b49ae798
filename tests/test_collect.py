"""``crashcart collect`` on the simulated board: serial + SWD (pyocd plugin) + GDB remote.

Real parts only: QEMU runs the fixture firmware, SWD goes through real pyocd
and crashcart's probe plugin, GDB remote through QEMU's gdbstub, and the
command runs as a user runs it (click, or a subprocess for the signal tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.bundle import read_manifest, seal_bundle, verify_bundle
from collector.crashlog import parse_crash_log
from collector.device_config import load_config_file
from crashcart.cli import cli
from replay.sim import SimulatedBoard, run_simulation

from .conftest import CONFIG_DIR, ELF_DIR

pytestmark = pytest.mark.qemu

ELF = ELF_DIR / "sensor-node-1.0.0.elf"
FAULTS = ["bad-adc-channel", "zero-averaging-window", "deep-cascade", "wide-filter",
          "trace-logging"]
LONG_NS = 3_600_000_000_000
DEBUG_REGISTERS = re.compile(r"^(DHCSR|DCRSR|DEMCR|DFSR|DWT_\w+|FP_\w+|ITM_\w+)$")


def load(bundle: Path, rel: str):
    return json.loads((bundle / rel).read_text())


def memory_files(bundle: Path, source: str) -> dict[str, bytes]:
    root = bundle / source / "memory"
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def collect_cli(*args: str):
    return CliRunner().invoke(cli, ["collect", "--target", "mps2-an385", *args],
                              catch_exceptions=False)


def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@contextlib.contextmanager
def running_board(target) -> Iterator[SimulatedBoard]:
    """The board on the default config, booted and running (a board that has not failed)."""
    config = load_config_file(CONFIG_DIR / "default.yaml")
    with SimulatedBoard(target, ELF, config=config, console=True, gdb=True,
                        time_limit_ns=LONG_NS) as board:
        board.resume()
        wait_for(lambda: b"sensor-node up" in board.transcript)
        yield board


@pytest.mark.parametrize("fault", FAULTS)
def test_collect_serial_swd_gdb_agree(tmp_path, target, fault):
    config = load_config_file(CONFIG_DIR / f"{fault}.yaml")
    out = tmp_path / "bundle"
    with SimulatedBoard(target, ELF, config=config, console=False, gdb=True,
                        time_limit_ns=LONG_NS) as board:
        host, port = board.gdb_address
        # The board runs once the collector's serial client is attached; the
        # firmware faults, prints its crash log and requests a reset, where
        # QEMU holds it: a failed board waiting on the bench.
        def start_when_attached() -> None:
            board.wait_console_attached()
            board.resume()

        starter = threading.Thread(target=start_when_attached)
        starter.start()
        result = collect_cli("--elf", str(ELF), "-o", str(out), "--serial", board.serial_url,
                             "--after-crash", "300ms", "--duration", "60s", "--debug-on-crash",
                             "--swd", f"qemu:{host}:{port}", "--gdb", f"{host}:{port}")
        starter.join()
    assert result.exit_code == 0, result.output
    assert verify_bundle(out).ok
    manifest = read_manifest(out)
    assert manifest["capture"]["status"] == "complete"
    assert [s["kind"] for s in manifest["sources"]] == ["serial", "swd", "gdb"]

    # SWD and GDB remote agree on every register both read and every byte of memory.
    swd, gdb = load(out, "swd/registers.json"), load(out, "gdb/registers.json")
    common = set(swd["registers"]) & set(gdb["registers"])
    assert {f"r{i}" for i in range(13)} | {"sp", "lr", "pc", "xpsr"} <= common
    assert {k: swd["registers"][k] for k in common} == {k: gdb["registers"][k] for k in common}
    assert memory_files(out, "swd") == memory_files(out, "gdb")
    # The SCB agrees word for word, except DFSR (0xE000ED30): debug events are
    # the debugger's business, emulated by the probe plugin (QEMU has no halting debug).
    scb_swd, scb_gdb = bytearray((out / "swd/scb.bin").read_bytes()), bytearray(
        (out / "gdb/scb.bin").read_bytes())
    scb_swd[0x30:0x34] = scb_gdb[0x30:0x34] = b"\0\0\0\0"
    assert scb_swd == scb_gdb
    for name in ("crash-record.bin", "config.bin"):
        assert (out / "swd" / name).read_bytes() == (out / "gdb" / name).read_bytes()
    for source in ("swd", "gdb"):
        # QEMU 7.2's gdbstub has no PSP: both say so instead of inventing a value.
        assert "psp" in load(out, f"{source}/registers.json")["unavailable"]

    # ... and with the crash log that came over the serial line.
    raw = (out / "serial/console.raw").read_text("latin-1")
    crash = [json.loads(x) for x in (out / "serial/crashes.jsonl").read_text().splitlines()][-1]
    assert crash["complete"]
    log = parse_crash_log(raw[crash["begin_offset"]:crash["end_offset"]])
    assert log.complete, log.problems
    faults = load(out, "swd/fault-registers.json")["registers"]
    for name in ("cfsr", "hfsr", "shcsr"):
        assert faults[name] == log.registers[name], name
    for name, valid_bit in (("bfar", 1 << 15), ("mmfar", 1 << 7)):
        if log.registers["cfsr"] & valid_bit:
            assert faults[name] == log.registers[name], name
    record = load(out, "swd/crash-record.json")
    for name in ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr", "r4", "r11",
                 "exc_return", "msp", "psp", "cfsr"):
        assert record[name] == log.registers[name], name
    frame = load(out, "swd/exception-frame.json")
    assert frame["exc_return"] == log.registers["exc_return"]
    if frame.get("frame"):
        # The frame the capture read from the stack EXC_RETURN names is the one the log printed.
        assert frame["frame"]["pc"] == log.registers["pc"]
        assert frame["frame"]["lr"] == log.registers["lr"]
    if log.registers["cfsr"] & ((1 << 4) | (1 << 12)):
        assert frame["trusted"] is False
    fw = load(out, "swd/firmware.json")
    assert fw["version"] == log.firmware_version == "1.0.0"
    assert fw["build_id"] == log.build_id == fw["elf"]["build_id"]
    assert fw["build_id_match"] is True
    assert fw["vendor_registers"]["reset_cause"]["value"] in (0, 1, 2, 3)

    # Collect wrote nothing to the target but debug registers (the probe's write log).
    writes_file = out / "swd/target-writes.json"
    writes = load(out, "swd/target-writes.json") if writes_file.exists() else []
    for write in writes:
        assert not write["reached_target"], write
        assert DEBUG_REGISTERS.match(write["register"] or ""), write


def test_collect_halts_a_running_core_and_leaves_it_running(tmp_path, target):
    """A board that has not failed: the capture halts it once, says so, and resumes it."""
    out = tmp_path / "bundle"
    with running_board(target) as board:
        host, port = board.gdb_address
        result = collect_cli("--elf", str(ELF), "-o", str(out), "--swd", f"qemu:{host}:{port}")
        assert result.exit_code == 0, result.output
        assert board.qmp.command("query-status")["status"] == "running"
        before = len(board.transcript)
        wait_for(lambda: len(board.transcript) > before)  # it really runs on
    swd = next(s for s in read_manifest(out)["sources"] if s["kind"] == "swd")
    events = [e["what"] for e in swd["events"]]
    assert "halted by crashcart" in events and events[-1] == "resumed"
    assert load(out, "swd/state.json")["halted_by_capture"] is True
    writes = load(out, "swd/target-writes.json")
    for write in writes:
        assert not write["reached_target"], write
        assert DEBUG_REGISTERS.match(write["register"] or ""), write
    halts = [w for w in writes if w["register"] == "DHCSR" and w["value"] & 0x2]
    assert len(halts) == 1, writes
    assert verify_bundle(out).ok


def test_exception_frame_of_an_interrupt_halted_at_its_handler(tmp_path, target):
    """Halted in the UART RX interrupt: lr is EXC_RETURN 0xFFFFFFFD, so the frame is on
    the PSP, which QEMU's gdbstub cannot give: the capture says so instead of reading a
    frame at the main stack (or at a crash record's stale PSP)."""
    from collector.elf import ElfImage
    from collector.gdbremote import GdbRemote

    handler = ElfImage.open_cached(ELF).symbol("UART0_RX_Handler").address & ~1
    with running_board(target) as board:
        host, port = board.gdb_address
        with GdbRemote(host, port) as gdb:
            gdb.interrupt()
            gdb.insert_breakpoint(handler)
            gdb.cont()
            board.write_console(b"v")        # a byte: the RX interrupt fires
            stop = None
            deadline = time.monotonic() + 20
            while stop is None and time.monotonic() < deadline:
                stop = gdb.poll_stop(timeout_s=0.5)
            assert stop is not None, "the RX interrupt did not reach the breakpoint"
            gdb.remove_breakpoint(handler)
            regs = gdb.read_registers()
        # QEMU's gdbstub takes one client at a time: closed, the board stays halted.
        out = tmp_path / "bundle"
        assert collect_cli("--elf", str(ELF), "-o", str(out), "--gdb",
                           f"{host}:{port}").exit_code == 0
    assert regs["pc"] == handler and regs["lr"] == 0xFFFFFFFD
    frame = load(out, "gdb/exception-frame.json")
    assert frame["ipsr"] == 16 and frame["exc_return"] == 0xFFFFFFFD
    assert frame["exc_return_origin"].startswith("lr") and frame["stack"] == "psp"
    assert "frame" not in frame and "PSP" in frame["note"], frame


def test_exception_frame_from_a_crash_record_whose_stack_was_overwritten(tmp_path, target):
    """A crashed board whose stack no longer holds the stacked frame (as on a board
    that ran on): the frame comes from the crash record's own copy, and says so."""
    from collector.gdbremote import GdbRemote

    config = load_config_file(CONFIG_DIR / "bad-adc-channel.yaml")
    with SimulatedBoard(target, ELF, config=config, console=True, gdb=True,
                        time_limit_ns=LONG_NS) as board:
        board.resume()
        wait_for(lambda: board.qmp.command("query-status")["status"] != "running")
        host, port = board.gdb_address
        first = tmp_path / "first"
        assert collect_cli("--elf", str(ELF), "-o", str(first), "--gdb",
                           f"{host}:{port}").exit_code == 0
        held = load(first, "gdb/exception-frame.json")
        assert held["frame_source"] == "stack", held   # still where the fault put it
        with GdbRemote(host, port) as gdb:
            gdb.write_memory(held["frame_address"], bytes(32))
        second = tmp_path / "second"
        assert collect_cli("--elf", str(ELF), "-o", str(second), "--gdb",
                           f"{host}:{port}").exit_code == 0
    frame = load(second, "gdb/exception-frame.json")
    record = load(second, "gdb/crash-record.json")
    assert frame["frame_source"] == "crash-record" and "no longer holds" in frame["note"]
    assert frame["frame"] == held["frame"] == {
        k: record[k] for k in ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr")}


def test_collect_leave_halted(tmp_path, target):
    with running_board(target) as board:
        host, port = board.gdb_address
        result = collect_cli("--elf", str(ELF), "-o", str(tmp_path / "b"), "--gdb",
                             f"{host}:{port}", "--leave-halted")
        assert result.exit_code == 0, result.output
        assert board.qmp.command("query-status")["status"] == "paused"


def test_collect_errors_are_clear(tmp_path):
    result = collect_cli("-o", str(tmp_path / "b"))
    assert result.exit_code == 2 and "nothing to capture from" in result.output
    result = collect_cli("-o", str(tmp_path / "b"), "--gdb", "nonsense")
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    # A probe that is not there: the bundle is still written, partial, and says why.
    result = collect_cli("-o", str(tmp_path / "c"), "--gdb", "127.0.0.1:1")
    assert result.exit_code == 4, result.output
    assert "cannot connect" in result.output
    manifest = read_manifest(tmp_path / "c")
    assert manifest["capture"]["status"] == "partial"
    assert verify_bundle(tmp_path / "c").ok


def _start_collect(tmp_path: Path, board: SimulatedBoard) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "bundle"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crashcart.cli", "collect", "--target", "mps2-an385",
         "--elf", str(ELF), "-o", str(out), "--serial", board.serial_url, "--duration", "120s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    board.wait_console_attached()
    board.resume()
    raw = out / "serial" / "console.raw"
    wait_for(lambda: raw.exists() and raw.stat().st_size > 600)
    return proc, out


@pytest.fixture(scope="module")
def default_transcript(target) -> bytes:
    """What the firmware prints in its first 6 s of virtual time (it is deterministic)."""
    config = load_config_file(CONFIG_DIR / "default.yaml")
    return run_simulation(target, ELF, config=config, time_limit_ns=6 * 10**9).transcript


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_collect_leaves_a_valid_partial_bundle(tmp_path, target, how,
                                                           default_transcript):
    config = load_config_file(CONFIG_DIR / "default.yaml")
    reference = default_transcript
    with SimulatedBoard(target, ELF, config=config, console=False, gdb=False,
                        time_limit_ns=LONG_NS) as board:
        proc, out = _start_collect(tmp_path, board)
        try:
            raw = out / "serial" / "console.raw"
            seen = raw.stat().st_size
            proc.send_signal(getattr(signal, how))
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    received = raw.read_bytes()
    assert len(received) >= seen
    # Every byte received is kept, in order: the run is deterministic, so the
    # capture is a prefix of the same firmware's transcript.
    n = min(len(received), len(reference))
    assert n > 600 and received[:n] == reference[:n]
    report = verify_bundle(out)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        assert read_manifest(out)["capture"]["status"] == "capturing"
        assert report.ok  # bytes after the last checkpoint are reported, not failed
        seal_bundle(out)
        assert read_manifest(out)["capture"]["status"] == "partial"
        assert verify_bundle(out).ok
    else:
        assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
        manifest = read_manifest(out)
        assert manifest["capture"]["status"] == "partial"
        assert any(how in r or "Ctrl-C" in r for r in manifest["capture"]["partial_reasons"])
        assert report.ok
        assert manifest["files"]["serial/console.raw"]["size"] == len(received)
    assert os.path.exists(out / "manifest.json")
