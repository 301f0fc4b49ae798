"""Outputs: Markdown table, Timesketch JSONL, the SVG picture and HTML page, the CLI."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from crashcart.cli import CrashcartGroup
from timeline.builder import incident_timeline
from timeline.cli import report_command, timeline_command
from timeline.incident import load_incident
from timeline.model import (
    CrashInfo,
    DecodedFault,
    Event,
    IsoFormatter,
    parse_iso_us,
    us_to_datetime,
)
from timeline.picture import render_html, render_svg
from timeline.render import (
    MD_HEADER,
    _json_escape_all,
    _SecondCache,
    markdown_row,
    timesketch_record,
    write_jsonl,
    write_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
INCIDENT = ROOT / "fixtures" / "incident"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def fixture_timeline():
    incident = load_incident(INCIDENT)
    return incident, incident_timeline(incident)


@pytest.fixture
def cli() -> click.Group:
    """The two commands on a root group that maps errors to exit statuses, as crashcart's does."""

    @click.group(cls=CrashcartGroup)
    def root() -> None:
        pass

    root.add_command(timeline_command)
    root.add_command(report_command)
    return root


def test_events_are_sorted_and_lanes_list_devices_first(fixture_timeline):
    _, tl = fixture_timeline
    times = [e.wall_us for e in tl.events]
    assert times == sorted(times)
    assert tl.lanes()[:2] == ["node-1", "node-2"]
    assert {"deploy-pipeline", "config-service", "monitoring", "ci"} <= set(tl.lanes())
    push = next(e for e in tl.events if e.kind == "config-push")
    first_crash = next(e for e in tl.events if e.kind == "crash")
    assert push.wall_us < first_crash.wall_us        # what changed comes before the fault


def test_markdown_table(fixture_timeline):
    _, tl = fixture_timeline
    out = io.StringIO()
    rows = write_markdown(tl.events, out)
    lines = out.getvalue().splitlines()
    assert rows == len(tl.events) == len(lines) - 2
    assert lines[0].startswith("| time (UTC) | ± |")
    assert all(line.count(" | ") >= 7 for line in lines[2:])
    crash = next(line for line in lines if "| crash |" in line)
    assert "BusFault" in crash and "evidence/node-1/serial/console.raw#bytes=" in crash


def test_markdown_escapes_table_breakers():
    e = Event(parse_iso_us("2026-01-01T00:00:00+00:00"), 0, "external", "notes", None, "note",
              "info", "a | b <script> c")
    out = io.StringIO()
    write_markdown([e], out)
    row = out.getvalue().splitlines()[2]
    assert "a \\| b &lt;script> c" in row


def test_timesketch_jsonl_has_the_required_fields(fixture_timeline):
    _, tl = fixture_timeline
    out = io.StringIO()
    assert write_jsonl(tl.events, out) == len(tl.events)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == len(tl.events)
    for record, event in zip(records, tl.events):
        assert {"message", "datetime", "timestamp_desc"} <= set(record)
        assert isinstance(record["message"], str) and record["message"]
        assert record["timestamp"] == event.wall_us
        assert parse_iso_us(record["datetime"]) == event.wall_us
        assert record["datetime"].endswith("+00:00")
    crash = next(r for r in records if r["kind"] == "crash")
    assert crash["crash_fault"] == "BusFault" and crash["crash_cfsr"] == "0x00008200"
    assert crash["timestamp_desc"] == "Device uptime aligned to host clock"
    assert crash["device"] == "node-1" and crash["evidence"].startswith("evidence/node-1/")
    deploy = next(r for r in records if r["kind"] == "deploy")
    assert deploy["timestamp_desc"] == "Event time (external source)"
    assert deploy["version"] == "1.0.1" and deploy["uncertainty_us"] == 0


def test_fast_jsonl_path_writes_exactly_what_timesketch_record_gives(fixture_timeline):
    _, tl = fixture_timeline
    odd = Event(5, None, "reported", 'a"b', None, "note", "info", 'x\\y "q" é\n\t', None)
    events = list(tl.events) + [odd]
    out = io.StringIO()
    write_jsonl(events, out)
    fmt = IsoFormatter()
    written = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written == [json.loads(json.dumps(timesketch_record(e, fmt))) for e in events]


