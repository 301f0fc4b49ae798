"""``crashcart decode`` on third-party evidence: Zephyr logs and coredumps, CmBacktrace.

The fixtures (fixtures/thirdparty/README.md) carry register and memory values
captured from the fixture firmware's real faults, so decoding them against
the same ELF must name the same places the board's own crash log does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from crashcart.cli import cli

ROOT = Path(__file__).resolve().parent.parent
THIRD = ROOT / "fixtures" / "thirdparty"
ELF = ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.0.elf"


def decode(name: str, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["decode", str(THIRD / name), "--elf", str(ELF), "--json",
                                      *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name, primary, function, line", [
    ("zephyr-busfault.log", "BusFault", "adc_read", 92),
    ("zephyr-busfault-bare.log", "BusFault", "adc_read", 92),
    ("zephyr-usagefault.log", "UsageFault", "window_mean", 54),
    ("cmbacktrace-thread.log", "UsageFault", "window_mean", 54),
])
def test_third_party_logs_decode_to_fault_and_location(name, primary, function, line):
    doc = decode(name)
    assert doc["fault"]["primary"] == primary
    assert (doc["location"]["function"], doc["location"]["line"]) == (function, line)
    assert doc["registers"]["pc"] in (0x1BC, 0x16F6)


def test_zephyr_coredump_unwinds_through_its_memory():
    doc = decode("zephyr-coredump-v2.log")
    functions = [f["function"] for f in doc["frames"]]
    assert functions[:4] == ["adc_read", "sample_tick", "app_run", "main"]
    assert [f["how"] for f in doc["frames"][1:4]] == ["cfi", "cfi", "cfi"]


def test_two_crashes_in_one_zephyr_log():
    doc = decode("zephyr-two-crashes.log")
    assert [c["fault"]["primary"] for c in doc["crashes"]] == ["BusFault", "UsageFault"]


@pytest.mark.parametrize("name", ["invalid_coredump-truncated.log",
                                  "invalid_coredump-bad-magic.log"])
def test_broken_coredumps_are_clear_errors(name):
    result = CliRunner().invoke(cli, ["decode", str(THIRD / name), "--elf", str(ELF)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert name in result.output  # the error names the file
    assert "bytes" in result.output or "not a Zephyr coredump" in result.output


def test_partial_decodes_a_cut_coredump_and_says_what_is_missing():
    doc = decode("invalid_coredump-truncated.log", "--partial")
    assert doc["registers"]["pc"] == 0x1BC
    assert any("cut off" in n or "missing" in n or "END" in n for n in doc["notes"]), doc["notes"]
