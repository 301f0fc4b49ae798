"""``crashcart collect``: the command line of :mod:`collector.collect`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from crashcart.errors import CheckFailed, InputError

EXIT_HELP = """\b
Exit status:
  0  complete bundle      1  bundle written but partial (see its manifest)
  2  bad input            4  nothing could be captured (probe/port)
  130 interrupted (the bundle is finished as partial)
"""


def _gdb_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError("--gdb wants HOST:PORT", field="--gdb", value=text,
                         remedy="e.g. --gdb 127.0.0.1:3333 (OpenOCD) or :2331 (J-Link)")
    return host or "127.0.0.1", int(port)


@click.command("collect", epilog=EXIT_HELP)
@click.option("-o", "--out", "out", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory to create (must not exist or be empty).")
@click.option("--target", "target_name", required=True, metavar="NAME|FILE",
              help="Target name (e.g. mps2-an385) or target file.")
@click.option("--elf", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The firmware ELF: locates RAM regions, crash record, version and build ID "
                   "by symbol.  Without it only the target file's fixed regions are read.")
@click.option("--serial", "serial_url", metavar="URL",
              help="Console port: /dev/ttyUSB0, socket://HOST:PORT, rfc2217://HOST:PORT, loop://")
@click.option("--baud", type=int, help="Baud rate (default: the target file's console.baudrate).")
@click.option("--swd", "swd_probe", metavar="PROBE_ID",
              help="Capture over SWD through pyocd: a probe unique ID (`pyocd list`), or "
                   "qemu:HOST:PORT for a simulated board.")
@click.option("--pyocd-target", default="cortex_m", show_default=True,
              help="pyocd target type (e.g. stm32f429xi); cortex_m works for any core.")
@click.option("--frequency", type=int, metavar="HZ", help="SWD clock.")
@click.option("--gdb", "gdb_address", metavar="HOST:PORT",
              help="Capture over a GDB remote server (OpenOCD, J-Link, pyocd gdbserver, QEMU).")
@click.option("--duration", metavar="DURATION",
              help="Serial capture length (e.g. 30s, 5m).  Default: until Ctrl-C, or right "
                   "after the debug capture when there is no --serial.")
@click.option("--after-crash", metavar="DURATION",
              help="End the serial capture this long after a complete crash log was seen.")
@click.option("--debug-on-crash", is_flag=True,
              help="Arm and wait: start the debug capture when a complete crash log has arrived "
                   "on --serial (for a board that has not failed yet).")
@click.option("--leave-halted", is_flag=True,
              help="Leave the core halted after the capture (default: as it was found).")
@click.option("--archive", is_flag=True, help="Also pack the bundle into BUNDLE.tar.gz.")
@click.pass_context
def collect_command(ctx: click.Context, out: Path, target_name: str, elf: Path | None,
                    serial_url: str | None, baud: int | None, swd_probe: str | None,
                    pyocd_target: str, frequency: int | None, gdb_address: str | None,
                    duration: str | None, after_crash: str | None, debug_on_crash: bool,
                    leave_halted: bool,
                    archive: bool) -> None:
    """Capture a failed board's evidence into a bundle, before it is lost.

    Sources run together: the serial console is captured for the whole
    run (every byte, timestamped, written as it arrives), while the debug
    captures (--swd, then --gdb) attach without reset, halt the core once,
    and read registers, fault registers, the exception frame, the stacks,
    the RAM regions of the target file, the crash record, version, build
    ID and vendor registers.  Ctrl-C, a pulled cable or a probe error leave
    a valid bundle marked partial; `crashcart bundle verify` checks it.

    \b
    Examples:
      crashcart collect --target mps2-an385 --elf fw.elf -o evidence/board-7 \\
          --serial /dev/ttyACM0 --swd 0670FF383930 --duration 20s
      crashcart collect --target mps2-an385 --elf fw.elf -o b --gdb :3333
    """
    from collector.collect import collect
    from collector.debug_capture import GdbLink, PyocdLink, capture_debug
    from crashcart.units import parse_duration_ns
    from targets import load_target

    if not (serial_url or swd_probe or gdb_address):
        raise InputError("nothing to capture from", remedy="give --serial, --swd and/or --gdb")
    if debug_on_crash and not (serial_url and (swd_probe or gdb_address)):
        raise InputError("--debug-on-crash needs --serial (to see the crash) and --swd or --gdb",
                         field="--debug-on-crash")
    target = load_target(target_name)
    image = None
    if elf is not None:
        from collector.elf import ElfImage

        image = ElfImage.open_cached(elf)
    duration_s = None if duration is None else parse_duration_ns(duration) / 1e9
    after_crash_s = None if after_crash is None else parse_duration_ns(after_crash) / 1e9
    links = []
    if swd_probe:
        links.append(PyocdLink(swd_probe, target_type=pyocd_target, frequency_hz=frequency))
    if gdb_address:
        links.append(GdbLink(*_gdb_address(gdb_address)))

    def say(message: str) -> None:
        click.echo(f"  {message}", err=True)

    debug = None
    if links:
        def debug(bundle):  # type: ignore[no-untyped-def]
            return capture_debug(links, bundle, target, image, leave_halted=leave_halted,
                                 progress=say)

    if serial_url and duration_s is None and after_crash_s is None:
        click.echo("crashcart: capturing until Ctrl-C (or use --duration)", err=True)
    click.echo(f"crashcart: collecting into {out}", err=True)
    result = collect(out, target, serial_url=serial_url, baudrate=baud, debug=debug,
                     debug_label=", ".join(link.kind for link in links) or None,
                     duration_s=duration_s, after_crash_s=after_crash_s,
                     debug_on_crash=debug_on_crash,
                     command=["crashcart", *sys.argv[1:]], progress=say, elf=elf)
    files = len(result.files)
    click.echo(f"{out}: {result.status}, {files} files"
               + (f", serial {result.serial.bytes} bytes, {result.serial.crashes_ended} "
                  f"crash log(s)" if result.serial else ""))
    for reason in result.partial_reasons:
        click.echo(f"  partial: {reason}")
    if archive:
        from collector.archive import pack_bundle

        click.echo(str(pack_bundle(out, out.with_name(out.name + ".tar.gz"))))
    if result.interrupted:
        ctx.exit(130)
    if result.status != "complete":
        if not result.files or all(
                meta.get("source") is None for meta in result.files.values()):
            from crashcart.errors import TargetError

            raise TargetError("nothing was captured", path=out,
                              remedy="; ".join(result.partial_reasons) or None)
        raise CheckFailed("the bundle is partial", path=out,
                          remedy="it is valid evidence; see manifest.json capture.partial_reasons")