def test_iso_formatter_matches_datetime():
    fmt = IsoFormatter()
    for text in ("2026-11-12T09:00:01.607123+00:00", "1999-12-31T23:59:59.999999+00:00"):
        assert fmt.iso(parse_iso_us(text)) == text


def test_reported_only_events_have_a_null_uncertainty_in_jsonl():
    e = Event(0, None, "reported", "console", "n", "crash", "critical", "crash: x")
    assert timesketch_record(e, IsoFormatter())["uncertainty_us"] is None


def test_svg_is_valid_self_contained_and_marks_what_matters(fixture_timeline, tmp_path):
    incident, tl = fixture_timeline
    svg = render_svg(tl.events, lanes=tl.lanes(), title=incident.title)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert "href" not in svg and "<script" not in svg
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for lane in tl.lanes():
        assert lane in texts
    assert "crash: BusFault" in texts and "config v42 pushed" in texts
    assert "firmware 1.0.0" in texts and "firmware 1.0.1" in texts
    titles = " ".join(t.text or "" for t in root.iter(f"{SVG}title"))
    assert "reset (fault)" in titles and "firmware 1.0.1 rolled out" in titles
    converter = shutil.which("rsvg-convert")
    if converter is None:
        pytest.skip("rsvg-convert not installed: SVG checked as XML only")
    (tmp_path / "t.svg").write_text(svg)
    subprocess.run([converter, "-o", str(tmp_path / "t.png"), str(tmp_path / "t.svg")],
                   check=True, timeout=60)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_of_an_empty_or_single_event_timeline_is_valid():
    ET.fromstring(render_svg([]))
    e = Event(parse_iso_us("2026-01-01T00:00:00+00:00"), 0, "external", "ci", None, "ci",
              "info", "run <1> & done")
    ET.fromstring(render_svg([e]))


def test_html_page_is_self_contained(fixture_timeline):
    incident, tl = fixture_timeline
    html = render_html(tl.events, lanes=tl.lanes(), title=incident.title)
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
    assert "routine log lines" in html and "config v42 pushed" in html


