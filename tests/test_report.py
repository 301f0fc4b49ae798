"""The post-mortem report and the blameless-language check."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from crashcart.cli import CrashcartGroup
from timeline.blameless import check_incident_language, check_text
from timeline.cli import report_command
from timeline.incident import load_incident
from timeline.model import CrashInfo, DecodedFault
from timeline.report import SECTIONS, build_report, write_report

ROOT = Path(__file__).resolve().parent.parent
INCIDENT = ROOT / "fixtures" / "incident"


@pytest.fixture
def incident_copy(tmp_path) -> Path:
    dest = tmp_path / "incident"
    shutil.copytree(INCIDENT, dest, ignore=shutil.ignore_patterns("invalid", "*.py"))
    shutil.copytree(ROOT / "fixtures" / "firmware" / "elf", tmp_path / "firmware" / "elf")
    return dest


@pytest.fixture
def cli() -> click.Group:
    @click.group(cls=CrashcartGroup)
    def root() -> None:
        pass

    root.add_command(report_command)
    return root


def headings(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, flags=re.M)


def section(markdown: str, title: str) -> str:
    return markdown.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_has_every_section_in_order(tmp_path):
    report = write_report(load_incident(INCIDENT), tmp_path / "pm.md")
    md = (tmp_path / "pm.md").read_text()
    assert md == report.markdown
    assert headings(md)[:len(SECTIONS)] == list(SECTIONS)
    for sub in ("### Contributing factors", "### Faults", "### Firmware versions",
                "### Config diff", "### Clock alignment", "### What went well",
                "### What went wrong", "### Where we got lucky"):
        assert sub in md
    assert md.startswith("# Post-mortem: Field units on firmware 1.0.0 boot-looped")


def test_report_links_the_picture_it_writes(tmp_path):
    write_report(load_incident(INCIDENT), tmp_path / "pm.md")
    md = (tmp_path / "pm.md").read_text()
    assert "](pm.timeline.svg)" in section(md, "Timeline")
    ET.fromstring((tmp_path / "pm.timeline.svg").read_text())


def test_report_cites_each_bundle_and_file_by_sha256():
    incident = load_incident(INCIDENT)
    md = build_report(incident).markdown
    evidence = section(md, "Evidence")
    for entry in incident.evidence:
        manifest_sha = hashlib.sha256((entry.path / "manifest.json").read_bytes()).hexdigest()
        assert f"`{manifest_sha}`" in evidence
        manifest = json.loads((entry.path / "manifest.json").read_text())
        for name, info in manifest["files"].items():
            assert f"`{name}` ({info['size']} bytes) sha256 `{info['sha256']}`" in evidence
        assert f"`{entry.name}`" in evidence
    assert evidence.count("verified (4 files)") == 2
    for path in incident.event_files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in evidence


def test_report_flags_a_changed_bundle(incident_copy):
    raw = incident_copy / "evidence" / "node-2" / "serial" / "console.raw"
    raw.write_bytes(raw.read_bytes().replace(b"avg=", b"avg:", 1))
    evidence = section(build_report(load_incident(incident_copy)).markdown, "Evidence")
    assert "**FAILED**" in evidence and "serial/console.raw" in evidence


def test_report_technical_analysis():
    tech = section(build_report(load_incident(INCIDENT)).markdown, "Technical analysis")
    assert "| node-1 | BusFault | 1.0.0 (`d0254c72b736`) | 3 |" in tech
    assert "cfsr=0x00008200" in tech and "bfar=0x7220504c" in tech
    assert "not decoded yet" in tech
    assert "| `adc_channel` | `0` | `6` |" in tech
    assert "`0f323e71a50eb772900fa694243578138ad0e127`" in tech
    assert "| node-1 | 1.0.0 | `d0254c72b736b175b4354dd5e59b2707ee4e93dc` | fault | 2 |" in tech


def test_report_shows_decoded_facts_when_a_decoder_is_given():
    def decoder(crash: CrashInfo, *, bundle: Path) -> DecodedFault:
        return DecodedFault("precise data BusFault reading 0x7220504c", "adc_read",
                            "src/adc.c", 92, ("adc_read", "sample_tick", "app_run", "main"),
                            ("BFARVALID: BFAR holds the faulting address (ARMv7-M B3.2.15)",))

    md = build_report(load_incident(INCIDENT), decoder=decoder).markdown
    tech = section(md, "Technical analysis")
    assert "where: `adc_read (src/adc.c:92)`" in tech
    assert "`adc_read` ← `sample_tick` ← `app_run` ← `main`" in tech
    assert "BFARVALID" in tech and "not decoded yet" not in tech


def test_action_items_table_reflects_verification(incident_copy):
    md = build_report(load_incident(incident_copy)).markdown
    actions = section(md, "Action items")
    row = {line.split(" | ")[0].strip("| "): line for line in actions.splitlines()
           if line.startswith("| AI-")}
    assert "**closed**" in row["AI-1"] and "replay/verdicts/AI-1.json" in row["AI-1"]
    assert "clean on sensor-node-1.0.1.elf" in row["AI-1"]
    assert "**open**" in row["AI-6"] and "no must_pass_on (fix) build named" in row["AI-6"]
    assert "unverified — no replay scenario" in row["AI-3"]
    assert "| prevent | config service maintainers | in-progress |" in row["AI-2"]
    assert "1 of 6 verified closed by replay" in actions
    # a scenario that has not been run yet:
    del_verdict = incident_copy / "replay" / "verdicts" / "AI-6.json"
    del_verdict.unlink()
    actions = section(build_report(load_incident(incident_copy)).markdown, "Action items")
    ai6 = next(line for line in actions.splitlines() if line.startswith("| AI-6 "))
    assert "unverified — no replay verdict yet" in ai6
    assert "1 with a replay scenario but no verdict yet" in actions
    # replay then finds AI-2 still open:
    (incident_copy / "replay" / "verdicts" / "AI-2.json").write_text(json.dumps(
        {"action_item": "AI-2", "status": "open", "summary": "v42 still accepted by the push"}))
    actions = section(build_report(load_incident(incident_copy)).markdown, "Action items")
    ai2 = next(line for line in actions.splitlines() if line.startswith("| AI-2 "))
    assert "**open**" in ai2 and "v42 still accepted by the push" in ai2


def test_report_timeline_section_lists_key_events_with_uncertainty():
    timeline = section(build_report(load_incident(INCIDENT)).markdown, "Timeline")
    assert "| config-service | config-push | config v42 pushed fleet-wide" in timeline
    assert "| ±5 min | incident-channel | note |" in timeline
    assert "drift" in timeline and "+85 ppm" in timeline and "-40 ppm" in timeline
    assert "sensor-node up" not in timeline                       # routine log lines left out


# -- the blameless-language check -----------------------------------------------------------


@pytest.mark.parametrize("text, rule", [
    ("It was Sam's mistake to push v42.", "possessive-blame"),
    ("The push was careless.", "judgement"),
    ("The on-call engineer should have known that 1.0.0 lacks the check.", "hindsight"),
    ("Root cause: human error.", "human-error"),
    ("The outage was caused by Priya.", "person-as-cause"),
    ("Jordan forgot to run the range check.", "person-as-cause"),
    ("Ask @jdoe about the push.", "person-as-cause"),
    ("We dropped the ball on alerting.", "blame-word"),
])
def test_blame_is_flagged(text, rule):
    assert rule in [r for r, _ in check_text(text)]


@pytest.mark.parametrize("text", [
    "The config service accepted a value that firmware 1.0.0 cannot handle.",
    "Because of the missing range check, units faulted at every boot.",
    "Config v42 caused the fault; the BusFault handler printed its fault status register.",
    "The incident commander paused config pushes.",
    "Their fault codes were identical.",
])
def test_systemic_language_passes(text):
    assert check_text(text, {"config", "firmware"}) == []


def test_fixture_incident_is_blameless():
    assert check_incident_language(load_incident(INCIDENT)) == []


def test_findings_name_line_and_field_and_appear_in_the_report(incident_copy, cli):
    path = incident_copy / "incident.yaml"
    text = path.read_text().replace(
        "  Config v42, pushed fleet-wide", "  It was Sam's mistake: config v42, pushed fleet-wide")
    text = text.replace("    - A config that only suits newer firmware reached every unit at once.",
                        "    - The config author was careless and should have known better.")
    path.write_text(text)
    incident = load_incident(incident_copy)
    findings = check_incident_language(incident)
    assert [(f.field, f.rule) for f in findings] == [
        ("summary", "possessive-blame"),
        ("lessons.went_wrong[0]", "judgement"), ("lessons.went_wrong[0]", "hindsight")]
    lines = path.read_text().splitlines()
    assert lines[findings[0].line - 1].startswith("summary:")
    assert "careless" in lines[findings[1].line - 1]
    result = CliRunner().invoke(cli, ["report", str(incident_copy), "--check"])
    assert result.exit_code == 1
    assert f"{path}:line {findings[1].line}, lessons.went_wrong[0]: judgement" in result.output
    assert "suggestion:" in result.output
    md = build_report(incident).markdown
    assert "3 phrase(s) in incident.yaml read as blame" in md


def test_report_command(cli, tmp_path):
    result = CliRunner().invoke(cli, ["report", str(INCIDENT), "-o", str(tmp_path / "pm.md")])
    assert result.exit_code == 0, result.output
    assert headings((tmp_path / "pm.md").read_text())[:len(SECTIONS)] == list(SECTIONS)
    assert (tmp_path / "pm.timeline.svg").is_file()
    result = CliRunner().invoke(cli, ["report", str(INCIDENT), "--check"])
    assert result.exit_code == 0 and "no personal blame" in result.output
    result = CliRunner().invoke(cli, ["report", str(INCIDENT / "invalid" /
                                                     "invalid_severity.yaml")])
    assert result.exit_code == 2 and "SEV5" in result.output
