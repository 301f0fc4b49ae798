"""Action-item verification: "closed" means demonstrated, not promised.

An action item in an incident's ``incident.yaml`` links to a replay
scenario and to builds::

    action_items:
      - id: AI-1
        title: Range-check adc_channel
        scenario: replay/adc-channel.replay.yaml     # ('replay:' is accepted too)
        must_fail_on: [../firmware/elf/sensor-node-1.0.0.elf]   # the incident builds
        must_pass_on: [../firmware/elf/sensor-node-1.0.1.elf]   # the fix builds

Paths are relative to the incident directory; a build may also be given
as a GNU build ID, found through ``--elf-path`` / ``$CRASHCART_ELF_PATH``.

* On every ``must_fail_on`` build the scenario must reproduce the incident
  (proof that the check is real); if it does not, the item is **invalid**.
* On every ``must_pass_on`` build the incident must not reproduce and the
  board must not fault at all; then the item is **closed**, else **open**.
* An item with no scenario, or no ``must_pass_on`` build, is **open**
  (``unverified`` when it has no scenario).

Only the ``action_items`` list is read here (with its own minimal
validation); the rest of incident.yaml belongs to the timeline/report code.
Verdict files can be written where that code looks for them,
``replay/verdicts/<ID>.json`` in the incident directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashcart.errors import CrashcartError, InputError
from crashcart.yamlfile import Checker, KeyPath, load_yaml
from replay.runner import Cell, CellResult, run_matrix
from replay.scenario import elf_search_path, find_elf_by_build_id, load_scenario

LOG = logging.getLogger(__name__)

INCIDENT_FILE = "incident.yaml"
STATUSES = ("closed", "open", "invalid", "unverified")


@dataclass(frozen=True)
class ActionCheck:
    id: str
    title: str
    scenario: Path | None
    must_fail_on: tuple[Path, ...]
    must_pass_on: tuple[Path, ...]


@dataclass(frozen=True)
class BuildResult:
    build: Path
    role: str  # must_fail_on | must_pass_on
    label: str  # reproduces | clean | other failure | error
    ok: bool
    summary: str


@dataclass
class ItemResult:
    item: ActionCheck
    status: str
    reason: str
    builds: list[BuildResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.item.id, "title": self.item.title, "status": self.status,
                "reason": self.reason,
                "scenario": None if self.item.scenario is None else str(self.item.scenario),
                "builds": [{"build": str(b.build), "role": b.role, "label": b.label,
                            "ok": b.ok, "summary": b.summary} for b in self.builds]}


def load_action_items(incident: Path, *, search_path: tuple[Path, ...] = ()
                      ) -> tuple[Path, list[ActionCheck]]:
    """The incident directory and its action items (incident.yaml or its directory)."""
    path = incident / INCIDENT_FILE if incident.is_dir() else incident
    root = path.parent
    doc = load_yaml(path, what="incident file")
    c = Checker(doc, what="incident file")
    top = c.mapping((), doc.data, required=("action_items",), open_ended=True)
    items = c.sequence(("action_items",), top["action_items"], min_items=1)
    dirs = elf_search_path(search_path)
    checks: list[ActionCheck] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        p: KeyPath = ("action_items", i)
        m = c.mapping(p, raw, required=("id",), open_ended=True)
        ident = c.string(p + ("id",), m["id"], pattern=r"[A-Za-z][A-Za-z0-9_-]*")
        if ident in seen:
            c.fail(p + ("id",), "action item id used twice", ident)
        seen.add(ident)
        title = str(m.get("title") or "")
        if "scenario" in m and "replay" in m:
            c.fail(p, "give 'scenario' or 'replay', not both")
        key = "scenario" if "scenario" in m else "replay"
        scenario = None
        if m.get(key) is not None:
            scenario = root / c.string(p + (key,), m[key])
            if not scenario.is_file():
                c.fail(p + (key,), "scenario file not found", m[key],
                       remedy="paths are relative to the incident directory")
        fail_on = _builds(c, p + ("must_fail_on",), m.get("must_fail_on"), root, dirs)
        pass_on = _builds(c, p + ("must_pass_on",), m.get("must_pass_on"), root, dirs)
        if scenario is None and (fail_on or pass_on):
            c.fail(p, "must_fail_on/must_pass_on need a scenario to run",
                   remedy="add scenario: replay/<check>.replay.yaml")
        checks.append(ActionCheck(ident, title, scenario, fail_on, pass_on))
    return root, checks


def _builds(c: Checker, path: KeyPath, value: Any, root: Path,
            dirs: list[Path]) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    out = []
    for i, item in enumerate(c.sequence(path, value)):
        text = c.string(path + (i,), item)
        if re.fullmatch(r"[0-9a-f]{8,40}", text):
            found = find_elf_by_build_id(text, dirs)
            if found is None:
                c.fail(path + (i,), "no ELF with this build ID on the search path", text,
                       remedy="pass --elf-path DIR or set $CRASHCART_ELF_PATH")
            out.append(found)
            continue
        p = root / text
        if not p.is_file():
            c.fail(path + (i,), "build ELF not found", text,
                   remedy="paths are relative to the incident directory")
        out.append(p)
    return tuple(out)


def verify_incident(incident: Path, *, search_path: tuple[Path, ...] = (),
                    jobs: int | None = None,
                    progress: Callable[[int, int, str, BuildResult], None] | None = None,
                    ) -> list[ItemResult]:
    """Run every action item's check on its builds (in parallel) and judge each item."""
    _, items = load_action_items(incident, search_path=search_path)
    cells: list[Cell] = []
    roles: list[tuple[int, str]] = []
    results = [ItemResult(item, "open", "") for item in items]
    for n, item in enumerate(items):
        if item.scenario is None:
            results[n] = ItemResult(item, "unverified", "no replay scenario")
            continue
        try:
            scenario = load_scenario(item.scenario)
        except InputError as exc:
            results[n] = ItemResult(item, "invalid", f"scenario does not load: {exc.message}")
            continue
        for role, builds in (("must_fail_on", item.must_fail_on),
                             ("must_pass_on", item.must_pass_on)):
            for b in builds:
                cells.append(Cell(scenario, firmware=b, label=f"{item.id} {b.name}"))
                roles.append((n, role))
    role_of = {id(cell): (items[n].id, role) for cell, (n, role) in zip(cells, roles)}

    def judged(done: int, total: int, outcome: CellResult) -> None:
        # Progress in the item's terms: an incident build must reproduce, a
        # fix build must run clean (the scenario's own "expectations met"
        # would read backwards on a fix build).
        if progress is not None:
            item_id, role = role_of[id(outcome.cell)]
            progress(done, total, item_id, _build_result(role, outcome))

    outcomes = run_matrix(cells, jobs=jobs, progress=judged, search_path=search_path)
    for (n, role), outcome in zip(roles, outcomes):
        results[n].builds.append(_build_result(role, outcome))
    for r in results:
        if r.status in ("unverified", "invalid") and not r.builds:
            continue
        r.status, r.reason = _judge(r)
    return results


