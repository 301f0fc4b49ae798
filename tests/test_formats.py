"""Third-party crash formats: Zephyr fatal-error logs, Zephyr coredumps, CmBacktrace.

The fixtures in fixtures/thirdparty/ carry the registers and memory of two
real crashes of the fixture firmware (captured at its fault handler by
fixtures/thirdparty/capture.py), so every expected value below comes from
fixtures/thirdparty/source/*.json, not from the parser under test.
"""

from __future__ import annotations

import binascii
import io
import json
import re
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.elf import ElfImage
from collector.evidence import CrashEvidence, MemoryImage
from collector.formats import (
    FORMATS,
    cmbacktrace,
    parse,
    sniff,
    to_cd_log,
    write_zephyr_coredump,
    zephyr_coredump,
    zephyr_log,
)
from crashcart.errors import CrashcartError, InputError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "thirdparty"
ELF = ROOT / "fixtures/firmware/elf/sensor-node-1.0.0.elf"
FRAME = ("r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr")
CALLEE = ("r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11")


def captured(name: str) -> dict:
    record = json.loads((FIXTURES / "source" / f"{name}.json").read_text())

    def ints(value):
        if isinstance(value, dict):
            return {k: ints(v) for k, v in value.items()}
        return int(value, 16) if isinstance(value, str) and value.startswith("0x") else value
    return ints(record)


BUS = captured("bad-adc-channel")
USAGE = captured("zero-averaging-window")


def region_bytes(record: dict, region: str) -> bytes:
    return (FIXTURES / "source" / record["memory"][region]["file"]).read_bytes()


def function_at(address: int) -> str:
    image = ElfImage.open_cached(ELF)
    for symbol in image.symbols.values():
        if symbol.kind == "function" and symbol.address & ~1 <= address < symbol.end & ~1:
            return symbol.name
    raise AssertionError(f"no function at 0x{address:x}")


def one(name: str, **kw) -> CrashEvidence:
    found = parse(FIXTURES / name, **kw)
    assert len(found) == 1
    return found[0]


def test_fixtures_are_what_make_fixtures_writes():
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(FIXTURES))
    assert make_fixtures.main(["--check"]) == 0


def test_captured_crashes_are_the_fixture_firmwares_planted_bugs():
    # The precise BusFault of bad-adc-channel and the DIVBYZERO of zero-averaging-window
    # (fixtures/firmware/README.md), at their known functions.
    assert BUS["fault_registers"]["cfsr"] == 0x8200
    assert function_at(BUS["stacked"]["pc"]) == "adc_read"
    assert USAGE["fault_registers"]["cfsr"] == 0x02000000
    assert function_at(USAGE["stacked"]["pc"]) == "process_sample"


# -- Zephyr fatal-error logs -------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "zephyr-busfault.log", "zephyr-busfault-minimal.log", "zephyr-busfault-bare.log",
    "zephyr-busfault-fpu.log", "zephyr-busfault-coredump.log",
])
def test_zephyr_bus_fault_with_and_without_prefixes(name):
    assert sniff((FIXTURES / name).read_text()) == "zephyr-log"
    ev = one(name)
    assert ev.source == "zephyr-log" and ev.origin.endswith(name)
    assert ev.registers_at == "stacked"
    assert {k: ev.registers[k] for k in FRAME} == BUS["stacked"]
    assert ev.registers["cfsr"] == BUS["fault_registers"]["cfsr"]  # rebuilt from the lines
    assert ev.registers["bfar"] == BUS["fault_registers"]["bfar"]
    assert ev.fault_name == "BusFault"
    assert ev.extra["zephyr_reason"] == 25
    assert ev.extra["zephyr_reason_name"] == "K_ERR_ARM_BUS_PRECISE_DATA_BUS"
    assert ev.extra["thread_name"] == "main"
    assert ev.threads == [{"address": 0x20001C40, "name": "main", "current": True}]
    assert ev.extra["fault_details"] == ["Precise data bus error", "BFAR Address: 0x7220504c"]
    assert "cfsr" in ev.extra["reconstructed"]
    assert "BUS FAULT" in ev.console_lines[ev.crash_line]


