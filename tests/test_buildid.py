"""The build-ID check: the device's reported ID against the ELF's, with both fixture builds."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from collector.buildid import (
    DeviceBuildId,
    build_id_from_note,
    check_build_id,
    device_build_ids,
    device_build_ids_from_evidence,
    normalize_build_id,
    verify_build,
)
from collector.elf import ElfImage
from collector.evidence import CrashEvidence, MemoryImage
from crashcart.errors import InputError

from .conftest import CONFIG_DIR, ROOT

ID_100 = "d0254c72b736b175b4354dd5e59b2707ee4e93dc"
ID_101 = "0f323e71a50eb772900fa694243578138ad0e127"
CONSOLE_100 = ROOT / "fixtures" / "incident" / "evidence" / "node-1" / "serial" / "console.raw"
CONSOLE_101 = ROOT / "fixtures" / "incident" / "evidence" / "node-2" / "serial" / "console.raw"


@pytest.fixture(scope="module")
def images(elf_100, elf_101) -> tuple[ElfImage, ElfImage]:
    return ElfImage(elf_100), ElfImage(elf_101)


def test_the_fixture_elfs_have_the_documented_ids(images):
    assert images[0].build_id == ID_100 and images[1].build_id == ID_101


def test_same_build_matches_and_says_where_the_id_came_from(images):
    result = check_build_id(images[0], ID_100.upper(), source="boot banner")
    assert result.match is True and result.prefix is False and result.warning is None
    assert result.elf_id == result.device_id == ID_100
    assert result.summary == f"build ID {ID_100} matches the device (boot banner)"
    assert result.to_json()["match"] is True


def test_other_build_gives_a_warning_naming_both_ids(images):
    result = check_build_id(images[1], ID_100, source="crash record")
    assert result.match is False
    warning = result.warning
    assert warning is not None and warning.startswith("WARNING: build ID mismatch")
    assert ID_100 in warning and ID_101 in warning and "symbol results are unverified" in warning
    assert "sensor-node-1.0.1.elf" in warning and "(crash record)" in warning
    assert result.summary == warning


def test_short_device_ids_match_as_prefixes_and_say_so(images):
    result = check_build_id(images[0], "d0254c72", source="banner")
    assert result.match is True and result.prefix is True
    assert "8-digit prefix" in result.summary
    assert check_build_id(images[1], "0xd0254c72b736", source="banner").match is False
    assert check_build_id(images[0], "d0:25:4c:72", source="banner").match is True


@pytest.mark.parametrize("bad, message", [("bfab02d", "7 hex digits"), ("zzzzzzzzz", "not hex"),
                                          ("0x", "not hex"), (ID_100 + "00", None)])
def test_unusable_or_longer_device_ids(images, bad, message):
    if message is None:  # longer than the ELF's: not a prefix, a different ID
        assert check_build_id(images[0], bad, source="x").match is False
        return
    with pytest.raises(InputError, match=message) as err:
        check_build_id(images[0], bad, source="x")
    assert err.value.remedy and err.value.value == bad


@pytest.mark.toolchain
def test_unknown_when_either_side_has_no_id(images, tmp_path, elf_100):
    result = check_build_id(images[0], None)
    assert result.match is None and result.warning is None
    assert "device reported none" in result.summary
    objcopy = shutil.which("arm-none-eabi-objcopy")
    if objcopy is None:
        pytest.skip("arm-none-eabi-objcopy missing")
    no_id = tmp_path / "no-id.elf"
    subprocess.run([objcopy, "--remove-section", ".note.gnu.build-id", str(elf_100),
                    str(no_id)], check=True)
    image = ElfImage(no_id)
    assert image.build_id is None
    result = check_build_id(image, ID_100, source="banner")
    assert result.match is None and "ELF has no GNU build ID" in result.summary


def test_console_transcripts_give_crash_log_and_banner_ids(images, target):
    found = device_build_ids(images[0], target, console=CONSOLE_100.read_text("latin-1"))
    assert [f.source for f in found] == ["console crash log (firmware: line)",
                                         "console boot banner"]
    assert {f.build_id for f in found} == {ID_100}
    assert verify_build(images[0], found).match is True
    mismatch = verify_build(images[0], device_build_ids(
        images[0], target, console=CONSOLE_101.read_text("latin-1")))
    assert mismatch.match is False and mismatch.source == "console boot banner"
    assert ID_101 in (mismatch.warning or "")


def test_note_bytes_parse_and_bad_notes_are_input_errors(images):
    image = images[0]
    start = image.symbol("__build_id_note_start").address
    end = image.symbol("__build_id_note_end").address
    note = image.read(start, end - start)
    assert note is not None and build_id_from_note(note) == ID_100
    with pytest.raises(InputError, match="not a GNU build-ID note"):
        build_id_from_note(b"\0" * 36)
    with pytest.raises(InputError, match="shorter than"):
        build_id_from_note(note[:8])
    with pytest.raises(InputError, match="does not fit"):
        build_id_from_note(note[:20])


def test_only_captured_memory_counts(images, target):
    """The ELF's own note would always match, so MemoryImage's ELF fallback is not used."""
    image = images[1]
    assert device_build_ids(image, target, memory=MemoryImage(elf=image)) == []
    # The device's flash, captured, holds 1.0.0's note: checked against 1.0.1, a mismatch.
    start = images[0].symbol("__build_id_note_start").address
    memory = MemoryImage(elf=image)
    memory.add(start, images[0].read(start, 0x24) or b"", "flash")
    found = device_build_ids(image, target, memory=memory)
    assert found == [DeviceBuildId(ID_100, f"build-ID note __build_id_note_start at "
                                           f"0x{start:08x} (captured memory)")]
    assert verify_build(image, found).match is False


def test_evidence_build_id_is_used_and_disagreements_are_noted(images, target):
    evidence = CrashEvidence(source="crashlog", origin="test", build_id=ID_101,
                             build_id_origin="crash log")
    evidence.memory.add(images[0].symbol("__build_id_note_start").address,
                        images[0].read(images[0].symbol("__build_id_note_start").address, 0x24)
                        or b"", "flash")
    found = device_build_ids_from_evidence(images[0], target, evidence)
    assert [f.build_id for f in found] == [ID_100, ID_101]
    result = verify_build(images[0], found)
    assert result.match is True and result.source.startswith("build-ID note")
    assert result.notes and ID_101 in result.notes[0] and "reflashed" in result.notes[0]


@pytest.mark.qemu
def test_live_board_ids_from_crash_record_note_and_console(target, elf_100, elf_101, images):
    """1.0.0 crashes on QEMU; RAM and flash are read over the gdbstub like a capture does."""
    from collector.device_config import load_config_file
    from collector.gdbremote import GdbRemote
    from replay.sim import SimulatedBoard

    image = images[0]
    config = load_config_file(CONFIG_DIR / "bad-adc-channel.yaml")
    with SimulatedBoard(target, elf_100, config=config, gdb=True,
                        time_limit_ns=3_600_000_000_000) as board:
        board.resume()
        deadline = time.monotonic() + 20
        assert board.qmp is not None
        while b"*** CRASH END ***" not in board.transcript or \
                board.qmp.command("query-status")["status"] == "running":
            assert time.monotonic() < deadline, board.transcript.decode("latin-1")
            time.sleep(0.02)
        ram_start = image.symbol("__ram_start").address
        ram_end = image.symbol("__noinit_end").address
        note = image.symbol("__build_id_note_start").address
        with GdbRemote(*board.gdb_address) as gdb:
            memory = MemoryImage(elf=image)
            memory.add(ram_start, gdb.read_memory(ram_start, ram_end - ram_start), "ram")
            memory.add(note, gdb.read_memory(note, 0x24), "flash note")
            gdb.detach()
        console = board.transcript.decode("latin-1")
    found = device_build_ids(image, target, memory=memory, console=console)
    assert [f.source.split(" ")[0:2] for f in found] == [["crash", "record"], ["build-ID", "note"],
                                                         ["console", "crash"],
                                                         ["console", "boot"]]
    assert {f.build_id for f in found} == {ID_100}
    assert verify_build(image, found).match is True
    wrong = verify_build(ElfImage(elf_101), device_build_ids(ElfImage(elf_101), target,
                                                             memory=memory, console=console))
    assert wrong.match is False and wrong.device_id == ID_100 and wrong.elf_id == ID_101
    assert wrong.source == "crash record crash_record at 0x200000b8 (captured RAM)"


def test_normalize_rejects_nothing_valid():
    assert normalize_build_id(" 0xD0254C72 ") == "d0254c72"
    with pytest.raises(InputError):
        normalize_build_id("")
