"""Replay benchmark (issue 7): verdict latency, throughput on 2 cores, determinism.

    .venv/bin/python bench/bench_replay.py [--latency-runs 20] [--runs 100] [--jobs 2] [--json]

1. Verdict latency: one scenario with 1 s of virtual time on mps2-an385
   (the default config on 1.0.1, runs to its time limit), run one at a time;
   median and p90 wall time from `run_scenario` call to verdict.
   Target: median under 0.5 s.  Reference, run in the same script: the bare
   QEMU command that executes the same ELF for the same instruction count
   (vclock plugin limit, no runner, no QMP, no console socket, no config
   placement); the ratio is what crashcart adds on top of QEMU itself.
2. Throughput: 100 scenario runs on 2 cores (`run_matrix`, jobs=2), a mix of
   the planted-bug scenarios on 1.0.0 and 1.0.1.  Target: under 30 s.
3. Determinism: the 100 runs give identical transcripts per (scenario, build)
   cell, and so do 20 console-stimulus runs.  Target: 100 of 100.

Prints a table (or JSON); exits non-zero if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay import vclock  # noqa: E402
from replay.runner import Cell, run_matrix, run_scenario, scenario_target  # noqa: E402
from replay.scenario import load_scenario, resolve_firmware  # noqa: E402

SCENARIOS = ROOT / "fixtures" / "scenarios"
ELF_DIR = ROOT / "fixtures" / "firmware" / "elf"
MIX = ["bad-adc-channel", "zero-averaging-window", "deep-cascade", "wide-filter",
       "trace-logging"]


def latency(runs: int) -> dict[str, float]:
    import dataclasses

    scenario = dataclasses.replace(load_scenario(SCENARIOS / "default-runs-clean.replay.yaml"),
                                   time_limit_ns=1_000_000_000)
    run_scenario(scenario)  # warm-up: plugin build, ELF parse
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        v = run_scenario(scenario)
        times.append(time.perf_counter() - t0)
        assert v.observation.exit_reason == "time-limit"
    times.sort()
    return {"runs": runs, "median_s": statistics.median(times),
            "p90_s": times[int(0.9 * (len(times) - 1))], "min_s": times[0],
            "virtual_s": 1.0}


def bare_qemu(runs: int) -> dict[str, float]:
    """The reference: ``qemu-system-arm`` alone, same ELF, same instructions (1 s virtual)."""
    scenario = load_scenario(SCENARIOS / "default-runs-clean.replay.yaml")
    qemu = scenario_target(scenario).simulator.qemu  # type: ignore[union-attr]
    limit = -(-1_000_000_000 // (1 << qemu.icount_shift))
    firmware = resolve_firmware(scenario, None, ())
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        cmd = [qemu.binary, "-M", qemu.machine, "-nodefaults", "-display", "none",
               "-net", "none", "-icount", f"shift={qemu.icount_shift},align=off,sleep=off",
               "-plugin", f"{vclock.plugin_path()},limit={limit},out={tmp}/vclock.txt",
               "-kernel", str(firmware)]
        if qemu.cpu:
            cmd += ["-cpu", qemu.cpu]
        cmd += ["-serial", "null"] * (qemu.uart + 1)
        for _ in range(runs + 1):               # the first is a warm-up
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, timeout=60)
            times.append(time.perf_counter() - t0)
            if done.returncode != vclock.LIMIT_EXIT_STATUS:
                raise SystemExit(f"bare QEMU reference: exit status {done.returncode}, "
                                 f"expected {vclock.LIMIT_EXIT_STATUS} (instruction limit): "
                                 f"{done.stderr.decode(errors='replace')[-500:]}")
    times = sorted(times[1:])
    return {"runs": runs, "median_s": statistics.median(times), "min_s": times[0]}


def throughput(runs: int, jobs: int) -> dict[str, object]:
    scenarios = [load_scenario(SCENARIOS / f"{name}.replay.yaml") for name in MIX]
    builds = [ELF_DIR / "sensor-node-1.0.0.elf", ELF_DIR / "sensor-node-1.0.1.elf"]
    base = [Cell(s, firmware=b) for s in scenarios for b in builds]
    cells = [base[i % len(base)] for i in range(runs)]
    t0 = time.perf_counter()
    results = run_matrix(cells, jobs=jobs)
    wall = time.perf_counter() - t0
    errors = [str(r.error) for r in results if r.error is not None]
    per_cell: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    virtual_ns = 0
    for r in results:
        if r.verdict is not None:
            key = (r.cell.scenario.name, str(r.cell.firmware))
            per_cell[key].add(r.verdict.observation.transcript)
            virtual_ns += r.verdict.observation.virtual_ns
    identical = sum(1 for r in results if r.verdict is not None
                    and len(per_cell[(r.cell.scenario.name, str(r.cell.firmware))]) == 1)
    return {"runs": runs, "jobs": jobs, "wall_s": wall, "errors": errors,
            "identical_transcripts": identical, "cells": len(per_cell),
            "virtual_s_total": virtual_ns / 1e9}


def stimulus_determinism(runs: int, jobs: int) -> dict[str, object]:
    scenario = load_scenario(SCENARIOS / "stimulus-console-command.replay.yaml")
    t0 = time.perf_counter()
    results = run_matrix([Cell(scenario)] * runs, jobs=jobs)
    wall = time.perf_counter() - t0
    transcripts = [r.verdict.observation.transcript for r in results if r.verdict is not None]
    return {"runs": runs, "distinct_transcripts": len(set(transcripts)),
            "met": sum(1 for r in results if r.ok), "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--stimulus-runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lat = latency(args.latency_runs)
    ref = bare_qemu(args.latency_runs)
    lat["reference_median_s"] = ref["median_s"]
    lat["ratio"] = lat["median_s"] / ref["median_s"]
    thr = throughput(args.runs, args.jobs)
    stim = stimulus_determinism(args.stimulus_runs, args.jobs)
    ok = (lat["median_s"] < 0.5 and thr["wall_s"] < 30 and not thr["errors"]
          and thr["identical_transcripts"] == args.runs and stim["distinct_transcripts"] == 1)
    if args.json:
        print(json.dumps({"latency": lat, "throughput": thr, "stimulus": stim, "ok": ok},
                         indent=2))
    else:
        print(f"verdict latency, 1 s virtual (mps2-an385): median {lat['median_s']:.3f} s, "
              f"p90 {lat['p90_s']:.3f} s, min {lat['min_s']:.3f} s over {lat['runs']} runs "
              f"(target median < 0.5 s)")
        print(f"  bare qemu-system-arm, same ELF and instruction count: median "
              f"{ref['median_s']:.3f} s (reference, same script); ratio {lat['ratio']:.2f}x")
        print(f"{thr['runs']} scenario runs on {thr['jobs']} jobs: {thr['wall_s']:.1f} s wall, "
              f"{thr['virtual_s_total']:.1f} s virtual, {len(thr['errors'])} errors "
              f"(target < 30 s)")
        print(f"determinism: {thr['identical_transcripts']}/{thr['runs']} runs with transcripts "
              f"identical within their (scenario, build) cell ({thr['cells']} cells); "
              f"console stimulus: {stim['distinct_transcripts']} distinct transcript(s) over "
              f"{stim['runs']} runs")
        print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