def test_zephyr_console_context_keeps_the_lines_around_the_crash():
    ev = one("zephyr-busfault.log")
    assert ev.console_lines[0] == "*** Booting Zephyr OS build v3.7.0 ***"
    assert ev.crash_line == 3
    assert ev.console_lines[-1].endswith("Halting system")
    assert ev.extra["halted"] is True
    assert ev.extra["line_range"] == (4, 12)


def test_zephyr_usage_fault_with_extra_exception_info():
    ev = one("zephyr-usagefault.log")
    assert ev.fault_name == "UsageFault"
    assert {k: ev.registers[k] for k in FRAME} == USAGE["stacked"]
    assert {k: ev.registers[k] for k in CALLEE} == {k: USAGE["handler_registers"][k]
                                                     for k in CALLEE}
    assert ev.registers["psp"] == USAGE["psp"]
    assert ev.registers["exc_return"] == USAGE["exc_return"] == 0xFFFFFFFD
    assert ev.registers["cfsr"] == USAGE["fault_registers"]["cfsr"] == 1 << 25  # DIVBYZERO
    assert ev.extra["zephyr_reason_name"] == "K_ERR_ARM_USAGE_DIV_0"


def test_zephyr_fpu_registers():
    ev = one("zephyr-busfault-fpu.log")
    fp = ev.extra["fp_registers"]
    assert fp["s0"] == 0x3F800000 and fp["s7"] == 0x42C80000 and fp["s15"] == 0x7FC00000
    assert fp["fpscr"] == 0x10
    assert sorted(fp) == sorted([f"s{n}" for n in range(16)] + ["fpscr"])
    assert ev.arch == "armv7e-m"


def test_zephyr_escalated_hard_fault():
    ev = one("zephyr-escalated.log")
    assert ev.fault_name == "HardFault"
    assert ev.extra["fault_headers"] == ["HARD FAULT", "BUS FAULT"]
    assert ev.registers["hfsr"] == 1 << 30  # FORCED
    assert ev.registers["cfsr"] == 0x8200
    assert any("escalated from BusFault" in n for n in ev.notes)
    assert ev.extra["zephyr_reason_name"] == "K_ERR_CPU_EXCEPTION"


def test_zephyr_log_with_two_crashes():
    first, second = parse(FIXTURES / "zephyr-two-crashes.log")
    assert first.fault_name == "BusFault" and second.fault_name == "UsageFault"
    assert first.registers["pc"] == BUS["stacked"]["pc"]
    assert second.registers["pc"] == USAGE["stacked"]["pc"]
    # each crash's context stops where the other crash begins
    assert not any("USAGE FAULT" in line for line in first.console_lines)
    assert not any("BUS FAULT" in line for line in second.console_lines)
    assert "averaging window 0" in second.console_lines[second.crash_line - 1]


def test_zephyr_log_with_coredump_gets_memory_sp_and_callee_registers():
    ev = one("zephyr-busfault-coredump.log")
    assert ev.registers["sp"] == BUS["frame_address"] + 32
    assert {k: ev.registers[k] for k in CALLEE} == {k: BUS["handler_registers"][k]
                                                     for k in CALLEE}
    stack = region_bytes(BUS, "process-stack")
    assert ev.memory.read(0x20002100, len(stack)) == stack
    # the stacked frame in the dumped stack is the one the log printed
    frame = struct.unpack("<8I", ev.memory.read(BUS["frame_address"], 32))
    assert dict(zip(FRAME, frame, strict=True)) == BUS["stacked"]
    assert ev.extra["coredump"]["arch_version"] == 2


def test_zephyr_log_keeps_a_coredump_without_a_print_as_its_own_crash():
    dump = (FIXTURES / "zephyr-coredump-v1.log").read_text()
    text = dump + (FIXTURES / "zephyr-usagefault.log").read_text()
    assert sniff(text) == "zephyr-log"
    first, second = parse(text)
    assert first.source == "zephyr-coredump" and first.registers["pc"] == BUS["stacked"]["pc"]
    assert second.source == "zephyr-log" and second.fault_name == "UsageFault"
    assert not second.memory.regions  # the dump before the print is not merged into it


