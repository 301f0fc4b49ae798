"""Shared fixtures: paths, the fixture firmware, and the process-leak guard."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from replay.sim import find_leaked_processes, live_boards
from targets import load_target

pytest_plugins = ["pytester"]

# Every QEMU this test process starts (directly or through a subprocess) inherits
# this marker, so the leak guard judges only this run's boards: another test run,
# an xdist sibling or a user's demo on the same machine is never touched.
OWNER = f"tests-{os.getpid()}-{uuid.uuid4().hex[:8]}"
os.environ["CRASHCART_OWNER"] = OWNER

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "fixtures" / "firmware"
ELF_DIR = FIRMWARE_DIR / "elf"
CONFIG_DIR = FIRMWARE_DIR / "configs"


@pytest.fixture(scope="session")
def target():
    return load_target("mps2-an385")


@pytest.fixture(scope="session")
def elf_100() -> Path:
    return ELF_DIR / "sensor-node-1.0.0.elf"


@pytest.fixture(scope="session")
def elf_101() -> Path:
    return ELF_DIR / "sensor-node-1.0.1.elf"


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def no_leaked_qemu(request):
    """Every test must leave no QEMU behind; leaked ones are killed and the test fails."""
    yield
    for board in live_boards():
        board.close()
    deadline = time.monotonic() + 2
    leaked = find_leaked_processes(OWNER)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = find_leaked_processes(OWNER)
    if leaked and not request.node.get_closest_marker("leaks_on_purpose"):
        _kill(leaked)
        pytest.fail(f"test left QEMU processes running: {leaked}")
