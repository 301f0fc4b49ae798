"""The incident directory and its ``incident.yaml``.

::

    INCIDENT/
      incident.yaml     what happened, for people: summary, impact, roles, factors,
                        lessons, action items (docs/incident-format.md)
      evidence/         evidence bundles, one directory per capture
      events/           external event files (.csv, .jsonl, .yaml; docs/events-format.md)
      replay/           replay scenarios the action items point at, and
      replay/verdicts/  the verdicts replay wrote for them (<ACTION-ID>.json)
      configs/          firmware configs for the config diff (optional)

``incident.yaml`` is loaded with :func:`crashcart.yamlfile.load_yaml` (safe
loading, duplicate keys refused) and checked with its ``Checker``, so every
error names the file, line, field and value, and says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashcart.errors import InputError
from crashcart.units import parse_duration_ns
from crashcart.yamlfile import Checker, KeyPath, format_keypath, load_yaml
from timeline.events_file import SUFFIXES as EVENT_SUFFIXES
from timeline.model import time_value_us

SCHEMA_VERSION = 1
INCIDENT_FILE = "incident.yaml"
SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")
STATUSES = ("investigating", "mitigated", "resolved")
DETECTION_METHODS = ("alert", "monitoring", "customer-report", "test", "manual", "other")
ACTION_TYPES = ("prevent", "detect", "mitigate", "process", "investigate")
ACTION_STATUSES = ("open", "in-progress", "done", "wont-do")
#: Verification of an action item: ``closed`` only from a replay verdict that shows it.
VERIFICATION_STATUSES = ("closed", "open", "invalid", "unverified")
VERDICT_STATUSES = ("closed", "open", "invalid")
FACTOR_CATEGORIES = ("process", "tooling", "design", "testing", "monitoring",
                     "documentation", "communication", "environment")
_TOP_REQUIRED = ("schema", "title", "severity", "status", "summary", "impact", "detection",
                 "roles", "root_cause", "contributing_factors", "lessons", "action_items")
_TOP_OPTIONAL = ("id", "technical", "evidence", "event_files")


@dataclass(frozen=True)
class TextField:
    """A piece of human-written text in incident.yaml, with where it is."""

    field: str
    line: int | None
    text: str


@dataclass(frozen=True)
class Role:
    role: str
    team: str | None
    notes: str | None


@dataclass(frozen=True)
class Impact:
    description: str
    started_us: int | None
    ended_us: int | None
    devices_affected: int | None


@dataclass(frozen=True)
class Detection:
    description: str
    method: str | None
    detected_us: int | None


@dataclass(frozen=True)
class ContributingFactor:
    description: str
    category: str | None


@dataclass(frozen=True)
class EvidenceEntry:
    path: Path               # the bundle directory
    name: str                # as written, relative to the incident ("evidence/node-1")
    device: str
    description: str | None
    target: str | None
    host_clock_offset_us: int


@dataclass(frozen=True)
class Verification:
    """Whether replay shows an action item works.  Filled from a verdict file when one exists."""

    status: str              # closed | open | invalid | unverified
    verdict: Path | None     # the replay verdict JSON the status came from
    detail: str | None


@dataclass(frozen=True)
class ActionItem:
    id: str
    title: str
    type: str
    owner_role: str
    status: str
    due: str | None
    ticket: str | None
    replay: str | None       # scenario, relative to the incident
    verification: Verification
    must_fail_on: tuple[str, ...] = ()   # incident builds (paths or build IDs) for replay
    must_pass_on: tuple[str, ...] = ()   # fix builds


@dataclass(frozen=True)
class Lessons:
    went_well: tuple[str, ...]
    went_wrong: tuple[str, ...]
    got_lucky: tuple[str, ...]


@dataclass(frozen=True)
class ConfigDiff:
    last_good_name: str
    triggering_name: str
    last_good: dict[str, Any]
    triggering: dict[str, Any]

    def changed(self) -> list[tuple[str, Any, Any]]:
        """(field, last good value, triggering value) for every field that differs."""
        missing = object()
        rows = []
        for key in sorted(set(self.last_good) | set(self.triggering)):
            old = self.last_good.get(key, missing)
            new = self.triggering.get(key, missing)
            if old != new:
                rows.append((key, None if old is missing else old,
                             None if new is missing else new))
        return rows


@dataclass(frozen=True)
class Incident:
    directory: Path
    path: Path
    id: str | None
    title: str
    severity: str
    status: str
    summary: str
    impact: Impact
    detection: Detection
    roles: tuple[Role, ...]
    root_cause: str
    contributing_factors: tuple[ContributingFactor, ...]
    technical_notes: str | None
    config_diff: ConfigDiff | None
    evidence: tuple[EvidenceEntry, ...]
    event_files: tuple[Path, ...]
    lessons: Lessons
    action_items: tuple[ActionItem, ...]
    texts: tuple[TextField, ...]   # every human-written text, for the language check


def load_incident(path: str | Path) -> Incident:
    """Load an incident directory (or its incident.yaml) and check every field."""
    path = Path(path)
    file = path / INCIDENT_FILE if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise InputError("not an incident directory: it has no incident.yaml", path=path,
                         remedy="create incident.yaml (see docs/incident-format.md)")
    return _IncidentParser(file).parse()


class _IncidentParser:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.root = file.parent
        self.doc = load_yaml(file, what="incident file")
        self.check = Checker(self.doc, what="incident file")
        self.texts: list[TextField] = []

    def parse(self) -> Incident:
        c = self.check
        top = c.mapping((), self.doc.data, required=_TOP_REQUIRED, optional=_TOP_OPTIONAL)
        schema = c.integer(("schema",), top["schema"])
        if schema != SCHEMA_VERSION:
            c.fail(("schema",), f"this crashcart reads incident files of schema "
                   f"{SCHEMA_VERSION}", schema)
        incident_id = self._optional_str(top, ("id",))
        lessons_raw = c.mapping(("lessons",), top["lessons"],
                                required=("went_well", "went_wrong", "got_lucky"))
        return Incident(
            directory=self.root, path=self.file, id=incident_id,
            title=self._text(("title",), top["title"], human=False),
            severity=self._choice(("severity",), top["severity"], SEVERITIES, upper=True),
            status=self._choice(("status",), top["status"], STATUSES),
            summary=self._text(("summary",), top["summary"]),
            impact=self._impact(top["impact"]),
            detection=self._detection(top["detection"]),
            roles=self._roles(top["roles"]),
            root_cause=self._text(("root_cause",), top["root_cause"]),
            contributing_factors=self._factors(top["contributing_factors"]),
            technical_notes=self._technical_notes(top.get("technical")),
            config_diff=self._config_diff(top.get("technical")),
            evidence=self._evidence(top.get("evidence")),
            event_files=self._event_files(top.get("event_files")),
            lessons=Lessons(*(self._text_list(("lessons", key), lessons_raw[key])
                              for key in ("went_well", "went_wrong", "got_lucky"))),
            action_items=self._action_items(top["action_items"]),
            texts=tuple(self.texts),
        )

    # -- small checks ------------------------------------------------------------------

    def _text(self, path: KeyPath, value: Any, *, human: bool = True) -> str:
        text = self.check.string(path, value)
        if not text.strip():
            self.check.fail(path, "must not be empty")
        if human:
            self.texts.append(TextField(format_keypath(path), self.doc.line_of(path), text))
        return text.strip()

    def _optional_str(self, parent: dict[str, Any], path: KeyPath,
                      *, human: bool = False) -> str | None:
        value = parent.get(str(path[-1]))
        if value is None:
            return None
        return self._text(path, value, human=human)

    def _choice(self, path: KeyPath, value: Any, choices: tuple[str, ...],
                *, upper: bool = False) -> str:
        text = self.check.string(path, value)
        if upper:
            text = text.upper()
        if text not in choices:
            self.check.fail(path, "must be one of: " + ", ".join(choices), value)
        return text

    def _time(self, path: KeyPath, value: Any) -> int | None:
        if value is None:
            return None
        try:
            return time_value_us(value)
        except ValueError as exc:
            self.check.fail(path, f"time {exc}", str(value),
                            "write it like 2024-03-14T10:00:00Z (with a timezone)")

    def _text_list(self, path: KeyPath, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = self.check.sequence(path, value)
        return tuple(self._text(path + (i,), item) for i, item in enumerate(items))

    def _path(self, path: KeyPath, value: Any, *, directory: bool,
              inside: bool = True) -> tuple[Path, str]:
        """A path relative to the incident; ``inside``: it may not leave the directory."""
        name = self.check.string(path, value)
        rel = Path(name)
        if rel.is_absolute() or (inside and ".." in rel.parts):
            self.check.fail(path, "must be a path inside the incident directory", name,
                            "copy the file into the incident directory and name it relatively")
        full = self.root / rel
        if directory and not full.is_dir():
            self.check.fail(path, "no such directory in the incident", name)
        if not directory and not full.is_file():
            self.check.fail(path, "no such file in the incident", name)
        return full, name

    # -- sections ----------------------------------------------------------------------

    def _impact(self, value: Any) -> Impact:
        c = self.check
        m = c.mapping(("impact",), value, required=("description",),
                      optional=("started", "ended", "devices_affected"))
        started = self._time(("impact", "started"), m.get("started"))
        ended = self._time(("impact", "ended"), m.get("ended"))
        if started is not None and ended is not None and ended < started:
            c.fail(("impact", "ended"), "is before impact.started", str(m.get("ended")))
        devices = m.get("devices_affected")
        if devices is not None:
            devices = c.integer(("impact", "devices_affected"), devices, minimum=0)
        return Impact(self._text(("impact", "description"), m["description"]), started, ended,
                      devices)

    def _detection(self, value: Any) -> Detection:
        m = self.check.mapping(("detection",), value, required=("description",),
                               optional=("method", "detected_at"))
        method = m.get("method")
        if method is not None:
            method = self._choice(("detection", "method"), method, DETECTION_METHODS)
        return Detection(self._text(("detection", "description"), m["description"]), method,
                         self._time(("detection", "detected_at"), m.get("detected_at")))

    def _roles(self, value: Any) -> tuple[Role, ...]:
        items = self.check.sequence(("roles",), value, min_items=1)
        roles = []
        for i, item in enumerate(items):
            path: KeyPath = ("roles", i)
            m = self.check.mapping(path, item, required=("role",), optional=("team", "notes"))
            roles.append(Role(self._text(path + ("role",), m["role"]),
                              self._optional_str(m, path + ("team",), human=True),
                              self._optional_str(m, path + ("notes",), human=True)))
        return tuple(roles)

    def _factors(self, value: Any) -> tuple[ContributingFactor, ...]:
        items = self.check.sequence(("contributing_factors",), value, min_items=1)
        factors = []
        for i, item in enumerate(items):
            path: KeyPath = ("contributing_factors", i)
            if isinstance(item, str):
                factors.append(ContributingFactor(self._text(path, item), None))
                continue
            m = self.check.mapping(path, item, required=("description",),
                                   optional=("category",))
            category = m.get("category")
            if category is not None:
                category = self._choice(path + ("category",), category, FACTOR_CATEGORIES)
            factors.append(ContributingFactor(self._text(path + ("description",),
                                                         m["description"]), category))
        return tuple(factors)

    def _technical_notes(self, value: Any) -> str | None:
        if value is None:
            return None
        m = self.check.mapping(("technical",), value, optional=("notes", "config_diff"))
        return self._optional_str(m, ("technical", "notes"), human=True)

    def _config_diff(self, value: Any) -> ConfigDiff | None:
        if value is None or value.get("config_diff") is None:
            return None
        from collector.device_config import load_config_file

        path: KeyPath = ("technical", "config_diff")
        m = self.check.mapping(path, value["config_diff"], required=("last_good", "triggering"))
        good, good_name = self._path(path + ("last_good",), m["last_good"], directory=False)
        bad, bad_name = self._path(path + ("triggering",), m["triggering"], directory=False)
        return ConfigDiff(good_name, bad_name, load_config_file(good), load_config_file(bad))

    def _evidence(self, value: Any) -> tuple[EvidenceEntry, ...]:
        if value is None:
            found = sorted(p for p in (self.root / "evidence").glob("*")
                           if (p / "manifest.json").is_file())
            return tuple(EvidenceEntry(p, f"evidence/{p.name}", p.name, None, None, 0)
                         for p in found)
        items = self.check.sequence(("evidence",), value)
        entries = []
        for i, item in enumerate(items):
            path: KeyPath = ("evidence", i)
            m = self.check.mapping(path, item, required=("bundle",),
                                   optional=("device", "description", "target",
                                             "host_clock_offset"))
            offset = self._offset(path + ("host_clock_offset",), m.get("host_clock_offset"))
            full, name = self._path(path + ("bundle",), m["bundle"], directory=True)
            if not (full / "manifest.json").is_file():
                self.check.fail(path + ("bundle",), "is not an evidence bundle (no manifest.json)",
                                name, "unpack archives with `crashcart bundle open` first")
            device = self._optional_str(m, path + ("device",)) or full.name
            entries.append(EvidenceEntry(
                full, name, device, self._optional_str(m, path + ("description",)),
                self._optional_str(m, path + ("target",)), offset))
        return tuple(entries)

    def _offset(self, path: KeyPath, value: Any) -> int:
        if value is None:
            return 0
        if not isinstance(value, str):
            self.check.fail(path, "must be a duration with a unit", value,
                            "for example +250ms or -1.5s")
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        try:
            return sign * parse_duration_ns(text.lstrip("+-"), what="host_clock_offset") // 1000
        except InputError as exc:
            self.check.fail(path, exc.message, value, "for example +250ms or -1.5s")

    def _event_files(self, value: Any) -> tuple[Path, ...]:
        if value is None:
            return tuple(sorted(p for p in (self.root / "events").glob("*")
                                if p.is_file() and p.suffix.lower() in EVENT_SUFFIXES))
        items = self.check.sequence(("event_files",), value)
        return tuple(self._path(("event_files", i), item, directory=False)[0]
                     for i, item in enumerate(items))

    def _action_items(self, value: Any) -> tuple[ActionItem, ...]:
        items = self.check.sequence(("action_items",), value, min_items=1)
        result = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            path: KeyPath = ("action_items", i)
            m = self.check.mapping(path, item, required=("id", "title", "type", "owner_role",
                                                         "status"),
                                   optional=("due", "ticket", "replay", "scenario",
                                             "must_fail_on", "must_pass_on", "verification"))
            ident = self.check.string(path + ("id",), m["id"], pattern=r"[A-Za-z][A-Za-z0-9_-]*")
            if ident in seen:
                self.check.fail(path + ("id",), "action item id used twice", ident)
            seen.add(ident)
            if "scenario" in m and "replay" in m:
                self.check.fail(path, "give 'scenario' or 'replay', not both")
            key = "scenario" if "scenario" in m else "replay"
            replay = None
            if m.get(key) is not None:
                replay = self._path(path + (key,), m[key], directory=False, inside=False)[1]
            due = m.get("due")
            result.append(ActionItem(
                id=ident,
                title=self._text(path + ("title",), m["title"]),
                type=self._choice(path + ("type",), m["type"], ACTION_TYPES),
                owner_role=self._text(path + ("owner_role",), m["owner_role"], human=False),
                status=self._choice(path + ("status",), m["status"], ACTION_STATUSES),
                due=None if due is None else str(due),
                ticket=self._optional_str(m, path + ("ticket",)),
                replay=replay,
                verification=self._verification(path, ident, replay, m.get("verification")),
                must_fail_on=self._builds(path + ("must_fail_on",), m.get("must_fail_on")),
                must_pass_on=self._builds(path + ("must_pass_on",), m.get("must_pass_on")),
            ))
        return tuple(result)

    def _builds(self, path: KeyPath, value: Any) -> tuple[str, ...]:
        """Builds for replay (ELF paths or GNU build IDs); `crashcart verify` resolves them."""
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        items = self.check.sequence(path, value)
        return tuple(self.check.string(path + (i,), item) for i, item in enumerate(items))

    def _verification(self, item_path: KeyPath, ident: str, replay: str | None,
                      value: Any) -> Verification:
        path = item_path + ("verification",)
        status = "unverified"
        verdict: Path | None = None
        note = None
        if value is not None:
            m = self.check.mapping(path, value, optional=("status", "verdict", "note"))
            if m.get("status") is not None:
                status = self._choice(path + ("status",), m["status"], VERIFICATION_STATUSES)
            if m.get("verdict") is not None:
                verdict = self._path(path + ("verdict",), m["verdict"], directory=False)[0]
            note = self._optional_str(m, path + ("note",))
            if status == "closed" and verdict is None:
                self.check.fail(path + ("status",), "closed needs a replay verdict that shows it",
                                status, "run the replay scenario and name its verdict file in "
                                "verification.verdict, or leave the status unverified")
        if verdict is None:
            default = self.root / "replay" / "verdicts" / f"{ident}.json"
            if default.is_file():
                verdict = default
        if verdict is None:
            detail = note or ("no replay scenario" if replay is None else "no replay verdict yet")
            return Verification(status, None, detail)
        return read_verdict(verdict, ident)


def read_verdict(path: Path, action_id: str) -> Verification:
    """The verification status a replay verdict file shows for ``action_id``.

    A verdict is a JSON object with at least ``status`` (``closed``, ``open``
    or ``invalid``); ``action_item``, when present, must name the item, and
    ``summary`` (one line) is shown in the report.  A file that cannot be
    read this way makes the verification ``invalid``, never ``closed``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Verification("invalid", path, f"verdict file unreadable: {exc}")
    if not isinstance(data, dict):
        return Verification("invalid", path, "verdict file is not a JSON object")
    status = data.get("status")
    named = data.get("action_item")
    if named is not None and named != action_id:
        return Verification("invalid", path, f"verdict is for action item {named!r}, "
                                             f"not {action_id!r}")
    if status not in VERDICT_STATUSES:
        return Verification("invalid", path, f"verdict status {status!r} is not one of "
                                             + ", ".join(VERDICT_STATUSES))
    summary = data.get("summary")
    return Verification(status, path, str(summary) if summary else None)