def test_short_form_fault_dump():
    text = ("Fault! EXC #5\nMMFSR: 0x0, BFSR: 0x82, UFSR: 0x0\n"
            "r0/a1:  0x00000001  r1/a2:  0x00000002  r2/a3:  0x00000003\n"
            "r3/a4:  0x00000004 r12/ip:  0x0000000c r14/lr:  0x00001793\n"
            " xpsr:  0x01000000\nFaulting instruction address (r15/pc): 0x000001bc\n"
            ">>> ZEPHYR FATAL ERROR 0: CPU exception on CPU 0\nCurrent thread: (nil) (unknown)\n")
    ev = parse(text)[0]
    assert ev.registers["cfsr"] == 0x8200  # exact, from the numbers
    assert "reconstructed" not in ev.extra
    assert ev.fault_name == "BusFault" and ev.extra["exception_number"] == 5
    assert ev.threads[0]["address"] is None


def test_zephyr_print_without_frame_is_kept():
    text = (">>> ZEPHYR FATAL ERROR 1: Unhandled interrupt on CPU 0\n"
            "Current thread: 0x200000d8 (test_arm_interrupt)\n")
    ev = parse(text)[0]
    assert ev.registers == {} and ev.extra["zephyr_reason_name"] == "K_ERR_SPURIOUS_IRQ"
    assert any("no exception stack frame" in n for n in ev.notes)


def test_zephyr_cut_print_is_kept_with_partial_ok():
    ev = one("invalid_zephyr-cut-after-registers.log", partial_ok=True)
    assert ev.registers["r0"] == BUS["stacked"]["r0"] and "pc" not in ev.registers
    assert any("Faulting instruction address" in n for n in ev.notes)


# -- Zephyr coredumps -----------------------------------------------------------------------


@pytest.mark.parametrize("name,version", [("zephyr-coredump-v1.log", 1),
                                          ("zephyr-coredump-v2.log", 2)])
def test_zephyr_coredump_log(name, version):
    assert sniff((FIXTURES / name).read_text()) == "zephyr-coredump"
    ev = one(name)
    assert ev.extra["coredump"]["arch_version"] == version
    assert {k: ev.registers[k] for k in FRAME} == BUS["stacked"]
    assert ev.registers["sp"] == BUS["frame_address"] + 32
    if version == 2:
        assert {k: ev.registers[k] for k in CALLEE} == {k: BUS["handler_registers"][k]
                                                         for k in CALLEE}
        assert ev.memory.read(0x20000040, 8128) == region_bytes(BUS, "ram")
    else:
        assert not set(CALLEE) & set(ev.registers)
    assert ev.memory.read(0x20002100, 8192) == region_bytes(BUS, "process-stack")
    assert ev.fault_name == "BusFault"  # from reason 25
    assert ev.extra["zephyr_reason_name"] == "K_ERR_ARM_BUS_PRECISE_DATA_BUS"
    assert ev.registers_at == "stacked"


def test_two_coredumps_in_one_log():
    first, second = parse(FIXTURES / "zephyr-coredump-two.log")
    assert first.registers["pc"] == BUS["stacked"]["pc"]
    assert second.registers["pc"] == USAGE["stacked"]["pc"]
    assert second.fault_name == "UsageFault"
    assert "Booting Zephyr" in second.console_lines[second.crash_line - 1]


def test_binary_coredump_from_bytes_and_from_file(tmp_path):
    data = write_zephyr_coredump(one("zephyr-coredump-v2.log"))
    assert sniff(data) == "zephyr-coredump-bin"
    (from_bytes,) = parse(data)
    path = tmp_path / "dump.bin"
    path.write_bytes(data)
    (from_file,) = parse(path)
    for ev in (from_bytes, from_file):
        assert ev.source == "zephyr-coredump-bin"
        assert {k: ev.registers[k] for k in FRAME} == BUS["stacked"]
    assert from_file.origin == str(path)


