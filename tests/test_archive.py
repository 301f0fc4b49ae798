"""Bundle archives: round trip, and hostile archives refused before anything is written."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.archive import open_archive, pack_bundle
from collector.bundle import verify_bundle
from crashcart.errors import InputError

from .test_bundle import make_bundle


def test_round_trip(tmp_path):
    b = make_bundle(tmp_path / "incident-1")
    archive = pack_bundle(b, tmp_path / "incident-1.tar.gz")
    out = open_archive(archive, tmp_path / "x")
    assert out.name == "incident-1"
    report = verify_bundle(out)
    assert report.ok and report.status == "complete"
    assert (out / "serial" / "console.raw").read_bytes() == b"hello\nworld\n"


def _tar(tmp_path, entries, name="evil.tar.gz"):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize("entries,expect", [
    ([_file("b/manifest.json"), _file("b/../../escape.txt")], "unsafe path"),
    ([_file("/etc/crashcart-pwned")], "unsafe path"),
    ([_file("b/manifest.json"), _link("b/evil", "/etc/passwd")], "link"),
    ([_file("b/manifest.json"), _link("b/hard", "b/manifest.json", tarfile.LNKTYPE)], "link"),
    ([_file("b/manifest.json"), _file("b/manifest.json")], "twice"),
    ([_file("a/manifest.json"), _file("b/manifest.json")], "exactly one bundle"),
    ([_file("b/notes.txt")], "no manifest"),
])
def test_hostile_archives_refused(tmp_path, entries, expect):
    path = _tar(tmp_path, entries)
    dest = tmp_path / "out"
    with pytest.raises(InputError) as info:
        open_archive(path, dest)
    assert expect in str(info.value)
    assert str(path) in str(info.value)
    assert not (tmp_path / "escape.txt").exists()
    if expect != "no manifest":
        assert not dest.exists() or not any(dest.rglob("*"))


def test_device_member_refused(tmp_path):
    info = tarfile.TarInfo("b/dev")
    info.type = tarfile.CHRTYPE
    path = _tar(tmp_path, [_file("b/manifest.json"), (info, None)])
    with pytest.raises(InputError) as err:
        open_archive(path, tmp_path / "out")
    assert "not a plain file" in str(err.value)


def test_oversized_member_refused(tmp_path, monkeypatch):
    import collector.archive as archive

    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 10)
    path = _tar(tmp_path, [_file("b/manifest.json", b"x" * 11)])
    with pytest.raises(InputError) as err:
        open_archive(path, tmp_path / "out")
    assert "over the 10 byte limit" in str(err.value)


def test_truncated_archive(tmp_path):
    b = make_bundle(tmp_path / "b")
    archive = pack_bundle(b, tmp_path / "b.tar.gz")
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        open_archive(cut, tmp_path / "out")


def test_garbage_archive(tmp_path):
    p = tmp_path / "g.tar.gz"
    p.write_bytes(os.urandom(1000))
    with pytest.raises(InputError) as err:
        open_archive(p, tmp_path / "out")
    assert "tar" in str(err.value)


_PACKED: dict[str, bytes] = {}


def _packed(tmp_path_factory) -> bytes:
    if "b" not in _PACKED:
        base = tmp_path_factory.mktemp("packed")
        _PACKED["b"] = pack_bundle(make_bundle(base / "b"), base / "b.tar.gz").read_bytes()
    return _PACKED["b"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_corrupted_archives(tmp_path_factory, data):
    raw = bytearray(_packed(tmp_path_factory))
    base = tmp_path_factory.mktemp("fz")
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    p = base / "c.tar.gz"
    p.write_bytes(bytes(raw))
    try:
        out = open_archive(p, base / "out")
        verify_bundle(out)
    except InputError:
        pass
