"""The README's main job (``crashcart demo``) end to end, without the setup step."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from collector.bundle import read_manifest, verify_bundle
from crashcart.cli import cli
from crashcart.demo import NODES, run_demo
from crashcart.errors import InputError

pytestmark = pytest.mark.qemu

SECTIONS = ("Summary", "Impact", "Detection", "Timeline", "Root cause and contributing factors",
            "Technical analysis", "Evidence", "Action items", "Lessons learned")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "crashcart-demo"
    lines: list[str] = []
    result = run_demo(out, lines.append)
    return out, result, "\n".join(lines)


def test_demo_writes_verifiable_bundles_and_archives(demo):
    out, result, _ = demo
    for node in NODES:
        bundle = out / "incident" / "evidence" / node.name
        assert verify_bundle(bundle).ok, node.name
        manifest = read_manifest(bundle)
        kinds = [s["kind"] for s in manifest["sources"]]
        assert kinds == (["serial", "swd"] if node.swd else ["serial"]), kinds
        archive = bundle.with_name(node.name + ".tar.gz")
        check = CliRunner().invoke(cli, ["bundle", "verify", str(archive)])
        assert check.exit_code == 0, check.output


def test_demo_report_has_every_section_and_cites_the_evidence(demo):
    out, _, _ = demo
    report = (out / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", report, re.MULTILINE)
    assert [h for h in headings if h in SECTIONS] == list(SECTIONS), headings
    assert "![Timeline" in report and (out / "report.timeline.svg").exists()
    assert "where: `adc_read (src/adc.c:92)`" in report
    assert "where: `window_mean (src/sampler.c:54)`" in report
    # the backtrace names the inline levels, innermost first, as gdb's bt does
    assert ("backtrace: `window_mean (sampler.c:54) [inlined]` ← "
            "`averager_push (sampler.c:77) [inlined]` ← `process_sample (sampler.c:104)`") in report
    assert "backtrace: `adc_read (adc.c:92)` ← `sample_tick (sampler.c:125)`" in report
    # the stack overflow (MSTKERR, no stacked frame): found by a scan of the SWD-captured
    # stack, the recursion shown once with its depth, down to main
    assert re.search(r"where: `biquad_cascade \(src/filter.c:100\)`\n  - backtrace: "
                     r"`biquad_cascade \(filter.c:100\) ×\d{3}` ← `filter_apply .*`main ", report)
    for node in NODES:
        sha = __import__("hashlib").sha256(
            (out / "incident" / "evidence" / node.name / "manifest.json").read_bytes()).hexdigest()
        assert sha in report, node.name
    assert "No personal blame found" in report  # the demo's own account passes its check
    for picture in ("timeline.svg", "timeline.html"):
        text = (out / picture).read_text()
        assert "node-1" in text and "config v42" in text


def test_demo_verify_shows_the_open_item(demo):
    out, result, story = demo
    verdicts = out / "incident" / "replay" / "verdicts"
    status = {p.stem: json.loads(p.read_text())["status"] for p in verdicts.glob("*.json")}
    assert status == {"AI-1": "closed", "AI-2": "closed", "AI-3": "open"}
    assert result.verify is not None and result.verify["status"] == 1
    assert re.search(r"AI-3\s+open\s+reproduces on fix build sensor-node-1.0.1.elf",
                     result.verify["output"])


def test_demo_decodes_minimizes_and_bisects(demo):
    out, result, story = demo
    decoded = json.loads((out / "incident" / "decoded" / "node-1.json").read_text())
    assert decoded["fault"]["primary"] == "BusFault"
    assert decoded["location"]["function"] == "adc_read"
    assert decoded["firmware"]["build_id_match"] is True
    assert "adc_channel: 0 -> 6" in story
    assert "first failing build: sensor-node-0.9.2.elf" in \
        (out / "logs" / "14-bisect.txt").read_text()
    for name in ("adc-channel", "averaging-window", "filter-cascade"):
        assert (out / "incident" / "replay" / f"{name}.replay.yaml").exists()
    # The story names each command and where everything went.
    for command in ("crashcart collect", "crashcart decode", "crashcart timeline",
                    "crashcart replay from-bundle", "crashcart minimize", "crashcart bisect",
                    "crashcart verify", "crashcart report"):
        assert f"$ {command}" in story
    assert "Read " in story and "report.md" in story


def test_demo_refuses_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("not the demo's")
    with pytest.raises(InputError, match="not empty"):
        run_demo(tmp_path, print)
    assert (tmp_path / "precious.txt").exists()
