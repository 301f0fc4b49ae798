"""Config minimization: which of the differing keys make a config trigger the failure.

Delta debugging, ddmin (A. Zeller and R. Hildebrandt, "Simplifying and
Isolating Failure-Inducing Input", IEEE TSE 28(2), 2002): the changes are
the keys whose values differ between a good and a bad config (both taken
on top of the firmware's compiled-in defaults, as the board would see
them).  A test applies a subset of the changes to the good config and
runs the scenario; it "fails" when the scenario's incident reproduces.
ddmin returns a 1-minimal failing subset: removing any one key from it
makes the failure go away.

Each round's subsets (and then their complements) are run in parallel;
the first failing one in ddmin's order is taken, so the result and the run
count do not depend on which run finishes first.  Runs are cached by subset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.device_config import firmware_defaults, load_config_file
from collector.elf import ElfImage
from crashcart.errors import CheckFailed, InputError
from replay.runner import default_jobs, run_scenario, scenario_target
from replay.scenario import ConfigSpec, Scenario, resolve_firmware
from replay.verdict import Verdict

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MinimizeResult:
    differing: tuple[str, ...]  # every key that differs between good and bad
    minimal: tuple[str, ...]  # the 1-minimal set of changes that still fails
    changes: dict[str, tuple[Any, Any]]  # key -> (good value, bad value), minimal keys only
    runs: int
    verdict: Verdict  # the failing run of the minimal set

    def to_json(self) -> dict[str, Any]:
        return {"differing_keys": list(self.differing), "minimal_keys": list(self.minimal),
                "changes": {k: {"good": g, "bad": b} for k, (g, b) in self.changes.items()},
                "runs": self.runs, "verdict": self.verdict.summary()}


def full_config(image: ElfImage, scenario: Scenario, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` on top of the firmware's defaults, without the derived fields."""
    target = scenario_target(scenario)
    defaults = firmware_defaults(image, target) or {}
    derived = set(target.config.derived) if target.config is not None else set()
    full = {k: v for k, v in defaults.items() if k not in derived}
    full.update({k: v for k, v in values.items() if k not in derived})
    return full


def minimize_config(scenario: Scenario, good: Path, bad: Path, *, firmware: Path | None = None,
                    search_path: tuple[Path, ...] = (), jobs: int | None = None,
                    on_run: Callable[[tuple[str, ...], Verdict], None] | None = None,
                    ) -> MinimizeResult:
    elf = resolve_firmware(scenario, firmware, search_path)
    image = ElfImage.open_cached(elf)
    good_values = full_config(image, scenario, load_config_file(good))
    bad_values = full_config(image, scenario, load_config_file(bad))
    unknown = sorted(set(bad_values) - set(good_values))
    if unknown:
        raise InputError(f"the bad config sets fields this firmware's config does not have: "
                         f"{', '.join(unknown)}", path=bad)
    differing = tuple(k for k in bad_values if good_values.get(k) != bad_values[k])
    if not differing:
        raise InputError("the good and bad configs do not differ", path=bad,
                         remedy="pass two configs that differ in at least one field")
    cache: dict[frozenset[str], Verdict] = {}
    jobs = max(1, jobs or default_jobs())

    def config_for(keys: frozenset[str]) -> dict[str, Any]:
        values = dict(good_values)
        for k in keys:
            values[k] = bad_values[k]
        return values

    def run_many(subsets: list[frozenset[str]]) -> list[bool]:
        todo = [s for s in dict.fromkeys(subsets) if s not in cache]

        def one(keys: frozenset[str]) -> tuple[frozenset[str], Verdict]:
            spec = ConfigSpec(values=config_for(keys))
            return keys, run_scenario(scenario, firmware=elf, config=spec)

        with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(todo)))) as pool:
            for keys, verdict in pool.map(one, todo):
                cache[keys] = verdict
                if on_run is not None:
                    on_run(tuple(k for k in differing if k in keys), verdict)
        return [cache[s].reproduces for s in subsets]

    all_keys = frozenset(differing)
    bad_fails, good_fails = run_many([all_keys, frozenset()])
    if not bad_fails:
        raise CheckFailed("the bad config does not reproduce the scenario's incident", path=bad,
                          remedy="check the scenario's expectations and the bad config")
    if good_fails:
        raise CheckFailed("the good config already reproduces the scenario's incident",
                          path=good, remedy="pass a config on which the scenario is clean")

    changes = [k for k in differing]
    n = 2
    while len(changes) >= 2:
        chunks = _split(changes, n)
        subsets = [frozenset(c) for c in chunks]
        results = run_many(subsets)
        hit = next((i for i, r in enumerate(results) if r), None)
        if hit is not None:
            changes, n = list(chunks[hit]), 2
            continue
        if n > 2:
            complements = [frozenset(k for k in changes if k not in c) for c in chunks]
            results = run_many(complements)
            hit = next((i for i, r in enumerate(results) if r), None)
            if hit is not None:
                changes = [k for k in changes if k in complements[hit]]
                n = max(n - 1, 2)
                continue
        if n >= len(changes):
            break
        n = min(len(changes), 2 * n)
    minimal = tuple(k for k in differing if k in changes)
    return MinimizeResult(differing, minimal,
                          {k: (good_values.get(k), bad_values[k]) for k in minimal},
                          len(cache), cache[frozenset(minimal)])


def _split(items: list[str], n: int) -> list[list[str]]:
    size, rest = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < rest else 0)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]
