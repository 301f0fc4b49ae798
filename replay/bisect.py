"""Bisect firmware builds: the first build on which a scenario's incident reproduces.

The builds are ordered oldest to newest.  The search checks both ends (the
oldest must be clean, the newest must reproduce), then halves the range
between the last clean and the first failing build: 2 + ceil(log2(n - 1))
runs at most for n builds.  Every run is recorded, so the report says
which builds were run and what each showed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashcart.errors import InputError
from replay.runner import run_scenario
from replay.scenario import Scenario
from replay.verdict import Verdict

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BisectRun:
    index: int
    build: Path
    verdict: Verdict

    @property
    def fails(self) -> bool:
        return self.verdict.reproduces


@dataclass(frozen=True)
class BisectResult:
    builds: tuple[Path, ...]
    runs: tuple[BisectRun, ...]
    first_bad: int | None  # index into builds; None when no build fails
    last_good: int | None  # None when the oldest build already fails
    message: str

    @property
    def first_bad_build(self) -> Path | None:
        return None if self.first_bad is None else self.builds[self.first_bad]

    def to_json(self) -> dict[str, Any]:
        return {
            "builds": [str(b) for b in self.builds],
            "first_bad": None if self.first_bad is None else str(self.builds[self.first_bad]),
            "first_bad_index": self.first_bad,
            "last_good": None if self.last_good is None else str(self.builds[self.last_good]),
            "runs": [{"index": r.index, "build": str(r.build), "fails": r.fails,
                      "label": r.verdict.label, "summary": r.verdict.summary()}
                     for r in self.runs],
            "run_count": len(self.runs),
            "message": self.message,
        }


def bisect_builds(scenario: Scenario, builds: list[Path], *,
                  search_path: tuple[Path, ...] = (),
                  on_run: Callable[[BisectRun], None] | None = None) -> BisectResult:
    """Find the first of ``builds`` (oldest first) on which ``scenario`` reproduces."""
    if len(builds) < 2:
        raise InputError("bisect needs at least two builds", field="--builds",
                         value=[str(b) for b in builds],
                         remedy="pass the builds oldest to newest: --builds A.elf B.elf ...")
    for b in builds:
        if not b.is_file():
            raise InputError("build ELF not found", path=b, remedy="check the path")
    runs: list[BisectRun] = []
    cache: dict[int, bool] = {}

    def fails(i: int) -> bool:
        if i not in cache:
            verdict = run_scenario(scenario, firmware=builds[i], search_path=search_path)
            run = BisectRun(i, builds[i], verdict)
            runs.append(run)
            cache[i] = run.fails
            LOG.info("bisect: %s %s", builds[i].name, verdict.label)
            if on_run is not None:
                on_run(run)
        return cache[i]

    n = len(builds)
    if not fails(n - 1):
        return BisectResult(tuple(builds), tuple(runs), None, n - 1,
                            f"the newest build {builds[-1].name} does not reproduce: "
                            "nothing to bisect")
    if fails(0):
        return BisectResult(tuple(builds), tuple(runs), 0, None,
                            f"the oldest build {builds[0].name} already reproduces")
    good, bad = 0, n - 1  # invariant: builds[good] clean, builds[bad] reproduces
    while bad - good > 1:
        mid = (good + bad) // 2
        if fails(mid):
            bad = mid
        else:
            good = mid
    return BisectResult(tuple(builds), tuple(runs), bad, good,
                        f"first failing build: {builds[bad].name} "
                        f"(last clean: {builds[good].name}); {len(runs)} runs for "
                        f"{n} builds")
