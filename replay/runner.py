"""Running scenarios on the simulated board: one run, or a matrix in parallel.

:func:`run_scenario` boots the scenario's firmware (or another build) with
its config on the simulated board (``replay.sim``), delivers its stimulus
(``replay.stimulus``) and returns a :class:`~replay.verdict.Verdict`.
:func:`run_matrix` runs many (scenario, build, config) cells across cores;
each cell is its own QEMU process, so threads are enough to keep the cores
busy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.device_config import encode_config, load_config_file
from collector.elf import ElfImage
from crashcart.errors import CrashcartError, InputError
from replay.scenario import ConfigSpec, Scenario, resolve_firmware
from replay.sim import QemuDied, SimResult, SimulatedBoard, run_simulation
from replay.stimulus import StimulusDriver
from replay.verdict import FaultFacts, Observation, Verdict, evaluate, fault_from_crash_log
from replay.verdict import watchdog_fired as _watchdog_fired
from targets import Target, load_target

LOG = logging.getLogger(__name__)


def scenario_target(scenario: Scenario) -> Target:
    """The scenario's target: a name, or a target file relative to the scenario."""
    name = scenario.target
    if name.endswith((".yaml", ".yml")) or "/" in name:
        p = Path(name)
        return load_target(p if p.is_absolute() else scenario.base_dir / p)
    return load_target(name)


def resolve_config(spec: ConfigSpec, image: ElfImage, target: Target,
                   *, scenario_path: Path | None = None) -> dict[str, Any] | None:
    """The config field values a run places in RAM (None: no config block at all)."""
    if spec.empty:
        return None
    values: dict[str, Any] = {}
    if spec.file is not None:
        values.update(load_config_file(spec.file))
    if spec.bundle is not None:
        from replay.bundle_source import config_from_bundle

        values.update(config_from_bundle(spec.bundle, image, target))
    if spec.values is not None:
        values.update(spec.values)
    return values


def config_spec(values: dict[str, Any] | None = None, file: Path | None = None) -> ConfigSpec:
    return ConfigSpec(values=values, file=file)


def run_scenario(
    scenario: Scenario,
    *,
    firmware: Path | None = None,
    config: ConfigSpec | None = None,
    search_path: tuple[Path, ...] = (),
    on_output: Callable[[bytes], None] | None = None,
) -> Verdict:
    """Run ``scenario`` once (on ``firmware`` instead of its own, if given)."""
    target = scenario_target(scenario)
    elf = resolve_firmware(scenario, firmware, search_path)
    image = ElfImage.open_cached(elf)
    spec = config if config is not None else scenario.config
    values = resolve_config(spec, image, target, scenario_path=scenario.path)
    source = str(spec.file or spec.bundle or scenario.path)
    started = time.monotonic()
    stimulus_log: tuple[str, ...] = ()
    if not scenario.stimulus:
        result = run_simulation(target, elf, config=values, config_source=source,
                                time_limit_ns=scenario.time_limit_ns,
                                allow_resets=scenario.allow_resets, on_output=on_output)
    else:
        result, stimulus_log = _run_with_stimulus(scenario, target, elf, image, values, source,
                                                  on_output)
    wall = time.monotonic() - started
    obs = observe(result, image, target, values, stimulus_log, wall)
    return evaluate(scenario, obs)