def test_coredump_cut_at_every_length_says_what_was_decoded():
    data = write_zephyr_coredump(one("zephyr-coredump-v1.log"), arch_version=1)
    boundaries = {12, 12 + 5 + 36, len(data)}  # after the header, the arch block, the memory
    for length in range(len(data)):
        if length in boundaries:
            continue
        with pytest.raises(InputError) as err:
            zephyr_coredump.decode_coredump(data[:length], "cut.bin")
        text = str(err.value)
        assert text.startswith("cut.bin: ")
        if length >= 12:
            assert "cut off at offset" in text and f"of {length} bytes" in text
            assert "decoded so far: header" in text
    partial = zephyr_coredump.decode_coredump(data[:200], "cut.bin", partial_ok=True)
    assert partial.registers["pc"] == BUS["stacked"]["pc"] and partial.memory == []
    assert "memory block #1" in (partial.problem or "")


def test_partial_coredump_log_keeps_registers():
    ev = one("invalid_coredump-truncated.log", partial_ok=True)
    assert {k: ev.registers[k] for k in FRAME} == BUS["stacked"]
    assert ev.extra["coredump"]["complete"] is False
    assert any("the log was cut off" in n for n in ev.notes)


def test_old_zephyr_sp_at_the_frame_is_moved_after_it():
    ev = one("zephyr-coredump-v1.log")
    ev.registers["sp"] = BUS["frame_address"]  # what Zephyr wrote before z_arm_set_fault_sp()
    (old,) = parse(write_zephyr_coredump(ev, arch_version=1))
    assert old.registers["sp"] == BUS["frame_address"] + 32
    assert any("exception frame's address" in n for n in old.notes)


def test_arch_block_v3_and_threads_metadata_are_read():
    regs = BUS["stacked"] | {"sp": BUS["frame_address"] + 32} | {k: 0x40 + i for i, k in
                                                                 enumerate(CALLEE)}
    layout = zephyr_coredump.ARCH_LAYOUTS[3]
    values = [regs.get(k, 0) for k in layout[:-2]] + [1, 0x60]
    data = (struct.pack("<2sHHBBI", b"ZE", 2, 3, 5, 0, 0) + struct.pack("<cHH", b"A", 3, 76)
            + struct.pack("<19I", *values) + struct.pack("<cHH", b"T", 1, 4) + b"\x01\x02\x03\x04")
    (ev,) = parse(data)
    assert ev.registers["r4"] == 0x40 and ev.extra["callee_saved_offset"] == 0x60
    assert ev.extra["threads_metadata"] == b"\x01\x02\x03\x04"


def test_crc_trailer_is_checked():
    body = write_zephyr_coredump(one("zephyr-coredump-v1.log"), arch_version=1)
    flagged = body[:7] + b"\x01" + body[8:]
    good = flagged + struct.pack("<cHI", b"C", 1, binascii.crc32(flagged))
    (ev,) = parse(good)
    assert ev.extra["crc_ok"] is True
    bad = flagged + struct.pack("<cHI", b"C", 1, binascii.crc32(flagged) ^ 1)
    (ev,) = parse(bad)
    assert ev.extra["crc_ok"] is False and any("CRC-32" in n for n in ev.notes)
    with pytest.raises(InputError, match="CRC-32 trailer"):
        parse(flagged)


# -- the writer, checked with a port of Zephyr's own parser --------------------------------
#
# A port of zephyrproject-rtos/zephyr scripts/coredump/ (main branch, v4.x):
# coredump_serial_log_parser.py (log lines -> bytes), coredump_parser/log_parser.py
# (CoredumpLogFile.parse: header id/version checks, arch, threads metadata and memory
# sections) and gdbstubs/arch/arm_cortex_m.py (parse_arch_data_block), plus the
# target-code dispatch of gdbstubs/__init__.py get_gdbstub().  Kept close to the
# original's logic, including what it does not check.


