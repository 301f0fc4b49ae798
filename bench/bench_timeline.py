"""Benchmark: 1,000,000 timeline events to Markdown and Timesketch JSONL.

    .venv/bin/python bench/bench_timeline.py [--events 1000000] [--devices 4] [--keep DIR]

Target (issue 6): at most 10 s and at most 1 GB peak memory on the project's
machine.

The inputs are what a large incident really holds: evidence bundles whose
serial consoles carry the bulk of the events (report lines stamped with
uptime, reboots, crash logs; written by ``timeline.synth`` in the fixture
firmware's format) and an external event file (CSV) with the rest.
Generating them is not measured.  The measurement runs in a fresh process
and covers everything from reading the inputs to the last byte written:

1. read every bundle (manifest, console, line index), fit the clocks,
   read the event file, sort (``timeline.builder.build_timeline``);
2. write the Markdown table of every event;
3. write the Timesketch JSONL of every event.

Peak memory is the measuring process's maximum resident set size.

Reference, in the same process and not counted in the total: the same
events written as JSONL the plain way, ``json.dumps(timesketch_record(e))``
per event (the stdlib encoder, as an importer-side script would); its bytes
must parse to the same objects as ours, and the ratio is our writer's time over its time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 10.0
TARGET_MB = 1024.0


def generate(out: Path, events: int, devices: int) -> dict[str, int]:
    """Write ``devices`` bundles and one CSV so that together they hold about ``events``."""
    from timeline.model import parse_iso_us
    from timeline.synth import SynthDevice, write_bundle

    t0 = parse_iso_us("2026-03-01T00:00:00+00:00")
    external = events // 25
    per_device = (events - external) // devices
    report_ms = 100
    span_us = per_device * report_ms * 1000
    build = "d0254c72b736b175b4354dd5e59b2707ee4e93dc"
    crash = {"pc": 0x1BC, "lr": 0x1793, "cfsr": 0x8200, "bfar": 0x7220504C}
    for n in range(devices):
        d = SynthDevice(f"node-{n + 1}", version="1.0.0", build_id=build,
                        drift_ppm=(n * 37) % 200 - 100, seed=n)
        d.running_since(t0, 1_000_000 * (n + 1))
        third = span_us // 3
        d.reports(t0 + 1000, t0 + third, report_ms, node_id=n + 1)
        d.reply(t0 + third + 10_000, "rebooting")
        d.boot(t0 + third + 200_000, "software")
        d.reports(t0 + third + 500_000, t0 + 2 * third, report_ms, node_id=n + 1)
        end = d.crash(t0 + 2 * third + 10_000, "BusFault", crash)
        d.boot(end + 2_000, "fault")
        d.reports(end + 300_000, t0 + span_us, report_ms, node_id=n + 1)
        write_bundle(out / f"node-{n + 1}", d, started_us=t0, ended_us=t0 + span_us + S)
        del d
    with open(out / "changes.csv", "w", encoding="utf-8") as f:
        f.write("time,kind,source,device,message,ref\n")
        step = span_us // external
        kinds = ("deploy", "config-push", "ci", "alert", "note")
        for i in range(external):
            when = t0 + i * step
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when // 1_000_000))
            kind = kinds[i % len(kinds)]
            f.write(f"{stamp}.{when % 1_000_000:06d}Z,{kind},pipeline-{i % 7},"
                    f"node-{i % devices + 1},\"{kind} #{i}, synthetic\",ref-{i}\n")
    return {"devices": devices, "device_lines": per_device * devices, "external": external}


S = 1_000_000


def measure(inputs: Path, out: Path) -> dict[str, float]:
    """Runs in its own process: build, then write Markdown and JSONL."""
    from timeline.builder import BundleSource, build_timeline
    from timeline.render import IsoFormatter, timesketch_record, write_jsonl, write_markdown

    start = time.perf_counter()
    cpu_start = time.process_time()
    bundles = [BundleSource(p) for p in sorted(inputs.glob("node-*"))]
    tl = build_timeline(bundles, [(inputs / "changes.csv", "changes.csv")])
    built = time.perf_counter()
    with open(out / "timeline.md", "w", encoding="utf-8") as f:
        write_markdown(tl.events, f)
    md_done = time.perf_counter()
    with open(out / "timeline.jsonl", "w", encoding="utf-8") as f:
        write_jsonl(tl.events, f)
    done = time.perf_counter()
    cpu_s = time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ref_start = time.perf_counter()
    fmt = IsoFormatter()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    with open(out / "reference.jsonl", "w", encoding="utf-8") as f:
        for event in tl.events:
            f.write(dumps(timesketch_record(event, fmt)))
            f.write("\n")
    reference_s = time.perf_counter() - ref_start
    # Same objects line for line (our writer orders some keys differently; see
    # docs/timeline: the order is pinned for importers, the content is the contract).
    with open(out / "timeline.jsonl", encoding="utf-8") as ours, \
            open(out / "reference.jsonl", encoding="utf-8") as theirs:
        same = all(a == b or json.loads(a) == json.loads(b)
                   for a, b in itertools.zip_longest(ours, theirs, fillvalue="null"))
    (out / "reference.jsonl").unlink()
    return {"events": len(tl.events), "build_s": built - start, "markdown_s": md_done - built,
            "jsonl_s": done - md_done, "total_s": done - start, "cpu_s": cpu_s,
            "peak_mb": peak_mb, "reference_jsonl_s": reference_s, "reference_same": same,
            "markdown_mb": (out / "timeline.md").stat().st_size / 1e6,
            "jsonl_mb": (out / "timeline.jsonl").stat().st_size / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this directory")
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("INPUTS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp:
        work = args.keep or Path(tmp)
        inputs, out = work / "inputs", work / "out"
        inputs.mkdir(parents=True, exist_ok=False)
        out.mkdir()
        started = time.perf_counter()
        sizes = generate(inputs, args.events, args.devices)
        print(f"generated {sizes} in {time.perf_counter() - started:.1f} s (not measured)",
              file=sys.stderr)
        proc = subprocess.run([sys.executable, __file__, "--measure", str(inputs), str(out)],
                              capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout)
    render_s = result["markdown_s"] + result["jsonl_s"]
    ok = (result["total_s"] <= TARGET_S and result["peak_mb"] <= TARGET_MB
          and result["reference_same"])
    print(f"{result['events']:,} events from {args.devices} bundles and 1 CSV "
          f"(Python {sys.version.split()[0]})")
    print(f"  read, align clocks, sort : {result['build_s']:6.2f} s")
    print(f"  Markdown table           : {result['markdown_s']:6.2f} s "
          f"({result['markdown_mb']:.0f} MB)")
    print(f"  Timesketch JSONL         : {result['jsonl_s']:6.2f} s ({result['jsonl_mb']:.0f} MB)")
    print(f"  json.dumps per event     : {result['reference_jsonl_s']:6.2f} s  (reference, same "
          f"process; ratio {result['jsonl_s'] / result['reference_jsonl_s']:.2f}x, output "
          f"{'identical' if result['reference_same'] else 'DIFFERENT'})")
    print(f"  events to Markdown+JSONL : {render_s:6.2f} s  (rendering only)")
    print(f"  total, files to files    : {result['total_s']:6.2f} s  "
          f"(target <= {TARGET_S:.0f} s; CPU time {result['cpu_s']:.2f} s)")
    print(f"  peak memory (max RSS)    : {result['peak_mb']:6.0f} MB "
          f"(target <= {TARGET_MB:.0f} MB)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