def _run_with_stimulus(scenario: Scenario, target: Target, elf: Path, image: ElfImage,
                       values: dict[str, Any] | None, source: str,
                       on_output: Callable[[bytes], None] | None,
                       ) -> tuple[SimResult, tuple[str, ...]]:
    for attempt in (1, 2):
        with SimulatedBoard(target, elf, config=values, config_source=source,
                            time_limit_ns=scenario.time_limit_ns,
                            allow_resets=scenario.allow_resets, gdb=True,
                            on_output=on_output) as board:
            driver = StimulusDriver(board, image, scenario.stimulus)
            try:
                driver.prepare()
                driver.start()
                result = board.run()
            except QemuDied as exc:
                driver.error = None
                driver.finish()
                if attempt == 2:
                    raise
                LOG.warning("QEMU died unexpectedly (%s); running again once", exc)
                continue
            except BaseException:
                driver.error = None
                driver.finish()
                raise
            driver.finish()
            if attempt == 2:
                result = dataclasses.replace(result, qemu_retries=1)
            log = list(driver.log)
            log += [f"not delivered (trigger not reached): {p}" for p in driver.pending]
            return result, tuple(log)
    raise AssertionError("unreachable")


def observe(result: SimResult, image: ElfImage, target: Target, values: dict[str, Any] | None,
            stimulus_log: tuple[str, ...] = (), wall_s: float = 0.0) -> Observation:
    """The evidence of one run: faults decoded from its crash logs, and the rest."""
    faults: list[FaultFacts] = [fault_from_crash_log(c.text, image, target.architecture)
                                for c in result.crash_logs]
    if result.outcome == "lockup":
        faults.append(FaultFacts(kind="Lockup", name="Lockup",
                                 summary="QEMU reported a lockup (a fault while in HardFault)"))
    text = result.transcript_text()
    return Observation(
        firmware=str(result.firmware), build_id=image.build_id, target=result.target,
        outcome=result.outcome, exit_reason=result.exit_reason, virtual_ns=result.virtual_ns,
        instructions=result.instructions, resets=result.resets, transcript=result.transcript,
        faults=tuple(faults), watchdog_fired=_watchdog_fired(text, tuple(faults)),
        config=_jsonable(values), config_sha256=result.config_sha256,
        stimulus_log=stimulus_log, wall_s=wall_s, qemu_retries=result.qemu_retries)


def _jsonable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return json.loads(json.dumps(values, default=str))


def config_digest(image: ElfImage, target: Target, values: dict[str, Any]) -> str:
    return hashlib.sha256(encode_config(image, target, values)).hexdigest()


# -- matrices --------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of a matrix: a scenario on a build with a config."""

    scenario: Scenario
    firmware: Path | None = None
    config: ConfigSpec | None = None
    label: str = ""

    def describe(self) -> str:
        parts = [self.scenario.name]
        if self.firmware is not None:
            parts.append(self.firmware.name)
        if self.config is not None and self.config.file is not None:
            parts.append(self.config.file.name)
        return self.label or " / ".join(parts)


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    verdict: Verdict | None
    error: CrashcartError | None

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.met


Progress = Callable[[int, int, CellResult], None]


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


def run_matrix(cells: Iterable[Cell], *, jobs: int | None = None,
               progress: Progress | None = None,
               search_path: tuple[Path, ...] = ()) -> list[CellResult]:
    """Run every cell, ``jobs`` at a time; results in the order of ``cells``.

    A cell whose run raises a crashcart error (bad input, QEMU failure) gets
    that error in its result; the other cells still run.
    """
    cell_list = list(cells)
    results: list[CellResult | None] = [None] * len(cell_list)
    jobs = max(1, jobs or default_jobs())

    def one(cell: Cell) -> CellResult:
        try:
            verdict = run_scenario(cell.scenario, firmware=cell.firmware, config=cell.config,
                                   search_path=search_path)
            return CellResult(cell, verdict, None)
        except CrashcartError as exc:
            return CellResult(cell, None, exc)

    done = 0
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="replay") as pool:
        futures = {pool.submit(one, cell): i for i, cell in enumerate(cell_list)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            done += 1
            if progress is not None:
                progress(done, len(cell_list), results[i])  # type: ignore[arg-type]
    return [r for r in results if r is not None]


def config_from_file(path: Path) -> ConfigSpec:
    if not path.is_file():
        raise InputError("config file not found", path=path, remedy="check the path")
    return ConfigSpec(file=path)