def zephyr_serial_log_to_bin(text: str) -> tuple[bytes, bool, bool, bool]:
    prefix = "#CD:"
    has_begin = has_end = has_error = go = False
    out = b""
    for line in text.splitlines(keepends=True):
        if line.find(prefix + "BEGIN#") >= 0:
            has_begin = go = True
            continue
        if line.find(prefix + "END#") >= 0:
            has_end, go = True, False
            break
        if line.find(prefix + "ERROR CANNOT DUMP#") >= 0:
            has_error, go = True, False
            break
        if not go:
            continue
        at = line.find(prefix)
        if at < 0:
            continue
        out += binascii.unhexlify(line[at + len(prefix):].strip())
    return out, has_begin, has_end, has_error


class ZephyrCoredumpLogFile:
    HDR = "<ccHHBBI"
    ARCH_HDR = "<cHH"
    META_HDR = "<cHH"
    MEM_HDR = "<cH"

    def __init__(self, data: bytes) -> None:
        self.fd = io.BytesIO(data)
        self.log_hdr: dict | None = None
        self.arch_data: dict | list = []
        self.memory_regions: list[dict] = []
        self.threads_metadata: dict[str, object] = {"hdr_ver": None, "data": None}

    def parse(self) -> bool:
        hdr = self.fd.read(struct.calcsize(self.HDR))
        id1, id2, hdr_ver, tgt_code, ptr_size, flags, reason = struct.unpack(self.HDR, hdr)
        if id1 + id2 != b"ZE":
            return False
        if hdr_ver > 2:
            return False
        self.log_hdr = {"hdr_version": hdr_ver, "tgt_code": tgt_code,
                        "ptr_size": 2 ** ptr_size, "flags": flags, "reason": reason}
        while True:
            section_id = self.fd.read(1)
            if not section_id:
                break
            self.fd.seek(-1, 1)
            if section_id == b"A":
                _, ver, num = struct.unpack(self.ARCH_HDR, self.fd.read(5))
                self.arch_data = {"hdr_ver": ver, "data": self.fd.read(num)}
            elif section_id == b"T":
                _, ver, num = struct.unpack(self.META_HDR, self.fd.read(5))
                self.threads_metadata = {"hdr_ver": ver, "data": self.fd.read(num)}
            elif section_id == b"M":
                _, ver = struct.unpack(self.MEM_HDR, self.fd.read(3))
                if ver != 1:
                    return False
                if self.log_hdr["ptr_size"] == 64:
                    fmt = "QQ"
                elif self.log_hdr["ptr_size"] == 32:
                    fmt = "II"
                else:
                    return False
                saddr, eaddr = struct.unpack(fmt, self.fd.read(struct.calcsize(fmt)))
                self.memory_regions.append({"start": saddr, "end": eaddr,
                                            "data": self.fd.read(eaddr - saddr)})
            else:
                return False
        return True


def zephyr_arm_cortex_m_registers(arch_data: dict) -> dict[int, int]:
    blk, ver = arch_data["data"], arch_data["hdr_ver"]
    if ver == 1:
        tu = struct.unpack("<IIIIIIIII", blk)
    elif ver == 2:
        tu = struct.unpack("<IIIIIIIIIIIIIIIII", blk)
    regs = {0: tu[0], 1: tu[1], 2: tu[2], 3: tu[3], 12: tu[4], 14: tu[5], 15: tu[6],
            16: tu[7], 13: tu[8]}
    if ver > 1:
        for n in range(8):
            regs[4 + n] = tu[9 + n]
    return regs


GDB_NUMBERS = {"r0": 0, "r1": 1, "r2": 2, "r3": 3, "r4": 4, "r5": 5, "r6": 6, "r7": 7,
               "r8": 8, "r9": 9, "r10": 10, "r11": 11, "r12": 12, "sp": 13, "lr": 14, "pc": 15,
               "xpsr": 16}


