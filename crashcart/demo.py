"""The main job on a simulated fleet, as one story (``crashcart demo``).

A config push (v42) reaches four simulated boards (QEMU mps2-an385, the
fixture sensor-node firmware).  Three still run 1.0.0 and fail, each in its
own way; the canary already runs 1.0.1 and survives.  Then crashcart does
what a team would do the same morning, with the same commands a user types
(each one is printed, and its full output is kept under ``logs/``):

1. ``collect`` from every board's console, and over SWD (pyocd with
   crashcart's probe plugin) from two failed boards, into bundles and
   archives;
2. ``decode`` each bundle against the ELF of its build;
3. ``timeline`` with the deploy, CI and config-push events;
4. ``replay from-bundle``: a scenario per failure, from the evidence;
5. ``minimize`` the config delta between v41 and v42;
6. ``bisect`` the builds that led to 1.0.0;
7. ``verify`` the action items against 1.0.1 (one stays open: 1.0.1 does
   not fix the stack overflow);
8. ``report``: the blameless post-mortem, with the timeline picture.

Nothing here needs hardware or the network.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from collector.device_config import load_config_file
from crashcart.errors import CrashcartError, InputError
from replay.sim import SimulatedBoard
from targets import Target, load_target

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "fixtures" / "firmware"
ELF_DIR = FIRMWARE_DIR / "elf"
LONG_NS = 3_600 * 10**9
MARKER = ".crashcart-demo"

# The fleet config before and after the push.  v42 rolls out a new filter
# profile and report interval everywhere, and per-site settings: the new
# analog front-end's channel (site A), averaging off for the low-latency
# site (B), a deeper filter cascade for the noisy site (C).
FLEET_V41 = {"report_interval_ms": 250, "alarm_threshold": 3000, "filter_taps": 16,
             "gain_index": 1}
FLEET_V42 = {"report_interval_ms": 500, "alarm_threshold": 3200, "filter_taps": 24,
             "gain_index": 2}


@dataclass(frozen=True)
class Node:
    name: str
    release: str
    site: str
    site_change: dict[str, Any]
    swd: bool
    resets: int      # fault resets let through before the board is held for the debugger
    expect: str      # what the story expects, for the console


NODES = (
    Node("node-1", "1.0.0", "site A (new AFE rev D)", {"adc_channel": 6}, True, 0,
         "BusFault"),
    Node("node-2", "1.0.0", "site B (low-latency)", {"averaging_window": 0}, False, 2,
         "UsageFault, boot loop"),
    Node("node-3", "1.0.0", "site C (noisy line)", {"cascade_stages": 200}, True, 0,
         "MemManage"),
    Node("node-4", "1.0.1", "site A (new AFE rev D), canary", {"adc_channel": 6}, False, 0,
         "runs on"),
)


@dataclass
class Step:
    number: int
    title: str
    command: list[str]
    status: int
    seconds: float
    log: Path
    output: str


@dataclass
class DemoResult:
    out: Path
    steps: list[Step] = field(default_factory=list)
    artefacts: dict[str, Path] = field(default_factory=dict)
    verify: dict[str, Any] | None = None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Story:
    def __init__(self, out: Path, echo: Callable[[str], None], target: Target) -> None:
        self.out = out
        self.echo = echo
        self.target = target
        self.incident = out / "incident"
        self.logs = out / "logs"
        self.result = DemoResult(out)
        self.env = {**os.environ, "CRASHCART_ELF_PATH": str(ELF_DIR)}

    def rel(self, path: Path) -> str:
        """A path as short as it can be said from here (relative when below the cwd)."""
        try:
            return str(Path(path).resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def crashcart(self, title: str, *args: str | Path, show: int = 8,
                  ok: tuple[int, ...] = (0,)) -> Step:
        """Run one crashcart command as a user would, show it and keep its output."""
        number = len(self.result.steps) + 1
        argv = [str(a) for a in args]
        shown = " ".join(shlex.quote(self.rel(Path(a)) if isinstance(a, Path) else a)
                         for a in args)
        self.echo(f"$ crashcart {shown}")
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "crashcart.cli", *argv], env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False)
        seconds = time.monotonic() - t0
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{number:02d}-{title}.txt"
        log.write_text(f"$ crashcart {shown}\n(exit status {done.returncode}, "
                       f"{seconds:.1f} s)\n\n{done.stdout}")
        lines = [ln for ln in done.stdout.splitlines() if not ln.startswith("WARNING ")]
        for line in lines[:show]:
            self.echo(f"    {line}")
        if len(lines) > show:
            self.echo(f"    ... ({len(lines) - show} more lines in {self.rel(log)})")
        step = Step(number, title, argv, done.returncode, seconds, log, done.stdout)
        self.result.steps.append(step)
        if done.returncode not in ok:
            raise CrashcartError(f"step '{title}' failed with exit status {done.returncode}",
                                 path=log, remedy="read the step's log")
        return step

    def heading(self, text: str) -> None:
        self.echo("")
        self.echo(f"== {text}")

    # -- the story --------------------------------------------------------------------

    def configs(self) -> dict[str, Path]:
        cfg = self.incident / "configs"
        (cfg / "v42").mkdir(parents=True, exist_ok=True)
        (cfg / "fleet-v41.yaml").write_text(
            "# Fleet config v41: the last good config (fields not listed keep the "
            "firmware's defaults).\n" + yaml.safe_dump(FLEET_V41, sort_keys=False))
        (cfg / "fleet-v42.yaml").write_text(
            "# Fleet config v42: new filter profile and report interval for every site.\n"
            + yaml.safe_dump(FLEET_V42, sort_keys=False))
        per_node: dict[str, Path] = {}
        for node in NODES:
            path = cfg / "v42" / f"{node.name}.yaml"
            path.write_text(f"# Config v42 as {node.name} ({node.site}) receives it: the fleet "
                            "part plus the site's settings.\n"
                            + yaml.safe_dump({**FLEET_V42, **node.site_change},
                                             sort_keys=False))
            per_node[node.name] = path
        return per_node

    def events(self, push: datetime) -> None:
        ev = self.incident / "events"
        ev.mkdir(parents=True, exist_ok=True)
        b100 = _build_id("1.0.0")
        b101 = _build_id("1.0.1")
        rows = [
            ("time", "source", "kind", "device", "message", "version", "build_id", "config",
             "ref"),
            (_iso(push - timedelta(minutes=9)), "deploy-pipeline", "deploy", "",
             "firmware 1.0.0 is the fleet's release (ring 2, all sites)", "1.0.0", b100, "",
             "release-1.0.0"),
            (_iso(push - timedelta(minutes=6)), "deploy-pipeline", "deploy", "node-4",
             "firmware 1.0.1 rolled out to the canary ring (node-4)", "1.0.1", b101, "",
             "release-1.0.1"),
            (_iso(push), "config-service", "config-push", "",
             "config v42 pushed fleet-wide: new filter profile, report interval, per-site "
             "settings", "", "", "configs/fleet-v42.yaml", "CHG-5120"),
        ]
        import csv

        with open(ev / "changes.csv", "w", newline="") as handle:
            handle.write("# Deploys and config pushes (docs/events-format.md).\n")
            csv.writer(handle).writerows(rows)
        ci = [
            {"time": _iso(push - timedelta(minutes=8)), "kind": "ci", "source": "ci",
             "message": "release pipeline for firmware 1.0.1 passed (unit tests, simulated-board "
                        "smoke test with the default config)", "ref": "ci/run/9301",
             "version": "1.0.1"},
            {"time": _iso(push - timedelta(minutes=3)), "kind": "ci", "source": "ci",
             "message": "config v42 passed schema validation (field names and types; no "
                        "per-firmware range check, no replay on a simulated board)",
             "ref": "ci/run/9307", "config": "configs/fleet-v42.yaml"},
        ]
        (ev / "ci.jsonl").write_text("".join(json.dumps(x) + "\n" for x in ci))

    def collect(self, node: Node, config: Path) -> Path:
        elf = ELF_DIR / f"sensor-node-{node.release}.elf"
        bundle = self.incident / "evidence" / node.name
        board = SimulatedBoard(self.target, elf, config=load_config_file(config),
                               config_source=str(config), console=False, gdb=node.swd,
                               time_limit_ns=LONG_NS, allow_resets=node.resets,
                               realtime=True)
        with board:
            def run_board() -> None:
                try:
                    board.wait_console_attached(timeout_s=60)
                    board.resume()
                    board.serve()
                except (CrashcartError, OSError, AttributeError, ValueError):
                    pass  # the board was switched off under us: the capture is over

            runner = threading.Thread(target=run_board, daemon=True)
            runner.start()
            args: list[str | Path] = ["collect", "--target", self.target.name, "--elf", elf,
                                      "-o", bundle, "--serial", board.serial_url, "--archive"]
            if node.swd:
                host, port = board.gdb_address
                args += ["--swd", f"qemu:{host}:{port}", "--debug-on-crash",
                         "--after-crash", "300ms", "--duration", "60s"]
            else:
                args += ["--duration", "2s"]
            self.crashcart(f"collect-{node.name}", *args, show=3, ok=(0, 1))
        return bundle

    def run(self) -> DemoResult:
        out, echo = self.out, self.echo
        echo("crashcart demo: one incident on a simulated fleet (QEMU mps2-an385, "
             "no hardware, no network)")
        echo(f"output: {self.rel(out)}")
        self.heading("1. config v42 is pushed; four boards boot with it")
        configs = self.configs()
        push = datetime.now(UTC)
        self.events(push)
        for node in NODES:
            echo(f"   {node.name}: firmware {node.release}, {node.site}, "
                 f"v42 sets {node.site_change} (expected: {node.expect})")
        self.heading("2. collect: every console; SWD from the two boards held after their "
                     "fault")
        bundles = {node.name: self.collect(node, configs[node.name]) for node in NODES}
        self.heading("3. decode each bundle against its build's ELF")
        decoded_dir = self.incident / "decoded"
        decoded_dir.mkdir(parents=True, exist_ok=True)
        for node in NODES:
            elf = ELF_DIR / f"sensor-node-{node.release}.elf"
            console = (bundles[node.name] / "serial" / "console.raw").read_bytes()
            if b"CRASH BEGIN" not in console and not (bundles[node.name] / "swd").exists():
                said = [ln.strip() for ln in console.decode("latin-1").splitlines()
                        if "config" in ln]
                echo(f"   {node.name}: no crash in its console; it said: "
                     f"{' / '.join(said) or '(nothing about its config)'}")
                continue
            step = self.crashcart(f"decode-{node.name}", "decode", bundles[node.name], "--elf",
                                  elf, show=14 if node.name == "node-1" else 2, ok=(0, 1, 2))
            (decoded_dir / f"{node.name}.txt").write_text(step.output)
            js = subprocess.run([sys.executable, "-m", "crashcart.cli", "decode",
                                 str(bundles[node.name]), "--elf", str(elf), "--json"],
                                env=self.env, capture_output=True, text=True, check=False)
            if js.returncode == 0:
                (decoded_dir / f"{node.name}.json").write_text(js.stdout)
        self.heading("4. timeline: devices, deploys, CI and the config push on one clock")
        self._write_incident(push, minimize=None, bisect=None, checks=False)
        svg, html = out / "timeline.svg", out / "timeline.html"
        self.crashcart("timeline-svg", "timeline", self.incident, "-o", svg, show=1)
        self.crashcart("timeline-html", "timeline", self.incident, "-o", html, show=1)
        self.heading("5. replay scenarios from the evidence")
        scenarios = self.incident / "replay"
        scenarios.mkdir(parents=True, exist_ok=True)
        names = {"node-1": "adc-channel", "node-2": "averaging-window",
                 "node-3": "filter-cascade"}
        for node_name, name in names.items():
            node = next(n for n in NODES if n.name == node_name)
            # Console-only bundles hold no copy of the config: the config service's
            # record of what it pushed to the node stands in.
            extra: list[str | Path] = [] if node.swd else ["--config", configs[node_name]]
            self.crashcart(f"scenario-{name}", "replay", "from-bundle", bundles[node_name],
                           "-o", scenarios / f"{name}.replay.yaml", "--name", name, *extra,
                           show=2)
        self.heading("6. minimize: which of v42's changes triggers node-1's fault?")
        minimize = self.crashcart("minimize", "minimize", scenarios / "adc-channel.replay.yaml",
                                  "--good-config", self.incident / "configs" / "fleet-v41.yaml",
                                  "--bad-config", configs["node-1"], show=6)
        self.heading("7. bisect: which build first fails node-1's scenario?")
        chain = sorted((ELF_DIR / "chain").glob("sensor-node-*.elf"))
        bisect = self.crashcart("bisect", "bisect", scenarios / "adc-channel.replay.yaml",
                                "--builds", *chain, ELF_DIR / "sensor-node-1.0.0.elf", show=8)
        self._write_incident(push, minimize=minimize.output, bisect=bisect.output)
        self.heading("8. verify the action items against 1.0.1")
        verify = self.crashcart("verify", "verify", self.incident, "--write-verdicts", show=10,
                                ok=(0, 1))
        self.heading("9. the post-mortem")
        report = out / "report.md"
        self.crashcart("report", "report", self.incident, "-o", report, show=2)
        self.result.artefacts = {
            "report": report, "timeline_svg": svg, "timeline_html": html,
            "incident": self.incident, "report_picture": out / "report.timeline.svg",
            **{f"bundle_{n}": b for n, b in bundles.items()},
            **{f"archive_{n}": b.with_name(b.name + ".tar.gz") for n, b in bundles.items()},
        }
        self.result.verify = {"status": verify.status, "output": verify.output}
        self.heading("what was written")
        for label, path in (("post-mortem", report), ("timeline picture", svg),
                            ("timeline page", html), ("evidence bundles",
                                                      self.incident / "evidence"),
                            ("decoded crashes", decoded_dir), ("replay scenarios", scenarios),
                            ("verdicts", scenarios / "verdicts"), ("command logs", self.logs)):
            echo(f"   {label:18} {self.rel(path)}")
        total = sum(s.seconds for s in self.result.steps)
        echo(f"\n{len(self.result.steps)} crashcart commands, {total:.0f} s.  "
             f"Read {self.rel(report)} first.")
        return self.result

    def _write_incident(self, push: datetime, *, minimize: str | None,
                        bisect: str | None, checks: bool = True) -> None:
        (self.incident / "incident.yaml").write_text(
            incident_yaml(push, self.incident, minimize, bisect, checks=checks))


def _build_id(release: str) -> str:
    from collector.elf import ElfImage

    return ElfImage.open_cached(ELF_DIR / f"sensor-node-{release}.elf").build_id or ""


def _first_line(text: str | None, startswith: str) -> str | None:
    for line in (text or "").splitlines():
        if line.strip().lower().startswith(startswith):
            return line.strip()
    return None


def incident_yaml(push: datetime, incident: Path, minimize: str | None,
                  bisect: str | None, *, checks: bool = True) -> str:
    """The facilitator's account of the demo incident (blameless: systems, not people)."""
    elf = os.path.relpath(ELF_DIR, incident)
    notes = ["node-1 and node-3 were held by the test rack after the fault reset and "
             "captured over SWD (registers, fault registers, RAM, crash record); node-2 and "
             "node-4 were captured from their consoles only."]
    if minimize:
        lines = minimize.splitlines()
        head = next((ln.strip() for ln in lines if "keys differ" in ln), "")
        found = next((i for i, ln in enumerate(lines) if ln.startswith("minimal failing")), None)
        if found is not None:
            change = "; ".join(ln.strip() for ln in lines[found + 1:] if ln.startswith("  "))
            notes.append(f"Config minimization (crashcart minimize, fleet v41 against node-1's "
                         f"v42): {head}; {lines[found].strip()} {change}.")
    if bisect:
        verdict = next((ln.strip() for ln in bisect.splitlines()
                        if ln.startswith("first failing build")), None)
        if verdict:
            notes.append("Build bisection (crashcart bisect over 0.9.0 to 0.9.4 and 1.0.0 with "
                         f"node-1's scenario): {verdict}. 0.9.2 is where the field range "
                         "checks of 0.9.0 and 0.9.1 were lost; 1.0.1 restores two of them.")
    notes.append("The simulated boards count time in QEMU's virtual clock (-icount), which "
                 "QEMU holds to the host clock only approximately (align=on, sleep=on); the "
                 "timeline's clock fit measures the difference as drift, as it would a "
                 "crystal's error, and flags it when it is implausible for a crystal.")
    doc = {
        "schema": 1,
        "id": "INC-DEMO-042",
        "title": "Three sensor nodes on firmware 1.0.0 faulted after config v42",
        "severity": "SEV2",
        "status": "resolved",
        "summary": (
            "Config v42 rolled out a new filter profile and per-site settings. On firmware "
            "1.0.0 three of those settings reach code without a range check: node-1 took a "
            "precise BusFault (adc_channel 6), node-2 a divide-by-zero UsageFault at every "
            "boot (averaging_window 0) and node-3 overflowed its process stack into the MPU "
            "guard (cascade_stages 200). The canary, already on 1.0.1, corrected its channel "
            "and kept running. 1.0.1 fixes the first two; the stack overflow is still open."),
        "impact": {
            "description": ("Three of four test-rack units stopped reporting within a second "
                            "of receiving v42; node-2 restarted in a loop. No field units "
                            "received v42: the push was held at the test rack."),
            "started": _iso(push), "devices_affected": 3},
        "detection": {
            "description": ("Each unit printed a crash log on its console the moment it "
                            "faulted; the rack's console logger and crash hold kept the "
                            "evidence, and crashcart collected it."),
            "method": "test", "detected_at": _iso(push + timedelta(seconds=1))},
        "roles": [
            {"role": "incident commander", "team": "fleet operations"},
            {"role": "facilitator", "team": "firmware", "notes": "not involved in the response"},
            {"role": "config author", "team": "sensor applications"},
            {"role": "firmware on-call", "team": "firmware"},
        ],
        "root_cause": (
            "Firmware 1.0.0 uses three config fields without checking their range: "
            "adc_channel indexes the front-end's channel table (channel 6 reads the model "
            "string as a descriptor pointer, 0x7220504c, and the dereference is a precise "
            "data BusFault); averaging_window 0 divides by zero with DIV_0_TRP set; "
            "cascade_stages sets the recursion depth of the filter cascade, and 200 stages "
            "need about 11 KB of an 8 KB process stack. The config pipeline validated names "
            "and types only, so nothing between the author and the device knew those ranges."),
        "contributing_factors": [
            {"description": ("Config validation checks field names and types against the "
                             "schema, not the ranges each deployed firmware version "
                             "accepts."), "category": "tooling"},
            {"description": ("No simulated-board replay of a config against the deployed "
                             "builds runs before a push."), "category": "tooling"},
            {"description": ("The firmware keeps no stack headroom check for a recursion "
                             "depth taken from config."), "category": "design"},
            {"description": ("1.0.1's range checks covered two of the three fields; the "
                             "release notes did not say which configs depend on it."),
             "category": "process"},
        ],
        "technical": {
            "notes": " ".join(notes),
            "config_diff": {"last_good": "configs/fleet-v41.yaml",
                            "triggering": "configs/v42/node-1.yaml"},
        },
        "evidence": [
            {"bundle": f"evidence/{n.name}", "device": n.name,
             "description": f"firmware {n.release}, {n.site}; console"
                            + (" and SWD" if n.swd else "")} for n in NODES],
        "lessons": {
            "went_well": [
                "The rack's crash hold kept node-1 and node-3 halted in the faulted state, so "
                "registers and RAM were captured before any reboot.",
                "Firmware 1.0.1 corrected the out-of-range channel on the canary and logged "
                "the correction.",
            ],
            "went_wrong": [
                "A config that only suits newer firmware was accepted by validation.",
                "node-2 restarted in a loop with the same config, three crashes in a row.",
            ],
            "got_lucky": [
                "The push reached the test rack before the field, so no customer unit "
                "received v42.",
            ],
        },
        "action_items": [
            {"id": "AI-1", "title": "Range-check adc_channel in adc_read() and "
             "config_sanitize() (shipped in 1.0.1)", "type": "prevent",
             "owner_role": "firmware team", "status": "done",
             "scenario": "replay/adc-channel.replay.yaml",
             "must_fail_on": [f"{elf}/sensor-node-1.0.0.elf"],
             "must_pass_on": [f"{elf}/sensor-node-1.0.1.elf"]},
            {"id": "AI-2", "title": "Reject averaging_window 0 in config_sanitize() "
             "(shipped in 1.0.1)", "type": "prevent", "owner_role": "firmware team",
             "status": "done", "scenario": "replay/averaging-window.replay.yaml",
             "must_fail_on": [f"{elf}/sensor-node-1.0.0.elf"],
             "must_pass_on": [f"{elf}/sensor-node-1.0.1.elf"]},
            {"id": "AI-3", "title": "Bound cascade_stages by the process stack's size "
             "(filter cascade recursion)", "type": "prevent", "owner_role": "firmware team",
             "status": "in-progress", "scenario": "replay/filter-cascade.replay.yaml",
             "must_fail_on": [f"{elf}/sensor-node-1.0.0.elf"],
             "must_pass_on": [f"{elf}/sensor-node-1.0.1.elf"]},
            {"id": "AI-4", "title": "Replay every config on the simulated board against each "
             "deployed build before a push (crashcart replay in the config pipeline)",
             "type": "detect", "owner_role": "config service maintainers", "status": "open"},
        ],
    }
    if not checks:  # the replay scenarios do not exist yet
        for item in doc["action_items"]:
            for key in ("scenario", "must_fail_on", "must_pass_on"):
                item.pop(key, None)
    header = ("# Incident record written by `crashcart demo` (docs/incident-format.md).\n"
              "# The facilitator's account; crashcart adds the timeline, the decoded faults,\n"
              "# the evidence hashes and the verification status when it writes the report.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=88, allow_unicode=True)


def run_demo(out_dir: Path, echo: Callable[[str], None], *,
             target: Target | None = None) -> DemoResult:
    """Run the whole story into ``out_dir`` (which must be new or empty)."""
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if out_dir.exists() and any(out_dir.iterdir()):
        if not marker.exists():
            raise InputError("the demo's output directory is not empty", path=out_dir,
                             remedy="remove it, or pass --out NEW_DIRECTORY")
        shutil.rmtree(out_dir)  # an earlier demo's output: the demo owns it
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by crashcart demo; the next demo run replaces this directory\n")
    return _Story(out_dir, echo, target or load_target("mps2-an385")).run()
