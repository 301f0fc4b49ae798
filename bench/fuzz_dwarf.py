"""Fuzz the ELF and DWARF entry points with damaged ELF files for N minutes.

    .venv/bin/python bench/fuzz_dwarf.py [--minutes 10] [--seed 1] [--elf ELF ...]

Where ``bench/fuzz_elf.py`` exercises the address index, this one exercises
everything else that reads an ELF: :class:`~collector.elf.ElfImage` (open,
symbols, build ID, segments, reads, ``variable_type``), the type model of
:mod:`collector.dwarf_types` (``find_global_type``, ``find_global``,
``decode``, ``encode``), :mod:`collector.variables` (``read_variable`` and its
rendering and JSON) and :mod:`collector.buildid`.  The damage is
``fuzz_elf.mutate`` (bit flips and overwritten bytes mostly in the DWARF
sections, spliced runs, truncation) plus whole-file cases: no section
headers, another machine, big-endian, 64-bit, stripped of every
``.debug_*`` section, garbage.

The only acceptable outcomes are answers (possibly with fields marked not
captured) or an :class:`~crashcart.errors.InputError`.  Anything else,
including an input that runs longer than ``--hang-seconds``, is a finding, saved to ``bench/out/fuzz-findings/dwarf-*`` with its traceback;
the exit status is 1 if there was any.  ``tests/test_fuzz_elf.py`` runs a
short version of the same checks through hypothesis.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fuzz_elf import mutate

from collector.buildid import check_build_id
from collector.dwarf_types import decode, encode, find_global, find_global_type
from collector.elf import ElfImage
from collector.evidence import MemoryImage
from collector.variables import read_variable
from crashcart.errors import InputError

FINDINGS = ROOT / "bench" / "out" / "fuzz-findings"
DEFAULT_ELFS = [ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.0.elf",
                ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.1.elf"]


def global_names(path: Path) -> list[str]:
    """Names of the global variables in a valid ELF (what the fuzzer asks for)."""
    image = ElfImage(path)
    names = []
    for cu in image.elf.get_dwarf_info().iter_CUs():
        for die in cu.get_top_DIE().iter_children():
            if die.tag == "DW_TAG_variable" and "DW_AT_name" in die.attributes:
                names.append(die.attributes["DW_AT_name"].value.decode())
    return sorted(set(names))


def damage(original: bytes, rng: random.Random) -> bytes:
    """``fuzz_elf.mutate`` most of the time, whole-file damage otherwise."""
    roll = rng.random()
    blob = bytearray(original)
    if roll < 0.85:
        return mutate(original, rng)
    if roll < 0.88:    # e_machine: x86-64 / RISC-V / AArch64
        blob[18:20] = rng.choice((62, 243, 183)).to_bytes(2, "little")
    elif roll < 0.90:  # EI_DATA big-endian, EI_CLASS 64-bit
        blob[rng.choice((4, 5))] = 2
    elif roll < 0.93:  # e_shoff / e_shnum / e_shstrndx nonsense
        at = rng.choice((32, 48, 50))
        blob[at:at + 2] = rng.choice((b"\0\0", b"\xff\xff", bytes([rng.randrange(256)]) * 2))
    elif roll < 0.96:  # garbage after a valid ident
        blob = blob[:16] + bytearray(rng.randbytes(rng.randrange(0, 4096)))
    else:              # stripped: every .debug_* section renamed away
        at = original.find(b".debug_")
        while at != -1:
            blob[at + 1:at + 7] = b"xxxxxx"
            at = original.find(b".debug_", at + 1)
    return bytes(blob)


def check(path: Path, names: list[str], ram: bytes, rng: random.Random) -> int:
    """Open and query; raises only on findings.  Returns the number of calls that answered."""
    answered = 0
    try:
        image = ElfImage(path)
    except InputError:
        return 0
    for step in (lambda: image.symbols, lambda: image.build_id, lambda: image.load_segments,
                 lambda: image.read(0xC0, 64), lambda: image.has_dwarf):
        try:
            step()
            answered += 1
        except InputError:
            pass
    memory = MemoryImage(elf=image)
    memory.add(0x20000000, ram, "ram")
    asked = rng.sample(names, min(len(names), 4)) + [rng.choice(("", "x", "nope", "\0"))]
    for name in asked:
        try:
            dtype = image.variable_type(name)
            data = bytes(ram[: max(0, min(dtype.size, len(ram)))])
            if len(data) == dtype.size:
                decode(dtype, data)
            try:
                encode(dtype, {} if hasattr(dtype, "members") else 0)
            except InputError:
                pass
            answered += 1
        except InputError:
            pass
        try:
            find_global(image, name)
            find_global_type(image, name)
            value = read_variable(image, memory, name)
            json.dumps(value.to_json())
            _ = value.text
            answered += 1
        except InputError:
            pass
    try:
        check_build_id(image, device_id=rng.choice(("d0254c72", "0f323e71a50eb772", "zz", "")),
                       source="fuzz")
        answered += 1
    except InputError:
        pass
    return answered


class Hang(Exception):
    """An input took longer than --hang-seconds (an endless loop on damaged input)."""


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang("input took longer than the hang limit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang-seconds", type=int, default=30,
                        help="an input running longer than this is a finding (default 30)")
    parser.add_argument("--elf", type=Path, action="append",
                        help="a valid ELF to damage (repeatable; default: the fixture firmware)")
    args = parser.parse_args()
    logging.getLogger("collector").setLevel(logging.ERROR)
    elfs = args.elf or [p for p in DEFAULT_ELFS if p.exists()]
    if not elfs:
        raise SystemExit("no ELF to fuzz: build the fixture firmware or pass --elf")
    originals = [(p.read_bytes(), global_names(p)) for p in elfs]
    rng = random.Random(args.seed)
    signal.signal(signal.SIGALRM, _on_alarm)
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    runs = findings = answered = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-dwarf-") as tmp:
        path = Path(tmp) / "fuzzed.elf"
        while time.monotonic() < deadline:
            original, names = rng.choice(originals)
            data = damage(original, rng)
            path.write_bytes(data)
            ram = rng.randbytes(0x4000) if rng.random() < 0.7 else bytes(0x4000)
            runs += 1
            signal.alarm(args.hang_seconds)
            try:
                answered += check(path, names, ram, rng)
                signal.alarm(0)
            except Exception:  # noqa: BLE001 - every other exception is what we look for
                signal.alarm(0)
                findings += 1
                FINDINGS.mkdir(parents=True, exist_ok=True)
                name = f"dwarf-{args.seed}-{runs}"
                (FINDINGS / f"{name}.elf").write_bytes(data)
                (FINDINGS / f"{name}.txt").write_text(traceback.format_exc())
                print(f"finding {findings}: {FINDINGS / name}.elf\n{traceback.format_exc()}",
                      file=sys.stderr)
            if runs % 200 == 0:
                print(f"{runs} inputs, {answered} answers, {findings} findings",
                      file=sys.stderr, flush=True)
    minutes = (time.monotonic() - start) / 60
    print(f"{runs} damaged ELFs in {minutes:.1f} minutes: {answered} answers, "
          f"{findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