@pytest.mark.parametrize("version", [1, 2])
def test_writer_output_is_accepted_by_zephyrs_parser(version):
    source = one("zephyr-coredump-v2.log")
    log = to_cd_log(write_zephyr_coredump(source, arch_version=version),
                    prefix="[00:00:00.010,000] <err> coredump: ")
    data, has_begin, has_end, has_error = zephyr_serial_log_to_bin(log)
    assert has_begin and has_end and not has_error
    assert all(len(line.split("#CD:")[1]) <= 64 for line in log.splitlines())
    parsed = ZephyrCoredumpLogFile(data)
    assert parsed.parse()
    assert parsed.log_hdr["tgt_code"] == 3  # get_gdbstub() -> GdbStub_ARM_CortexM
    assert parsed.log_hdr["ptr_size"] == 32 and parsed.log_hdr["hdr_version"] == 2
    assert parsed.log_hdr["reason"] == 25
    regs = zephyr_arm_cortex_m_registers(parsed.arch_data)
    expected = {GDB_NUMBERS[k]: v for k, v in source.registers.items() if k in GDB_NUMBERS
                and (version == 2 or k not in CALLEE)}
    assert regs == expected
    assert [(m["start"], m["end"]) for m in parsed.memory_regions] == [
        (0x20000040, 0x20002000), (0x20002100, 0x20004100)]
    assert parsed.memory_regions[1]["data"] == region_bytes(BUS, "process-stack")


def test_zephyr_parser_port_rejects_what_it_should():
    good = write_zephyr_coredump(one("zephyr-coredump-v1.log"), arch_version=1)
    assert ZephyrCoredumpLogFile(good).parse()
    assert not ZephyrCoredumpLogFile(b"ZF" + good[2:]).parse()
    assert not ZephyrCoredumpLogFile(good[:2] + struct.pack("<H", 3) + good[4:]).parse()
    assert not ZephyrCoredumpLogFile(good + b"Q").parse()


def test_writer_unstacks_evidence_taken_in_the_handler():
    memory = MemoryImage()
    memory.add(0x20002100, region_bytes(BUS, "process-stack"), "process-stack")
    handler = BUS["handler_registers"]
    ev = CrashEvidence(source="test", origin="handler", registers_at="handler", memory=memory,
                       registers={**handler, "r0": 0, "exc_return": BUS["exc_return"],
                                  "msp": BUS["msp"], "psp": BUS["psp"]})
    (back,) = parse(write_zephyr_coredump(ev))
    assert {k: back.registers[k] for k in FRAME} == BUS["stacked"]
    assert back.registers["sp"] == BUS["psp"] + 32


def test_writer_errors_name_what_is_missing():
    ev = one("zephyr-coredump-v1.log")
    with pytest.raises(InputError, match=r"lacks r4, r5.*use arch_version=1"):
        write_zephyr_coredump(ev, arch_version=2)
    with pytest.raises(InputError, match="arch block versions 1 and 2"):
        write_zephyr_coredump(ev, arch_version=3)
    del ev.registers["sp"]
    with pytest.raises(InputError, match="lacks sp"):
        write_zephyr_coredump(ev, arch_version=1)
    handler = CrashEvidence(source="t", origin="t", registers_at="handler",
                            registers={"lr": 0xFFFFFFFD, "pc": 0x1A28})
    with pytest.raises(InputError, match="PSP, which was not captured"):
        write_zephyr_coredump(handler)


def test_to_cd_log_starts_a_line_at_every_block_like_the_logging_backend():
    lines = to_cd_log(write_zephyr_coredump(one("zephyr-coredump-v1.log"),
                                            arch_version=1)).splitlines()
    assert lines[0] == "#CD:BEGIN#" and lines[-1] == "#CD:END#"
    assert lines[1] == "#CD:5a4502000300050019000000"  # header: ZE v2, tgt 3, 2**5, reason 25
    assert lines[2] == "#CD:4101002400"                 # 'A' v1, 36 bytes
    assert len(lines[3]) == 4 + 64 and len(lines[4]) == 4 + 8  # 36 bytes: 32 + 4
    assert lines[5] == "#CD:4d0100" + "00210020" + "00410020"  # 'M' v1 0x20002100..0x20004100


# -- CmBacktrace -------------------------------------------------------------------------------