def _build_result(role: str, outcome: CellResult) -> BuildResult:
    build = outcome.cell.firmware
    assert build is not None
    if outcome.verdict is None:
        err: CrashcartError | None = outcome.error
        return BuildResult(build, role, "error", False, str(err))
    v = outcome.verdict
    if role == "must_fail_on":
        ok = v.reproduces
    else:
        ok = not v.reproduces and not v.faulted
    return BuildResult(build, role, v.label, ok, v.summary())


def _judge(r: ItemResult) -> tuple[str, str]:
    fail_on = [b for b in r.builds if b.role == "must_fail_on"]
    pass_on = [b for b in r.builds if b.role == "must_pass_on"]
    errors = [b for b in r.builds if b.label == "error"]
    if errors:
        return "invalid", f"the check could not run on {errors[0].build.name}: {errors[0].summary}"
    if not fail_on:
        return "invalid", "no must_fail_on build: nothing shows the check can see the incident"
    missed = [b for b in fail_on if not b.ok]
    if missed:
        return "invalid", (f"does not reproduce the incident on {missed[0].build.name} "
                           f"({missed[0].label})")
    if not pass_on:
        return "open", "no must_pass_on (fix) build named"
    still = [b for b in pass_on if not b.ok]
    if still:
        return "open", f"{still[0].label} on fix build {still[0].build.name}"
    names = ", ".join(b.build.name for b in pass_on)
    return "closed", f"reproduces on the incident build(s), clean on {names}"


def write_verdicts(incident: Path, results: list[ItemResult]) -> list[Path]:
    """Write replay/verdicts/<ID>.json for each checked item (the report's format)."""
    root = incident if incident.is_dir() else incident.parent
    out_dir = root / "replay" / "verdicts"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in results:
        if r.status == "unverified":
            continue
        status = r.status if r.status in ("closed", "open", "invalid") else "open"
        data = {"format": "crashcart-verdict", "action_item": r.item.id,
                "scenario": None if r.item.scenario is None
                else str(r.item.scenario.relative_to(root)) if r.item.scenario.is_relative_to(root)
                else str(r.item.scenario),
                "status": status, "checked": now, "summary": r.reason,
                "builds": r.to_json()["builds"]}
        path = out_dir / f"{r.item.id}.json"
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def format_table(results: list[ItemResult]) -> str:
    rows = [("ITEM", "STATUS", "REASON")]
    rows += [(r.item.id, r.status, r.reason) for r in results]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)
