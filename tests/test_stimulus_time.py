"""Stimulus at a SysTick time (``at: {time: T}``) on the real QEMU.

The trigger counts SysTick exceptions in our QEMU plugin and stops the VM
at the one that completes T, before its handler runs, without moving the
virtual clock (docs/scenario-format.md, "Triggers at a SysTick time").
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from crashcart.errors import InputError
from replay.runner import Cell, run_matrix, run_scenario
from replay.scenario import StimulusStep, Trigger, load_scenario

from .conftest import ELF_DIR, ROOT

pytestmark = pytest.mark.qemu

SCENARIOS = ROOT / "fixtures" / "scenarios"
EXAMPLE = SCENARIOS / "stimulus-at-time.replay.yaml"


def _at(scenario, time_ns: int):
    step = scenario.stimulus[0]
    return dataclasses.replace(scenario, stimulus=(
        StimulusStep(Trigger("time", time_ns=time_ns), step.console, step.write),))


def test_example_faults_when_the_firmware_uptime_reads_the_trigger_time():
    v = run_scenario(load_scenario(EXAMPLE))
    assert v.met, v.report()
    fault = v.first_fault()
    assert fault is not None and fault.uptime_ms == 50
    logged = ("at SysTick time 50.000 ms reached: write 06 at active_config+21 "
              "(SysTick exception 50, SysTick time 50 ms, pc 0x00000264)")  # SysTick_Handler
    assert v.observation.stimulus_log == (logged,)


@pytest.mark.parametrize("time_ms", [7, 37])
def test_uptime_at_the_fault_is_the_trigger_time(time_ms):
    # One sample per millisecond: the first sample after the write faults, and
    # the crash record takes the firmware's own uptime then.
    v = run_scenario(_at(load_scenario(EXAMPLE), time_ms * 1_000_000))
    fault = v.first_fault()
    assert fault is not None and fault.kind == "BusFault", v.report()
    assert fault.uptime_ms == time_ms


def test_fixed_build_holds_and_the_trigger_is_logged():
    v = run_scenario(load_scenario(EXAMPLE), firmware=ELF_DIR / "sensor-node-1.0.1.elf")
    assert not v.faulted, v.report()
    assert v.observation.stimulus_log[0].endswith(
        "(SysTick exception 50, SysTick time 50 ms, pc 0x00000270)")


def test_same_transcript_on_five_runs():
    scenario = load_scenario(EXAMPLE)
    results = run_matrix([Cell(scenario)] * 5, jobs=2)
    verdicts = [r.verdict for r in results]
    assert all(v is not None and v.met for v in verdicts), [r.error for r in results]
    assert len({v.observation.transcript for v in verdicts}) == 1  # type: ignore[union-attr]
    assert len({v.observation.instructions for v in verdicts}) == 1  # type: ignore[union-attr]


def test_the_stop_does_not_move_the_virtual_clock(tmp_path):
    """A time-triggered write that changes nothing leaves the transcript as it was.

    A breakpoint stop would warp the clock to the next SysTick deadline, and
    the firmware would lose most of a millisecond (stamps and samples move).
    """
    body = ("scenario: 1\ntarget: mps2-an385\n"
            f"firmware: {ELF_DIR / 'sensor-node-1.0.1.elf'}\n"
            "config: {values: {report_interval_ms: 10, sample_rate_hz: 1000}}\n"
            "run: {time_limit: 120ms}\nexpect: {fault: none}\n")
    plain = tmp_path / "plain.replay.yaml"
    plain.write_text(body)
    poked = tmp_path / "poked.replay.yaml"
    poked.write_text(body + "stimulus:\n"
                     "  - at: {time: 20ms}\n    write: {address: 0x203ffff0, bytes: '00'}\n"
                     "  - at: {time: 45ms}\n    write: {address: 0x203ffff0, bytes: '00'}\n")
    a = run_scenario(load_scenario(plain))
    b = run_scenario(load_scenario(poked))
    assert [line.split(" (")[0] for line in b.observation.stimulus_log] == [
        "at SysTick time 20.000 ms reached: write 00 at 0x203ffff0",
        "at SysTick time 45.000 ms reached: write 00 at 0x203ffff0"]
    assert re.search(rb"\[ +100 ms\]", a.observation.transcript)
    assert b.observation.transcript == a.observation.transcript


def test_console_command_at_a_time_answers_after_it():
    scenario = load_scenario(SCENARIOS / "stimulus-console-command.replay.yaml")
    scenario = dataclasses.replace(scenario, stimulus=(
        StimulusStep(Trigger("time", time_ns=100_000_000), console=b"status\n"),))
    v = run_scenario(scenario)
    match = re.search(r"^uptime_ms: (\d+)$", v.observation.transcript.decode(), re.MULTILINE)
    assert match is not None, v.report()
    # Each console byte after the first waits for the firmware to read the one
    # before (a watchpoint stop, docs "Console input"), so the answer comes later.
    assert 100 <= int(match.group(1)) < 120


def test_clock_source_without_a_frequency_is_a_clear_error(monkeypatch):
    from replay import runner

    real = runner.scenario_target
    monkeypatch.setattr(runner, "scenario_target",
                        lambda s: dataclasses.replace(real(s), clock_hz=0))
    with pytest.raises(InputError) as info:
        run_scenario(load_scenario(EXAMPLE))
    assert info.value.field == "core.clock_hz"
    assert "gives no processor clock" in str(info.value)
