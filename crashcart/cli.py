"""The ``crashcart`` command line: a thin layer over the packages.

All logic lives in ``collector``, ``replay`` and ``targets``; this module
parses options, calls them, prints, and maps exceptions to exit statuses in
one place (:func:`main`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from crashcart import __version__
from crashcart.errors import CrashcartError
from crashcart.units import format_ns, parse_duration_ns

EXIT_STATUS_HELP = """\b
Exit status:
  0  success             1  a check did not hold
  2  bad input           3  missing tool (QEMU, toolchain)
  4  board/probe/port    130 interrupted
"""


# Commands that live beside their code, imported only when used so that
# `crashcart --help` and quick commands stay fast.
LAZY_COMMANDS: dict[str, str] = {
    "collect": "collector.collect_cli:collect_command",
    "core": "collector.corefile:core_command",
    "decode": "collector.decode:decode_command",
    "gdbserver": "collector.gdbserver:gdbserver_command",
    "symbolize": "collector.symbolize:symbolize_command",
    "timeline": "timeline.cli:timeline_command",
    "report": "timeline.cli:report_command",
    "replay": "replay.cli:replay_command",
    "bisect": "replay.cli:bisect_command",
    "minimize": "replay.cli:minimize_command",
    "verify": "replay.cli:verify_command",
}


class CrashcartGroup(click.Group):
    """The root group: maps crashcart's errors to exit statuses, in one place.

    Doing it here (not only in :func:`main`) means ``CliRunner`` tests see
    exactly the exit statuses and messages a user sees.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            import importlib

            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrashcartError as exc:
            click.echo(f"crashcart: error: {exc}", err=True)
            ctx.exit(exc.exit_status)
        except KeyboardInterrupt:
            click.echo("crashcart: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=CrashcartGroup, epilog=EXIT_STATUS_HELP)
@click.version_option(__version__, prog_name="crashcart")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Collect, decode and replay Cortex-M crash evidence.

    Start with `crashcart demo`: a whole incident on simulated boards
    (QEMU), from collect to the post-mortem and its replayed action items.
    At the bench: `crashcart collect`, then `crashcart decode BUNDLE --elf`.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)


# -- targets -------------------------------------------------------------------


@cli.group()
def target() -> None:
    """Target descriptions (boards as data)."""


@target.command("list")
def target_list() -> None:
    """List the targets shipped with crashcart."""
    from targets import list_targets, load_target

    for name in list_targets():
        t = load_target(name)
        click.echo(f"{t.name:16} {t.cpu:12} {t.description}")


@target.command("check")
@click.argument("target_file", type=click.Path(dir_okay=False, path_type=Path))
def target_check(target_file: Path) -> None:
    """Validate a target file and summarise what it describes."""
    from targets import load_target

    t = load_target(target_file)
    click.echo(f"{target_file}: ok: {t.name} ({t.cpu}, {t.architecture}), "
               f"{len(t.memory)} memory regions, {len(t.capture_regions)} capture regions")


# -- simulator -----------------------------------------------------------------


def _board_options(command: Any) -> Any:
    """--target, --firmware and --config, shared by the commands that boot a board."""
    command = click.option("--config", "config_file",
                           type=click.Path(dir_okay=False, path_type=Path),
                           help="Firmware config (YAML) placed in the board's RAM before "
                                "boot.")(command)
    command = click.option("--firmware", required=True,
                           type=click.Path(dir_okay=False, path_type=Path),
                           help="Firmware ELF to boot.")(command)
    return click.option("--target", "target_name", required=True, metavar="NAME|FILE",
                        help="Target name (e.g. mps2-an385) or target file.")(command)


@cli.group()
def sim() -> None:
    """Run firmware on a simulated board (QEMU)."""


@sim.command("run", epilog=EXIT_STATUS_HELP)
@_board_options
@click.option("--time-limit", default="2s", show_default=True, metavar="DURATION",
              help="Stop after this much virtual time (e.g. 500ms, 2s).")
