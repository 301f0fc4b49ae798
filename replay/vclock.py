"""Build and locate the virtual-clock QEMU plugin (``qemu_plugin/vclock.c``).

The plugin is compiled on first use with the host C compiler into the user
cache directory, keyed by a hash of its source, so an edited plugin is
rebuilt and an unchanged one costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from crashcart.errors import EnvironmentProblem

SOURCE = Path(__file__).resolve().parent / "qemu_plugin" / "vclock.c"

# Exit status the plugin gives QEMU when the instruction budget is used up.
LIMIT_EXIT_STATUS = 125


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crashcart"


def plugin_path() -> Path:
    """Path of the built plugin, building it if needed."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = cache_dir() / f"vclock-{digest}.so"
    if target.exists():
        return target
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise EnvironmentProblem(
            "no host C compiler to build the QEMU virtual-clock plugin",
            remedy="apt-get install --no-install-recommends gcc libc6-dev"
                   " (or run ./dev.sh setup)",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        proc = subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o", str(out), str(SOURCE)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem(
                f"building the QEMU plugin failed: {proc.stderr.strip()[-500:]}",
                path=SOURCE,
                remedy="install gcc and libc6-dev",
            )
        os.replace(out, target)
    return target
