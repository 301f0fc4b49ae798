"""The main job on the simulated fleet, as one story (``crashcart demo``).

Stage reached so far: the simulated board.  A config push lands on boards
running sensor-node 1.0.0; each planted bug's trigger config crashes the
board in its own way; the same configs on 1.0.1 show which fixes hold.
Every run's console transcript and result are written to the output
directory.  Later stages (collect, decode, timeline, report, replay) extend
this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.device_config import load_config_file
from replay.sim import SimResult, run_simulation
from targets import Target, load_target

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "fixtures" / "firmware"


@dataclass(frozen=True)
class DemoRun:
    release: str
    config: str
    result: SimResult
    wall_s: float
    transcript_path: Path


def first_line(result: SimResult, prefix: str) -> str | None:
    for line in result.transcript_text().splitlines():
        if line.startswith(prefix):
            return line
    return None


def crash_summary(result: SimResult) -> str:
    """``BusFault cfsr=0x00008200 hfsr=0x00000000`` from the first crash log."""
    if not result.crash_logs:
        return result.outcome
    fields: dict[str, str] = {}
    for line in result.crash_logs[0].text.splitlines():
        for part in line.replace(": ", ":").split():
            if ":" in part:
                key, _, value = part.partition(":")
                fields.setdefault(key, value)
    fault = ""
    for line in result.crash_logs[0].text.splitlines():
        if line.startswith("fault:"):
            fault = line.split(":", 1)[1].strip()
    return f"{fault} cfsr={fields.get('cfsr', '?')} hfsr={fields.get('hfsr', '?')} pc={fields.get('pc', '?')}"


def run_demo(out_dir: Path, echo: Callable[[str], None], *, time_limit_ns: int = 1_000_000_000,
             target: Target | None = None) -> list[DemoRun]:
    target = target or load_target("mps2-an385")
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = sorted((FIRMWARE_DIR / "configs").glob("*.yaml"))
    configs.sort(key=lambda p: (p.stem != "default", p.stem))
    runs: list[DemoRun] = []
    echo(f"crashcart demo: the simulated board ({target.name}, QEMU, deterministic virtual time)")
    echo(f"output: {out_dir}\n")
    for release in ("1.0.0", "1.0.1"):
        elf = FIRMWARE_DIR / "elf" / f"sensor-node-{release}.elf"
        echo(f"== sensor-node {release} ({elf.relative_to(ROOT)})")
        for cfg in configs:
            values = load_config_file(cfg)
            start = time.monotonic()
            result = run_simulation(target, elf, config=values, config_source=cfg,
                                    time_limit_ns=time_limit_ns)
            wall = time.monotonic() - start
            stem = f"{release}-{cfg.stem}"
            transcript = out_dir / f"{stem}.console.txt"
            transcript.write_bytes(result.transcript)
            (out_dir / f"{stem}.result.json").write_text(json.dumps(result.to_json(), indent=2))
            runs.append(DemoRun(release, cfg.stem, result, wall, transcript))
            verdict = "runs clean" if result.outcome == "time-limit" else crash_summary(result)
            echo(f"   {cfg.stem:24} {verdict:58} [{result.virtual_ms:8.2f} ms virtual, "
                 f"{wall:.2f} s wall]")
            if release == "1.0.0" and cfg.stem != "default" and result.crash_logs:
                for line in result.crash_logs[0].text.splitlines():
                    echo(f"      | {line}")
        echo("")
    fixed = [r.config for r in runs if r.release == "1.0.1" and r.config != "default"
             and r.result.outcome == "time-limit"]
    still = [r.config for r in runs if r.release == "1.0.1" and r.result.outcome != "time-limit"]
    echo(f"1.0.1 fixes: {', '.join(fixed) or 'none'}")
    echo(f"1.0.1 still fails: {', '.join(still) or 'none'}")
    echo(f"\ntranscripts and results: {out_dir}")
    return runs
