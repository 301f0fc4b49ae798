"""Symbolizer: frames exactly as arm-none-eabi-addr2line -f -i prints them.

The reference is the real addr2line, run once per address (a fresh process,
what ``addr2line -f -i -e ELF ADDR`` prints), on the fixture firmware and on
small ELFs compiled here from C with static inline functions (DWARF 5 with
the assembler's line table, DWARF 4, and DWARF 5 with GCC's own line table),
with and without debug information and symbols.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.elf import ElfImage
from collector.symbolize import (
    AddressIndex,
    Frame,
    Symbolizer,
    cache_path,
    format_frames,
    parse_address,
    read_sections,
    read_symbols,
    symbolize_command,
    to_json,
)
from crashcart.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_ELF = ROOT / "fixtures" / "firmware" / "elf" / "sensor-node-1.0.0.elf"
GCC = shutil.which("arm-none-eabi-gcc") or "arm-none-eabi-gcc"
ADDR2LINE = shutil.which("arm-none-eabi-addr2line") or "arm-none-eabi-addr2line"
needs_toolchain = pytest.mark.skipif(not (shutil.which(GCC) and shutil.which(ADDR2LINE)),
                                     reason="needs arm-none-eabi-gcc and arm-none-eabi-addr2line")
pytestmark = [pytest.mark.toolchain, needs_toolchain]

HELPERS_H = """\
static inline int clamp(int v, int lo, int hi)
{
    if (v < lo)
        return lo;
    if (v > hi)
        return hi;
    return v;
}

static inline int scale(int v, int k)
{
    return clamp(v * k, -1000, 1000) + 1;
}
"""

MAIN_C = """\
#include "helpers.h"

volatile int sink[16];
int other(int x);

static inline int mix(int a, int b)
{
    int r = a ^ (b << 3);
    for (int i = 0; i < (b & 7); i++)
        r += scale(r, i);
    return r;
}

static inline void store(int i, int v)
{
    sink[i & 15] = mix(v, i);
}

__attribute__((noinline)) int work(int n)
{
    int acc = 0;
    for (int i = 0; i < n; i++) {
        store(i, acc);
        acc += scale(i, n) + mix(acc, i);
    }
    return acc;
}

int unused_function(int x)
{
    return scale(x, 7) * mix(x, 2);
}

const int table[4] = {1, 2, 3, 4};

void Reset_Handler(void)
{
    int v = 0;
    for (;;) {
        v += work(table[v & 3]) + other(v);
        sink[0] = v;
    }
}
"""

OTHER_C = """\
#include "helpers.h"

extern volatile int sink[16];

static inline int twice(int x)
{
    return scale(x, 2) + scale(x, 3);
}

__attribute__((noinline)) int other(int x)
{
    int r = 0;
    for (int i = 0; i < 4; i++)
        r += twice(x + i) * (sink[i] | 1);
    return r;
}

