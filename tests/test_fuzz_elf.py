"""Malformed ELFs: clear errors or symbols-only answers, never a traceback.

The named cases (truncated, no DWARF, stripped, another architecture,
garbage) have fixed expectations; a short hypothesis run then damages the
fixture firmware at random and drives every ELF/DWARF entry point through
``bench/fuzz_dwarf.py``'s ``check`` (the 10-minute run is in bench/README.md).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.buildid import check_build_id
from collector.dwarf_types import find_global
from collector.elf import ElfImage
from collector.evidence import MemoryImage
from collector.variables import read_variable
from crashcart.errors import InputError

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from fuzz_dwarf import check, damage, global_names

ID_100 = "d0254c72b736b175b4354dd5e59b2707ee4e93dc"
OBJCOPY = shutil.which("arm-none-eabi-objcopy")


@pytest.fixture(scope="module")
def names(elf_100) -> list[str]:
    return global_names(elf_100)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("length", [0, 3, 4, 20, 52, 0x1000, 0x4100, 0x10000, -1])
def test_truncated_elfs_give_input_errors_or_partial_answers(elf_100, tmp_path, length):
    data = elf_100.read_bytes()
    cut = data[:length] if length >= 0 else data[:-1]
    path = write(tmp_path, "cut.elf", cut)
    try:
        image = ElfImage(path)
    except InputError as exc:
        assert exc.path == str(path) and exc.message
        return
    # The header survived: what is still there answers, the rest is an InputError.
    for query in (lambda: image.symbols, lambda: image.build_id,
                  lambda: read_variable(image, MemoryImage(elf=image), "fw_info")):
        try:
            query()
        except InputError as exc:
            assert exc.path == str(path)


def test_truncated_before_the_debug_info_still_has_symbols_and_id(elf_100, tmp_path):
    """The section headers are at the end: cutting the DWARF alone keeps nothing usable,
    so the ELF is refused with a message, not parsed into nonsense."""
    data = elf_100.read_bytes()
    path = write(tmp_path, "half.elf", data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        image = ElfImage(path)
        _ = image.symbols
        read_variable(image, MemoryImage(elf=image), "fw_info")
    assert err.value.path == str(path)


@pytest.mark.toolchain
@pytest.mark.skipif(OBJCOPY is None, reason="arm-none-eabi-objcopy missing")
def test_no_dwarf_degrades_to_symbols_only(elf_100, tmp_path):
    path = tmp_path / "no-debug.elf"
    subprocess.run([OBJCOPY, "--strip-debug", str(elf_100), str(path)], check=True)
    image = ElfImage(path)
    assert image.symbols["crash_record"].address == 0x20000040
    assert image.build_id == ID_100
    assert check_build_id(image, ID_100[:8], source="banner").match is True
    with pytest.raises(InputError, match="no DWARF") as err:
        read_variable(image, MemoryImage(elf=image), "crash_record")
    assert "-g" in (err.value.remedy or "")
    with pytest.raises(InputError, match="no DWARF"):
        image.variable_type("device_config")


@pytest.mark.toolchain
@pytest.mark.skipif(OBJCOPY is None, reason="arm-none-eabi-objcopy missing")
def test_fully_stripped_elf_keeps_its_build_id_and_says_what_is_missing(elf_100, tmp_path):
    path = tmp_path / "stripped.elf"
    subprocess.run([OBJCOPY, "--strip-all", str(elf_100), str(path)], check=True)
    image = ElfImage(path)
    assert image.symbols == {}
    assert image.build_id == ID_100
    with pytest.raises(InputError, match="no DWARF"):
        read_variable(image, MemoryImage(elf=image), "fw_info")
    with pytest.raises(InputError, match="symbol 'crash_record' not found"):
        image.symbol("crash_record", purpose="the crash record")


def test_another_architecture_is_refused_by_name(tmp_path, elf_100):
    host = Path(shutil.which("true") or "/bin/true").resolve()
    with pytest.raises(InputError, match="not a 32-bit little-endian ARM ELF") as err:
        ElfImage(host)
    assert "EM_X86_64" in err.value.message or "EM_AARCH64" in err.value.message
    data = bytearray(elf_100.read_bytes())
    data[18:20] = (243).to_bytes(2, "little")  # EM_RISCV
    with pytest.raises(InputError, match="machine EM_RISCV"):
        ElfImage(write(tmp_path, "riscv.elf", bytes(data)))
    data = bytearray(elf_100.read_bytes())
    data[5] = 2  # big-endian
    with pytest.raises(InputError, match="big-endian"):
        ElfImage(write(tmp_path, "be.elf", bytes(data)))


@pytest.mark.parametrize("blob", [b"", b"garbage", bytes(range(256)) * 64,
                                  b"\x7fELF" + bytes(60), b"\x7fELF\x01\x01\x01" + b"\xff" * 200])
def test_garbage_gives_input_errors(tmp_path, blob):
    path = write(tmp_path, "garbage.elf", blob)
    with pytest.raises(InputError) as err:
        image = ElfImage(path)
        _ = image.symbols
        find_global(image, "x")
    assert err.value.path == str(path)


@pytest.mark.toolchain
def test_a_raw_binary_is_not_an_elf(tmp_path, elf_100):
    if OBJCOPY is None:
        pytest.skip("arm-none-eabi-objcopy missing")
    path = tmp_path / "fw.bin"
    subprocess.run([OBJCOPY, "-O", "binary", str(elf_100), str(path)], check=True)
    with pytest.raises(InputError, match="not an ELF file") as err:
        ElfImage(path)
    assert ".bin" in (err.value.remedy or "")


def test_known_finding_bad_unit_address_size(elf_100, names):
    """Fuzz finding (seed 1, input 235): a unit header with address_size 0 made
    pyelftools assert; it is an InputError now."""
    data = bytearray(elf_100.read_bytes())
    image = ElfImage(elf_100)
    info = image.elf.get_section_by_name(".debug_info")
    offset = info["sh_offset"]
    # DWARF 5 unit header: unit_length(4) version(2) unit_type(1) address_size(1)
    assert int.from_bytes(data[offset + 4:offset + 6], "little") == 5
    data[offset + 7] = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "bad-address-size.elf", bytes(data))
        broken = ElfImage(path)
        with pytest.raises(InputError, match="malformed DWARF"):
            broken.variable_type("device_config")
        with pytest.raises(InputError, match="malformed DWARF"):
            read_variable(broken, MemoryImage(elf=broken), "device_config")
        assert check(path, names, bytes(0x4000), random.Random(0)) > 0


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), ram=st.binary(min_size=0x100, max_size=0x100))
def test_fuzz_damaged_elfs_never_crash(elf_100, names, seed, ram):
    """Random damage (bench/fuzz_dwarf.py's): answers or InputError, nothing else."""
    rng = random.Random(seed)
    data = damage(elf_100.read_bytes(), rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "fuzzed.elf", data)
        check(path, names, ram * 64, rng)


# -- regressions for what the 10-minute run found (bench/README.md) -------------------------------


def _section(data: bytes, name: str) -> tuple[int, int]:
    import io

    from elftools.elf.elffile import ELFFile

    sec = ELFFile(io.BytesIO(data)).get_section_by_name(name)
    return sec["sh_offset"], sec["sh_size"]


def test_finding_unnamed_symbol_binding(elf_100, tmp_path):
    """pyelftools gives an int for a binding it has no name for; symbols still load."""
    import io

    from elftools.elf.elffile import ELFFile

    data = bytearray(elf_100.read_bytes())
    offset, _ = _section(bytes(data), ".symtab")
    symtab = ELFFile(io.BytesIO(bytes(data))).get_section_by_name(".symtab")
    index = next(i for i, sym in enumerate(symtab.iter_symbols()) if sym.name == "crash_record")
    entry = offset + 16 * index      # Elf32_Sym is 16 bytes, st_info at +12
    data[entry + 12] = 0x71          # binding 7 (no name), type STT_OBJECT
    image = ElfImage(write(tmp_path, "bind.elf", bytes(data)))
    assert image.symbols["crash_record"].binding == "7"
    assert read_variable(image, MemoryImage(elf=image), "fw_info").members[0].value == 0x4E494657


def test_finding_sibling_in_a_block_form(elf_100, tmp_path):
    """DW_AT_sibling with DW_FORM_block2: pyelftools raises NotImplementedError."""
    import io

    from elftools.elf.elffile import ELFFile

    original = elf_100.read_bytes()
    offset, size = _section(original, ".debug_abbrev")
    abbrev = original[offset:offset + size]
    at = abbrev.find(b"\x01\x13")    # DW_AT_sibling, DW_FORM_ref4
    while at != -1:
        data = bytearray(original)
        data[offset + at + 1] = 0x03  # DW_FORM_block2
        try:
            for cu in ELFFile(io.BytesIO(bytes(data))).get_dwarf_info().iter_CUs():
                for _ in cu.get_top_DIE().iter_children():
                    pass
        except NotImplementedError:
            break
        except Exception:  # noqa: BLE001, S110 - not the damage this test is about: next pair
            pass
        at = abbrev.find(b"\x01\x13", at + 1)
    assert at != -1, "no abbreviation with DW_AT_sibling found to damage"
    image = ElfImage(write(tmp_path, "block2.elf", bytes(data)))
    with pytest.raises(InputError, match="malformed DWARF"):
        image.variable_type("device_config")
    with pytest.raises(InputError, match="malformed DWARF"):
        read_variable(image, MemoryImage(elf=image), "crash_record")


def test_finding_sibling_pointing_back_does_not_hang(elf_100, tmp_path):
    """A DW_AT_sibling that points at its own DIE sent pyelftools round forever."""
    import io
    import signal

    from elftools.elf.elffile import ELFFile

    original = elf_100.read_bytes()
    dwarf = ELFFile(io.BytesIO(original)).get_dwarf_info()
    info_offset, _ = _section(original, ".debug_info")
    target = None
    for cu in dwarf.iter_CUs():
        for die in cu.get_top_DIE().iter_children():
            attr = die.attributes.get("DW_AT_sibling")
            if attr is not None and attr.form == "DW_FORM_ref4":
                target = (cu, die, attr)
                break
        if target:
            break
    assert target is not None
    cu, die, attr = target
    data = bytearray(original)
    at = info_offset + attr.offset
    data[at:at + 4] = (die.offset - cu.cu_offset).to_bytes(4, "little")  # points at itself
    path = write(tmp_path, "loop.elf", bytes(data))

    def hang(signum, frame):
        raise AssertionError("reading the damaged DWARF hangs")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(20)
    try:
        image = ElfImage(path)
        with pytest.raises(InputError, match="loop back"):
            image.variable_type("crash_record_does_not_exist")
        with pytest.raises(InputError, match="loop back"):
            read_variable(image, MemoryImage(elf=image), "nope")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