def test_cmbacktrace_bare_metal():
    assert sniff((FIXTURES / "cmbacktrace-baremetal.log").read_text()) == "cmbacktrace"
    ev = one("cmbacktrace-baremetal.log")
    assert ev.source == "cmbacktrace" and ev.fault_name == "HardFault"
    assert {k: ev.registers[k] for k in FRAME} == BUS["stacked"]
    assert ev.registers["sp"] == BUS["frame_address"] + 32
    assert ev.registers["cfsr"] == 0x8200 and ev.registers["hfsr"] == 1 << 30
    assert ev.registers["bfar"] == BUS["fault_registers"]["bfar"]
    assert ev.firmware_version == "1.0.0"
    assert ev.extra["firmware_name"] == "sensor-node"
    assert ev.extra["hardware_version"] == "mps2-an385"
    assert ev.extra["context"] == "handler or bare metal" and ev.threads == []
    stack = region_bytes(BUS, "process-stack")
    sp = ev.registers["sp"]
    assert ev.memory.read(sp, 0x20004100 - sp) == stack[sp - 0x20002100:]
    calls = ev.extra["call_stack"]
    assert calls[0] == ev.registers["pc"] and calls[1] == ev.registers["lr"] - 4
    assert function_at(calls[1]) == "sample_tick"
    assert ev.extra["call_stack_elf"] == "sensor-node.elf"
    assert "Firmware name" in ev.console_lines[ev.crash_line]
    assert ev.console_lines[0] == "[I/app] sensor-node 1.0.0 up"


def test_cmbacktrace_thread():
    ev = one("cmbacktrace-thread.log")
    assert ev.threads == [{"name": "sampler", "current": True}]
    assert {k: ev.registers[k] for k in FRAME} == USAGE["stacked"]
    assert ev.registers["psp"] == ev.registers["sp"] == USAGE["psp"] + 32
    assert ev.registers["cfsr"] == 1 << 25


def test_cmbacktrace_two_prints_and_old_addr2line_line():
    first, second = parse(FIXTURES / "cmbacktrace-two.log")
    assert first.registers["pc"] == BUS["stacked"]["pc"]
    assert second.registers["pc"] == USAGE["stacked"]["pc"]
    old = (FIXTURES / "cmbacktrace-baremetal.log").read_text().replace("-afpiC", "-a -f")
    assert parse(old)[0].extra["call_stack"] == first.extra["call_stack"]


def test_cmbacktrace_with_log_tags_and_timestamps():
    lines = (FIXTURES / "cmbacktrace-thread.log").read_text().splitlines()
    tagged = "\n".join(f"12:00:00.{n:03d} [E/cmb] {line}" for n, line in enumerate(lines))
    (ev,) = parse(tagged)
    assert ev.registers == one("cmbacktrace-thread.log").registers
    assert ev.memory.regions == one("cmbacktrace-thread.log").memory.regions


def test_cmbacktrace_assert_has_stack_and_call_stack_but_no_registers():
    text = ("Firmware name: fw, hardware version: v1, software version: 2.0\n"
            "Assert on thread worker\n===== Thread stack information =====\n"
            "  addr: 20001000    data: 00000811\n  addr: 20001004    data: 00000000\n"
            "====================================\n"
            "Show more call stack info by run: addr2line -e fw.axf -afpiC 0000080d \n")
    (ev,) = parse(text)
    assert ev.fault_name == "assert" and ev.registers["sp"] == 0x20001000
    assert ev.memory.read_u32(0x20001000) == 0x811 and ev.extra["call_stack"] == [0x80D]


# -- errors ----------------------------------------------------------------------------------


INVALID = sorted(FIXTURES.glob("invalid_*.log"))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_gives_a_clear_error(path):
    first = path.read_text().splitlines()[0]
    m = re.match(r"# invalid: (.*) \| expect: (.*)$", first)
    assert m, f"{path.name} must start with '# invalid: <why> | expect: <text>'"
    with pytest.raises(InputError) as err:
        parse(path)
    text = str(err.value)
    assert m.group(2) in text
    assert text.startswith(str(path))
    assert err.value.remedy
    assert err.value.exit_status == 2


def test_errors_name_the_line_and_the_value():
    with pytest.raises(InputError) as err:
        parse(FIXTURES / "invalid_zephyr-garbled-value.log")
    assert err.value.line == 6 and err.value.value == "0xq00000000"
    with pytest.raises(InputError) as err:
        parse(FIXTURES / "invalid_coredump-garbage-line.log")
    assert err.value.line == 7 and "zz" in err.value.value


