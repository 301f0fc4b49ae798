"""Config minimization (ddmin): a 10-key diff reduced to exactly the keys that matter."""

from __future__ import annotations

import pytest

from crashcart.errors import CheckFailed, InputError
from replay.minimize import _split, minimize_config
from replay.scenario import load_scenario

from .conftest import ROOT

SCENARIOS = ROOT / "fixtures" / "scenarios"
MIN = SCENARIOS / "minimize"


def test_split_keeps_order_and_covers_everything():
    assert _split(list("abcde"), 2) == [list("abc"), list("de")]
    assert _split(list("abc"), 3) == [["a"], ["b"], ["c"]]


@pytest.mark.qemu
def test_minimize_ten_key_diff_to_the_two_keys_that_matter():
    scenario = load_scenario(MIN / "trace-hardfault.replay.yaml")
    result = minimize_config(scenario, MIN / "good.yaml", MIN / "bad.yaml", jobs=2)
    assert len(result.differing) == 10
    assert set(result.minimal) == {"log_level", "flags"}
    assert result.changes == {"log_level": (3, 5), "flags": (1, 0)}
    assert result.verdict.reproduces
    assert 2 < result.runs < 2 ** 10  # far fewer than trying every subset
    data = result.to_json()
    assert data["runs"] == result.runs and data["minimal_keys"] == list(result.minimal)


@pytest.mark.qemu
def test_minimize_single_key(tmp_path):
    scenario = load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("node_id: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_id: 5\nadc_channel: 6\ngain_index: 3\n")
    result = minimize_config(scenario, good, bad, jobs=2)
    assert result.minimal == ("adc_channel",)


@pytest.mark.qemu
def test_minimize_refuses_a_bad_config_that_does_not_fail(tmp_path):
    scenario = load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("node_id: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_id: 2\n")
    with pytest.raises(CheckFailed, match="bad config does not reproduce"):
        minimize_config(scenario, good, bad, jobs=2)


def test_minimize_refuses_identical_configs(tmp_path):
    scenario = load_scenario(SCENARIOS / "bad-adc-channel.replay.yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("node_id: 1\n")
    with pytest.raises(InputError, match="do not differ"):
        minimize_config(scenario, cfg, cfg)
