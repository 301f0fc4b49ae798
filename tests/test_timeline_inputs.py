"""Event files and incident.yaml: valid ones load, every invalid fixture is rejected precisely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crashcart.errors import InputError
from timeline.events_file import load_event_file
from timeline.incident import load_incident, read_verdict
from timeline.model import BASIS_EXTERNAL, parse_iso_us

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "fixtures" / "events"
INCIDENT = ROOT / "fixtures" / "incident"
INVALID = sorted(EVENTS.glob("invalid_*")) + sorted((INCIDENT / "invalid").glob("invalid_*"))


def _expectations(path: Path) -> tuple[str, int, str]:
    lines = path.read_bytes().decode("latin-1").splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 10, f"{path.name}: first line must say why"
    line = int(lines[1].removeprefix("# expect-line:").strip())
    field = lines[2].removeprefix("# expect-field:").strip()
    return lines[0], line, field


def test_there_are_invalid_fixtures_of_every_kind():
    suffixes = {p.suffix for p in INVALID if p.parent == EVENTS}
    assert suffixes == {".csv", ".jsonl", ".yaml"}
    assert len([p for p in INVALID if p.parent.name == "invalid"]) >= 15


@pytest.mark.parametrize("path", INVALID, ids=[f"{p.parent.name}/{p.stem}" for p in INVALID])
def test_invalid_input_is_rejected_with_file_and_line(path: Path):
    _why, line, field = _expectations(path)
    loader = load_incident if path.parent.name == "invalid" else load_event_file
    with pytest.raises(InputError) as info:
        loader(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert info.value.line == line
    if field:
        assert f"field '{field}'" in message, message
    assert "Traceback" not in message


def test_valid_csv_reads_every_column():
    f = load_event_file(EVENTS / "valid_changes.csv", display_name="events/valid_changes.csv")
    deploy, push = f.events
    assert deploy.wall_us == parse_iso_us("2026-11-12T08:30:00+00:00")
    assert deploy.time_basis == BASIS_EXTERNAL and deploy.uncertainty_us == 0
    assert deploy.message == "firmware 1.0.1 to ring 1, canary first"
    assert (deploy.kind, deploy.source, deploy.device) == ("deploy", "deploy-pipeline", "node-2")
    assert deploy.evidence == "https://ci.example/run/1"
    assert dict(deploy.details) == {"version": "1.0.1", "ref": "release-1.0.1",
                                    "build_id": "0f323e71a50eb772900fa694243578138ad0e127"}
    assert push.wall_us == parse_iso_us("2026-11-12T08:00:00+00:00")   # +01:00 offset
    assert push.uncertainty_us == 30_000_000 and push.severity == "warning"
    assert push.device is None and push.evidence == "events/valid_changes.csv:4"


def test_valid_jsonl_and_yaml():
    alerts = load_event_file(EVENTS / "valid_alerts.jsonl").events
    assert [e.kind for e in alerts] == ["alert", "note"]
    assert alerts[0].severity == "warning"              # alerts default to warning
    assert alerts[1].source == "valid_alerts"           # default source: the file name
    assert alerts[1].uncertainty_us == 60_000_000
    assert alerts[1].evidence.endswith("valid_alerts.jsonl:4")
    response = load_event_file(EVENTS / "valid_response.yaml").events
    assert [e.source for e in response] == ["incident-channel", "config-service"]
    assert response[1].uncertainty_us == 0
    assert response[0].evidence.endswith("valid_response.yaml:4")


def test_yaml_is_only_safe_loaded(tmp_path):
    marker = tmp_path / "executed"
    payload = (f"- time: 2026-11-12T09:00:00Z\n  kind: note\n"
               f"  message: !!python/object/apply:os.system ['touch {marker}']\n")
    (tmp_path / "events.yaml").write_text(payload)
    with pytest.raises(InputError):
        load_event_file(tmp_path / "events.yaml")
    incident = (INCIDENT / "incident.yaml").read_text().replace(
        "title: Field units", f"title: !!python/object/apply:os.system ['touch {marker}']\n#")
    (tmp_path / "incident.yaml").write_text(incident)
    with pytest.raises(InputError) as info:
        load_incident(tmp_path)
    assert "not allowed" in str(info.value)
    assert not marker.exists()


# -- incident.yaml -----------------------------------------------------------------------------


def test_fixture_incident_loads():
    i = load_incident(INCIDENT)
    assert (i.id, i.severity, i.status) == ("INC-2026-031", "SEV2", "resolved")
    assert [e.device for e in i.evidence] == ["node-1", "node-2"]
    assert [p.name for p in i.event_files] == ["changes.csv", "ci.jsonl", "response.yaml"]
    assert i.impact.devices_affected == 37
    assert i.config_diff.changed() == [("adc_channel", 0, 6), ("alarm_threshold", 3000, 2800)]
    assert [a.verification.status for a in i.action_items] == \
        ["closed", "unverified", "unverified", "unverified", "unverified", "open"]
    ai1 = i.action_items[0]
    assert ai1.replay == "replay/adc-channel-range.replay.yaml"
    assert ai1.must_fail_on == ("../firmware/elf/sensor-node-1.0.0.elf",)
    assert ai1.must_pass_on == ("../firmware/elf/sensor-node-1.0.1.elf",)
    assert i.lessons.went_well and i.lessons.went_wrong and i.lessons.got_lucky
    fields = {t.field for t in i.texts}
    assert {"summary", "root_cause", "lessons.got_lucky[0]", "action_items[0].title"} <= fields
    assert all(t.line for t in i.texts)


def test_missing_incident_yaml_says_what_to_do(tmp_path):
    with pytest.raises(InputError) as info:
        load_incident(tmp_path)
    assert "incident.yaml" in str(info.value) and "docs/incident-format.md" in str(info.value)


@pytest.fixture
def incident_copy(tmp_path) -> Path:
    dest = tmp_path / "incident"
    shutil.copytree(INCIDENT, dest, ignore=shutil.ignore_patterns("invalid", "*.py"))
    # the action items name builds outside the incident, as a real one would
    shutil.copytree(ROOT / "fixtures" / "firmware" / "elf", tmp_path / "firmware" / "elf")
    return dest


@pytest.mark.parametrize("status", ["closed", "open", "invalid"])
def test_verification_comes_from_the_replay_verdict(incident_copy, status):
    verdict = {"action_item": "AI-2", "status": status, "summary": f"replay said {status}"}
    (incident_copy / "replay" / "verdicts" / "AI-2.json").write_text(json.dumps(verdict))
    item = load_incident(incident_copy).action_items[1]
    assert item.verification.status == status
    assert item.verification.detail == f"replay said {status}"


@pytest.mark.parametrize("content, why", [
    ("not json", "unreadable"),
    ('["closed"]', "not a JSON object"),
    ('{"status": "passed"}', "not one of"),
    ('{"status": "closed", "action_item": "AI-9"}', "for action item 'AI-9'"),
])
def test_an_unusable_verdict_is_invalid_never_closed(tmp_path, content, why):
    path = tmp_path / "AI-1.json"
    path.write_text(content)
    v = read_verdict(path, "AI-1")
    assert v.status == "invalid" and why in v.detail


def test_verdict_named_in_incident_yaml(incident_copy):
    (incident_copy / "replay" / "verdicts" / "AI-1.json").rename(
        incident_copy / "replay" / "ai1-run.json")
    text = (incident_copy / "incident.yaml").read_text().replace(
        "    scenario: replay/adc-channel-range.replay.yaml\n",
        "    scenario: replay/adc-channel-range.replay.yaml\n    verification:\n"
        "      status: closed\n      verdict: replay/ai1-run.json\n")
    (incident_copy / "incident.yaml").write_text(text)
    item = load_incident(incident_copy).action_items[0]
    assert item.verification.status == "closed"
    assert item.verification.verdict.name == "ai1-run.json"
