"""The pytest plugin, tested with pytester: *.replay.yaml files become test items."""

from __future__ import annotations

import importlib.metadata
import shutil
import xml.etree.ElementTree as ET

import pytest

from .conftest import ELF_DIR, ROOT

pytestmark = pytest.mark.qemu

SCENARIOS = ROOT / "fixtures" / "scenarios"
ELF_100 = ELF_DIR / "sensor-node-1.0.0.elf"
ELF_101 = ELF_DIR / "sensor-node-1.0.1.elf"


def _plugin_args() -> list[str]:
    """``-p replay.pytest_plugin`` unless the entry point already loads it."""
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value == "replay.pytest_plugin":
            return []
    return ["-p", "replay.pytest_plugin"]


def _scenario(pytester: pytest.Pytester, name: str, body: str) -> None:
    pytester.path.joinpath(f"{name}.replay.yaml").write_text(
        "scenario: 1\ntarget: mps2-an385\n" + body)


def test_scenarios_are_collected_and_run(pytester: pytest.Pytester):
    _scenario(pytester, "adc", f"firmware: {ELF_100}\nconfig: {{values: {{adc_channel: 6}}}}\n"
              "run: {time_limit: 50ms}\nexpect: {fault: {kind: BusFault, function: adc_read}}\n")
    _scenario(pytester, "clean", f"firmware: {ELF_101}\nrun: {{time_limit: 50ms}}\n"
              "expect: {fault: none}\n")
    (pytester.path / "notes.yaml").write_text("not: a scenario\n")
    result = pytester.runpytest(*_plugin_args(), "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*adc.replay.yaml::adc PASSED*",
                                 "*clean.replay.yaml::clean PASSED*"])


def test_failure_shows_expected_vs_observed_and_transcript_tail(pytester: pytest.Pytester):
    _scenario(pytester, "fixed", f"firmware: {ELF_101}\nconfig: {{values: {{adc_channel: 6}}}}\n"
              "run: {time_limit: 50ms}\nexpect: {fault: {kind: BusFault, function: adc_read}}\n")
    result = pytester.runpytest(*_plugin_args(), "--junitxml=out.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*replay scenario expectations not met*",
        "*FAIL fault: expected BusFault in adc_read; observed no fault*",
        "*transcript (last 20 lines)*",
        "*| *config: adc_channel=6 out of range, using 0*",
    ])
    assert "Traceback" not in result.stdout.str()
    tree = ET.parse(pytester.path / "out.xml")
    case = tree.find(".//testcase")
    assert case is not None and case.get("name") == "fixed"
    failure = case.find("failure")
    assert failure is not None and "expected BusFault" in (failure.text or "") + str(
        failure.get("message"))


def test_invalid_scenario_is_a_collection_error(pytester: pytest.Pytester):
    _scenario(pytester, "broken", "expect: {fault: {kind: SegFault}}\n")
    result = pytester.runpytest(*_plugin_args())
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*broken.replay.yaml:3: field 'expect.fault.kind': "
                                 "unknown fault kind*"])


def test_replay_firmware_option_makes_one_item_per_build(pytester: pytest.Pytester):
    shutil.copy(SCENARIOS / "zero-averaging-window.replay.yaml", pytester.path / "z.replay.yaml")
    text = (pytester.path / "z.replay.yaml").read_text().replace(
        "../firmware/elf/sensor-node-1.0.0.elf", str(ELF_100))
    (pytester.path / "z.replay.yaml").write_text(text)
    result = pytester.runpytest(*_plugin_args(), "-v", "--replay-firmware", str(ELF_100),
                                "--replay-firmware", str(ELF_101))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*z.replay.yaml::z?sensor-node-1.0.0.elf? PASSED*",
                                 "*z.replay.yaml::z?sensor-node-1.0.1.elf? FAILED*"])


def test_runs_in_parallel_with_xdist(pytester: pytest.Pytester):
    pytest.importorskip("xdist")
    for i in range(4):
        _scenario(pytester, f"s{i}", f"firmware: {ELF_100}\nrun: {{time_limit: 30ms}}\n"
                  "expect: {fault: none}\n")
    result = pytester.runpytest_subprocess(*_plugin_args(), "-n", "2")
    result.assert_outcomes(passed=4)
