"""Fuzzing the serial-side parsers: marker scanning, line indexing, crash logs, banners."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.bundle import BundleWriter, verify_bundle
from collector.crashlog import parse_banner, parse_crash_log
from collector.serial_capture import SerialCapture, _MarkerScanner

BEGIN, END = b"<B>", b"<E>"
# Bytes a noisy UART gives: markers, their pieces, newlines, binary garbage.
pieces = st.lists(st.sampled_from([BEGIN, END, b"<", b"B>", b"E", b"\n", b"\r\n", b"x",
                                   b"\xff\x00", b"line text "]), max_size=60)
cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=12)


def split(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({min(a, len(data)) for a in at})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(pieces, cuts)
def test_marker_scanner_finds_what_a_whole_buffer_search_finds(parts, at):
    data = b"".join(parts)
    expected = sorted([("begin", m.start()) for m in re.finditer(re.escape(BEGIN), data)]
                      + [("end", m.start()) for m in re.finditer(re.escape(END), data)],
                      key=lambda x: x[1])
    scanner = _MarkerScanner(BEGIN, END)
    found, offset = [], 0
    for chunk in split(data, at):
        found += scanner.feed(offset, chunk)
        offset += len(chunk)
    assert found == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces, cuts)
def test_line_index_covers_every_byte_in_any_chunking(parts, at):
    data = b"".join(parts)
    with tempfile.TemporaryDirectory() as tmp:
        with BundleWriter(Path(tmp) / "b") as bundle:
            cap = SerialCapture(bundle, "loop://", crash_markers=("<B>", "<E>"))
            for chunk in split(data, at):
                if chunk:
                    cap._ingest(chunk)
            cap.close()
        root = Path(tmp) / "b" / "serial"
        raw = (root / "console.raw").read_bytes()
        lines = [json.loads(x) for x in (root / "lines.jsonl").read_text().splitlines()]
        assert verify_bundle(Path(tmp) / "b").ok
    assert raw == data
    covered = b"".join(raw[x["offset"]:x["offset"] + x["length"]] for x in lines)
    assert covered == data[:data.rfind(b"\n") + 1]
    assert all(x["offset"] + x["length"] <= len(raw) for x in lines)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_crash_log_and_banner_parsers_never_raise(text):
    parsed = parse_crash_log(text)
    assert isinstance(parsed.registers, dict)
    parse_banner(text, re.compile(r"^crashcart sensor-node (?P<version>\S+) build-id "
                                  r"(?P<build_id>[0-9a-f]{40})"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["r0: 0x1", "pc: 0xzz", "fault: ", "firmware: 1 build-id ",
                                 "uptime_ms: 99999999999999999999", "lr: 0x", "bogus: 1",
                                 "*** CRASH END ***", "\x00\xff", "cfsr: 0x00008200"]),
                max_size=20))
def test_crash_log_problems_are_reported_with_line_numbers(lines):
    parsed = parse_crash_log("\n".join(lines))
    for problem in parsed.problems:
        assert problem.startswith("line ")
