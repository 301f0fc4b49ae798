"""The committed fixture ELFs are exactly what the committed sources build.

A rebuild in another directory must give byte-identical ELFs (and so the
same GNU build IDs): the build is reproducible, and nobody can change a
source without rebuilding and committing the ELFs.  This covers the two
releases and the 0.9.0..0.9.4 bisect chain (elf/chain/).
"""

from __future__ import annotations

import shutil
import subprocess

from collector.elf import ElfImage

from .conftest import ELF_DIR, FIRMWARE_DIR


def test_committed_elfs_are_reproducible(tmp_path):
    work = tmp_path / "fw"
    work.mkdir()
    shutil.copytree(FIRMWARE_DIR / "src", work / "src")
    for name in ("Makefile", "sensor-node.ld"):
        shutil.copy(FIRMWARE_DIR / name, work / name)
    proc = subprocess.run(["make", "-C", str(work), "-j2", "all"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    elfs = sorted(ELF_DIR.glob("sensor-node-*.elf"))
    assert [p.name for p in elfs] == ["sensor-node-1.0.0.elf", "sensor-node-1.0.1.elf"]
    chain = sorted((ELF_DIR / "chain").glob("sensor-node-*.elf"))
    assert [p.name for p in chain] == [f"sensor-node-0.9.{i}.elf" for i in range(5)]
    for committed in elfs + chain:
        rebuilt = work / committed.relative_to(FIRMWARE_DIR)
        assert rebuilt.read_bytes() == committed.read_bytes(), (
            f"{committed.name} differs from a rebuild of the sources: run `make -C "
            f"fixtures/firmware` and commit the ELFs"
        )
    ids = {ElfImage(p).build_id for p in elfs + chain}
    assert len(ids) == 7 and all(len(i) == 40 for i in ids)


def test_release_elfs_keep_their_build_ids():
    # The chain was added without changing a byte of the releases (README table).
    assert ElfImage(ELF_DIR / "sensor-node-1.0.0.elf").build_id == (
        "d0254c72b736b175b4354dd5e59b2707ee4e93dc")
    assert ElfImage(ELF_DIR / "sensor-node-1.0.1.elf").build_id == (
        "0f323e71a50eb772900fa694243578138ad0e127")
