"""Scenario files: the schema, its errors, and firmware lookup by build ID."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crashcart.errors import InputError
from replay.scenario import find_elf_by_build_id, load_scenario, resolve_firmware

from .conftest import ELF_DIR, ROOT

SCENARIOS = ROOT / "fixtures" / "scenarios"
INVALID = sorted(SCENARIOS.glob("invalid_*.yaml"))


def test_there_are_invalid_fixtures():
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_scenarios_are_rejected_with_file_and_reason(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# Invalid"), "an invalid fixture starts with a comment saying why"
    wanted = next(ln.split("error:", 1)[1].strip() for ln in lines if ln.startswith("# error:"))
    with pytest.raises(InputError) as info:
        load_scenario(path)
    text = str(info.value)
    assert str(path) in text
    assert wanted in text
    assert info.value.line is not None or info.value.field is not None or "empty" in text


def test_valid_fixture_scenarios_load():
    for path in sorted(SCENARIOS.rglob("*.replay.yaml")):
        s = load_scenario(path)
        assert s.name and s.target == "mps2-an385"


def test_fields_and_defaults():
    s = load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml")
    assert s.name == "bad-adc-channel"
    assert s.firmware is not None and s.firmware.path == SCENARIOS / "../firmware/elf/sensor-node-1.0.0.elf"
    assert s.config.file is not None and s.config.file.name == "bad-adc-channel.yaml"
    assert s.time_limit_ns == 100_000_000 and s.allow_resets == 0
    assert s.expect.fault is not None and s.expect.fault.kind == "BusFault"
    assert s.expect.fault.function == "adc_read"
    assert s.describes == "failure"
    clean = load_scenario(SCENARIOS / "default-runs-clean.replay.yaml")
    assert clean.describes == "health" and clean.expect.no_fault
    assert [p.regex for p in clean.expect.log_present] == [False, True]


def test_stimulus_and_writes_parse(tmp_path):
    path = tmp_path / "s.replay.yaml"
    path.write_text(
        "scenario: 1\ntarget: mps2-an385\n"
        "stimulus:\n"
        "  - at: boot\n    write: {symbol: reset_cause, value: 0x52535402, size: 4}\n"
        "  - at: {symbol: app_run, count: 2}\n    write: {address: 0x20000128, bytes: 'de ad'}\n"
        "  - at: {console: 'sensor-node up'}\n    console: \"version\\n\"\n"
        "expect: {fault: none, resets: {max: 1}}\n")
    s = load_scenario(path)
    boot, sym, con = s.stimulus
    assert boot.at.kind == "boot" and boot.write is not None
    assert boot.write.data == bytes.fromhex("02545352")
    assert sym.at.symbol == "app_run" and sym.at.count == 2
    assert sym.write is not None and sym.write.address == 0x20000128 and sym.write.data == b"\xde\xad"
    assert con.at.kind == "console" and con.console == b"version\n"
    assert s.expect.resets_max == 1


def test_firmware_by_build_id_in_search_path(tmp_path, monkeypatch):
    path = tmp_path / "s.replay.yaml"
    path.write_text(f"scenario: 1\ntarget: mps2-an385\n"
                    f"firmware: {{build_id: 0f323e71a50e, search_path: [{ELF_DIR}]}}\n"
                    "expect: {fault: none}\n")
    s = load_scenario(path)
    assert resolve_firmware(s).name == "sensor-node-1.0.1.elf"
    assert find_elf_by_build_id("d0254c72", [ELF_DIR]).name == "sensor-node-1.0.0.elf"
    # not found: the error names the build ID, where it looked, and what to do
    path.write_text("scenario: 1\ntarget: mps2-an385\nfirmware: {build_id: 0123456789ab}\n"
                    "expect: {fault: none}\n")
    monkeypatch.delenv("CRASHCART_ELF_PATH", raising=False)
    with pytest.raises(InputError, match=re.escape("no ELF with build ID 0123456789ab")) as info:
        resolve_firmware(load_scenario(path))
    assert "CRASHCART_ELF_PATH" in str(info.value)
    monkeypatch.setenv("CRASHCART_ELF_PATH", str(ELF_DIR / "chain"))
    path.write_text("scenario: 1\ntarget: mps2-an385\nfirmware: {build_id: 7ab5af7a}\n"
                    "expect: {fault: none}\n")
    assert resolve_firmware(load_scenario(path)).name == "sensor-node-0.9.2.elf"
