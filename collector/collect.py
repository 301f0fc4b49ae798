"""``crashcart collect``: capture every source into one bundle.

Sources run side by side: the serial console streams for the whole capture
(in a thread), a debug capture (SWD through pyocd, or GDB remote) takes its
snapshot as soon as the capture starts, because that is the evidence most
easily destroyed.  The capture ends after ``duration_s``, on Ctrl-C or
SIGTERM, or when every source has ended; in each case the bundle is
finished (``partial`` with the reasons when anything was cut short).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.bundle import BundleWriter
from collector.serial_capture import SerialCapture, SerialStats
from targets import Target

LOG = logging.getLogger(__name__)

# A debug capture takes the bundle and returns a short summary for people.
DebugCapture = Callable[[BundleWriter], dict[str, Any]]


@dataclass
class CollectResult:
    bundle: Path
    status: str
    partial_reasons: list[str]
    serial: SerialStats | None
    debug: dict[str, Any] | None
    debug_error: str | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: str | None = None


def collect(
    out: Path,
    target: Target,
    *,
    serial_url: str | None = None,
    baudrate: int | None = None,
    debug: DebugCapture | None = None,
    debug_label: str | None = None,
    duration_s: float | None = None,
    after_crash_s: float | None = None,
    debug_on_crash: bool = False,
    command: list[str] | None = None,
    elf: Path | None = None,
    on_serial: Callable[[bytes], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CollectResult:
    """Capture into a new bundle at ``out``; returns what was captured."""
    say = progress or (lambda _msg: None)
    stop = threading.Event()
    serial_thread = None
    capture: SerialCapture | None = None
    debug_summary: dict[str, Any] | None = None
    debug_error: str | None = None
    interrupted: str | None = None
    previous = _install_sigterm()
    bundle = BundleWriter(out, target=target.name, command=command or [])
    started = time.monotonic()
    try:
        with bundle:
            try:
                if serial_url is not None:
                    capture = SerialCapture(
                        bundle, serial_url, baudrate=baudrate or target.console.baudrate,
                        crash_markers=(target.console.crash_begin, target.console.crash_end),
                        on_data=on_serial,
                    )
                    serial_thread = threading.Thread(target=capture.run, args=(stop, duration_s),
                                                     name="serial-capture", daemon=True)
                    serial_thread.start()
                    say(f"serial: capturing {serial_url}")
                if debug is not None and debug_on_crash and capture is not None:
                    say("debug: waiting for a complete crash log on the console")
                    limit = None if duration_s is None else started + duration_s
                    while not capture.stats.crashes_ended and serial_thread is not None and \
                            serial_thread.is_alive():
                        if limit is not None and time.monotonic() >= limit:
                            break
                        serial_thread.join(0.02)
                    if not capture.stats.crashes_ended:
                        say("debug: no crash log seen; capturing anyway")
                if debug is not None:
                    say(f"debug: capturing through {debug_label}")
                    try:
                        debug_summary = debug(bundle)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a probe failure is recorded
                        debug_error = str(exc)
                        LOG.debug("debug capture failed", exc_info=True)
                        bundle.mark_partial(f"debug capture ({debug_label}) failed: {exc}")
                        say(f"debug: FAILED: {exc}")
                if serial_thread is not None and capture is not None:
                    deadline = None if duration_s is None else started + duration_s
                    crash_seen_at = None
                    while serial_thread.is_alive():
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            break
                        if after_crash_s is not None:
                            if crash_seen_at is None and capture.stats.crashes_ended:
                                crash_seen_at = now
                                say(f"serial: crash log complete; stopping in {after_crash_s:g} s")
                            if crash_seen_at is not None and now - crash_seen_at >= after_crash_s:
                                break
                        serial_thread.join(0.05)
            except KeyboardInterrupt as exc:
                interrupted = str(exc.args[0]) if exc.args else "Ctrl-C"
                bundle.mark_partial(f"interrupted ({interrupted})")
            finally:
                # Sources stop before the bundle is finished, on every path.
                stop.set()
                if serial_thread is not None:
                    serial_thread.join(10)
            bundle.set_summary({
                "elf": None if elf is None else _elf_summary(elf),
                "serial": None if capture is None else capture.stats.__dict__,
                "debug": debug_summary,
                "debug_error": debug_error,
                "interrupted": interrupted,
            })
    finally:
        _restore_sigterm(previous)
    manifest = bundle.manifest
    return CollectResult(
        bundle=out,
        status=manifest["capture"]["status"],
        partial_reasons=list(manifest["capture"]["partial_reasons"]),
        serial=None if capture is None else capture.stats,
        debug=debug_summary,
        debug_error=debug_error,
        files=dict(manifest["files"]),
        interrupted=interrupted,
    )


def _elf_summary(elf: Path) -> dict[str, Any]:
    """The ELF the capture was told about (decode checks it against the device's build ID)."""
    import hashlib

    from collector.elf import ElfImage

    image = ElfImage.open_cached(elf)
    return {"path": str(Path(elf).resolve()), "build_id": image.build_id,
            "sha256": hashlib.sha256(Path(elf).read_bytes()).hexdigest()}


def _install_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
