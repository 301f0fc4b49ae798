"""``crashcart decode`` on evidence collected from the simulated board.

For every planted fault of the fixture firmware (fixtures/firmware/README.md
gives the measured fault registers and locations), a bundle is collected
from the QEMU board (serial + SWD through the pyocd plugin) and decoded; the
console log alone is decoded too, and must tell the same story.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.device_config import load_config_file
from crashcart.cli import cli
from replay.sim import SimulatedBoard

from .conftest import CONFIG_DIR, ELF_DIR

pytestmark = pytest.mark.qemu
ELF = ELF_DIR / "sensor-node-1.0.0.elf"

# fault -> (primary fault, bits that must be set, faulting function, file, line, inline chain)
EXPECTED = {
    "bad-adc-channel": ("BusFault", {"PRECISERR", "BFARVALID"}, "adc_read", "adc.c", 92, []),
    "zero-averaging-window": ("UsageFault", {"DIVBYZERO"}, "window_mean", "sampler.c", 54,
                              [("averager_push", 77), ("process_sample", 104)]),
    # HardFault escalated from a UsageFault: the primary (the cause) is the UsageFault.
    "trace-logging": ("UsageFault", {"FORCED", "INVSTATE"}, None, None, None, []),
    # MSTKERR: no exception frame; the interrupted code is found by a stack scan.
    "deep-cascade": ("MemManage", {"DACCVIOL", "MSTKERR", "MMARVALID"}, "biquad_cascade",
                     "filter.c", None, []),
    "wide-filter": (None, set(), "fir_apply", "filter.c", None, []),
}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, target) -> dict[str, Path]:
    out: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("bundles")
    for fault in EXPECTED:
        config = load_config_file(CONFIG_DIR / f"{fault}.yaml")
        with SimulatedBoard(target, ELF, config=config, console=False, gdb=True,
                            time_limit_ns=3_600 * 10**9) as board:
            host, port = board.gdb_address

            def start(b: SimulatedBoard = board) -> None:
                b.wait_console_attached()
                b.resume()

            starter = threading.Thread(target=start)
            starter.start()
            result = run("collect", "--target", "mps2-an385", "--elf", str(ELF),
                         "-o", str(root / fault), "--serial", board.serial_url,
                         "--swd", f"qemu:{host}:{port}", "--debug-on-crash",
                         "--after-crash", "200ms", "--duration", "60s")
            starter.join()
            assert result.exit_code == 0, result.output
        out[fault] = root / fault
    return out


def decode_json(source: Path, *extra: str) -> dict:
    result = run("decode", str(source), "--elf", str(ELF), "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("fault", list(EXPECTED))
def test_decode_bundle_names_fault_cause_and_location(bundles, fault):
    primary, bits, function, file, line, chain = EXPECTED[fault]
    doc = decode_json(bundles[fault])
    for key in ("fault", "frames", "firmware", "registers"):
        assert key in doc
    assert doc["firmware"]["build_id_match"] is True
    assert doc["firmware"]["version"] == "1.0.0"
    assert doc["config"] is not None and "adc_channel" in doc["config"]
    if primary is not None:
        assert doc["fault"]["primary"] == primary, doc["fault"]["summary"]
        names = {b["name"] for b in doc["fault"]["bits"]}
        assert bits <= names, names
        for b in doc["fault"]["bits"]:
            assert b["meaning"], b  # every bit explained
    if fault == "bad-adc-channel":
        assert doc["fault"]["bfar"] == 0x7220504C
    if fault == "trace-logging":
        assert doc["fault"]["escalated"] is True and "HardFault" in doc["fault"]["kinds"]
        assert doc["registers"]["psp"] and doc["location"]["pc"] == 0
        # A call through a NULL pointer: nothing describes address 0 (the FDEs GNU ld
        # left there belong to functions --gc-sections removed), so the caller is at lr.
        at_zero = next(i for i, f in enumerate(doc["frames"]) if f["pc"] == 0)
        caller = doc["frames"][at_zero + 1]
        assert caller["how"] == "lr" and caller["function"] == "process_sample", caller
    if fault == "deep-cascade":
        assert doc["fault"]["mmfar"] == 0x200020E0
        assert doc["fault"]["frame_trustworthy"] is False
        assert doc["location"]["how"] == "scan"
        # the unwind goes through the whole runaway recursion down to main
        names = [f["function"] for f in doc["frames"]]
        assert names[-1] == "main" and names.count("biquad_cascade") > 100, names
        text = run("decode", str(bundles[fault]), "--elf", str(ELF)).output
        assert "found by stack scan" in text
        assert re.search(r"\.\.\. \d+ more frames like the one above \(recursion\)", text)
        assert len(text.splitlines()) < 70, text
    if function is not None:
        loc = doc["location"]
        assert loc["function"] == function, loc
        assert loc["file"].endswith(file)
        if line is not None:
            assert loc["line"] == line
        assert [(i["function"], i["line"]) for i in loc["inlined"]] == chain
    assert doc["frames"] and all(f["how"] in ("registers", "cfi", "exception-frame", "scan",
                                              "tail-call", "lr") for f in doc["frames"])
    assert any("CRASH BEGIN" in line for line in doc["console"]["lines"])


@pytest.mark.parametrize("fault", ["bad-adc-channel", "zero-averaging-window"])
def test_console_log_alone_tells_the_same_story(bundles, fault, tmp_path):
    log = tmp_path / "pasted.log"
    log.write_bytes((bundles[fault] / "serial" / "console.raw").read_bytes())
    from_log = decode_json(log)
    from_bundle = decode_json(bundles[fault])
    assert from_log["fault"]["primary"] == from_bundle["fault"]["primary"]
    assert from_log["fault"]["summary"] == from_bundle["fault"]["summary"]
    assert (from_log["location"]["function"], from_log["location"]["line"]) == (
        from_bundle["location"]["function"], from_bundle["location"]["line"])
    assert from_log["firmware"]["build_id_match"] is True


def test_text_output_fits_one_screen(bundles):
    result = run("decode", str(bundles["bad-adc-channel"]), "--elf", str(ELF))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) <= 60
    assert lines[0].startswith("BusFault")
    assert any("adc_read" in line and "adc.c:92" in line for line in lines)
    assert any("matches the ELF" in line for line in lines)


def test_wrong_elf_is_a_prominent_warning(bundles):
    other = ELF_DIR / "sensor-node-1.0.1.elf"
    result = run("decode", str(bundles["bad-adc-channel"]), "--elf", str(other))
    assert result.exit_code == 0
    first = result.output.splitlines()[0]
    assert first.startswith("!!! WARNING: build ID mismatch") and "unverified" in first
    assert "d0254c72b736b175b4354dd5e59b2707ee4e93dc" in first  # the device's ID
    assert "0f323e71" in first  # and the ELF's
    doc = json.loads(run("decode", str(bundles["bad-adc-channel"]), "--elf", str(other),
                         "--json").output)
    assert doc["firmware"]["build_id_match"] is False
    assert all(f["verified"] is False for f in doc["frames"])


def test_print_globals_from_the_captured_memory(bundles):
    result = run("decode", str(bundles["bad-adc-channel"]), "--elf", str(ELF),
                 "--print", "device_config", "--print", "fw_info")
    assert result.exit_code == 0, result.output
    assert "adc_channel = 6" in result.output
    assert re.search(r"crash = 0x20000040 <crash_record>", result.output), result.output
    doc = decode_json(bundles["bad-adc-channel"], "--print", "crash_record")
    (record,) = doc["variables"]
    fields = {m["name"]: m for m in record["value"]["members"]}
    assert fields["bfar"]["value"] == 0x7220504C
    # From a console log there is no RAM: every field says it was not captured.
    result = run("decode", str(bundles["bad-adc-channel"] / "serial" / "console.raw"),
                 "--elf", str(ELF), "--print", "device_config")
    assert result.exit_code == 0 and "not captured" in result.output


def test_several_crashes_in_one_log(bundles, tmp_path):
    log = tmp_path / "two.log"
    log.write_bytes((bundles["bad-adc-channel"] / "serial" / "console.raw").read_bytes()
                    + b"noise between boots\n"
                    + (bundles["zero-averaging-window"] / "serial" / "console.raw").read_bytes())
    doc = decode_json(log)
    assert [c["fault"]["primary"] for c in doc["crashes"]] == ["BusFault", "UsageFault"]
    one = decode_json(log, "--crash", "2")
    assert one["fault"]["primary"] == "UsageFault"


def test_bad_sources_get_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    result = run("decode", str(garbage), "--elf", str(ELF))
    assert result.exit_code == 2
    assert "no crash evidence recognised" in result.output and str(garbage) in result.output
    result = run("decode", str(tmp_path / "missing.log"))
    assert result.exit_code == 2 and "no such file" in result.output
    cut = tmp_path / "cut.log"
    cut.write_text("*** CRASH BEGIN ***\nfault: BusFault\nr0: 0x1 r1: 0x2\n")
    result = run("decode", str(cut), "--elf", str(ELF))
    assert result.exit_code == 0
    assert "cut off" in result.output
    empty_dir = tmp_path / "notabundle"
    empty_dir.mkdir()
    result = run("decode", str(empty_dir))
    assert result.exit_code == 2 and "not a crashcart bundle" in result.output


def test_report_and_timeline_decode_crashes_with_the_elf_of_their_build(tmp_path):
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "pm.md"
    result = run("report", str(root / "fixtures" / "incident"), "--elf-path",
                 str(ELF_DIR), "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "where: `adc_read (src/adc.c:92)`" in text
    assert "CFSR.PRECISERR" in text
    # Without the ELF the report says the crash is not decoded, and why.
    result = run("report", str(root / "fixtures" / "incident"), "-o", str(tmp_path / "b.md"))
    assert "not decoded yet" in (tmp_path / "b.md").read_text() or "no ELF" in result.output
    md = run("timeline", str(root / "fixtures" / "incident"), "--elf-path", str(ELF_DIR))
    assert "in adc_read (src/adc.c:92)" in md.output
