"""Bisect over the fixture chain 0.9.0..0.9.4 (the range checks were dropped in 0.9.2)."""

from __future__ import annotations

import math

import pytest

from crashcart.errors import InputError
from replay.bisect import bisect_builds
from replay.scenario import load_scenario

from .conftest import ELF_DIR, ROOT

pytestmark = pytest.mark.qemu

SCENARIOS = ROOT / "fixtures" / "scenarios"
CHAIN = [ELF_DIR / "chain" / f"sensor-node-0.9.{i}.elf" for i in range(5)]


def test_bisect_finds_the_first_bad_build_in_log_n_runs():
    result = bisect_builds(load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml"), CHAIN)
    assert result.first_bad_build == CHAIN[2]
    assert result.last_good == 1
    assert len(result.runs) <= 2 + math.ceil(math.log2(len(CHAIN) - 1))
    ran = {r.build.name: r.fails for r in result.runs}
    assert ran["sensor-node-0.9.2.elf"] is True and ran["sensor-node-0.9.1.elf"] is False
    assert "sensor-node-0.9.3.elf" not in ran  # not every build is run
    data = result.to_json()
    assert data["first_bad"].endswith("sensor-node-0.9.2.elf")
    assert data["run_count"] == len(result.runs)


def test_bisect_with_a_health_check_scenario(tmp_path):
    # Polarity follows the scenario: a health check "fails" when not met.
    path = tmp_path / "no-fault.replay.yaml"
    path.write_text("scenario: 1\ntarget: mps2-an385\nconfig: {values: {averaging_window: 0}}\n"
                    "run: {time_limit: 50ms}\nexpect: {fault: none}\n")
    result = bisect_builds(load_scenario(path), CHAIN)
    assert result.first_bad == 2


def test_bisect_when_nothing_fails_or_everything_fails():
    deep = load_scenario(SCENARIOS / "deep-cascade.replay.yaml")
    result = bisect_builds(deep, CHAIN)
    assert result.first_bad == 0 and result.last_good is None
    assert "already reproduces" in result.message
    clean = load_scenario(SCENARIOS / "default-runs-clean.replay.yaml")
    result = bisect_builds(clean, CHAIN[:2])
    assert result.first_bad is None and len(result.runs) == 1


def test_bisect_needs_two_builds():
    with pytest.raises(InputError, match="at least two builds"):
        bisect_builds(load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml"), CHAIN[:1])
