"""The replay commands through click, as a user runs them (exit statuses included)."""

from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from collector.bundle import BundleWriter
from crashcart.cli import CrashcartGroup
from replay.cli import bisect_command, minimize_command, replay_command, verify_command
from replay.runner import run_scenario
from replay.scenario import load_scenario

from .conftest import CONFIG_DIR, ELF_DIR, ROOT

SCENARIOS = ROOT / "fixtures" / "scenarios"
ELF_100 = str(ELF_DIR / "sensor-node-1.0.0.elf")
ELF_101 = str(ELF_DIR / "sensor-node-1.0.1.elf")


@click.group(cls=CrashcartGroup)
def root() -> None:
    """A root group like crashcart's, with the replay commands registered."""


for _cmd in (replay_command, bisect_command, minimize_command, verify_command):
    root.add_command(_cmd)


def run(*args: str):
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


@pytest.mark.qemu
def test_replay_met_is_exit_0_with_json_verdict():
    r = run("replay", str(SCENARIOS / "bad-adc-channel.replay.yaml"), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["met"] and data["faults"][0]["kind"] == "BusFault"
    assert data["virtual_ms"] > 0 and data["exit_reason"] == "guest-reset"
    assert "CRASH BEGIN" in data["transcript"]


@pytest.mark.qemu
def test_replay_two_builds_reports_per_build_and_exit_1():
    r = run("replay", str(SCENARIOS / "zero-averaging-window.replay.yaml"),
            "--firmware", ELF_100, "--firmware", ELF_101)
    assert r.exit_code == 1
    assert "sensor-node-1.0.0.elf: expectations met; reproduces" in r.output
    assert "sensor-node-1.0.1.elf: expectations NOT met; clean" in r.output
    assert "1/2 runs met their expectations" in r.output
    assert "expectations not met" in r.output  # the error line (stderr is mixed in)


def test_replay_bad_scenario_is_exit_2():
    r = run("replay", str(SCENARIOS / "invalid_unknown-fault-kind.yaml"))
    assert r.exit_code == 2
    assert "unknown fault kind" in r.output and "invalid_unknown-fault-kind.yaml:6" in r.output


@pytest.mark.qemu
def test_bisect_command_lists_the_builds_it_ran():
    chain = sorted(str(p) for p in (ELF_DIR / "chain").glob("*.elf"))
    r = run("bisect", str(SCENARIOS / "bad-adc-channel.replay.yaml"), "--builds", *chain)
    assert r.exit_code == 0, r.output
    assert "first failing build: sensor-node-0.9.2.elf" in r.output
    assert "sensor-node-0.9.3.elf" in r.output and "not run" in r.output
    r = run("bisect", str(SCENARIOS / "bad-adc-channel.replay.yaml"), "--builds", *chain,
            "--json")
    assert json.loads(r.output)["first_bad_index"] == 2


@pytest.mark.qemu
def test_minimize_command():
    m = SCENARIOS / "minimize"
    r = run("minimize", str(m / "trace-hardfault.replay.yaml"), "--good-config",
            str(m / "good.yaml"), "--bad-config", str(m / "bad.yaml"), "--json", "-j", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert sorted(data["minimal_keys"]) == ["flags", "log_level"] and data["runs"] > 2


@pytest.mark.qemu
def test_verify_command_exit_1_unless_all_closed():
    r = run("verify", str(SCENARIOS / "incident"), "-j", "2")
    assert r.exit_code == 1
    assert "AI-3  open" in r.output and "AI-6  invalid" in r.output
    assert "3 of 7 action items not closed: AI-3, AI-6, AI-7" in r.output


def _bundle_from_run(tmp_path, config_name: str, *, memory: bool):
    """A bundle like `crashcart collect` writes: the console of a real run (+ RAM)."""
    from collector.device_config import encode_config, load_config_file
    from collector.elf import ElfImage
    from targets import load_target

    scenario = load_scenario(SCENARIOS / f"{config_name}.replay.yaml")
    verdict = run_scenario(scenario)
    out = tmp_path / "bundle"
    with BundleWriter(out, target="mps2-an385", command=["crashcart", "collect"]) as b:
        b.write_file("serial/console.raw", verdict.observation.transcript, kind="serial-raw",
                     source="serial")
        if memory:
            image = ElfImage(ELF_100)
            blob = encode_config(image, load_target("mps2-an385"),
                                 load_config_file(CONFIG_DIR / f"{config_name}.yaml"))
            b.write_file("swd/memory/ram@0x20000000.bin", blob + bytes(64), kind="memory")
    return out


@pytest.mark.qemu
def test_from_bundle_writes_a_scenario_that_reproduces(tmp_path):
    bundle = _bundle_from_run(tmp_path, "bad-adc-channel", memory=True)
    out = tmp_path / "replays" / "incident.replay.yaml"
    r = run("replay", "from-bundle", str(bundle), "-o", str(out), "--elf-path", str(ELF_DIR))
    assert r.exit_code == 0, r.output
    s = load_scenario(out)
    assert s.firmware is not None and s.firmware.build_id == (
        "d0254c72b736b175b4354dd5e59b2707ee4e93dc")
    assert s.config.values is not None and s.config.values["adc_channel"] == 6
    assert s.expect.fault is not None and (s.expect.fault.kind, s.expect.fault.function) == (
        "BusFault", "adc_read")
    r = run("replay", str(out))
    assert r.exit_code == 0, r.output
    # the scenario moves with its directory: paths are relative
    moved = tmp_path / "moved"
    shutil.copytree(out.parent, moved)
    assert load_scenario(moved / out.name).firmware.search_path[0].resolve() == ELF_DIR.resolve()


@pytest.mark.qemu
def test_from_bundle_without_config_copy_needs_config(tmp_path):
    bundle = _bundle_from_run(tmp_path, "wide-filter", memory=False)
    out = tmp_path / "s.replay.yaml"
    r = run("replay", "from-bundle", str(bundle), "-o", str(out), "--elf-path", str(ELF_DIR))
    assert r.exit_code == 2 and "holds no copy of the config block" in r.output
    r = run("replay", "from-bundle", str(bundle), "-o", str(out), "--elf-path", str(ELF_DIR),
            "--config", str(CONFIG_DIR / "wide-filter.yaml"))
    assert r.exit_code == 0, r.output
    s = load_scenario(out)
    assert s.expect.watchdog is True and s.expect.fault is not None
    assert s.expect.fault.kind == "NMI" and s.expect.fault.function == "fir_apply"
    assert run("replay", str(out)).exit_code == 0


def test_config_from_console_output():
    from collector.elf import ElfImage
    from replay.bundle_source import _config_from_console
    from targets import load_target

    console = (b"crashcart sensor-node 1.0.0 build-id " + b"0" * 40 + b"\nconfig source: device\n"
               b"magic: 0x47464343\nversion: 1\nsize: 52\nadc_channel: 6\nflags: 0x00000001\n"
               b"reserved[0]: 0\nreserved[1]: 7\ncrc32: 0x12345678\n[  10 ms] x\n")
    values = _config_from_console(console, ElfImage(ELF_100), load_target("mps2-an385"))
    assert values == {"adc_channel": 6, "flags": 1, "reserved": [0, 7]}
