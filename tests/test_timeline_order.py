"""Known truth: two devices with different uptimes, reboots and injected drift come out in order.

The consoles are printed by timeline.synth against a true clock (each device's
uptime runs fast or slow by its drift, lines queue on a 115200 baud UART, the
host stamps them with a random receive latency); the test then reads the
bundles back and compares the timeline with what really happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from timeline.builder import BundleSource, build_timeline
from timeline.model import BASIS_UPTIME, Event, parse_iso_us
from timeline.synth import SynthDevice, write_bundle

T0 = parse_iso_us("2026-01-05T12:00:00+00:00")
S = 1_000_000
BUILD_A = "d0254c72b736b175b4354dd5e59b2707ee4e93dc"
BUILD_B = "0f323e71a50eb772900fa694243578138ad0e127"
CRASH = {"pc": 0x1BC, "lr": 0x1793, "cfsr": 0x8200, "bfar": 0x7220504C, "r0": 0x7220504C}


def scenario(drift_a: float, drift_b: float, seed: int = 0) -> tuple[SynthDevice, SynthDevice]:
    """Events of the two devices interleave 20-50 ms apart around two reboots and a crash."""
    a = SynthDevice("alpha", version="1.0.0", build_id=BUILD_A, drift_ppm=drift_a,
                    latency_us=(1_000, 8_000), seed=seed + 1)
    b = SynthDevice("bravo", version="1.0.1", build_id=BUILD_B, drift_ppm=drift_b,
                    latency_us=(2_000, 15_000), seed=seed + 2)
    a.running_since(T0 - 300 * S, 7_654_321)        # up for two hours
    b.running_since(T0 - 300 * S, 123_456)          # up for two minutes
    # alpha, in time order (a console is printed in order)
    a.reports(T0 - 290 * S, T0 + 12 * S, 1000, node_id=1)
    a.log(T0 + 12_300_000, "alarm: ch0 avg=3101 above threshold 3000", truth="alpha alarm")
    a.reports(T0 + 13 * S, T0 + 20 * S, 1000, node_id=1)
    a.reply(T0 + 20_000_000, "rebooting")
    a.boot(T0 + 20_200_000, "software", truth="alpha reboot")
    a.reports(T0 + 20_500_000, T0 + 31 * S, 500, node_id=1)
    end = a.crash(T0 + 31_010_000, "BusFault", CRASH, truth="alpha crash")
    a.boot(end + 2_000, "fault", truth="alpha fault reset")
    a.reports(end + 300_000, T0 + 60 * S, 500, node_id=1)
    a.log(T0 + 60_000_000, "alarm: ch0 avg=3404 above threshold 3000", truth="alpha alarm 2")
    a.reports(T0 + 60_400_000, T0 + 90 * S, 500, node_id=1)
    # bravo
    b.reports(T0 - 290 * S + 350_000, T0 + 12_300_000, 700, node_id=2)
    b.log(T0 + 12_340_000, "alarm: ch0 avg=3202 above threshold 3000", truth="bravo alarm")
    b.reports(T0 + 12_400_000, T0 + 25 * S, 700, node_id=2)
    b.boot(T0 + 25 * S, "watchdog", truth="bravo reset")
    b.reports(T0 + 25_300_000, T0 + 31_050_000, 700, node_id=2)
    b.log(T0 + 31_110_000, "alarm: ch0 avg=3303 above threshold 3000", truth="bravo alarm 2")
    b.reports(T0 + 31_200_000, T0 + 60 * S, 700, node_id=2)
    b.log(T0 + 60_030_000, "alarm: ch0 avg=3505 above threshold 3000", truth="bravo alarm 3")
    b.reports(T0 + 60_100_000, T0 + 90 * S, 700, node_id=2)
    return a, b


def find(events: list[Event], label: str) -> Event:
    device, what = label.split(" ", 1)
    mine = [e for e in events if e.device == device]
    if what.startswith("alarm"):
        number = {"alarm": 0, "alarm 2": 1, "alarm 3": 2}[what]
        return [e for e in mine if e.message.startswith("alarm:")][number]
    if what == "crash":
        return next(e for e in mine if e.kind == "crash" and not e.crash.from_crash_record)
    boots = [e for e in mine if e.kind == "reset"]
    return boots[0] if what in ("reboot", "reset") else boots[1]


def read_back(tmp_path: Path, a: SynthDevice, b: SynthDevice,
              external: str | None = None) -> list[Event]:
    for device in (a, b):
        write_bundle(tmp_path / device.name, device, started_us=T0 - 280 * S,
                     ended_us=T0 + 85 * S)
    files = []
    if external is not None:
        (tmp_path / "changes.csv").write_text(external)
        files.append((tmp_path / "changes.csv", "changes.csv"))
    tl = build_timeline([BundleSource(tmp_path / "alpha"), BundleSource(tmp_path / "bravo")],
                        files)
    return list(tl.events), tl


@pytest.mark.parametrize("drift_a, drift_b", [(0.0, 0.0), (350.0, -420.0), (-2500.0, 1800.0)])
def test_two_devices_come_out_in_true_order(tmp_path, drift_a, drift_b):
    a, b = scenario(drift_a, drift_b)
    external = ("time,kind,message,source\n"
                "2026-01-05T12:00:12.320Z,config-push,config v7 pushed,config-service\n"
                "2026-01-05T12:00:20.100Z,deploy,firmware 1.0.1 to alpha,deploy-pipeline\n")
    events, _ = read_back(tmp_path, a, b, external)
    truth = sorted(a.truth + b.truth)
    truth += [(T0 + 12_320_000, "config-push"), (T0 + 20_100_000, "deploy")]
    truth.sort()
    placed = {}
    for _, label in truth:
        if label in ("config-push", "deploy"):
            placed[label] = next(e for e in events if e.kind == label)
        else:
            placed[label] = find(events, label)
    order = sorted(placed, key=lambda label: placed[label].wall_us)
    assert order == [label for _, label in truth]
    # Every estimate is within its stated uncertainty of the truth (plus the link's
    # minimum latency and the 1 ms resolution of uptime stamps, which no fit can remove).
    for true_us, label in truth:
        e = placed[label]
        slack = 3_000 if e.device == "bravo" else 2_000
        assert abs(e.wall_us - true_us) <= e.uncertainty_us + slack, (label, e)


def test_drift_is_estimated_per_boot(tmp_path):
    a, b = scenario(350.0, -420.0)
    _, tl = read_back(tmp_path, a, b)
    fits = {(f.device, f.boot): f for f in tl.fits}
    # boot 0: running before the capture; 1: after the planned reboot; 2: after the crash
    assert set(fits) >= {("alpha", 0), ("alpha", 1), ("alpha", 2), ("bravo", 0), ("bravo", 1)}
    assert fits[("alpha", 0)].drift_ppm == pytest.approx(350, abs=60)
    assert fits[("bravo", 0)].drift_ppm == pytest.approx(-420, abs=120)
    assert fits[("alpha", 2)].drift_ppm == pytest.approx(350, abs=120)
    assert all(f.drift_fitted for key, f in fits.items() if f.points >= 20)


def test_ignoring_drift_would_misplace_events(tmp_path):
    """Guard for the test itself: with this much drift, a fit pinned at the first point fails."""
    a, b = scenario(2500.0, -2500.0)
    events, tl = read_back(tmp_path, a, b)
    alpha0 = next(f for f in tl.fits if f.device == "alpha" and f.boot == 0)
    # 290 s at 2500 ppm is 725 ms of drift: far more than the 40 ms between the alarms.
    assert abs(alpha0.drift_ppm - 2500) < 100
    alarm = find(events, "alpha alarm")
    assert alarm.time_basis == BASIS_UPTIME
    assert alarm.uncertainty_us < 20_000


def test_uptime_going_backwards_without_banner_is_an_inferred_reset(tmp_path):
    a = SynthDevice("alpha", version="1.0.0", build_id=BUILD_A, seed=5)
    a.running_since(T0, 50_000)
    a.reports(T0 + S, T0 + 10 * S, 1000)
    a.running_since(T0 + 10_500_000, 3)       # a reset whose banner was lost
    a.reports(T0 + 11 * S, T0 + 20 * S, 1000)
    write_bundle(tmp_path / "alpha", a, started_us=T0, ended_us=T0 + 21 * S)
    tl = build_timeline([BundleSource(tmp_path / "alpha")])
    resets = [e for e in tl.events if e.kind == "reset"]
    assert len(resets) == 1 and "inferred" in resets[0].message
    assert resets[0].severity == "warning"
    assert {f.boot for f in tl.fits} == {0, 1}
    logs = [e for e in tl.events if e.kind == "log"]
    assert [e.wall_us for e in logs] == sorted(e.wall_us for e in logs)


def test_events_from_columns_builds_the_same_events():
    from timeline.model import Event, events_from_columns

    rows = [Event(1, 2, "external", "s", None, "note", "info", "m"),
            Event(3, None, "uptime-aligned", "console", "d", "log", "warning", "n", "e#1", 5, 0,
                  (("k", "v"),))]
    built = events_from_columns(*zip(*rows))
    assert built == rows and all(type(e) is Event for e in built)
    assert built[1].details == (("k", "v"),) and built[0].crash is None
    with pytest.raises(TypeError):
        events_from_columns([1], [2])
