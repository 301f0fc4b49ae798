"""Evidence bundles: written as data arrives, verifiable at every instant, tamper-evident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.bundle import (
    BundleWriter,
    _check_manifest,
    check_relpath,
    read_manifest,
    seal_bundle,
    verify_bundle,
)
from crashcart.errors import InputError

from .conftest import ROOT


def make_bundle(path):
    with BundleWriter(path, target="mps2-an385", command=["test"]) as b:
        src = b.add_source("serial", {"url": "loop://"})
        g = b.open_growing("serial/console.raw", kind="serial-raw", source="serial")
        g.write(b"hello\n")
        g.write(b"world\n")
        b.write_json("swd/registers.json", {"pc": 0x1BC}, kind="registers", source="swd")
        b.write_file("swd/memory/ram@0x20000000.bin", bytes(range(256)), kind="memory")
        b.end_source(src)
    return path


def levels(report):
    return [(f.level, f.file) for f in report.findings]


def test_complete_bundle_verifies(tmp_path):
    b = make_bundle(tmp_path / "b")
    report = verify_bundle(b)
    assert report.ok and report.status == "complete" and report.findings == ()
    m = read_manifest(b)
    assert m["files"]["serial/console.raw"]["size"] == 12
    assert m["files"]["serial/console.raw"]["complete"] is True
    assert m["sources"][0]["status"] == "complete"


@pytest.mark.parametrize("tamper", ["changed", "missing", "extra", "truncated", "appended",
                                    "symlink", "extra-dir"])
def test_tampering_is_detected(tmp_path, tamper):
    b = make_bundle(tmp_path / "b")
    raw = b / "serial" / "console.raw"
    if tamper == "changed":
        data = bytearray(raw.read_bytes())
        data[3] ^= 0x01
        raw.write_bytes(bytes(data))
        expect = "changed"
    elif tamper == "missing":
        raw.unlink()
        expect = "missing"
    elif tamper == "extra":
        (b / "notes.txt").write_text("planted")
        expect = "extra file"
    elif tamper == "truncated":
        raw.write_bytes(b"hel")
        expect = "truncated"
    elif tamper == "appended":
        raw.write_bytes(raw.read_bytes() + b"more")
        expect = "appended"
    elif tamper == "symlink":
        raw.unlink()
        raw.symlink_to("/etc/hostname")
        expect = "symbolic link"
    else:
        (b / "sub").mkdir()
        (b / "sub" / "x.bin").write_bytes(b"x")
        expect = "extra file"
    report = verify_bundle(b)
    assert not report.ok
    assert any(f.level == "error" and expect in f.message for f in report.findings), \
        [str(f) for f in report.findings]


def test_exception_marks_partial(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(tmp_path / "b") as b:
            g = b.open_growing("serial/console.raw", kind="serial-raw")
            g.write(b"abc")
            raise KeyboardInterrupt
    report = verify_bundle(tmp_path / "b")
    assert report.ok and report.status == "partial"
    assert any("Ctrl-C" in f.message for f in report.findings)
    assert (tmp_path / "b" / "serial" / "console.raw").read_bytes() == b"abc"


def test_source_error_marks_partial(tmp_path):
    with BundleWriter(tmp_path / "b") as b:
        src = b.add_source("swd", {"probe": "x"})
        b.source_event(src, "halted", reason="capture")
        b.end_source(src, error="probe disconnected")
    m = read_manifest(tmp_path / "b")
    assert m["capture"]["status"] == "partial"
    assert m["capture"]["partial_reasons"] == ["swd: probe disconnected"]
    assert m["sources"][0]["events"][0]["what"] == "halted"


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("old evidence")
    with pytest.raises(InputError) as info:
        BundleWriter(tmp_path / "b")
    assert "not empty" in str(info.value)


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from collector import bundle
bundle.CHECKPOINT_S = 0.05
b = bundle.BundleWriter({path!r})
g = b.open_growing("serial/console.raw", kind="serial-raw")
i = 0
while True:
    g.write(b"line %06d\\n" % i)
    i += 1
    if i == 200:
        print("ready", flush=True)
    time.sleep(0.001)
"""


def test_sigkill_mid_capture_leaves_verifiable_partial_bundle(tmp_path):
    path = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    raw = (path / "serial" / "console.raw").read_bytes()
    lines = raw.split(b"\n")
    # Every byte written before the kill is on disk, in order, with no gap.
    for i, line in enumerate(lines[:-1]):
        assert line == b"line %06d" % i
    report = verify_bundle(path)
    assert report.ok and report.status == "capturing"
    assert any("never finished" in f.message for f in report.findings)
    sealed = seal_bundle(path)
    assert sealed.ok and sealed.status == "partial"
    m = read_manifest(path)
    assert m["files"]["serial/console.raw"]["size"] == len(raw)
    assert m["files"]["serial/console.raw"]["sealed_after_interruption"] is True


def test_seal_refuses_tampered_bundle(tmp_path):
    b = make_bundle(tmp_path / "b")
    (b / "swd" / "registers.json").write_text("{}")
    with pytest.raises(InputError):
        seal_bundle(b)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a\\b", "./a"])
def test_unsafe_paths_rejected(name):
    with pytest.raises(InputError):
        check_relpath(name)


def test_manifest_with_traversal_path_rejected(tmp_path):
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError) as info:
        verify_bundle(b)
    assert "unsafe path" in str(info.value)


def test_garbage_manifest(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_bytes(os.urandom(64))
    with pytest.raises(InputError) as info:
        verify_bundle(tmp_path / "b")
    assert "manifest" in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "format_version", "capture", "files",
                                        "sources", "x"]), json_values))
def test_fuzz_manifest_checker(manifest):
    if "format" in manifest and manifest.get("format") is None:
        manifest["format"] = "crashcart-bundle"
    try:
        _check_manifest(manifest, Path("m.json"))
    except InputError:
        pass


def test_kill_inside_a_checkpoint_is_a_warning_and_seal_cleans_up(tmp_path):
    path = tmp_path / "b"
    b = BundleWriter(path)
    g = b.open_growing("serial/console.raw", kind="serial-raw")
    g.write(b"abc")
    # What a kill between writing manifest.json.tmp and renaming it leaves behind:
    (path / "manifest.json.tmp").write_text("{partial json")
    (path / "swd").mkdir()
    (path / "swd" / "registers.json.tmp").write_text('{"pc": 1')
    report = verify_bundle(path)
    assert report.ok, [str(f) for f in report.findings]
    assert sum("cut short" in f.message for f in report.findings) == 2
    sealed = seal_bundle(path)
    assert sealed.ok and sealed.status == "partial"
    assert not (path / "manifest.json.tmp").exists()
    assert read_manifest(path)["files"]["swd/registers.json.tmp"]["kind"] == "interrupted-write"


def test_cli_verify(tmp_path):
    from click.testing import CliRunner

    from collector.archive import pack_bundle
    from crashcart.cli import cli

    b = make_bundle(tmp_path / "b")
    archive = pack_bundle(b, tmp_path / "b.tar.gz")

    def run(*args):
        return CliRunner().invoke(cli, list(args))

    ok = run("bundle", "verify", str(b))
    assert ok.exit_code == 0 and "intact; capture complete" in ok.output
    ok = run("bundle", "verify", str(archive))
    assert ok.exit_code == 0 and "intact" in ok.output
    (b / "serial" / "console.raw").write_bytes(b"HELLO\nworld\n")
    bad = run("bundle", "verify", str(b))
    assert bad.exit_code == 1
    assert "changed" in bad.output and "TAMPERED" in bad.output
