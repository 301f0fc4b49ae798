"""Click commands for replay: ``replay``, ``bisect``, ``minimize``, ``verify``.

Thin: the logic is in :mod:`replay.runner`, :mod:`replay.bisect`,
:mod:`replay.minimize`, :mod:`replay.verify` and
:mod:`replay.bundle_source`.  Errors are raised as crashcart errors and
mapped to exit statuses by the root group (0 met, 1 not met, 2 bad input,
3 missing tool, 4 board/QEMU trouble).

Register on the root group (``crashcart/cli.py``)::

    from replay.cli import bisect_command, minimize_command, replay_command, verify_command
    cli.add_command(replay_command)     # crashcart replay SCENARIO | replay from-bundle
    cli.add_command(bisect_command)     # crashcart bisect
    cli.add_command(minimize_command)   # crashcart minimize
    cli.add_command(verify_command)     # crashcart verify
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from crashcart.errors import CheckFailed, InputError

EXIT_HELP = """\b
Exit status: 0 expectations met, 1 not met, 2 bad input,
3 missing tool (QEMU), 4 board/QEMU trouble.
"""

_elf_path_option = click.option(
    "--elf-path", "elf_path", multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory searched (recursively) for ELFs by build ID; repeatable. "
         "$CRASHCART_ELF_PATH is searched too.")


class _Progress:
    """A one-line progress display on stderr (a plain line per run when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, result: Any) -> None:
        if not self.enabled:
            return
        if result.verdict is not None:
            what = f"{result.verdict.label}, expectations {'met' if result.verdict.met else 'NOT met'}"
        else:
            what = f"error: {str(result.error).splitlines()[0]}"
        line = (f"[{done}/{total}] {time.monotonic() - self.started:5.1f}s "
                f"{result.cell.describe()}: {what}")
        if self.tty:
            click.echo("\r\033[K" + line, err=True, nl=done == total)
        else:
            click.echo(line, err=True)


class _VerifyProgress(_Progress):
    """Progress of ``verify`` in the action item's terms (must reproduce / must run clean)."""

    def __call__(self, done: int, total: int, item_id: str, result: Any) -> None:  # type: ignore[override]
        if not self.enabled:
            return
        need = "must reproduce" if result.role == "must_fail_on" else "must run clean"
        verdict = result.label if result.label != "error" else f"error: {result.summary.splitlines()[0]}"
        line = (f"[{done}/{total}] {time.monotonic() - self.started:5.1f}s {item_id} "
                f"{result.build.name} ({need}): {verdict} - {'as required' if result.ok else 'NOT as required'}")
        if self.tty:
            click.echo("\r\033[K" + line, err=True, nl=done == total)
        else:
            click.echo(line, err=True)