def test_unknown_input_and_format():
    with pytest.raises(InputError, match="no crash in a format crashcart reads"):
        parse("hello\nworld\n")
    with pytest.raises(InputError, match="unknown input format"):
        parse("x\ny\n", fmt="gdb-core")
    with pytest.raises(InputError, match="no cmbacktrace crash"):
        parse((FIXTURES / "zephyr-busfault.log").read_text(), fmt="cmbacktrace")
    with pytest.raises(InputError, match="cannot read"):
        parse(Path("/nonexistent/crash.log"))


def test_sniff():
    crashlog = ("*** CRASH BEGIN ***\nfault: BusFault\nr0: 0x00000000 r1: 0x00000010\n"
                "*** CRASH END ***\n")
    assert sniff(crashlog) is None
    assert sniff("") is None and sniff(b"") is None
    assert sniff(b"ZE\x02\x00\x03\x00\x05\x00\x00\x00\x00\x00") == "zephyr-coredump-bin"
    assert sniff((FIXTURES / "invalid_coredump-no-begin.log").read_text()) == "zephyr-coredump"
    assert set(FORMATS) == {"zephyr-log", "zephyr-coredump", "zephyr-coredump-bin", "cmbacktrace"}


# -- fuzz: no input makes a parser fail with anything but a CrashcartError ------------------

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
ZEPHYR_LINES = (FIXTURES / "zephyr-usagefault.log").read_text().splitlines() + \
    (FIXTURES / "zephyr-escalated.log").read_text().splitlines()
CMB_LINES = (FIXTURES / "cmbacktrace-baremetal.log").read_text().splitlines()
CD_LINES = (FIXTURES / "zephyr-coredump-v1.log").read_text().splitlines()[:12] + ["#CD:END#"]
DUMP = write_zephyr_coredump(one("zephyr-coredump-v1.log"), arch_version=1)[:200]


def mutated_lines(lines: list[str]) -> st.SearchStrategy[str]:
    line = st.one_of(
        st.sampled_from(lines),
        st.sampled_from(lines).flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
        st.text(max_size=60),
        st.sampled_from(lines).flatmap(lambda s: st.text(max_size=3).map(
            lambda t: s[: len(s) // 2] + t + s[len(s) // 2 + len(t):])),
    )
    return st.lists(line, max_size=40).map("\n".join)


def _survives(call, *args) -> None:
    try:
        call(*args)
    except CrashcartError as err:
        assert str(err)


@FUZZ
@given(mutated_lines(ZEPHYR_LINES))
def test_fuzz_zephyr_log(text):
    _survives(zephyr_log.parse_zephyr_log, text, "fuzz.log")
    _survives(lambda t: zephyr_log.parse_zephyr_log(t, "fuzz.log", partial_ok=True), text)


@FUZZ
@given(mutated_lines(CMB_LINES))
def test_fuzz_cmbacktrace(text):
    _survives(cmbacktrace.parse_cmbacktrace, text, "fuzz.log")
    _survives(lambda t: cmbacktrace.parse_cmbacktrace(t, "fuzz.log", partial_ok=True), text)


@FUZZ
@given(mutated_lines(CD_LINES))
def test_fuzz_coredump_log(text):
    _survives(zephyr_coredump.parse_cd_log, text, "fuzz.log")
    _survives(lambda t: zephyr_coredump.parse_cd_log(t, "fuzz.log", partial_ok=True), text)


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.tuples(st.integers(0, len(DUMP) - 1), st.binary(min_size=1, max_size=4)).map(
                     lambda t: DUMP[:t[0]] + t[1] + DUMP[t[0] + len(t[1]):])))
def test_fuzz_binary_coredump(data):
    _survives(parse, data)
    _survives(zephyr_coredump.decode_coredump, data, "fuzz.bin")
    _survives(lambda d: zephyr_coredump.decode_coredump(d, "fuzz.bin", partial_ok=True), data)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_sniff_and_parse_any_text(text):
    assert sniff(text) in (None, *FORMATS)
    _survives(parse, text + "\n")
