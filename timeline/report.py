"""The blameless post-mortem report, in Markdown.

Sections, in order: Summary, Impact, Detection, Timeline (the picture, the
key events, how the clocks were aligned), Root cause and contributing
factors, Technical analysis (faults with their registers and any decoded
facts, firmware versions per boot, the config diff), Evidence (every bundle
cited by the sha256 of its manifest, which lists the sha256 of each file;
every event file by its own sha256), Action items (with their verification
status from replay), Lessons learned (went well, went wrong, got lucky) and
the blameless-language check.

The picture is a separate SVG file the Markdown links to
(:func:`write_report` writes both).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.bundle import verify_bundle
from timeline.blameless import LanguageFinding, check_incident_language
from timeline.builder import Timeline, incident_timeline
from timeline.bundle_events import BundleCapture, CrashDecoder
from timeline.incident import ActionItem, Incident
from timeline.model import Event, IsoFormatter, format_duration_us, format_uncertainty
from timeline.picture import render_svg
from timeline.render import key_events, md_escape

SECTIONS = ("Summary", "Impact", "Detection", "Timeline", "Root cause and contributing factors",
            "Technical analysis", "Evidence", "Action items", "Lessons learned")
MAX_TIMELINE_ROWS = 300
VERIFICATION_WORDS = {
    "closed": "**closed** (replay shows the fix works)",
    "open": "**open** (replay still reproduces the failure)",
    "invalid": "**invalid** (the verdict cannot be used)",
    "unverified": "unverified",
}


@dataclass(frozen=True)
class Report:
    markdown: str
    svg: str
    picture_name: str
    language: tuple[LanguageFinding, ...]
    timeline: Timeline


def build_report(incident: Incident, *, timeline: Timeline | None = None,
                 picture_name: str = "timeline.svg",
                 decoder: CrashDecoder | None = None) -> Report:
    """The post-mortem for ``incident``; the Markdown links the picture as ``picture_name``."""
    tl = timeline if timeline is not None else incident_timeline(incident, decoder=decoder)
    findings = tuple(check_incident_language(incident))
    svg = render_svg(tl.events, lanes=tl.lanes(), title=incident.title)
    writer = _Writer(incident, tl, findings, picture_name)
    return Report(writer.markdown(), svg, picture_name, findings, tl)


def write_report(incident: Incident, out: str | Path, *,
                 decoder: CrashDecoder | None = None) -> Report:
    """Write ``out`` (Markdown) and the picture beside it as ``<stem>.timeline.svg``."""
    out = Path(out)
    picture = out.with_name(f"{out.stem}.timeline.svg")
    report = build_report(incident, picture_name=picture.name, decoder=decoder)
    out.write_text(report.markdown, encoding="utf-8")
    picture.write_text(report.svg, encoding="utf-8")
    return report


class _Writer:
    def __init__(self, incident: Incident, timeline: Timeline,
                 findings: Sequence[LanguageFinding], picture: str) -> None:
        self.i = incident
        self.tl = timeline
        self.findings = findings
        self.picture = picture
        self.fmt = IsoFormatter()
        self.lines: list[str] = []

    def markdown(self) -> str:
        self._front()
        self._summary()
        self._impact()
        self._detection()
        self._timeline()
        self._causes()
        self._technical()
        self._evidence()
        self._actions()
        self._lessons()
        self._language()
        return "\n".join(self.lines).rstrip() + "\n"

    # -- helpers -----------------------------------------------------------------------

    def w(self, *lines: str) -> None:
        self.lines.extend(lines)

    def section(self, title: str) -> None:
        self.w("", f"## {title}", "")

    def when(self, wall_us: int | None) -> str:
        return "—" if wall_us is None else f"{self.fmt.short(wall_us)} UTC"

    def first(self, kind: str) -> Event | None:
        return next((e for e in self.tl.events if e.kind == kind), None)

    # -- sections ----------------------------------------------------------------------

    def _front(self) -> None:
        i = self.i
        self.w(f"# Post-mortem: {i.title}", "")
        roles = "; ".join(f"{r.role}" + (f" ({r.team})" if r.team else "") for r in i.roles)
        rows = [("Incident", i.id or "—"), ("Severity", i.severity), ("Status", i.status),
                ("Roles", roles),
                ("Sources", f"`{i.path.name}`, {len(self.tl.captures)} evidence bundle(s), "
                            f"{len(self.tl.event_files)} event file(s), "
                            f"{len(self.tl.events)} timeline events")]
        self.w("| | |", "|---|---|", *(f"| {k} | {md_escape(v)} |" for k, v in rows), "")
        self.w("> This review is blameless: it describes how our systems and processes let "
               "this happen, not who did what. People are named by role.")

    def _summary(self) -> None:
        self.section("Summary")
        self.w(self.i.summary)

    def _impact(self) -> None:
        imp = self.i.impact
        self.section("Impact")
        self.w(imp.description, "")
        if imp.started_us is not None:
            self.w(f"- Started: {self.when(imp.started_us)}")
        if imp.ended_us is not None:
            self.w(f"- Ended: {self.when(imp.ended_us)}")
        if imp.started_us is not None and imp.ended_us is not None:
            self.w(f"- Duration: {format_duration_us(imp.ended_us - imp.started_us)}")
        if imp.devices_affected is not None:
            self.w(f"- Devices affected: {imp.devices_affected}")
        crashes = [e for e in self.tl.events if e.kind == "crash"]
        if crashes:
            devices = sorted({e.lane for e in crashes})
            self.w(f"- In the evidence: {len(crashes)} crash(es) on {', '.join(devices)}, "
                   f"first at {self.when(crashes[0].wall_us)}")

    def _detection(self) -> None:
        d = self.i.detection
        self.section("Detection")
        self.w(d.description, "")
        if d.method:
            self.w(f"- Detected by: {d.method}")
        if d.detected_us is not None:
            self.w(f"- Detected at: {self.when(d.detected_us)}")
            first_crash = self.first("crash")
            if first_crash is not None and first_crash.wall_us <= d.detected_us:
                self.w(f"- Time from the first fault in the evidence to detection: "
                       f"{format_duration_us(d.detected_us - first_crash.wall_us)}")
            if self.i.impact.started_us is not None:
                self.w(f"- Time from the start of impact to detection: "
                       f"{format_duration_us(d.detected_us - self.i.impact.started_us)}")

    def _timeline(self) -> None:
        self.section("Timeline")
        self.w(f"![Timeline: devices, deploys, config pushes and evidence captures on one clock]"
               f"({self.picture})", "")
        keys = key_events(self.tl.events)
        logs = len(self.tl.events) - len(keys)
        self.w(f"Key events ({len(keys)}; {logs} routine log lines are left out here and are in "
               "`crashcart timeline --format md|jsonl`). Times are UTC; ± is the clock "
               "uncertainty of each time (see *Clock alignment*).", "")
        self.w("| time (UTC) | ± | device / source | kind | what happened | evidence |",
               "|---|---|---|---|---|---|")
        for e in keys[:MAX_TIMELINE_ROWS]:
            self.w(f"| {self.fmt.short(e.wall_us)} | {format_uncertainty(e.uncertainty_us)} | "
                   f"{md_escape(e.lane)} | {e.kind} | {md_escape(e.message)} | "
                   f"`{(e.evidence or '').replace('`', '')}` |")
        if len(keys) > MAX_TIMELINE_ROWS:
            self.w("", f"({len(keys) - MAX_TIMELINE_ROWS} more key events are in the full "
                       "timeline.)")
        self._clocks()

    def _clocks(self) -> None:
        fits = self.tl.fits
        self.w("", "### Clock alignment", "")
        if not fits:
            self.w("No device uptime stamps in the evidence; device events keep the capture "
                   "host's receive times.")
            return
        self.w("Device uptime is mapped to wall-clock time per boot by a least-squares fit "
               "against the capture host's receive times of the uptime-stamped console lines. "
               "Drift is the device oscillator's error; scatter is the host's receive latency "
               "(assumed from the device's other boots where a boot has too few stamped lines).",
               "", "| device | boot | stamped lines | uptime range | drift | scatter (rms) |",
               "|---|---|---|---|---|---|")
        for f in fits:
            drift = f"{f.drift_ppm:+.0f} ppm" if f.drift_fitted else "not fitted (too few points)"
            scatter = f"{f.latency_sigma_us / 1000:.1f} ms"
            if f.points < 3:
                scatter += " (assumed)"
            self.w(f"| {md_escape(f.device)} | {f.boot} | {f.points} | "
                   f"{f.first_uptime_ms}–{f.last_uptime_ms} ms | {drift} | {scatter} |")
        if self.tl.warnings:
            self.w("", *(f"- {md_escape(w)}" for w in self.tl.warnings))

    def _causes(self) -> None:
        self.section("Root cause and contributing factors")
        self.w(self.i.root_cause, "", "### Contributing factors", "")
        for f in self.i.contributing_factors:
            tag = f"**{f.category}**: " if f.category else ""
            self.w(f"- {tag}{' '.join(f.description.split())}")

    def _technical(self) -> None:
        self.section("Technical analysis")
        self._faults()
        self._firmware()
        self._config_diff()
        if self.i.technical_notes:
            self.w("", "### Notes", "", self.i.technical_notes)

    def _faults(self) -> None:
        self.w("### Faults", "")
        groups: dict[tuple[object, ...], list[Event]] = {}
        for e in self.tl.events:
            if e.kind == "crash" and e.crash is not None:
                c = e.crash
                key = (e.lane, c.fault, c.build_id, c.register("pc"), c.register("cfsr"))
                groups.setdefault(key, []).append(e)
        if not groups:
            self.w("No crash in the evidence.")
            return
        self.w("| device | fault | firmware | times | first | last | registers |",
               "|---|---|---|---|---|---|---|")
        for events in groups.values():
            first = events[0].crash
            assert first is not None
            c = first
            firmware = f"{c.firmware_version or '?'} (`{(c.build_id or '?')[:12]}`)"
            self.w(f"| {md_escape(events[0].lane)} | {md_escape(c.fault or '?')} | {firmware} | "
                   f"{len(events)} | {self.fmt.short(events[0].wall_us)} | "
                   f"{self.fmt.short(events[-1].wall_us)} | `{c.key_registers()}` |")
        self.w("")
        for events in groups.values():
            crash = events[0].crash
            assert crash is not None
            c = crash
            label = f"{events[0].lane}, {c.fault or 'fault'}"
            if c.decoded is None:
                self.w(f"- {md_escape(label)}: not decoded yet. The registers above are the "
                       "device's own crash log; function, line and backtrace are added when a "
                       "decoder is given the build's ELF.")
                continue
            d = c.decoded
            self.w(f"- {md_escape(label)}: {md_escape(d.summary)}")
            if d.location:
                self.w(f"  - where: `{d.location}`")
            if d.backtrace:
                self.w("  - backtrace: " + " ← ".join(f"`{frame}`" for frame in d.backtrace))
            for text in d.explanations:
                self.w(f"  - {md_escape(text)}")

    def _firmware(self) -> None:
        self.w("", "### Firmware versions", "")
        rows: list[_BootRow] = []
        order = {lane: i for i, lane in enumerate(self.tl.lanes())}
        boots = sorted((e for e in self.tl.events if e.kind == "boot"),
                       key=lambda e: order[e.lane])
        for e in boots:
            key = (e.lane, str(e.detail("version")), str(e.detail("build_id")),
                   str(e.detail("reset_reason")))
            if rows and rows[-1].key == key:
                rows[-1].count += 1
            else:
                rows.append(_BootRow(key, e.wall_us))
        if not rows:
            self.w("No boot banner in the evidence.")
            return
        self.w("| device | firmware | build ID | reset before boot | boots | first boot |",
               "|---|---|---|---|---|---|")
        for row in rows:
            lane, version, build_id, reason = row.key
            self.w(f"| {md_escape(lane)} | {version} | `{build_id}` | {reason} | {row.count} | "
                   f"{self.fmt.short(row.first_us)} |")

    def _config_diff(self) -> None:
        diff = self.i.config_diff
        self.w("", "### Config diff", "")
        if diff is None:
            self.w("No configs named (technical.config_diff in incident.yaml).")
            return
        changed = diff.changed()
        self.w(f"Last good `{diff.last_good_name}` → triggering `{diff.triggering_name}`: "
               f"{len(changed)} field(s) differ.", "")
        if changed:
            self.w("| field | last good | triggering |", "|---|---|---|")
            for name, old, new in changed:
                self.w(f"| `{name}` | {_value(old)} | {_value(new)} |")

    def _evidence(self) -> None:
        self.section("Evidence")
        self.w("Each bundle is cited by the sha256 of its `manifest.json`, which holds the "
               "sha256 of every file in it; `crashcart bundle verify BUNDLE` checks them.", "")
        self.w("| bundle | device | captured | status | integrity | manifest sha256 |",
               "|---|---|---|---|---|---|")
        for cap in self.tl.captures:
            self.w(f"| `{cap.evidence_name}` | {md_escape(cap.device)} | "
                   f"{self.when(cap.started_us)} – {self.when(cap.ended_us)} | {cap.status} | "
                   f"{_integrity(cap)} | `{cap.manifest_sha256}` |")
        for cap in self.tl.captures:
            self.w("", f"Files of `{cap.evidence_name}`:", "")
            self.w(*(f"- `{f.name}` ({f.size} bytes) sha256 `{f.sha256}`" for f in cap.files))
        if self.tl.event_files:
            self.w("", "| event file | events | sha256 |", "|---|---|---|")
            for ef in self.tl.event_files:
                digest = hashlib.sha256(ef.path.read_bytes()).hexdigest()
                self.w(f"| `{ef.display_name}` | {len(ef.events)} | `{digest}` |")

    def _actions(self) -> None:
        self.section("Action items")
        items = self.i.action_items
        closed = sum(a.verification.status == "closed" for a in items)
        waiting = sum(a.replay is not None and a.verification.verdict is None for a in items)
        self.w(f"{closed} of {len(items)} verified closed by replay; {waiting} with a replay "
               "scenario but no verdict yet. *Closed* means a replay verdict shows it, not that "
               "the work is reported done.", "")
        self.w("| ID | action | type | owner (role) | work status | verification | "
               "replay scenario |", "|---|---|---|---|---|---|---|")
        for a in items:
            self.w(f"| {a.id} | {md_escape(a.title)} | {a.type} | {md_escape(a.owner_role)} | "
                   f"{a.status} | {_verification(a, self.i.directory)} | "
                   f"{f'`{a.replay}`' if a.replay else '—'} |")

    def _lessons(self) -> None:
        self.section("Lessons learned")
        for title, items in (("What went well", self.i.lessons.went_well),
                             ("What went wrong", self.i.lessons.went_wrong),
                             ("Where we got lucky", self.i.lessons.got_lucky)):
            self.w(f"### {title}", "")
            self.w(*[f"- {' '.join(item.split())}" for item in items] or ["- (none recorded)"])
            self.w("")

    def _language(self) -> None:
        self.w("## Blameless-language check", "")
        if not self.findings:
            self.w("No personal blame found in the human-written parts of incident.yaml.")
            return
        self.w(f"{len(self.findings)} phrase(s) in incident.yaml read as blame; consider the "
               "suggested systemic phrasing:", "")
        for f in self.findings:
            self.w(f"- line {f.line}, `{f.field}` ({f.rule}): \"{md_escape(f.excerpt)}\" — "
                   f"{md_escape(f.suggestion)}")


@dataclass
class _BootRow:
    """Consecutive boots of one device with the same firmware and reset cause."""

    key: tuple[str, str, str, str]     # device, version, build ID, reset cause
    first_us: int
    count: int = 1


def _value(value: object) -> str:
    return "(default)" if value is None else f"`{value}`"


def _integrity(capture: BundleCapture) -> str:
    report = verify_bundle(capture.path)
    if not report.ok:
        bad = [f for f in report.findings if f.level == "error"]
        return f"**FAILED**: {md_escape(str(bad[0]))}" + (f" (+{len(bad) - 1})" if len(bad) > 1
                                                          else "")
    return f"verified ({report.files_checked} files)"


def _verification(item: ActionItem, root: Path) -> str:
    v = item.verification
    text = VERIFICATION_WORDS[v.status]
    if v.verdict is not None:
        try:
            name = v.verdict.relative_to(root).as_posix()
        except ValueError:
            name = str(v.verdict)
        text += f": verdict `{name}`"
    if v.detail:
        text += f" — {md_escape(v.detail)}"
    return text
