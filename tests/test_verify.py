"""Action-item verification on the fixture incident (fixtures/scenarios/incident)."""

from __future__ import annotations

import json

import pytest

from crashcart.errors import InputError
from replay.verify import format_table, load_action_items, verify_incident, write_verdicts

from .conftest import ROOT

INCIDENT = ROOT / "fixtures" / "scenarios" / "incident"


def test_action_items_are_read_with_their_builds():
    root, items = load_action_items(INCIDENT)
    assert root == INCIDENT
    by_id = {i.id: i for i in items}
    assert by_id["AI-1"].must_fail_on[0].name == "sensor-node-1.0.0.elf"
    assert by_id["AI-1"].must_pass_on[0].name == "sensor-node-1.0.1.elf"
    assert by_id["AI-7"].scenario is None


def test_bad_action_items_are_rejected(tmp_path):
    (tmp_path / "incident.yaml").write_text(
        "action_items:\n  - id: AI-1\n    scenario: missing.replay.yaml\n")
    with pytest.raises(InputError, match="scenario file not found") as info:
        load_action_items(tmp_path)
    assert info.value.line == 3
    (tmp_path / "incident.yaml").write_text(
        "action_items:\n  - id: AI-1\n    must_pass_on: [x.elf]\n")
    with pytest.raises(InputError, match="build ELF not found"):
        load_action_items(tmp_path)


@pytest.mark.qemu
def test_verify_fixture_incident(tmp_path):
    seen = []
    results = verify_incident(INCIDENT, jobs=2,
                              progress=lambda done, total, item, b: seen.append((item, b)))
    status = {r.item.id: r.status for r in results}
    # progress speaks of the item's role: on the fix build, "clean" is what is required
    ai1 = {b.role: b for item, b in seen if item == "AI-1"}
    assert ai1["must_fail_on"].label == "reproduces" and ai1["must_fail_on"].ok
    assert ai1["must_pass_on"].label == "clean" and ai1["must_pass_on"].ok
    ai3_fix = [b for item, b in seen if item == "AI-3" and b.role == "must_pass_on"]
    assert ai3_fix and not ai3_fix[0].ok
    assert len(seen) == sum(len(r.builds) for r in results)
    assert status == {"AI-1": "closed", "AI-2": "closed", "AI-3": "open", "AI-4": "closed",
                      "AI-5": "closed", "AI-6": "invalid", "AI-7": "unverified"}
    reasons = {r.item.id: r.reason for r in results}
    assert "reproduces on fix build sensor-node-1.0.1.elf" in reasons["AI-3"]
    assert "does not reproduce the incident on sensor-node-1.0.0.elf" in reasons["AI-6"]
    table = format_table(results)
    assert table.splitlines()[0].split() == ["ITEM", "STATUS", "REASON"]
    # verdict files in the timeline/report's format, written into a copy
    import shutil

    copy = tmp_path / "incident"
    shutil.copytree(INCIDENT, copy)
    (copy / "incident.yaml").write_text((INCIDENT / "incident.yaml").read_text().replace(
        "../", str(INCIDENT.parent) + "/"))
    written = write_verdicts(copy, results)
    ai1 = json.loads((copy / "replay" / "verdicts" / "AI-1.json").read_text())
    assert ai1["format"] == "crashcart-verdict" and ai1["status"] == "closed"
    assert ai1["action_item"] == "AI-1"
    assert len(written) == 6


@pytest.mark.qemu
def test_verify_the_timeline_fixture_incident():
    """fixtures/incident (the timeline's sample) links AI-1 and AI-6 to replay checks."""
    incident = ROOT / "fixtures" / "incident"
    if not (incident / "incident.yaml").is_file():
        pytest.skip("the timeline's fixture incident is not in this checkout")
    status = {r.item.id: r.status for r in verify_incident(incident, jobs=2)}
    assert status.get("AI-1") == "closed"
    assert status.get("AI-6") == "open"
