"""Any crash source to :class:`~collector.evidence.CrashEvidence`: one entry point.

``load_evidence(path)`` accepts:

* a crashcart bundle directory or its ``.tar.gz`` archive: the debug capture
  (``swd/``, else ``gdb/``) gives live registers, fault registers and memory;
  the serial capture gives the console lines around the crash; without a
  debug capture, every crash log on the console is one piece of evidence;
* a raw console capture or a pasted log holding the fixture firmware's
  crash logs (between the target's markers), several per file;
* the third-party formats of :mod:`collector.formats` (Zephyr fatal-error
  logs and coredumps, CmBacktrace), when that module recognises the text.

Every failure is an :class:`InputError` naming the file and what to do.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.crashlog import parse_banner, parse_crash_log
from collector.evidence import CrashEvidence, MemoryImage
from crashcart.errors import InputError

if TYPE_CHECKING:
    from collector.elf import ElfImage
    from targets import Target

DEFAULT_BEGIN, DEFAULT_END = "*** CRASH BEGIN ***", "*** CRASH END ***"
CONTEXT_LINES = 8
MAX_TEXT_BYTES = 256 * 1024 * 1024
_REASONS = {0: "power-on", 1: "fault", 2: "watchdog", 3: "software"}


def load_evidence(path: str | Path, image: ElfImage | None = None,
                  target: Target | None = None, *,
                  partial_ok: bool = False) -> list[CrashEvidence]:
    """Every crash the source holds, oldest first."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=path,
                         remedy="give a bundle directory, a bundle archive or a log file")
    if path.is_dir():
        if not (path / "manifest.json").exists():
            raise InputError("directory is not a crashcart bundle (no manifest.json)", path=path,
                             remedy="give the bundle directory that `crashcart collect` wrote")
        return _from_bundle(path, image, target)
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        from collector.archive import open_archive

        tmp = Path(tempfile.mkdtemp(prefix="crashcart-open-"))
        bundle = open_archive(path, tmp / "bundle")
        found = _from_bundle(bundle, image, target)
        for evidence in found:
            evidence.origin = str(path)
        return found
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise InputError(f"file is larger than {MAX_TEXT_BYTES >> 20} MiB", path=path,
                         remedy="cut the log around the crash")
    data = path.read_bytes()
    return load_text(data, origin=str(path), image=image, target=target, path=path,
                     partial_ok=partial_ok)


