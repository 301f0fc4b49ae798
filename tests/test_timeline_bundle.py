"""Events from evidence bundles, and the clock fit they rest on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.bundle import BundleWriter
from timeline.bundle_events import read_bundle
from timeline.clock import fit_segment, settle_stream_order
from timeline.model import (
    BASIS_INTERPOLATED,
    BASIS_REPORTED,
    BASIS_UPTIME,
    CrashInfo,
    DecodedFault,
    parse_iso_us,
)
from timeline.synth import SynthDevice, write_bundle

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE = ROOT / "fixtures" / "incident" / "evidence"
T0 = parse_iso_us("2026-01-05T12:00:00+00:00")
S = 1_000_000
BUILD = "d0254c72b736b175b4354dd5e59b2707ee4e93dc"
CRASH = {"pc": 0x1BC, "lr": 0x1793, "cfsr": 0x8200, "bfar": 0x7220504C}


# -- the clock fit -------------------------------------------------------------------------


def test_fit_recovers_rate_and_offset_exactly_without_noise():
    xs = list(range(0, 600_000, 1000))                    # 10 minutes of uptime, in ms
    ys = [T0 + round(x * 1000 / (1 + 100e-6)) for x in xs]   # device 100 ppm fast
    fit = fit_segment("d", 0, xs, ys)
    assert fit.drift_fitted
    assert fit.drift_ppm == pytest.approx(100, abs=0.01)
    assert abs(fit.wall_us(300_000) - (T0 + round(300_000_000 / (1 + 100e-6)))) <= 1
    assert fit.uncertainty_us(300_000) <= 2000


def test_fit_with_one_point_assumes_no_drift_and_widens_with_distance():
    fit = fit_segment("d", 1, [10], [T0])
    assert not fit.drift_fitted and fit.points == 1
    assert fit.wall_us(10) == T0
    near, far = fit.uncertainty_us(10), fit.uncertainty_us(60_010)
    assert near >= 20_000            # default latency scatter, nothing measured
    assert far - near == pytest.approx(200e-6 * 60_000_000, abs=2)   # ±200 ppm over 60 s


def test_fit_borrows_scatter_and_latency_excess():
    fit = fit_segment("d", 1, [10], [T0], fallback_sigma_us=2000, fallback_excess_us=3000)
    assert fit.wall_us(10) == T0 - 3000
    assert fit.uncertainty_us(10) < 10_000


def test_latency_spikes_are_left_out_of_the_fit():
    xs = list(range(0, 100_000, 1000))
    ys = [T0 + x * 1000 + (i % 5) * 500 for i, x in enumerate(xs)]
    ys[50] += 400_000                                       # one line stalled for 400 ms
    fit = fit_segment("d", 0, xs, ys)
    assert fit.dropped_points == 1
    assert fit.drift_ppm == pytest.approx(0, abs=20)
    assert any("later than the others" in w for w in fit.warnings)


def test_implausible_drift_is_reported():
    xs = list(range(0, 20_000, 500))
    ys = [T0 + round(x * 1000 * 1.02) for x in xs]          # 2 % off: not a crystal
    fit = fit_segment("d", 0, xs, ys)
    assert any("implausible" in w for w in fit.warnings)


def test_settling_keeps_print_order_and_places_untimed_lines():
    walls = [100, 90, None, 200, 260, 250]
    uncertainties = [5, 5, None, 5, 5, 5]
    strong = [True, False, False, True, False, True]
    settle_stream_order(walls, uncertainties, strong, 0, 1000)
    assert walls == [100, 100, 150, 200, 250, 250]
    assert uncertainties[2] == 1000          # floor of 1 ms; the gap was 100 µs
    lone, lone_u = [None], [None]
    settle_stream_order(lone, lone_u, [False], 0, 10_000_000)
    assert lone == [5_000_000] and lone_u == [5_000_000]


def test_placer_agrees_with_the_fit():
    xs = list(range(0, 60_000, 250))
    ys = [T0 + x * 1000 + (i * 7919) % 4000 for i, x in enumerate(xs)]
    for fit in (fit_segment("d", 0, xs, ys), fit_segment("d", 1, [10], [T0])):
        place = fit.placer()
        for uptime in (0, 10, 30_000, 90_000):
            assert place(uptime) == (fit.wall_us(uptime), fit.uncertainty_us(uptime))


# -- the fixture incident's bundles -----------------------------------------------------------


def test_fixture_boot_loop_is_read_as_boots_resets_and_crashes():
    cap = read_bundle(EVIDENCE / "node-1", evidence_name="evidence/node-1")
    assert cap.device == "node-1" and cap.target == "mps2-an385" and cap.status == "complete"
    kinds = [e.kind for e in cap.events if e.kind in ("boot", "reset", "crash")]
    assert kinds.count("crash") == 3 and kinds.count("boot") == 4
    crashes = [e for e in cap.events if e.kind == "crash"]
    for crash in crashes:
        c = crash.crash
        assert c.fault == "BusFault" and c.uptime_ms < 30 and c.complete
        assert c.register("cfsr") == 0x8200 and c.register("bfar") == 0x7220504C
        assert c.build_id == BUILD and c.firmware_version == "1.0.0"
        assert crash.time_basis == BASIS_UPTIME
        assert crash.evidence.startswith("evidence/node-1/serial/console.raw#bytes=")
    # the first two were confirmed by the crash record the next boot printed; the third
    # was followed by a power-on, which loses the record
    assert [c.crash.confirmed_at_next_boot for c in crashes] == [True, True, False]
    resets = [e.detail("reset_reason") for e in cap.events if e.kind == "reset"]
    assert resets == ["software", "fault", "fault", "power-on"]
    raw = (EVIDENCE / "node-1" / "serial" / "console.raw").read_bytes()
    offset, length = map(int, crashes[0].evidence.split("=")[1].split("+"))
    assert raw[offset:offset + length].startswith(b"*** CRASH BEGIN ***")
    assert raw[offset:offset + length].endswith(b"*** CRASH END ***\n")


def test_fixture_boots_carry_firmware_version_and_build_id():
    cap = read_bundle(EVIDENCE / "node-2")
    boots = [e for e in cap.events if e.kind == "boot"]
    assert [(b.detail("version"), b.detail("build_id")) for b in boots] == \
        [("1.0.1", "0f323e71a50eb772900fa694243578138ad0e127")] * 2
    warnings = [e for e in cap.events if e.kind == "log" and e.severity == "warning"]
    assert [w.message for w in warnings] == ["config: adc_channel=6 out of range, using 0"]
    assert {f.boot for f in cap.fits} == {0, 1, 2}


def test_fixture_evidence_regenerates_byte_for_byte(tmp_path):
    """The committed bundles are what fixtures/incident/make_evidence.py writes."""
    import runpy

    module = runpy.run_path(str(ROOT / "fixtures" / "incident" / "make_evidence.py"),
                            run_name="make_evidence")
    device, _ = module["node_1"]()
    write_bundle(tmp_path / "node-1", device, started_us=module["t"]("08:00:00"),
                 ended_us=module["t"]("10:00:00"))
    for name in ("serial/console.raw", "serial/lines.jsonl", "serial/crashes.jsonl"):
        assert (tmp_path / "node-1" / name).read_bytes() == (EVIDENCE / "node-1" / name
                                                             ).read_bytes(), name


# -- situations -------------------------------------------------------------------------------


def _loop_device() -> SynthDevice:
    d = SynthDevice("n", version="1.0.0", build_id=BUILD, seed=3)
    d.running_since(T0, 1_000)
    d.reports(T0, T0 + 5 * S, 500)
    boot = T0 + 6 * S
    for reset in ("software", "fault", "fault"):
        d.boot(boot, reset)
        boot = d.crash(boot + 10_000, "BusFault", CRASH) + 2_000
    d.boot(boot, "fault")
    d.reports(boot + 400_000, boot + 5 * S, 500)
    return d


def test_crash_record_from_a_boot_the_capture_missed_is_only_an_upper_bound(tmp_path):
    d = _loop_device()
    # The capture starts after the last crash log: only the next boot's
    # "previous crash:" line tells of it.
    last_crash_end = max(line.host_us for line in d.lines if line.text == "*** CRASH END ***")
    write_bundle(tmp_path / "b", d, started_us=last_crash_end + 1, ended_us=T0 + 20 * S)
    cap = read_bundle(tmp_path / "b")
    crashes = [e for e in cap.events if e.kind == "crash"]
    assert len(crashes) == 1
    crash = crashes[0]
    assert crash.crash.from_crash_record and crash.time_basis == BASIS_REPORTED
    assert crash.uncertainty_us is None
    assert crash.crash.register("cfsr") == 0x8200
    printed = [line.text for line in d.lines if line.text.startswith("uptime_ms:")]
    assert crash.crash.uptime_ms == int(printed[-1].split()[1])
    boot = next(e for e in cap.events if e.kind == "boot")
    assert crash.wall_us == boot.wall_us
    assert "crash record reported at the next boot" in crash.message


def test_crash_log_cut_off_by_the_end_of_the_capture_is_incomplete(tmp_path):
    d = _loop_device()
    first_end = min(line.host_us for line in d.lines if line.text.startswith("cfsr:"))
    write_bundle(tmp_path / "b", d, started_us=T0, ended_us=first_end - 1)
    crash = next(e for e in read_bundle(tmp_path / "b").events if e.kind == "crash")
    assert not crash.crash.complete and "[crash log incomplete]" in crash.message
    assert crash.crash.fault == "BusFault"


def test_version_reply_is_not_a_boot(tmp_path):
    d = SynthDevice("n", version="1.0.0", build_id=BUILD, seed=4)
    d.running_since(T0, 1_000)
    d.reports(T0, T0 + 3 * S, 500)
    d.reply(T0 + 3_100_000, f"crashcart sensor-node 1.0.0 build-id {BUILD}")
    d.reports(T0 + 3_200_000, T0 + 6 * S, 500)
    write_bundle(tmp_path / "b", d, started_us=T0, ended_us=T0 + 7 * S)
    cap = read_bundle(tmp_path / "b")
    assert not [e for e in cap.events if e.kind in ("boot", "reset")]
    assert len(cap.fits) == 1


def test_console_without_line_times_is_placed_between_capture_start_and_end(tmp_path):
    with BundleWriter(tmp_path / "b", target="mps2-an385") as bundle:
        bundle.write_file("serial/console.raw",
                          b"[     250 ms] node 1 ch0 avg=1 min=0 max=2\n"
                          b"[     500 ms] node 1 ch0 avg=1 min=0 max=2\n",
                          kind="serial-raw", source="serial")
    cap = read_bundle(tmp_path / "b")
    logs = [e for e in cap.events if e.kind == "log"]
    assert [e.time_basis for e in logs] == [BASIS_INTERPOLATED] * 2
    assert all(cap.started_us <= e.wall_us <= cap.ended_us for e in logs)
    assert any("lines.jsonl" in w for w in cap.warnings)


def test_host_clock_offset_moves_every_time(tmp_path):
    d = _loop_device()
    write_bundle(tmp_path / "b", d, started_us=T0, ended_us=T0 + 20 * S)
    plain = read_bundle(tmp_path / "b")
    shifted = read_bundle(tmp_path / "b", host_clock_offset_us=-250_000)
    for a, b in zip(plain.events, shifted.events):
        assert b.wall_us - a.wall_us == pytest.approx(-250_000, abs=1)


def test_decoder_hook_adds_facts_to_crashes(tmp_path):
    d = _loop_device()
    write_bundle(tmp_path / "b", d, started_us=T0, ended_us=T0 + 20 * S)
    seen = []

    def decoder(crash: CrashInfo, *, bundle: Path) -> DecodedFault | None:
        seen.append((crash.register("pc"), bundle))
        return DecodedFault("precise data BusFault reading 0x7220504c", function="adc_read",
                            file="src/adc.c", line=92,
                            backtrace=("adc_read", "sample_tick", "app_run", "main"))

    cap = read_bundle(tmp_path / "b", decoder=decoder)
    crashes = [e for e in cap.events if e.kind == "crash"]
    assert seen and all(pc == 0x1BC for pc, _ in seen)
    assert all(c.crash.decoded.location == "adc_read (src/adc.c:92)" for c in crashes)
    assert "in adc_read (src/adc.c:92)" in crashes[0].message


def test_bad_line_index_names_file_and_line(tmp_path):
    d = _loop_device()
    write_bundle(tmp_path / "b", d, started_us=T0, ended_us=T0 + 20 * S)
    index = tmp_path / "b" / "serial" / "lines.jsonl"
    lines = index.read_text().splitlines()
    lines[2] = json.dumps({"offset": 0, "length": 5, "wall": "yesterday"})
    index.write_text("\n".join(lines) + "\n")
    from crashcart.errors import InputError

    with pytest.raises(InputError) as info:
        read_bundle(tmp_path / "b")
    assert f"{index}:3:" in str(info.value)


def test_place_all_agrees_with_the_placer():
    xs = list(range(0, 60_000, 250))
    ys = [T0 + x * 1000 + (i * 7919) % 4000 for i, x in enumerate(xs)]
    uptimes = [0, None, 10, 30_000, None, 90_000, -5]
    for fit in (fit_segment("d", 0, xs, ys), fit_segment("d", 1, [10], [T0])):
        place = fit.placer()
        walls, uncertainties = fit.place_all(uptimes)
        assert [None if u is None else place(u) for u in uptimes] == [
            None if w is None else (w, e) for w, e in zip(walls, uncertainties)]


def _old_uptime_rule(text: str) -> int | None:
    """How a log line's uptime was read before the regular expression (the reference)."""
    if not text.startswith("["):
        return None
    end = text.find(" ms]", 1)
    if end < 0:
        return None
    digits = text[1:end].lstrip(" ")
    return int(digits) if digits.isdigit() and digits.isascii() else None


@pytest.mark.parametrize("line", [
    "[     250 ms] node 1", "[ ms] x", "[1 2 ms] y", "[12 ms]x", "[12 ms]", "[  13 ms]\r\n",
    "[14 ms] a\r\r\n", "[ 00015 ms] z", "[\u0661\u0662 ms] arabic digits", "[-3 ms] neg",
    "[99999999999 ms] big", "[5 ms]  two spaces", "x[5 ms] late", "[5 ms] a [6 ms] b", "[",
    "[5 ms", " [5 ms] lead", "[\t5 ms] tab", "[²3 ms] superscript", "[5 ms]\n"])
def test_uptime_stamp_reads_like_the_old_rule(line):
    from timeline.bundle_events import _STAMP

    text = line.rstrip("\r\n")
    m = _STAMP.match(line)
    assert (None if m is None else int(m[1])) == _old_uptime_rule(text)
    if m is not None:
        assert line[m.end():].rstrip("\r\n") == text[text.index(" ms]") + 5:]