int discarded(int x)
{
    return twice(x) + 5;
}
"""

# name -> extra compiler flags.  GCC 12 with binutils 2.40 writes DWARF 5 .debug_info
# and lets the assembler write a version 3 .debug_line; -gno-as-loc-support makes
# GCC write a version 5 line table itself.
VARIANTS = {"dwarf5": ["-g"], "dwarf4": ["-gdwarf-4"],
            "dwarf5-gcc-lines": ["-gdwarf-5", "-gno-as-loc-support"]}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def local_elfs(tmp_path_factory) -> dict[str, Path]:
    """The small test program built per DWARF variant, plus debug-stripped and stripped copies."""
    src = tmp_path_factory.mktemp("symbolize-src")
    (src / "helpers.h").write_text(HELPERS_H)
    (src / "main.c").write_text(MAIN_C)
    (src / "other.c").write_text(OTHER_C)
    out = {}
    for name, flags in VARIANTS.items():
        elf = src / f"{name}.elf"
        subprocess.run([GCC, "-mcpu=cortex-m3", "-mthumb", "-O2", *flags, "-ffunction-sections",
                        "-fdata-sections", "-nostdlib", "-nostartfiles", "-Wl,--gc-sections",
                        "-Wl,-e,Reset_Handler", "-Wl,--build-id=sha1", "main.c", "other.c",
                        "-o", elf.name], cwd=src, check=True)
        out[name] = elf
    objcopy = shutil.which("arm-none-eabi-objcopy")
    assert objcopy is not None
    out["no-dwarf"] = src / "no-dwarf.elf"
    subprocess.run([objcopy, "--strip-debug", str(out["dwarf5"]), str(out["no-dwarf"])], check=True)
    out["stripped"] = src / "stripped.elf"
    subprocess.run([objcopy, "--strip-all", str(out["dwarf5"]), str(out["stripped"])], check=True)
    return out


def addr2line(elf: Path, addresses: list[int]) -> dict[int, str]:
    """What ``arm-none-eabi-addr2line -f -i -e ELF ADDR`` prints, one process per address."""

    def one(address: int) -> str:
        return subprocess.run([ADDR2LINE, "-f", "-i", "-e", str(elf), f"{address:#x}"],
                              capture_output=True, check=True).stdout.decode(
                                  "utf-8", "surrogateescape")

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(addresses, pool.map(one, addresses)))


def sample_addresses(elf: Path, seed: int, count: int = 2000) -> list[int]:
    """Every function entry (and its Thumb-bit twin), section edges, every address of
    small code sections, and random addresses up to ``count``: in the code, in the
    other allocated sections, around them and anywhere."""
    data = elf.read_bytes()
    sections = read_sections(data)
    rng = random.Random(seed)
    picked: set[int] = set(range(0x40))
    for sym in read_symbols(data, sections):
        if sym.kind == 2:  # STT_FUNC
            picked.update((sym.value, sym.value + 1))
    alloc = [s for s in sections if s.flags & 2 and s.size]
    for sec in alloc:
        picked.update((sec.address, sec.address + sec.size - 1, sec.address + sec.size))
        picked.update(rng.randrange(sec.address, sec.address + sec.size)
                      for _ in range(min(sec.size, 100)))
    code = [s for s in alloc if s.flags & 4]
    lo, hi = min(s.address for s in code), max(s.address + s.size for s in code)
    if hi - lo <= count:
        picked.update(range(lo, hi))
    else:
        picked.update(rng.randrange(lo, hi) for _ in range(count))
    around = (min(s.address for s in alloc) - 0x1000, max(s.address + s.size for s in alloc) + 0x1000)
    while len(picked) < count + 200:
        picked.add(rng.randrange(max(around[0], 0), min(around[1], 1 << 32)))
    picked.update(rng.randrange(0, 1 << 32) for _ in range(50))
    return sorted(picked)


def assert_same_as_addr2line(elf: Path, seed: int) -> Symbolizer:
    symbolizer = Symbolizer(ElfImage(elf), cache=False)
    addresses = sample_addresses(elf, seed)
    assert len(addresses) >= 2000
    expected = addr2line(elf, addresses)
    ours = dict(zip(addresses, symbolizer.lookup_many(addresses)))
    wrong = [a for a in addresses if format_frames(ours[a]) != expected[a]]
    details = "\n".join(f"{a:#x}:\n  ours: {format_frames(ours[a])!r}\n  addr2line: {expected[a]!r}"
                        for a in wrong[:5])
    assert not wrong, f"{len(wrong)} of {len(addresses)} addresses differ, e.g.\n{details}"
    # the batch text is the same as the per-address text
    assert symbolizer.addr2line_text(addresses) == "".join(expected[a] for a in addresses)
    return symbolizer


# -- the same answers as addr2line -----------------------------------------------------


@pytest.mark.skipif(not FIXTURE_ELF.exists(), reason="fixture firmware not built yet")
def test_fixture_firmware_matches_addr2line():
    symbolizer = assert_same_as_addr2line(FIXTURE_ELF, seed=100)
    assert symbolizer.warnings == ()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_local_elf_matches_addr2line(local_elfs, variant):
    assert_same_as_addr2line(local_elfs[variant], seed=len(variant))


def test_second_process_reads_half_the_units_with_the_same_result(local_elfs, monkeypatch):
    """Large ELFs are read by two processes; the answers must not change."""
    import collector.symbolize

    elf = local_elfs["dwarf5"]
    addresses = range(0x7F00, 0x8400)
    serial = Symbolizer(ElfImage(elf), cache=False).addr2line_text(addresses)
    monkeypatch.setattr(collector.symbolize, "PARALLEL_MIN", 0)
    assert Symbolizer(ElfImage(elf), cache=False).addr2line_text(addresses) == serial


def test_no_dwarf_gives_symbols_only_with_a_warning(local_elfs):
    symbolizer = assert_same_as_addr2line(local_elfs["no-dwarf"], seed=7)
    assert any("no DWARF" in w and "symbol table" in w for w in symbolizer.warnings)
    work = next(s for s in read_symbols(local_elfs["no-dwarf"].read_bytes(),
                                        read_sections(local_elfs["no-dwarf"].read_bytes()))
                if s.name == "work")
    frames = symbolizer.lookup(work.value + 2)
    assert [f.function for f in frames] == ["work"] and frames[0].line is None


def test_stripped_elf_prints_unknown_everywhere_with_a_warning(local_elfs):
    symbolizer = assert_same_as_addr2line(local_elfs["stripped"], seed=8)
    assert any("no symbol table" in w for w in symbolizer.warnings)


def test_inline_chain_innermost_first(local_elfs):
    elf = local_elfs["dwarf5"]
    symbolizer = Symbolizer(ElfImage(elf), cache=False)
    chains = [symbolizer.lookup(a) for a in range(0x8000, 0x8400, 2)]
    deep = max(chains, key=len)
    assert len(deep) >= 3
    assert [f.inlined for f in deep] == [True] * (len(deep) - 1) + [False]
    assert deep[-1].function in ("work", "other", "Reset_Handler")
    assert all(f.file and f.file.endswith((".c", ".h")) and f.line for f in deep)


def test_thumb_bit_is_used_as_given(local_elfs):
    """addr2line looks odd addresses up as they are (the instruction's own halfword)."""
    elf = local_elfs["dwarf5"]
    symbolizer = Symbolizer(ElfImage(elf), cache=False)
    work = next(s for s in read_symbols(elf.read_bytes(), read_sections(elf.read_bytes()))
                if s.name == "work")
    assert symbolizer.lookup(work.value + 1) == symbolizer.lookup(work.value)
    assert symbolizer.lookup(work.value)[0].function == "work"


# -- output shapes ---------------------------------------------------------------------------


def test_formats():
    frames = [Frame("inner", "a.c", 3, True, 2), Frame("outer", None, None, False)]
    assert format_frames(frames) == ("inner\na.c:3 (discriminator 2)\nouter\n??:?\n")
    assert format_frames([]) == "??\n??:0\n"
    assert to_json([0x108], [frames]) == [{"address": "0x00000108", "frames": [
        {"function": "inner", "file": "a.c", "line": 3, "inlined": True},
        {"function": "outer", "file": None, "line": None, "inlined": False}]}]


def test_parse_address():
    assert parse_address("0x1A2b") == 0x1A2B
    assert parse_address(" 1a2b\n") == 0x1A2B
    assert parse_address(b"FFFFFFFF") == 0xFFFFFFFF
    for bad in ("zz", "0x", "", "-1", "1_0", "0x1g", "100000000"):
        with pytest.raises(InputError) as info:
            parse_address(bad, source="<stdin>", line=4)
        assert info.value.line == 4 and info.value.value == bad.strip()


# -- the cache ----------------------------------------------------------------------------------


def test_second_run_uses_the_cache_and_not_dwarf(local_elfs, monkeypatch):
    elf = local_elfs["dwarf5"]
    first = Symbolizer(ElfImage(elf))
    expected = first.lookup_many(range(0x8000, 0x8200))
    assert cache_path(first.key).is_file()

    import collector.addrindex
    import collector.symbolize

    def no_parsing(*args, **kwargs):
        raise AssertionError("the DWARF was read again")

    monkeypatch.setattr(collector.symbolize, "build_index", no_parsing)
    monkeypatch.setattr(collector.addrindex.DwarfInfo, "from_elf", no_parsing)
    assert Symbolizer.from_path(elf).lookup_many(range(0x8000, 0x8200)) == expected


def test_warm_run_imports_neither_pyelftools_nor_the_builder(local_elfs):
    elf = local_elfs["dwarf4"]
    Symbolizer(ElfImage(elf)).lookup(0x8024)  # fills the cache
    code = ("import sys\nfrom collector.symbolize import Symbolizer\n"
            f"print(Symbolizer.from_path({str(elf)!r}).lookup(0x8024)[0].function)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('elftools', 'collector.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env=dict(os.environ)).stdout.splitlines()
    assert out == ["work", "['collector.symbolize']"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "foreign", "empty"])
def test_corrupt_or_foreign_cache_is_rebuilt(local_elfs, damage):
    elf, other = local_elfs["dwarf5"], local_elfs["dwarf4"]
    symbolizer = Symbolizer(ElfImage(elf))
    expected = symbolizer.lookup_many(range(0x8000, 0x8100, 2))
    path = cache_path(symbolizer.key)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00not an index" * 100)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "flipped":
        path.write_bytes(good[:40] + bytes([good[40] ^ 0xFF]) + good[41:])
    elif damage == "foreign":
        foreign = Symbolizer(ElfImage(other))
        foreign.lookup(0)
        path.write_bytes(cache_path(foreign.key).read_bytes())
    else:
        path.write_bytes(b"")
    assert AddressIndex.from_bytes(path.read_bytes(), symbolizer.key) is None
    assert Symbolizer.from_path(elf).lookup_many(range(0x8000, 0x8100, 2)) == expected
    assert path.read_bytes() == good  # rebuilt and written again


def test_unwritable_cache_dir_still_answers(local_elfs, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert Symbolizer.from_path(local_elfs["dwarf5"]).lookup(0x8024)[0].function == "work"
    assert "cannot write the address index cache" in caplog.text


# -- bad input -----------------------------------------------------------------------------------


def test_malformed_elfs_give_input_errors(local_elfs, tmp_path):
    good = local_elfs["dwarf5"].read_bytes()
    cases = {
        "garbage.elf": os.urandom(4096),
        "truncated.elf": good[:200],
        "headers-cut.elf": good[: len(good) - 100],  # section headers sit at the end
        "empty.elf": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as info:
            Symbolizer.from_path(tmp_path / name, cache=False).lookup(0x8024)
        assert name in str(info.value)
    with pytest.raises(InputError, match="not a 32-bit little-endian ARM ELF"):
        Symbolizer.from_path(sys.executable, cache=False).lookup(0)
    with pytest.raises(InputError, match="not found"):
        Symbolizer.from_path(tmp_path / "missing.elf")
    with pytest.raises(InputError, match="32-bit"):
        Symbolizer(ElfImage(local_elfs["dwarf5"]), cache=False).lookup(1 << 32)


def test_corrupt_dwarf_unit_is_left_out_with_a_warning(local_elfs, tmp_path):
    data = bytearray(local_elfs["dwarf5"].read_bytes())
    info = next(s for s in read_sections(bytes(data)) if s.name == ".debug_info")
    data[info.offset + 4: info.offset + 6] = b"\x09\x00"  # first unit: DWARF version 9
    bad = tmp_path / "bad-dwarf.elf"
    bad.write_bytes(bytes(data))
    symbolizer = Symbolizer(ElfImage(bad), cache=False)
    assert any("DWARF version 9" in w for w in symbolizer.warnings)
    assert symbolizer.lookup(0x8024)[0].function == "work"  # from the symbol table


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_corrupted_elf_never_crashes(local_elfs, data):
    """Random damage anywhere in a small ELF: an InputError or an index, nothing else."""
    original = local_elfs["dwarf5"].read_bytes()
    blob = bytearray(original)
    sections = read_sections(original)
    debug = [s for s in sections if s.name.startswith(".debug") and s.size]
    for _ in range(data.draw(st.integers(1, 40))):
        if data.draw(st.booleans()):  # mostly hit the DWARF, where the parsing is
            sec = data.draw(st.sampled_from(debug))
            at = sec.offset + data.draw(st.integers(0, sec.size - 1))
        else:
            at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.elf"
        path.write_bytes(bytes(blob))
        try:
            symbolizer = Symbolizer(ElfImage(path), cache=False)
            symbolizer.lookup_many([0, 0x8000, 0x8024, 0x8100, 0xFFFFFFFF])
            assert isinstance(symbolizer.addr2line_text(range(0x8000, 0x8040)), str)
        except InputError:
            pass


# -- the command -------------------------------------------------------------------------------


def test_command_arguments_stdin_and_json(local_elfs):
    elf = local_elfs["dwarf5"]
    expected = addr2line(elf, [0x8024, 0x8030])
    runner = CliRunner()
    result = runner.invoke(symbolize_command, ["--elf", str(elf), "8024", "0x8030"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected[0x8024] + expected[0x8030]
    result = runner.invoke(symbolize_command, ["--elf", str(elf)], input="0x8024\n\n8030\n")
    assert result.stdout == expected[0x8024] + expected[0x8030]
    result = runner.invoke(symbolize_command, ["--elf", str(elf), "--json", "--no-cache", "8024"])
    shown = json.loads(result.stdout)
    assert shown[0]["address"] == "0x00008024"
    assert shown[0]["frames"][-1] == {"function": "work", "file": shown[0]["frames"][-1]["file"],
                                      "line": shown[0]["frames"][-1]["line"], "inlined": False}


def test_command_names_a_bad_address_and_its_line(local_elfs):
    elf = local_elfs["dwarf5"]
    run = subprocess.run([sys.executable, "-m", "collector.symbolize", "--elf", str(elf)],
                         input="0x8024\nzz12\n", capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert run.returncode == 2
    assert "<stdin>:2" in run.stderr and "'zz12'" in run.stderr and run.stdout == ""
    result = CliRunner().invoke(symbolize_command, ["--elf", str(elf), "8024", "0x8g"])
    assert isinstance(result.exception, InputError)
    assert result.exception.value == "0x8g" and result.exception.line == 2


def test_command_on_a_non_elf_exits_2(tmp_path):
    bad = tmp_path / "firmware.bin"
    bad.write_bytes(b"\x00" * 64)
    run = subprocess.run([sys.executable, "-m", "collector.symbolize", "--elf", str(bad), "0"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 2 and "not an ELF file" in run.stderr