def load_text(data: bytes | str, *, origin: str, image: ElfImage | None = None,
              target: Target | None = None, path: Path | None = None,
              partial_ok: bool = False) -> list[CrashEvidence]:
    """Crash evidence from console text (or a coredump's bytes)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    begin, end = _markers(target)
    if begin in text:
        return _from_console(text, origin, image, target, begin, end)
    formats = _third_party()
    if formats is not None:
        fmt = formats.sniff(data)
        if fmt is not None:
            # Given the file, errors name it (and the line or offset in it).
            found = list(formats.parse(path if path is not None else (
                data if isinstance(data, bytes) else data.encode()), fmt=fmt,
                partial_ok=partial_ok))
            for ev in found:
                ev.origin = origin
                if ev.memory.elf is None:
                    ev.memory.elf = image  # code and constants come from the ELF
            return found
    raise InputError(
        "no crash evidence recognised", path=origin,
        remedy=f"expected a crashcart bundle, the firmware's crash log ('{begin}' ... "
               f"'{end}'), a Zephyr fatal-error log or coredump (#CD:), or CmBacktrace output")


def _third_party() -> Any:
    try:
        from collector import formats
    except ImportError:
        return None
    return formats if hasattr(formats, "sniff") and hasattr(formats, "parse") else None


def _markers(target: Target | None) -> tuple[str, str]:
    if target is None:
        return DEFAULT_BEGIN, DEFAULT_END
    return target.console.crash_begin, target.console.crash_end


def _arch(target: Target | None) -> str:
    return target.architecture if target is not None else "armv7-m"


def _banner_pattern(target: Target | None) -> re.Pattern[str]:
    if target is not None and target.console.banner is not None:
        return target.console.banner
    return re.compile(r"^crashcart sensor-node (?P<version>\S+) build-id (?P<build_id>[0-9a-f]+)")


def _from_console(text: str, origin: str, image: ElfImage | None, target: Target | None,
                  begin: str, end: str) -> list[CrashEvidence]:
    lines = text.splitlines()
    out: list[CrashEvidence] = []
    i = 0
    while i < len(lines):
        if begin not in lines[i]:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and end not in lines[j] and begin not in lines[j]:
            j += 1
        complete = j < len(lines) and end in lines[j]
        block = "\n".join(lines[i:j + 1] if complete else lines[i:j])
        parsed = parse_crash_log(block)
        regs = dict(parsed.registers)
        ev = CrashEvidence(source="crashlog", origin=origin, arch=_arch(target),
                           registers=regs, registers_at="stacked",
                           memory=MemoryImage(elf=image), fault_name=parsed.fault,
                           firmware_version=parsed.firmware_version, build_id=parsed.build_id,
                           build_id_origin="crash log" if parsed.build_id else None,
                           uptime_ms=parsed.uptime_ms)
        lo = max(0, i - CONTEXT_LINES)
        hi = min(len(lines), (j + 1 if complete else j) + CONTEXT_LINES)
        ev.console_lines = lines[lo:hi]
        ev.crash_line = i - lo
        ev.extra["console_line_number"] = i + 1
        if not complete:
            ev.notes.append(f"the crash log starting at line {i + 1} has no end marker "
                            f"('{end}'): it was cut off")
        for problem in parsed.problems:
            ev.notes.append(f"crash log at line {i + 1}: {problem}")
        missing = [n for n in ("pc", "lr", "xpsr", "cfsr") if n not in regs]
        if missing:
            ev.notes.append(f"crash log at line {i + 1} lacks {', '.join(missing)}")
        # The banner printed before this crash names the firmware that crashed.
        before = "\n".join(lines[:i])
        boots = parse_banner(before, _banner_pattern(target))
        if boots:
            ev.extra["banner"] = {"version": boots[-1].version, "build_id": boots[-1].build_id,
                                  "reset_reason": boots[-1].reset_reason}
            ev.firmware_version = ev.firmware_version or boots[-1].version
            ev.build_id = ev.build_id or boots[-1].build_id
            ev.reset_reason = boots[-1].reset_reason
        out.append(ev)
        i = j + 1 if complete else j
    if not out:
        raise InputError("no crash log found", path=origin,
                         remedy=f"a crash log starts with '{begin}'")
    return out


# -- bundles ---------------------------------------------------------------------


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable JSON: {exc}", path=path,
                         remedy="check the bundle with `crashcart bundle verify`") from None


def _from_bundle(bundle: Path, image: ElfImage | None,
                 target: Target | None) -> list[CrashEvidence]:
    from collector.bundle import read_manifest

    manifest = read_manifest(bundle)
    if target is None and manifest.get("target"):
        from targets import load_target

        try:
            target = load_target(manifest["target"])
        except InputError:
            target = None
    console_text = ""
    raw = bundle / "serial" / "console.raw"
    if raw.exists():
        console_text = raw.read_bytes().decode("utf-8", "replace")
    serial_crashes: list[CrashEvidence] = []
    if console_text:
        begin, end = _markers(target)
        if begin in console_text:
            serial_crashes = _from_console(console_text, str(bundle), image, target, begin, end)
    debug_dir = next((bundle / k for k in ("swd", "gdb") if (bundle / k / "registers.json")
                      .exists()), None)
    if debug_dir is None:
        if not serial_crashes:
            raise InputError("the bundle holds no debug capture and no crash log", path=bundle,
                             remedy="collect with --swd or --gdb, or with --serial while the "
                                    "board prints its crash log")
        for ev in serial_crashes:
            ev.source = "bundle"
            ev.extra["bundle"] = _bundle_info(bundle, manifest)
        return serial_crashes
    ev = _from_debug_capture(bundle, debug_dir, manifest, image, target)
    if serial_crashes:
        last = serial_crashes[-1]
        ev.console_lines, ev.crash_line = last.console_lines, last.crash_line
        ev.extra["console_crash_log"] = last.registers
        ev.fault_name = ev.fault_name or last.fault_name
        if ev.reset_reason is None:
            ev.reset_reason = last.reset_reason
        ev.uptime_ms = last.uptime_ms
        ev.extra["banner"] = last.extra.get("banner")
    elif console_text:
        tail = console_text.splitlines()[-2 * CONTEXT_LINES:]
        ev.console_lines, ev.crash_line = tail, None
    return [ev]


def _bundle_info(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    return {"path": str(bundle), "status": manifest["capture"]["status"],
            "started": manifest["capture"]["started"], "target": manifest.get("target"),
            "partial_reasons": manifest["capture"]["partial_reasons"]}


def _from_debug_capture(bundle: Path, root: Path, manifest: dict[str, Any],
                        image: ElfImage | None, target: Target | None) -> CrashEvidence:
    regs_doc = _json(root / "registers.json")
    registers = {str(k): int(v) for k, v in regs_doc.get("registers", {}).items()}
    faults_path = root / "fault-registers.json"
    if faults_path.exists():
        for k, v in _json(faults_path).get("registers", {}).items():
            registers.setdefault(str(k), int(v))
    memory = MemoryImage(elf=image)
    prefix = root.name + "/memory/"
    for rel, meta in sorted(manifest["files"].items()):
        if not rel.startswith(prefix):
            continue
        address = (meta.get("meta") or {}).get("address")
        if not isinstance(address, int):
            continue
        memory.add(address, (bundle / rel).read_bytes(), (meta.get("meta") or {}).get(
            "region", rel), "captured")
    ev = CrashEvidence(source="bundle", origin=str(bundle), arch=_arch(target),
                       registers=registers, registers_at="handler", memory=memory)
    ev.extra["bundle"] = _bundle_info(bundle, manifest)
    ev.extra["debug_source"] = root.name
    ev.extra["unavailable_registers"] = regs_doc.get("unavailable", {})
    record_path = root / "crash-record.json"
    if record_path.exists():
        record = _json(record_path)
        ev.extra["crash_record"] = record
        if isinstance(record, dict) and record.get("magic") == 0x48535243:
            for name in ("exc_return", "msp", "psp"):
                if isinstance(record.get(name), int) and name not in registers:
                    registers[name] = record[name]
                    ev.notes.append(f"{name} taken from the firmware's crash record "
                                    f"({root.name} could not read it)")
            ev.uptime_ms = record.get("uptime_ms")
    fw_path = root / "firmware.json"
    if fw_path.exists():
        fw = _json(fw_path)
        ev.firmware_version = fw.get("version")
        ev.build_id = fw.get("build_id")
        ev.build_id_origin = "device memory (GNU build-ID note)" if ev.build_id else None
        reset = (fw.get("vendor_registers") or {}).get("reset_cause")
        if reset:
            ev.reset_reason = reset.get("meaning")
            ev.extra["reset_cause_register"] = reset
        if fw.get("config") is not None:
            ev.config, ev.config_origin = fw["config"], f"RAM ({root.name} capture, via DWARF)"
    frame_path = root / "exception-frame.json"
    if frame_path.exists():
        ev.extra["exception_frame"] = _json(frame_path)
    state_path = root / "state.json"
    if state_path.exists():
        ev.extra["state"] = _json(state_path)
    if manifest["capture"]["status"] != "complete":
        ev.notes.append("the bundle is partial: " + "; ".join(
            manifest["capture"]["partial_reasons"]))
    return ev
