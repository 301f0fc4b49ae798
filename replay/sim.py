"""The simulated board: a QEMU machine running real firmware, deterministically.

:class:`SimulatedBoard` starts ``qemu-system-arm`` for a target file's
machine with a firmware ELF and (optionally) an encoded config, and gives
the collector the same doors a real board has: the console UART as a TCP
socket that ``serial.serial_for_url('socket://...')`` opens, and QEMU's
gdbstub.  :func:`run_simulation` is the one-call form used by ``crashcart
sim run`` and replay.

Determinism (architecture notes, "Facts measured on this machine"):

* virtual time is fixed to executed instructions, ``-icount shift=N`` with
  the target's N (never ``auto``); the run limit is counted by our QEMU
  plugin (``qemu_plugin/vclock.c``) in instructions, so it ends the run at
  the same guest instruction every time;
* the machine starts paused (``-S``); the config is placed in RAM before
  boot (``-device loader``), and the console is connected before ``cont``;
* a guest reset request pauses the machine (``-action
  reboot=shutdown,shutdown=pause``) so the runner decides, at a fixed point,
  whether to let the board reboot (``allow_resets``) or to end the run.

Every QEMU process is stopped on every exit path: the context manager, an
``atexit`` hook, and ``PR_SET_PDEATHSIG`` so QEMU dies with its parent even
when that is killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial

from collector.device_config import encode_config
from collector.elf import ElfImage
from collector.serial_port import PortGone, close_port, read_chunk
from crashcart.errors import EnvironmentProblem, InputError, TargetError
from replay import vclock
from replay.qmp import QmpClient
from targets import Target

LOG = logging.getLogger(__name__)

APT_HINT = (
    "apt-get install --no-install-recommends qemu-system-arm gcc-arm-none-eabi "
    "libnewlib-arm-none-eabi gdb-multiarch (or run ./dev.sh setup)"
)
# Marker in the QEMU command line (-name) by which leaked processes can be found.
PROCESS_TAG = "crashcart-sim"

OUTCOMES = ("crash", "reset", "lockup", "exit", "time-limit", "stalled")

_LIVE: set[SimulatedBoard] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class CrashLog:
    """One crash log found in the console transcript (between the target's markers)."""

    text: str
    start_offset: int  # byte offset of the begin marker in the transcript
    end_offset: int | None  # byte offset just past the end marker; None if cut off
    complete: bool


@dataclass(frozen=True)
class SimResult:
    """How a simulated run ended, with its evidence."""

    outcome: str  # one of OUTCOMES
    exit_reason: str  # what ended QEMU: guest-reset, time-limit, lockup, guest-exit, wall-clock
    virtual_ns: int
    instructions: int
    resets: int
    transcript: bytes
    crash_logs: tuple[CrashLog, ...]
    qemu_exit_status: int | None
    semihosting_exit_code: int | None
    firmware: str
    target: str
    config_sha256: str | None = None
    qemu_stderr: str = ""
    qemu_retries: int = 0

    @property
    def virtual_ms(self) -> float:
        return self.virtual_ns / 1e6

    def transcript_text(self) -> str:
        return self.transcript.decode("utf-8", "replace")

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "exit_reason": self.exit_reason,
            "virtual_ms": round(self.virtual_ms, 6),
            "instructions": self.instructions,
            "resets": self.resets,
            "target": self.target,
            "firmware": self.firmware,
            "config_sha256": self.config_sha256,
            "qemu_exit_status": self.qemu_exit_status,
            "qemu_retries": self.qemu_retries,
            "semihosting_exit_code": self.semihosting_exit_code,
            "crash_logs": [
                {"text": c.text, "complete": c.complete, "offset": c.start_offset}
                for c in self.crash_logs
            ],
            "transcript": self.transcript_text(),
        }


def find_crash_logs(transcript: bytes, begin: str, end: str) -> tuple[CrashLog, ...]:
    """Crash logs in a console transcript, delimited by the target's markers."""
    logs = []
    b, e = begin.encode(), end.encode()
    pos = 0
    while True:
        start = transcript.find(b, pos)
        if start < 0:
            break
        stop = transcript.find(e, start + len(b))
        next_begin = transcript.find(b, start + len(b))
        if stop < 0 or (0 <= next_begin < stop):
            cut = next_begin if next_begin >= 0 else len(transcript)
            logs.append(CrashLog(transcript[start:cut].decode("utf-8", "replace"), start, None, False))
            pos = cut
            continue
        stop += len(e)
        logs.append(CrashLog(transcript[start:stop].decode("utf-8", "replace"), start, stop, True))
        pos = stop
    return tuple(logs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG, SIGKILL): QEMU must not outlive us.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)
    except OSError:
        pass