class ReplayGroup(click.Group):
    """``replay SCENARIO ...`` runs scenarios; ``replay from-bundle`` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("replay", cls=ReplayGroup, epilog=EXIT_HELP)
def replay_command() -> None:
    """Replay scenarios on the simulated board: `crashcart replay SCENARIO...`.

    With several builds (--firmware) and/or configs (--config) every
    combination runs, in parallel across cores, and each build is reported
    as reproducing the scenario's incident or clean.
    """


@replay_command.command("run", epilog=EXIT_HELP)
@click.argument("scenarios", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--firmware", "firmwares", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run on this build instead of the scenario's; repeatable (compare builds).")
@click.option("--config", "configs", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run with this config file instead of the scenario's; repeatable (matrix).")
@_elf_path_option
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Runs in parallel (default: number of cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@click.option("--no-transcript", is_flag=True, help="Leave transcripts out of --json.")
def replay_run(scenarios: tuple[Path, ...], firmwares: tuple[Path, ...],
               configs: tuple[Path, ...], elf_path: tuple[Path, ...], jobs: int | None,
               as_json: bool, no_transcript: bool) -> None:
    """Run SCENARIO(s) (files or directories of *.yaml) and check their expectations."""
    from replay.runner import Cell, config_from_file, run_matrix
    from replay.scenario import ConfigSpec, load_scenario, scenario_files

    files = scenario_files(list(scenarios))
    if not files:
        raise InputError("no scenario files found", value=[str(s) for s in scenarios])
    loaded = [load_scenario(f) for f in files]
    builds: list[Path | None] = list(firmwares) or [None]
    cfgs: list[ConfigSpec | None] = [config_from_file(c) for c in configs] or [None]
    cells = [Cell(s, firmware=b, config=c) for s in loaded for b in builds for c in cfgs]
    progress = _Progress(enabled=len(cells) > 1)
    results = run_matrix(cells, jobs=jobs, progress=progress, search_path=elf_path)
    errors = [r for r in results if r.error is not None]
    if as_json:
        out = []
        for r in results:
            if r.verdict is not None:
                out.append(r.verdict.to_json(transcript=not no_transcript))
            else:
                out.append({"scenario": r.cell.scenario.name, "firmware": str(r.cell.firmware),
                            "error": str(r.error)})
        click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        for r in results:
            if r.verdict is None:
                click.echo(f"{r.cell.describe()}: ERROR {r.error}")
            elif len(results) == 1 or not r.verdict.met:
                click.echo(r.verdict.report())
            else:
                click.echo(r.verdict.summary())
        if len(results) > 1:
            met = sum(1 for r in results if r.ok)
            click.echo(f"{met}/{len(results)} runs met their expectations")
    if errors:
        raise errors[0].error  # type: ignore[misc]
    if not all(r.ok for r in results):
        raise CheckFailed("expectations not met",
                          remedy="read the report above: expected vs observed, and the "
                                 "transcript tail")


@replay_command.command("from-bundle", epilog=EXIT_HELP)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Scenario file to write.")
@_elf_path_option
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="Config file to use when the bundle holds no copy of the config.")
@click.option("--time-limit", default=None, metavar="DURATION",
              help="Run limit to write (default: from the fault's uptime, at least 1s).")
@click.option("--name", default=None, help="Scenario name (default: the bundle's name).")
def replay_from_bundle(bundle: Path, output: Path, elf_path: tuple[Path, ...],
                       config_file: Path | None, time_limit: str | None,
                       name: str | None) -> None:
    """Write a scenario replaying the failure captured in BUNDLE."""
    from replay.bundle_source import scenario_from_bundle

    if output.exists():
        raise InputError("output file exists", path=output, remedy="choose another -o path")
    out = scenario_from_bundle(bundle, output, search_path=elf_path, config_file=config_file,
                               time_limit=time_limit, name=name)
    click.echo(str(out))


@click.command("bisect", epilog=EXIT_HELP)
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--builds", "builds", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Builds oldest to newest: --builds A.elf B.elf C.elf ...")
@click.argument("more_builds", nargs=-1, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))
@_elf_path_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bisect_command(scenario: Path, builds: tuple[Path, ...], more_builds: tuple[Path, ...],
                   elf_path: tuple[Path, ...], as_json: bool) -> None:
    """Find the first of the builds (oldest first) on which SCENARIO's incident reproduces.

    O(log n) runs; every run is listed.  Exit 0 when a first failing build is
    found, 1 when no build (or already the oldest) fails.
    """
    from replay.bisect import bisect_builds
    from replay.scenario import load_scenario

    all_builds = list(builds) + list(more_builds)

    def show(run: Any) -> None:
        if not as_json:
            click.echo(f"  ran {run.build.name}: {run.verdict.label}", err=True)

    result = bisect_builds(load_scenario(scenario), all_builds, search_path=elf_path,
                           on_run=show)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        for i, b in enumerate(result.builds):
            ran = next((r for r in result.runs if r.index == i), None)
            mark = "<- first failing" if i == result.first_bad else ""
            state = ran.verdict.label if ran else "not run"
            click.echo(f"  {i}: {b.name:28} {state:14} {mark}")
        click.echo(result.message)
    if result.first_bad is None or result.last_good is None:
        raise CheckFailed(result.message)


@click.command("minimize", epilog=EXIT_HELP)
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--good-config", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A config on which the scenario's incident does not reproduce.")
@click.option("--bad-config", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A config on which it does.")
@click.option("--firmware", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Build to run (default: the scenario's).")
@_elf_path_option
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Runs in parallel (default: number of cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def minimize_command(scenario: Path, good_config: Path, bad_config: Path,
                     firmware: Path | None, elf_path: tuple[Path, ...], jobs: int | None,
                     as_json: bool) -> None:
    """The minimal set of config changes (good -> bad) that still triggers the incident (ddmin)."""
    from replay.minimize import minimize_config
    from replay.scenario import load_scenario

    result = minimize_config(load_scenario(scenario), good_config, bad_config,
                             firmware=firmware, search_path=elf_path, jobs=jobs)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    click.echo(f"{len(result.differing)} keys differ: {', '.join(result.differing)}")
    click.echo(f"minimal failing change ({len(result.minimal)} keys, {result.runs} runs):")
    for k, (g, b) in result.changes.items():
        click.echo(f"  {k}: {g!r} -> {b!r}")


@click.command("verify", epilog=EXIT_HELP)
@click.argument("incident", type=click.Path(exists=True, path_type=Path))
@_elf_path_option
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Runs in parallel (default: number of cores).")
@click.option("--write-verdicts", is_flag=True,
              help="Write replay/verdicts/<ID>.json in the incident directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def verify_command(incident: Path, elf_path: tuple[Path, ...], jobs: int | None,
                   write_verdicts: bool, as_json: bool) -> None:
    """Check every action item of INCIDENT (directory or incident.yaml) by replay.

    closed: the check reproduces the incident on its must_fail_on builds and
    the fix builds run clean; open: not yet; invalid: the check does not
    reproduce the incident.  Exit 1 unless every item is closed.
    """
    from replay.verify import format_table, verify_incident
    from replay.verify import write_verdicts as write

    results = verify_incident(incident, search_path=elf_path, jobs=jobs,
                              progress=_VerifyProgress(enabled=not as_json))
    if write_verdicts:
        for p in write(incident, results):
            click.echo(f"wrote {p}", err=True)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        click.echo(format_table(results))
    not_closed = [r.item.id for r in results if r.status != "closed"]
    if not_closed:
        raise CheckFailed(f"{len(not_closed)} of {len(results)} action items not closed: "
                          + ", ".join(not_closed))
