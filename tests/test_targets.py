"""Target files: the shipped ones load; every invalid fixture is rejected precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from crashcart.errors import InputError
from targets import list_targets, load_target

INVALID = sorted((Path(__file__).parent.parent / "fixtures" / "targets").glob("invalid_*.yaml"))


def test_shipped_targets_load():
    names = list_targets()
    assert "mps2-an385" in names
    for name in names:
        t = load_target(name)
        assert t.name == name
        assert t.simulator is not None


def test_mps2_an385_fields():
    t = load_target("mps2-an385")
    assert (t.cpu, t.architecture, t.fpu) == ("cortex-m3", "armv7-m", False)
    ram = t.region_at(0x20000000)
    assert ram is not None and ram.kind == "ram" and ram.size == 0x400000
    assert t.region_at(0x20400000) is None
    assert t.config is not None and t.config.symbol == "device_config"
    assert t.config.derived["crc32"] == "$crc32"
    assert t.simulator.qemu.machine == "mps2-an385"
    assert t.vendor_registers[0].values[2] == "watchdog"
    assert t.console.banner.match("crashcart sensor-node 1.0.0 build-id " + "ab" * 20)


def test_unknown_target_lists_known_ones():
    with pytest.raises(InputError) as info:
        load_target("no-such-board")
    assert "mps2-an385" in str(info.value)


def test_there_are_invalid_fixtures():
    assert len(INVALID) >= 10


def _expectations(path: Path) -> tuple[str, str, str]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 10, f"{path.name}: first line must say why"
    field = lines[1].removeprefix("# expect-field:").strip()
    value = lines[2].removeprefix("# expect-value:").strip()
    return lines[0], field, value


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_target_rejected(path: Path):
    why, field, value = _expectations(path)
    with pytest.raises(InputError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message, message
    assert info.value.line is not None, message
    if field:
        assert f"field '{field}'" in message, message
    if value:
        assert value in message, message
    assert "Traceback" not in message