class QemuDied(TargetError):
    """QEMU ended abnormally for a reason that is not the guest's doing."""


class SimulatedBoard:
    """A QEMU board running ``firmware``; use as a context manager.

    Lifecycle: ``start()`` (QEMU up, paused, console connected), then either
    ``run()`` (resume and wait for the end of the run) or ``resume()`` and
    drive it through the gdbstub or a debug probe; ``close()`` always.

    :param config: config field values (encoded through the ELF's DWARF) or
        None to boot with the RAM the firmware finds (zeros).
    :param time_limit_ns: virtual time after which QEMU is stopped.
    :param allow_resets: guest resets to let through; the next one ends the run.
    :param console: connect the runner to the console UART (disable to let
        another client, e.g. ``crashcart collect``, own it).
    :param gdb: open QEMU's gdbstub on a free local port.
    :param on_output: called with each chunk of console bytes as it arrives.
    """

    def __init__(
        self,
        target: Target,
        firmware: str | Path,
        *,
        config: dict[str, Any] | None = None,
        config_source: str | Path = "config",
        time_limit_ns: int = 2_000_000_000,
        allow_resets: int = 0,
        console: bool = True,
        gdb: bool = False,
        wall_limit_s: float | None = None,
        realtime: bool = False,
        on_output: Callable[[bytes], None] | None = None,
    ) -> None:
        if target.simulator is None:
            raise InputError(
                "target has no simulator section",
                path=target.path,
                field="simulator",
                remedy="add simulator.qemu (machine, icount_shift) to the target file",
            )
        self.target = target
        self.firmware = Path(firmware)
        self.image = ElfImage.open_cached(self.firmware)
        self.config = config
        self.config_source = config_source
        self.time_limit_ns = time_limit_ns
        self.allow_resets = allow_resets
        self.want_console = console
        self.want_gdb = gdb
        # -icount sleep=on,align=on: virtual time keeps with the host clock,
        # so uptimes track wall time as on a real board (for a board on the
        # "bench"); off (the default) runs as fast as QEMU can.
        self.realtime = realtime
        self.on_output = on_output
        shift = target.simulator.qemu.icount_shift
        self.ns_per_instruction = 1 << shift
        self.instruction_limit = max(1, -(-time_limit_ns // self.ns_per_instruction))
        self.wall_limit_s = (
            wall_limit_s if wall_limit_s is not None else 30.0 + 20.0 * time_limit_ns / 1e9
        )
        self.serial_port: int | None = None
        self.gdb_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QmpClient | None = None
        self.workdir: Path | None = None
        self.config_blob: bytes | None = None
        self._serial: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None
        self._transcript = bytearray()
        self._lock = threading.Lock()
        self._quit_requested = False
        self._resumed = False
        self.resets = 0
        self.name = f"{PROCESS_TAG}-{uuid.uuid4().hex[:12]}"

    # -- public ---------------------------------------------------------------

    def __enter__(self) -> SimulatedBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def serial_url(self) -> str:
        return f"socket://127.0.0.1:{self.serial_port}"

    @property
    def gdb_address(self) -> tuple[str, int]:
        if self.gdb_port is None:
            raise TargetError("the board was started without a gdbstub (gdb=True)")
        return ("127.0.0.1", self.gdb_port)

    @property
    def transcript(self) -> bytes:
        with self._lock:
            return bytes(self._transcript)

    def start(self) -> None:
        """Start QEMU paused, place the config, connect the console."""
        qemu = shutil.which(self.target.simulator.qemu.binary)  # type: ignore[union-attr]
        if qemu is None:
            raise EnvironmentProblem(
                f"{self.target.simulator.qemu.binary} not found",  # type: ignore[union-attr]
                remedy=APT_HINT,
            )
        plugin = vclock.plugin_path()
        self.workdir = Path(tempfile.mkdtemp(prefix="crashcart-sim-"))
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._start_qemu(qemu, plugin)
        except BaseException:
            self.close()
            raise

    def wait_console_attached(self, timeout_s: float = 10.0) -> None:
        """Wait until QEMU has accepted a client on the console socket.

        The kernel completes a TCP connect before QEMU's main loop accepts
        it, and QEMU drops console output while it sees no client; resuming
        before this point would lose the first bytes of the boot banner.
        """
        assert self.qmp is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for dev in self.qmp.command("query-chardev"):
                if dev.get("label") == "console" and not str(dev.get("filename", "")).startswith(
                    "disconnected"
                ):
                    return
            time.sleep(0.005)
        raise TargetError("QEMU did not accept the console connection",
                          remedy="check for another client on " + self.serial_url)

    def write_console(self, data: bytes) -> None:
        """Send ``data`` to the console UART's receive side over the runner's connection.

        The CMSDK UART takes one byte at a time; QEMU holds the rest in the
        socket until the guest reads.  For delivery at fixed points of the
        guest's execution, write while the VM is paused (replay's stimulus).
        """
        if self._serial is None:
            raise TargetError("the board was started without a console connection",
                              remedy="start it with console=True")
        self._serial.write(data)
        self._serial.flush()

    def resume(self) -> None:
        assert self.qmp is not None
        self.qmp.command("cont")
        self._resumed = True

    def pause(self) -> None:
        assert self.qmp is not None
        self.qmp.command("stop")

    def run(self) -> SimResult:
        """Resume the board and wait until the run ends; return the result."""
        assert self.proc is not None and self.qmp is not None
        if not self._resumed:
            self.resume()
        deadline = time.monotonic() + self.wall_limit_s
        exit_reason = None
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                exit_reason = "wall-clock"
                LOG.warning("%s: wall-clock guard of %.0f s reached", self.name, self.wall_limit_s)
                break
            stopped = self._next_event(0.05)
            if stopped is not None:
                exit_reason = stopped
                break
        return self._finish(exit_reason)

    def _next_event(self, timeout_s: float) -> str | None:
        """Wait for one QMP event, letting up to ``allow_resets`` guest resets through.

        Returns why the board stopped for good (``guest-reset`` past the allowed
        ones, or QEMU's shutdown reason), else None.
        """
        assert self.qmp is not None
        event = self.qmp.wait_event(timeout_s)
        if event is None or event.get("event") != "SHUTDOWN":
            return None
        reason = event.get("data", {}).get("reason", "")
        if reason == "guest-reset":
            self.resets += 1
            if self.resets <= self.allow_resets:
                self._reboot()
                return None
            return "guest-reset"
        return reason or "shutdown"

    def serve(self, on_halt: Callable[[str], None] | None = None) -> str:
        """Keep the board alive for debuggers until QEMU ends (Ctrl-C, time limit).

        Resets up to ``allow_resets`` go through; at the next one the VM stays
        paused in the state of the reset request, as a failed board waits on
        the bench, and ``on_halt`` is told why.  Returns how QEMU ended.
        """
        assert self.proc is not None and self.qmp is not None
        while self.proc.poll() is None and self.qmp is not None:
            stopped = self._next_event(0.2)
            if stopped is not None and on_halt is not None:
                on_halt("the firmware requested a reset (SYSRESETREQ)"
                        if stopped == "guest-reset" else stopped)
        status = self.proc.returncode
        return "time limit reached" if status == vclock.LIMIT_EXIT_STATUS else \
            f"QEMU exited with status {status}"

    def close(self) -> None:
        """Stop QEMU and release everything.  Safe to call more than once."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._stop_process(proc)
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self._serial is not None:
            close_port(self._serial)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    # -- private --------------------------------------------------------------

    def _qemu_command(self, qemu: str, plugin: Path) -> list[str]:
        assert self.workdir is not None and self.target.simulator is not None
        q = self.target.simulator.qemu
        # A board on the "bench" (realtime) keeps virtual time with the host
        # clock both ways: sleep=on lets it wait while the guest idles, and
        # align=on holds the guest back when it runs ahead (the fixture
        # firmware never idles and executes ~3x faster than its 31 MIPS).
        on_off = "on" if self.realtime else "off"
        cmd = [
            qemu,
            "-name", self.name,
            "-M", q.machine,
            "-nodefaults",
            "-display", "none",
            "-net", "none",
            "-S",
            "-icount", f"shift={q.icount_shift},align={on_off},sleep={on_off}",
            "-plugin", f"{plugin},limit={self.instruction_limit},out={self.workdir / 'vclock.txt'}",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            "-action", "reboot=shutdown,shutdown=pause",
            "-semihosting-config", "enable=on,target=native",
            "-kernel", str(self.firmware.resolve()),
        ]
        if q.cpu:
            cmd += ["-cpu", q.cpu]
        self.serial_port = _free_port()
        cmd += [
            "-chardev",
            f"socket,id=console,host=127.0.0.1,port={self.serial_port},server=on,wait=off,nodelay=on",
        ]
        for _ in range(q.uart):
            cmd += ["-serial", "null"]
        cmd += ["-serial", "chardev:console"]
        if self.want_gdb:
            self.gdb_port = _free_port()
            cmd += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
        if self.config is not None:
            cmd += self._config_args()
        return cmd

    def _config_args(self) -> list[str]:
        assert self.workdir is not None and self.config is not None
        if self.target.simulator is None or self.target.simulator.config_injection != "ram-loader":
            raise InputError(
                "this target cannot take a config in the simulator",
                path=self.target.path,
                field="simulator.config_injection",
                remedy="set config_injection: ram-loader",
            )
        assert self.target.config is not None
        blob = encode_config(self.image, self.target, self.config, source=self.config_source)
        self.config_blob = blob
        address = self.image.symbol(self.target.config.symbol, purpose="the config block").address
        path = self.workdir / "config.bin"
        path.write_bytes(blob)
        return ["-device", f"loader,file={path},addr=0x{address:x},force-raw=on"]

    def _start_qemu(self, qemu: str, plugin: Path) -> None:
        assert self.workdir is not None
        last_error = ""
        for _attempt in range(3):
            cmd = self._qemu_command(qemu, plugin)
            LOG.debug("starting %s", " ".join(cmd))
            stderr = open(self.workdir / "qemu.stderr", "wb")  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509
                )
            finally:
                stderr.close()
            try:
                self.qmp = QmpClient(self.workdir / "qmp.sock", connect_timeout_s=10)
                break
            except TargetError:
                self.proc.wait(timeout=5) if self.proc.poll() is not None else self._stop_process(
                    self.proc)
                last_error = self._stderr()
                if "Address already in use" in last_error or "Failed to bind" in last_error:
                    continue
                raise TargetError(
                    f"QEMU did not start: {last_error.strip() or 'no message'}",
                    path=self.firmware,
                    remedy="check the firmware ELF and the target's simulator settings",
                ) from None
        else:
            raise TargetError(f"QEMU could not bind a local port: {last_error.strip()}")
        if self.want_console:
            self._connect_console()

    def _connect_console(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._serial = serial.serial_for_url(self.serial_url, timeout=0.05)
                break
            except (serial.SerialException, OSError):
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise TargetError(
                        f"cannot connect to the simulated console at {self.serial_url}",
                        remedy="check that QEMU started (see its message above)",
                    ) from None
                time.sleep(0.01)
        self.wait_console_attached()
        self._reader = threading.Thread(target=self._read_console, name=f"{self.name}-uart",
                                        daemon=True)
        self._reader.start()

    def _read_console(self) -> None:
        port = self._serial
        assert port is not None
        while True:
            try:
                chunk = read_chunk(port)
            except PortGone:
                return  # QEMU closed the socket (it exited) or we closed the port
            if not chunk:
                continue
            with self._lock:
                self._transcript += chunk
            if self.on_output is not None:
                try:
                    self.on_output(chunk)
                except Exception:
                    LOG.exception("console output callback failed")

    def _reboot(self) -> None:
        assert self.qmp is not None
        # With reboot=shutdown QEMU turns every reset request, ours included,
        # into a shutdown: let this one through, then pause on the next again.
        self.qmp.command("set-action", reboot="reset")
        self.qmp.command("system_reset")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            event = self.qmp.wait_event(0.1)
            if event is not None and event.get("event") == "RESET":
                break
        self.qmp.command("set-action", reboot="shutdown")
        self.qmp.command("cont")

    def _finish(self, exit_reason: str | None) -> SimResult:
        assert self.proc is not None
        if self.proc.poll() is None:
            self._stop_process(self.proc)
        status = self.proc.returncode
        if self._reader is not None:
            self._reader.join(timeout=5)
        stderr = self._stderr()
        instructions, plugin_reason = self._plugin_report()
        semihosting = None
        if exit_reason is None:
            if plugin_reason == "limit" or status == vclock.LIMIT_EXIT_STATUS:
                exit_reason = "time-limit"
            elif "Lockup" in stderr or status == -signal.SIGABRT or status == 134:
                exit_reason = "lockup"
            elif status is not None and status < 0:
                raise QemuDied(
                    f"QEMU was killed by signal {-status} "
                    f"({signal.Signals(-status).name if -status in signal.Signals._value2member_map_ else '?'})"
                    f" after {instructions} instructions; stderr: {stderr.strip()[-400:] or 'empty'}",
                    path=self.firmware,
                    remedy="run again; if it repeats, report it with the firmware and config",
                )
            elif "qemu-system" in stderr and status not in (0, None):
                raise QemuDied(
                    f"QEMU failed (exit status {status}, plugin {plugin_reason} after "
                    f"{instructions} instructions): {stderr.strip()[-800:]}",
                    path=self.firmware,
                    remedy="check the firmware ELF and the target's simulator settings",
                )
            else:
                exit_reason = "guest-exit"
                semihosting = status
        transcript = self.transcript
        assert self.target.console is not None
        crashes = find_crash_logs(
            transcript, self.target.console.crash_begin, self.target.console.crash_end
        )
        if exit_reason == "wall-clock":
            outcome = "stalled"
        elif exit_reason == "lockup":
            outcome = "lockup"
        elif crashes:
            outcome = "crash"
        elif exit_reason == "guest-reset":
            outcome = "reset"
        elif exit_reason == "time-limit":
            outcome = "time-limit"
        else:
            outcome = "exit"
        return SimResult(
            outcome=outcome,
            exit_reason=exit_reason,
            virtual_ns=instructions * self.ns_per_instruction,
            instructions=instructions,
            resets=self.resets,
            transcript=transcript,
            crash_logs=crashes,
            qemu_exit_status=status,
            semihosting_exit_code=semihosting,
            firmware=str(self.firmware),
            target=self.target.name,
            config_sha256=None if self.config_blob is None
            else hashlib.sha256(self.config_blob).hexdigest(),
            qemu_stderr=stderr,
        )

    def _plugin_report(self) -> tuple[int, str]:
        assert self.workdir is not None
        path = self.workdir / "vclock.txt"
        try:
            reason, count = path.read_text().split()
            return int(count), reason
        except (OSError, ValueError):
            return 0, "unknown"

    def _stderr(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "qemu.stderr").read_text("utf-8", "replace")
        except OSError:
            return ""

    def _stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        if self.qmp is not None and not self._quit_requested:
            self._quit_requested = True
            try:
                self.qmp.command("quit", timeout_s=2)
            except TargetError:
                pass
            try:
                proc.wait(timeout=3)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_simulation(
    target: Target,
    firmware: str | Path,
    *,
    config: dict[str, Any] | None = None,
    config_source: str | Path = "config",
    time_limit_ns: int = 2_000_000_000,
    allow_resets: int = 0,
    on_output: Callable[[bytes], None] | None = None,
) -> SimResult:
    """Boot ``firmware`` on the simulated ``target`` and run it to its end.

    If QEMU itself dies abnormally (killed by a signal other than the
    SIGABRT of a guest lockup, or failing without saying why), the run is
    repeated once: the guest is deterministic, so a second run answers
    whether the failure belongs to the guest or to the host.  The retry is
    logged and counted in the result.
    """
    for attempt in (1, 2):
        with SimulatedBoard(
            target,
            firmware,
            config=config,
            config_source=config_source,
            time_limit_ns=time_limit_ns,
            allow_resets=allow_resets,
            on_output=on_output,
        ) as board:
            try:
                result = board.run()
            except QemuDied as exc:
                if attempt == 2:
                    raise
                LOG.warning("QEMU died unexpectedly (%s); running again once", exc)
                continue
            if attempt == 2:
                result = dataclasses.replace(result, qemu_retries=1)
            return result
    raise AssertionError("unreachable")


def live_boards() -> list[SimulatedBoard]:
    with _LIVE_LOCK:
        return list(_LIVE)


@atexit.register
def _close_all() -> None:
    for board in live_boards():
        board.close()


def find_leaked_processes(owner: str | None = None) -> list[int]:
    """PIDs of QEMU processes started by crashcart that are still running.

    With *owner*, only those whose environment carries ``CRASHCART_OWNER=owner``
    (inherited from whoever started them, through any number of subprocesses):
    a test run then judges its own boards, never another run's on the same
    machine.
    """
    pids = []
    marker = f"CRASHCART_OWNER={owner}".encode() if owner else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if PROCESS_TAG.encode() not in cmdline or b"qemu-system" not in cmdline:
                continue
            if marker is not None and marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]

