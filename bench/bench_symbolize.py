"""Benchmark: crashcart symbolize vs arm-none-eabi-addr2line on 100,000 addresses.

    .venv/bin/python bench/bench_symbolize.py [--addresses 100000] [--runs 3] [--elf ELF]

Builds ``bench/out/large.elf`` first if it is missing (``bench/gen_large_elf.py``,
about a minute).  Then times, as whole processes from start to exit and with
the addresses on stdin (one per line, output to a file):

* ``arm-none-eabi-addr2line -f -i -e ELF``;
* ``python -m collector.symbolize --elf ELF`` *cold*: the address index cache
  is cleared first, so the run reads the DWARF and writes the cache;
* the same *warm*: the cache is there, so the run only loads it.

Each is run ``--runs`` times; the best wall time counts (the least disturbed
run).  Peak memory is the largest maximum resident set size of that kind of
child process (``resource.getrusage(RUSAGE_CHILDREN)`` after each run, which
is the largest child so far; the runs go in the order addr2line, cold, warm
so every figure belongs to its own kind or a smaller one before it).  The
outputs are compared byte for byte with addr2line's.

Targets (issue): warm at most 1.0x addr2line's wall time, cold at most 10x.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_large_elf import ELF, build

PYTHON = ROOT / ".venv" / "bin" / "python"
WARM_TARGET = 1.0
COLD_TARGET = 10.0


def text_range(elf: Path) -> tuple[int, int]:
    """[start, end) of .text, read with the project's own section reader."""
    from collector.symbolize import read_sections

    for sec in read_sections(elf.read_bytes()):
        if sec.name == ".text":
            return sec.address, sec.address + sec.size
    raise SystemExit(f"{elf}: no .text section")


def run(cmd: list[str], stdin: Path, stdout: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds of one child process, and the children's peak RSS so far (KiB)."""
    with stdin.open("rb") as fin, stdout.open("wb") as fout:
        t0 = time.perf_counter()
        subprocess.run(cmd, stdin=fin, stdout=fout, env=env, check=True)
        elapsed = time.perf_counter() - t0
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--elf", type=Path, default=ELF)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    elf = build() if args.elf == ELF else args.elf
    addr2line = shutil.which("arm-none-eabi-addr2line")
    if addr2line is None:
        raise SystemExit("arm-none-eabi-addr2line not found (apt-get install binutils-arm-none-eabi)")
    lo, hi = text_range(elf)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-symbolize-") as tmp_dir:
        tmp = Path(tmp_dir)
        addresses = tmp / "addresses.txt"
        addresses.write_text("".join(f"0x{rng.randrange(lo, hi):x}\n"
                                     for _ in range(args.addresses)))
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
        crashcart = [str(PYTHON), "-m", "collector.symbolize", "--elf", str(elf)]
        results: dict[str, tuple[float, int]] = {}
        for kind, cmd in (("addr2line", [addr2line, "-f", "-i", "-e", str(elf)]),
                          ("cold", crashcart), ("warm", crashcart)):
            best = float("inf")
            peak = 0
            for _ in range(args.runs):
                if kind == "cold":
                    shutil.rmtree(tmp / "cache", ignore_errors=True)
                seconds, peak = run(cmd, addresses, tmp / f"{kind}.out", env)
                best = min(best, seconds)
            results[kind] = (best, peak)
        reference = (tmp / "addr2line.out").read_bytes()
        same = {kind: (tmp / f"{kind}.out").read_bytes() == reference for kind in ("cold", "warm")}
        cache_files = list((tmp / "cache").rglob("*.idx"))
        cache_size = sum(f.stat().st_size for f in cache_files)

    base = results["addr2line"][0]
    print(f"ELF: {elf} ({elf.stat().st_size / 1e6:.1f} MB), {args.addresses} addresses in .text, "
          f"best of {args.runs} runs, whole processes")
    print(f"{'':10} {'wall s':>8} {'ratio':>7} {'target':>7} {'peak RSS MB':>12} {'output':>10}")
    ok = True
    for kind in ("addr2line", "cold", "warm"):
        seconds, peak_kib = results[kind]
        ratio = seconds / base
        target = {"cold": COLD_TARGET, "warm": WARM_TARGET}.get(kind)
        verdict = "" if kind == "addr2line" else ("same" if same[kind] else "DIFFERS")
        print(f"{kind:10} {seconds:8.3f} {ratio:6.2f}x {'' if target is None else f'{target:.1f}x':>7} "
              f"{peak_kib / 1024:12.0f} {verdict:>10}")
        if target is not None and (ratio > target or not same[kind]):
            ok = False
    print(f"cache file: {cache_size / 1e6:.1f} MB")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