# -- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, check", [
    ("md", lambda text: text.startswith("| time (UTC)")),
    ("jsonl", lambda text: all(json.loads(line)["datetime"] for line in text.splitlines())),
    ("svg", lambda text: ET.fromstring(text).tag == f"{SVG}svg"),
    ("html", lambda text: "<svg" in text),
])
def test_timeline_command_formats(cli, tmp_path, fmt, check):
    out = tmp_path / f"timeline.{fmt}"
    result = CliRunner().invoke(cli, ["timeline", str(INCIDENT), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert check(out.read_text())
    assert not list(tmp_path.glob("*.tmp"))


def test_timeline_command_takes_bundles_and_event_files(cli):
    result = CliRunner().invoke(cli, [
        "timeline", str(INCIDENT / "evidence" / "node-2"),
        str(INCIDENT / "events" / "changes.csv"), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert {r.get("device") for r in records if r["kind"] == "boot"} == {"node-2"}
    assert any(r["kind"] == "config-push" for r in records)


def test_timeline_command_bad_event_file_exits_2_with_the_line(cli):
    bad = ROOT / "fixtures" / "events" / "invalid_unknown-kind.csv"
    result = CliRunner().invoke(cli, ["timeline", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:6:" in result.output and "did you mean 'deploy'" in result.output


def test_timeline_command_refuses_other_files(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = CliRunner().invoke(cli, ["timeline", str(tmp_path / "notes.txt")])
    assert result.exit_code == 2 and "event file" in result.output


# -- the fast writers against their one-event definitions ------------------------------------

TRICKY = ["plain", 'q"uote', "back\\slash", "pi|pe", "l<t", "nl\nnl", "cr\rcr", "tab\t",
          "\x00\x01\x1f", "del\x7fsep", "µ±日本😀", "\u2028\u2029\x85", "\ud800lone", "`tick`",
          "", " lead  trail ", "\\u0000", "%s %d %% {0} {{}}"]


def _tricky_events(count: int, texts: list[str] = TRICKY) -> list[Event]:
    crash = CrashInfo("BusFault", "1.0.0", "abc", 12, (("pc", 0x1BC),), complete=False,
                      decoded=DecodedFault('sum "x"\\', "fn", "f.c", 3, ("a", "b")))
    details_cycle = ((), (("ref", "r|1\n"),), (("ref", "a"), ("ref", "b"), ("n", 7)),
                     (("device", "from-details"), ("boot", 9), ("gone", None), ("gone", "x")),
                     (("message", "never"), ("f", 1.5)), (("flag", True),), (("big", 10 ** 20),))
    events = []
    for i in range(count):
        text = texts[i % len(texts)]
        other = texts[(i * 7 + 3) % len(texts)]
        events.append(Event(
            1_772_323_200_123_456 + i * 997_001 - (i % 3) * 10 ** 14,
            None if i % 5 == 0 else i * 1234,
            ("external", "host-received", "uptime-aligned", "interpolated", "reported")[i % 5],
            other if i % 2 else "console", (None, text, "node-1")[i % 3],
            ("log", "deploy", "capture", "crash", "note", "boot")[i % 6],
            ("info", "warning", "error", "critical")[i % 4], f"{text} msg {other}",
            None if i % 4 == 0 else f"{other}/ev#bytes={i}+2", None if i % 6 == 1 else i * 10,
            None if i % 7 == 2 else i % 3, details_cycle[i % len(details_cycle)],
            crash if i % 11 == 5 else None))
    return events


def _record_line(event: Event) -> str:
    """The JSONL line crashcart has always written: ``json.dumps`` of the record, with
    ``device`` before ``uncertainty_us`` for events without details or crash facts."""
    record = timesketch_record(event, IsoFormatter())
    if not event.details and event.crash is None and "device" in record:
        keys = list(record)
        keys.remove("device")
        keys.insert(keys.index("uncertainty_us"), "device")
        record = {k: record[k] for k in keys}
    return json.dumps(record, ensure_ascii=False)


#: Chunks without the separator are escaped in one piece, the others string by string.
NO_SEPARATOR = [t for t in TRICKY if "\x7f" not in t]


@pytest.mark.parametrize("texts", [TRICKY, NO_SEPARATOR])
@pytest.mark.parametrize("count", [1, 7, 700])     # one chunk, several, a partial last one
def test_jsonl_lines_are_json_dumps_of_the_record(count, texts):
    events = _tricky_events(count, texts)
    out = io.StringIO()
    assert write_jsonl(events, out) == count
    assert out.getvalue() == "".join(_record_line(e) + "\n" for e in events)


@pytest.mark.parametrize("texts", [TRICKY, NO_SEPARATOR, ["plain", "text"]])
@pytest.mark.parametrize("count", [1, 7, 700])
def test_markdown_rows_are_markdown_row_of_each_event(count, texts):
    events = _tricky_events(count, texts)
    out = io.StringIO()
    assert write_markdown(events, out) == count
    assert out.getvalue() == MD_HEADER + "".join(markdown_row(e) for e in events)


def test_chunked_json_escape_equals_json_dumps():
    for texts in (NO_SEPARATOR, TRICKY, ["\x7f"], [""], ["a", ""]):
        expected = [json.dumps(t, ensure_ascii=False)[1:-1] for t in texts]
        assert _json_escape_all(texts) == expected


def test_second_cache_matches_strftime():
    seconds = _SecondCache("T")
    for text in ("1970-01-01T00:00:00", "1969-12-31T23:59:59", "2024-02-29T23:59:59",
                 "2026-03-01T12:34:56", "0001-01-01T00:00:00", "9999-12-31T23:59:59"):
        second = parse_iso_us(text + "+00:00") // 1_000_000
        moment = us_to_datetime(second * 1_000_000)
        assert seconds[second] == moment.strftime("%Y-%m-%dT%H:%M:%S")   # year 1: "1-01-01"
        assert _SecondCache(" ")[second] == moment.strftime("%Y-%m-%d %H:%M:%S")
