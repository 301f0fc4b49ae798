"""The runner's contract: CLI, errors, and no process left behind on any exit path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from crashcart.cli import cli
from replay.sim import find_leaked_processes

from .conftest import CONFIG_DIR, ROOT


def test_sim_run_json(elf_100):
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", "run", "--target", "mps2-an385", "--firmware",
                                 str(elf_100), "--config", str(CONFIG_DIR / "bad-adc-channel.yaml"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["outcome"] == "crash"
    assert data["virtual_ms"] > 0
    assert "*** CRASH BEGIN ***" in data["transcript"]
    assert data["crash_logs"][0]["complete"] is True


def test_sim_run_streams_console(elf_100):
    proc = subprocess.run(
        [sys.executable, "-m", "crashcart.cli", "sim", "run", "--target", "mps2-an385",
         "--firmware", str(elf_100), "--config", str(CONFIG_DIR / "default.yaml"),
         "--time-limit", "300ms"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("crashcart sensor-node 1.0.0 build-id ")
    assert "outcome time-limit after 300.000 ms" in proc.stderr


def _crashcart(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crashcart.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_errors_are_clear_and_mapped_to_exit_status(tmp_path, elf_100):
    missing = _crashcart("sim", "run", "--target", "mps2-an385", "--firmware",
                         str(tmp_path / "nope.elf"))
    assert missing.returncode == 2
    assert "ELF file not found" in missing.stderr and "Traceback" not in missing.stderr

    garbage = tmp_path / "garbage.elf"
    garbage.write_bytes(os.urandom(512))
    bad = _crashcart("sim", "run", "--target", "mps2-an385", "--firmware", str(garbage))
    assert bad.returncode == 2 and "not an ELF file" in bad.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("adc_channel: [1,\n")
    cfg = _crashcart("sim", "run", "--target", "mps2-an385", "--firmware", str(elf_100),
                     "--config", str(broken))
    assert cfg.returncode == 2 and "broken.yaml:" in cfg.stderr and "Traceback" not in cfg.stderr

    limit = _crashcart("sim", "run", "--target", "mps2-an385", "--firmware", str(elf_100),
                       "--time-limit", "soon")
    assert limit.returncode == 2 and "--time-limit" in limit.stderr

    target = _crashcart("sim", "run", "--target", "no-such-board", "--firmware", str(elf_100))
    assert target.returncode == 2 and "mps2-an385" in target.stderr


def test_failing_test_leaves_no_qemu(pytester, elf_100):
    pytester.makepyfile(test_inner=f"""
import pytest
from replay.sim import SimulatedBoard
from targets import load_target

@pytest.fixture
def board():
    with SimulatedBoard(load_target("mps2-an385"), {str(elf_100)!r},
                        time_limit_ns=100 * 10**9) as b:
        yield b

def test_fails_mid_run(board):
    board.resume()
    assert board.proc.poll() is None
    assert False, "deliberate failure while the board runs"
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "deliberate failure" in result.stdout.str()
    assert find_leaked_processes(os.environ["CRASHCART_OWNER"]) == []


def test_killed_owner_takes_qemu_with_it(elf_100):
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from replay.sim import SimulatedBoard
from targets import load_target
b = SimulatedBoard(load_target("mps2-an385"), {str(elf_100)!r}, time_limit_ns=100 * 10**9)
b.start(); b.resume()
print(b.proc.pid, flush=True)
time.sleep(60)
"""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        qemu_pid = int(owner.stdout.readline())
        assert qemu_pid in find_leaked_processes(os.environ["CRASHCART_OWNER"])
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while qemu_pid in find_leaked_processes(os.environ["CRASHCART_OWNER"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_pid not in find_leaked_processes(os.environ["CRASHCART_OWNER"])
    finally:
        owner.kill()
        owner.wait()


def test_qemu_killed_by_a_signal_is_reported_as_such(target, elf_100):
    from replay.sim import QemuDied, SimulatedBoard

    with SimulatedBoard(target, elf_100, time_limit_ns=100 * 10**9) as board:
        board.resume()
        os.kill(board.proc.pid, signal.SIGSEGV)
        try:
            board.run()
        except QemuDied as exc:
            assert "signal 11 (SIGSEGV)" in str(exc)
        else:
            raise AssertionError("a killed QEMU must not look like a guest outcome")