@click.option("--resets", default=0, show_default=True, type=click.IntRange(0, 100),
              help="Guest resets to let through before the run ends at the next one.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (outcome, virtual_ms, transcript, ...) instead of "
                   "streaming the console.")
def sim_run(target_name: str, firmware: Path, config_file: Path | None, time_limit: str,
            resets: int, as_json: bool) -> None:
    """Boot FIRMWARE on the simulated TARGET and stream its console.

    Virtual time is deterministic (-icount): the same firmware and config
    give the same console transcript on every run.  The run ends at the
    first guest reset (unless --resets), a lockup, a semihosting exit, or
    the time limit.
    """
    from collector.device_config import load_config_file
    from replay.sim import run_simulation
    from targets import load_target

    t = load_target(target_name)
    limit = parse_duration_ns(time_limit, what="--time-limit")
    config = load_config_file(config_file) if config_file is not None else None

    def stream(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    result = run_simulation(
        t, firmware, config=config, config_source=config_file or "config",
        time_limit_ns=limit, allow_resets=resets, on_output=None if as_json else stream,
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    crashes = len(result.crash_logs)
    click.echo(
        f"\ncrashcart: outcome {result.outcome} after {format_ns(result.virtual_ns)} of "
        f"virtual time ({result.instructions} instructions, {result.resets} guest reset(s), "
        f"{crashes} crash log(s)); ended by {result.exit_reason}",
        err=True,
    )


@cli.command(epilog=EXIT_STATUS_HELP)
@click.option("--out", "out_dir", default="crashcart-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for everything the demo writes (replaced on the next run).")
def demo(out_dir: Path) -> None:
    """Run the main job on a simulated fleet: one whole incident, no hardware.

    A config push makes three of four simulated boards (QEMU, fixture
    firmware 1.0.0) fail in different ways.  crashcart collects (serial
    and SWD through pyocd), decodes, lays the timeline, extracts replay
    scenarios, minimizes the config change, bisects the builds, verifies
    the action items against 1.0.1 and writes the post-mortem.  Every
    step is the crashcart command a user would type, shown as it runs.
    """
    from crashcart.demo import run_demo

    run_demo(out_dir, click.echo)


@sim.command("serve", epilog=EXIT_STATUS_HELP)
@_board_options
@click.option("--time-limit", default="1h", show_default=True, metavar="DURATION",
              help="Virtual time after which the board is switched off.")
@click.option("--resets", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Guest resets to let through; at the next one the board stays halted in "
                   "its failed state, waiting for a debugger.")
@click.option("--no-wait", is_flag=True,
              help="Start running at once instead of waiting for a client on the console port "
                   "(output before a client connects is lost, as on a real UART).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the board's addresses as one JSON line (for scripts).")
def sim_serve(target_name: str, firmware: Path, config_file: Path | None, time_limit: str,
              resets: int, no_wait: bool, as_json: bool) -> None:
    """Run a simulated board to capture from, as if it were on the bench.

    Prints the board's console port (for `collect --serial`), its pyocd
    probe ID (for `collect --swd` and `pyocd commander -u`) and its GDB
    remote address (for `collect --gdb` and gdb-multiarch).  The board
    waits for a client on the console port, then runs.  When the firmware
    resets itself after a fault, the board stays halted in that state, as
    a failed board on the bench would, until you stop it with Ctrl-C.
    """
    from collector.device_config import load_config_file
    from replay.sim import SimulatedBoard
    from targets import load_target

    target = load_target(target_name)
    config = load_config_file(config_file) if config_file else None
    board = SimulatedBoard(target, firmware, config=config,
                           config_source=str(config_file) if config_file else None,
                           time_limit_ns=parse_duration_ns(time_limit), console=False, gdb=True,
                           allow_resets=resets, wall_limit_s=10 * 365 * 86400.0, realtime=True)
    import signal

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    with board:
        host, port = board.gdb_address
        info = {"serial": board.serial_url, "swd": f"qemu:{host}:{port}",
                "gdb": f"{host}:{port}", "qemu_pid": board.proc.pid if board.proc else None}
        if as_json:
            click.echo(json.dumps(info), nl=True)
        else:
            click.echo(f"serial  {info['serial']}\nswd     {info['swd']}   (pyocd probe ID)\n"
                       f"gdb     {info['gdb']}\n"
                       f"pyocd list: CRASHCART_QEMU_PROBES={host}:{port} pyocd list")
        sys.stdout.flush()
        if not no_wait:
            click.echo("waiting for a client on the console port ...", err=True)
            board.wait_console_attached(timeout_s=365 * 86400.0)
        board.resume()
        click.echo("board running (Ctrl-C to switch it off)", err=True)
        result = board.serve(on_halt=lambda why: click.echo(
            f"board halted: {why}; it stays in this state for a debugger", err=True))
        click.echo(f"board off: {result}", err=True)


# -- bundles -----------------------------------------------------------------------


@cli.group()
def bundle() -> None:
    """Evidence bundles: verify, seal, pack into an archive, open one."""


def _open_bundle_arg(ctx: click.Context, source: Path) -> Path:
    """A bundle directory, or an archive safely extracted to a temporary directory."""
    import shutil

    from collector.archive import open_archive

    if source.is_dir():
        return source
    extracted = open_archive(source)
    ctx.call_on_close(lambda: shutil.rmtree(extracted.parent, ignore_errors=True))
    return extracted


@bundle.command("verify", epilog=EXIT_STATUS_HELP)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def bundle_verify(ctx: click.Context, source: Path, as_json: bool) -> None:
    """Check every file of a bundle (directory or archive) against its manifest.

    Reports changed, missing and extra files, and whether the capture is
    complete or partial (and why).  Exit status 1 if any file is changed,
    missing or extra; a partial but intact bundle verifies (status 0).
    """
    from collector.bundle import verify_bundle
    from crashcart.errors import CheckFailed

    report = verify_bundle(_open_bundle_arg(ctx, source))
    if as_json:
        click.echo(json.dumps({
            "bundle": str(source), "status": report.status, "ok": report.ok,
            "files_checked": report.files_checked,
            "findings": [{"level": f.level, "file": f.file, "message": f.message}
                         for f in report.findings],
        }, indent=2))
    else:
        for finding in report.findings:
            click.echo(f"  {finding}")
        verdict = "intact" if report.ok else "TAMPERED OR DAMAGED"
        click.echo(f"{source}: {verdict}; capture {report.status}; "
                   f"{report.files_checked} file(s) checked")
    if not report.ok:
        raise CheckFailed("bundle verification failed", path=source,
                          remedy="treat this bundle as altered; use the original copy")


@bundle.command("seal")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def bundle_seal(directory: Path) -> None:
    """Finish a bundle whose capture was killed: hash what is on disk, mark it partial."""
    from collector.bundle import seal_bundle

    report = seal_bundle(directory)
    click.echo(f"{directory}: sealed; capture {report.status}")


@bundle.command("pack")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Archive to write (default: DIRECTORY.tar.gz).")
def bundle_pack(directory: Path, output: Path | None) -> None:
    """Pack a bundle into one .tar.gz file to attach to a ticket."""
    from collector.archive import pack_bundle

    out = pack_bundle(directory, output or directory.with_name(directory.name + ".tar.gz"))
    click.echo(str(out))


@bundle.command("open")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "dest", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Directory to extract into.")
def bundle_open(archive: Path, dest: Path) -> None:
    """Extract a bundle archive safely (no traversal, links or oversized members)."""
    from collector.archive import open_archive

    click.echo(str(open_archive(archive, dest)))


def main(argv: list[str] | None = None) -> Any:
    """Console entry point (``crashcart``)."""
    try:
        cli.main(args=argv, prog_name="crashcart")
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
