"""The distribution ships every package of the source tree (a wheel install must work)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.glob("**/__init__.py")
        if not {".venv", "tests", "build", "fixtures", "bench"} & set(p.relative_to(ROOT).parts)
    }
    assert found == listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
