"""Fuzz the address index builder with damaged ELF files for N minutes.

    .venv/bin/python bench/fuzz_elf.py [--minutes 10] [--seed 1] [--elf ELF ...]

Takes valid ELFs (by default the fixture firmware and bench/out/large.elf if
they exist, otherwise the ELF given with --elf), damages copies of them the
ways files really get damaged and the ways parsers are attacked (flipped
bytes in the DWARF sections, overwritten header fields, truncation, bytes
spliced in from another place), and builds a symbolizer for each.  The only
acceptable outcomes are an index (with or without warnings) or an
:class:`~crashcart.errors.InputError`.  Anything else is a finding: the input
is saved to ``bench/out/fuzz-findings/`` with the traceback next to it and the
run carries on.  The exit status is 1 if there was any finding.

The test suite runs a short version of the same idea with hypothesis
(``tests/test_symbolize.py::test_fuzz_corrupted_elf_never_crashes``).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.elf import ElfImage
from collector.symbolize import Symbolizer, read_sections
from crashcart.errors import InputError

FINDINGS = ROOT / "bench" / "out" / "fuzz-findings"
DEFAULT_ELFS = [ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.0.elf",
                ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.1.elf"]


def mutate(original: bytes, rng: random.Random) -> bytes:
    """One damaged copy of ``original``."""
    blob = bytearray(original)
    try:
        sections = [s for s in read_sections(original) if s.size and s.kind != 8]
    except InputError:
        sections = []
    debug = [s for s in sections if s.name.startswith(".debug")] or sections
    for _ in range(rng.choice((1, 2, 4, 16, 64))):
        kind = rng.random()
        if debug and kind < 0.6:  # inside a DWARF section, where the parsing is
            sec = rng.choice(debug)
            at = sec.offset + rng.randrange(sec.size)
        else:
            at = rng.randrange(len(blob))
        if kind < 0.75:
            blob[at] ^= 1 << rng.randrange(8)
        elif kind < 0.9:
            width = rng.choice((1, 2, 4))
            value = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
            blob[at:at + width] = bytes([value]) * width
        else:  # splice a run of bytes from elsewhere in the file
            src = rng.randrange(len(blob))
            length = rng.randrange(1, 64)
            blob[at:at + length] = original[src:src + length]
    if rng.random() < 0.1:
        blob = blob[: rng.randrange(len(blob) + 1)]
    return bytes(blob)


def check(path: Path) -> None:
    """Build and query; raises only on findings."""
    try:
        symbolizer = Symbolizer(ElfImage(path), cache=False)
        symbolizer.lookup_many([0, 1, 0x100, 0x8000, 0x08000000, 0x20000000, 0xFFFFFFFF])
        symbolizer.addr2line_text(range(0x100, 0x400, 3))
        _ = symbolizer.warnings
    except InputError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--elf", type=Path, action="append",
                        help="a valid ELF to damage (repeatable; default: the fixture firmware)")
    args = parser.parse_args()
    logging.getLogger("collector").setLevel(logging.ERROR)
    elfs = args.elf or [p for p in DEFAULT_ELFS if p.exists()]
    if not elfs:
        raise SystemExit("no ELF to fuzz: build the fixture firmware or pass --elf")
    originals = [p.read_bytes() for p in elfs]
    rng = random.Random(args.seed)
    deadline = time.monotonic() + 60 * args.minutes
    runs = findings = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-elf-") as tmp:
        path = Path(tmp) / "fuzzed.elf"
        while time.monotonic() < deadline:
            data = mutate(rng.choice(originals), rng)
            path.write_bytes(data)
            runs += 1
            try:
                check(path)
            except Exception:  # noqa: BLE001 - every other exception is what we look for
                findings += 1
                FINDINGS.mkdir(parents=True, exist_ok=True)
                name = f"finding-{args.seed}-{runs}"
                (FINDINGS / f"{name}.elf").write_bytes(data)
                (FINDINGS / f"{name}.txt").write_text(traceback.format_exc())
                print(f"finding {findings}: {FINDINGS / name}.elf\n{traceback.format_exc()}",
                      file=sys.stderr)
            if runs % 100 == 0:
                print(f"{runs} inputs, {findings} findings", file=sys.stderr)
    print(f"{runs} damaged ELFs in {args.minutes:g} minutes: {findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
