"""``crashcart decode``: any crash evidence to the facts an engineer needs.

One :class:`~collector.evidence.CrashEvidence` in (from a bundle, a console
log, a Zephyr log or coredump, a CmBacktrace print: see
:mod:`collector.sources`), one :class:`Decoded` out: the fault and why (every
status bit explained), where (function, file:line, inline chain), the
backtrace with how each frame was found, the firmware's identity checked
against the ELF, the reset reason, the device's config and the console
lines around the crash.  Text for people (one screen), JSON for tools.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from collector.crashlog import STACKED_REGISTERS
from crashcart.errors import CrashcartError, InputError

if TYPE_CHECKING:
    from collector.elf import ElfImage
    from collector.evidence import CrashEvidence
    from targets import Target

LOG = logging.getLogger(__name__)
FAULT_NAMES = ("cfsr", "hfsr", "dfsr", "mmfar", "bfar", "sfsr", "sfar", "shcsr", "icsr",
               "exc_return")


@dataclass
class Decoded:
    evidence: CrashEvidence
    fault: dict[str, Any] | None
    frames: list[dict[str, Any]]
    location: dict[str, Any] | None
    firmware: dict[str, Any]
    config: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    backtrace_text: str = ""
    variables: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "source": {"kind": ev.source, "origin": ev.origin,
                       **({"bundle": ev.extra["bundle"]} if "bundle" in ev.extra else {})},
            "fault": self.fault,
            "location": self.location,
            "frames": self.frames,
            "firmware": self.firmware,
            "reset_reason": ev.reset_reason,
            "uptime_ms": ev.uptime_ms,
            "config": self.config,
            "config_origin": ev.config_origin if self.config is not None else None,
            "registers": {k: v for k, v in sorted(ev.registers.items())},
            "registers_hex": {k: f"0x{v:08x}" for k, v in sorted(ev.registers.items())},
            "registers_at": ev.registers_at,
            "console": {"lines": ev.console_lines, "crash_line": ev.crash_line},
            "variables": self.variables,
            "notes": ev.notes,
            "warnings": self.warnings,
        }


def _fault(ev: CrashEvidence, target: Target | None) -> dict[str, Any] | None:
    from collector.faults import decode_fault

    regs = {k: v for k, v in ev.registers.items() if k in FAULT_NAMES}
    if not regs:
        return None
    fp = target.fpu if target is not None else None
    try:
        report = decode_fault(ev.arch, regs, fp=fp)
    except InputError as exc:
        return {"error": str(exc)}
    exc = report.exc_return
    return {
        "summary": report.summary,
        "kinds": list(report.kinds),
        "primary": report.primary,
        "escalated": report.escalated,
        "cause": report.cause,
        "device_said": ev.fault_name,
        "bits": [{"register": b.register, "bit": b.bit, "name": b.name,
                  "meaning": getattr(b, "meaning", None), "fault": getattr(b, "fault", None)}
                 for b in report.bits],
        "mmfar": report.mmfar, "bfar": report.bfar, "sfar": report.sfar,
        "frame_trustworthy": report.frame_trustworthy,
        "frame_reasons": list(report.frame_reasons),
        "exc_return": None if exc is None else {
            "value": exc.value, "return_mode": exc.return_mode, "stack": exc.stack,
            "frame_type": exc.frame_type, "security_state": exc.security_state},
        "notes": list(report.notes),
    }


def _firmware(ev: CrashEvidence, image: ElfImage | None) -> tuple[dict[str, Any], list[str]]:
    from collector.buildid import check_build_id

    warnings: list[str] = []
    check = None
    if image is not None:
        try:
            check = check_build_id(image, ev.build_id, source=ev.build_id_origin)
        except InputError as exc:  # the device's ID is not hex: say so, compare nothing
            warnings.append(f"the build ID the evidence carries is unusable: {exc}")
        if check is not None and check.warning:
            warnings.append(check.warning)
        elif check is not None and check.match is None:
            warnings.append(check.summary + "; symbols are unverified")
    match = None if check is None else check.match
    return {"version": ev.firmware_version, "device_build_id": ev.build_id,
            "device_build_id_origin": ev.build_id_origin,
            "elf_build_id": image.build_id if image is not None else None,
            "elf": str(image.path) if image is not None else None,
            "build_id_match": match, "symbols_verified": bool(match),
            "build_id_check": None if check is None else check.summary}, warnings


def _config(ev: CrashEvidence, image: ElfImage | None, target: Target | None) -> Any:
    if ev.config is not None:
        return ev.config
    if image is None or target is None or target.config is None:
        return None
    sym = image.get_symbol(target.config.symbol)
    if sym is None or sym.size == 0:
        return None
    data = ev.memory.try_read(sym.address, sym.size)
    if data is None or ev.memory.origin(sym.address, sym.size) != "captured":
        return None
    from collector.device_config import decode_config

    try:
        value = decode_config(image, target, data)
    except CrashcartError:
        return None
    ev.config_origin = "RAM (via DWARF)"
    return value


def decode_evidence(ev: CrashEvidence, image: ElfImage | None,
                    target: Target | None = None, *,
                    variables: tuple[str, ...] = ()) -> Decoded:
    """Everything crashcart can say about one crash (and the globals named in ``variables``,
    read from the evidence's memory through DWARF)."""
    fault = _fault(ev, target)
    firmware, warnings = _firmware(ev, image)
    frames: list[dict[str, Any]] = []
    location = None
    text = ""
    if image is not None and "pc" in ev.registers:
        from collector.unwind import unwind

        # Deep enough to reach main through a runaway recursion (a stack
        # overflow); the text shows the repeated frames once, with a count.
        bt = unwind(image, ev.registers, ev.memory, arch=ev.arch,
                    registers_at=ev.registers_at, max_frames=1024)
        frames = [f.to_json() for f in bt.frames]
        for f in frames:
            f["verified"] = bool(firmware["symbols_verified"])
        warnings.extend(bt.warnings)
        text = bt.format()
        location = _faulting_frame(frames, ev)
        if bt.stop_reason:
            firmware.setdefault("notes", [])
    elif image is None:
        warnings.append("no ELF given (--elf): addresses are not symbolized")
    config = _config(ev, image, target)
    values: list[dict[str, Any]] = []
    if variables and image is None:
        raise InputError("--print needs the ELF (--elf) for the variables' types")
    for name in variables:
        from collector.variables import read_variable

        assert image is not None
        value = read_variable(image, ev.memory, name)
        values.append({"name": name, "text": value.text, "value": value.to_json()})
    return Decoded(ev, fault, frames, location, firmware, config, warnings, text, values)


def _faulting_frame(frames: list[dict[str, Any]], ev: CrashEvidence) -> dict[str, Any] | None:
    """The interrupted code: the frame just below the exception frame, else frame 0.

    Given innermost first, as addr2line -i prints it: ``function``/``file``/
    ``line`` are the innermost (inlined) code, ``inlined`` the functions it
    was inlined into, outward, ending with the real function.
    """
    frame = None
    if ev.registers_at == "handler":
        frame = next((f for f in frames if f.get("how") == "exception-frame"), None)
        if frame is None:
            # The exception frame was not written (MSTKERR, STKERR, STKOF): the
            # interrupted code is the first frame the unwinder found below it
            # (by stack scan), not where the handler was halted.
            frame = next((f for f in frames if f.get("exception")), None)
    if frame is None and frames:
        frame = frames[0]
    if frame is None:
        return None
    chain = [*(frame.get("inlined") or []),
             {"function": frame.get("function"), "file": frame.get("file"),
              "line": frame.get("line")}]
    inner, outer = chain[0], chain[1:]
    return {"pc": frame["pc"], "function": inner["function"], "file": inner["file"],
            "line": inner["line"], "inlined": outer if len(chain) > 1 else [],
            "frame_index": frame.get("index"), "how": frame.get("how")}


# -- text ---------------------------------------------------------------------------


def _where(f: dict[str, Any]) -> str:
    fn = f.get("function") or "??"
    loc = f"{f.get('file') or '??'}:{f.get('line') or '?'}"
    return f"{fn} ({loc})"


def format_text(d: Decoded) -> str:
    ev = d.evidence
    out: list[str] = []
    for w in d.warnings:
        if "mismatch" in w:
            out.append(f"!!! {w}")
    fault = d.fault
    if fault and "error" not in fault:
        out.append(f"{fault['summary']}")
        if fault.get("cause") and fault["cause"] not in fault["summary"]:
            out.append(f"  {fault['cause']}")
        for b in fault["bits"]:
            meaning = f": {b['meaning']}" if b.get("meaning") else ""
            out.append(f"  {b['register']}.{b['name']}{meaning}")
        for name in ("mmfar", "bfar", "sfar"):
            if fault.get(name) is not None:
                out.append(f"  {name.upper()} = 0x{fault[name]:08x}")
        if not fault["frame_trustworthy"]:
            out.append("  the stacked frame is UNTRUSTWORTHY: " + ", ".join(fault["frame_reasons"]))
    elif ev.fault_name:
        out.append(f"{ev.fault_name} (the device's words; no fault status registers captured)")
    if d.location:
        found = ("  (found by stack scan: no trustworthy exception frame)"
                 if d.location.get("how") == "scan" else "")
        out.append(f"at 0x{d.location['pc']:08x} in {_where(d.location)}{found}")
        for inl in d.location.get("inlined") or []:
            out.append(f"   inlined into {_where(inl)}")
    if d.backtrace_text:
        out.append("backtrace:")
        out.extend("  " + line for line in d.backtrace_text.splitlines())
    fw = d.firmware
    ident = f"firmware {fw.get('version') or '?'} build-id {fw.get('device_build_id') or '?'}"
    if fw.get("build_id_match") is True:
        ident += " (matches the ELF)"
    elif fw.get("build_id_match") is False:
        ident += f" (ELF is {fw.get('elf_build_id')}: MISMATCH)"
    out.append(ident)
    extras = []
    if ev.reset_reason:
        extras.append(f"reset reason: {ev.reset_reason}")
    if ev.uptime_ms is not None:
        extras.append(f"uptime {ev.uptime_ms} ms")
    if extras:
        out.append(", ".join(extras))
    if d.config is not None:
        items = [f"{k}={v}" for k, v in d.config.items()
                 if k not in ("magic", "version", "size", "crc32", "reserved")]
        out.append(f"config ({ev.config_origin}): " + " ".join(items))
    if ev.console_lines:
        out.append("console:")
        for i, line in enumerate(ev.console_lines[:24]):
            mark = ">" if ev.crash_line is not None and i == ev.crash_line else " "
            out.append(f" {mark} {line}")
    for v in d.variables:
        out.append(f"{v['name']} = {v['text']}")
    for w in d.warnings:
        if "mismatch" not in w:
            out.append(f"warning: {w}")
    for note in ev.notes:
        out.append(f"note: {note}")
    return "\n".join(out)


@click.command("decode")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--elf", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The firmware ELF (symbols, lines, CFI, DWARF types).")
@click.option("--target", "target_name", metavar="NAME|FILE",
              help="Target (default: the bundle's; mps2-an385's formats for logs).")
@click.option("--crash", "crash_index", type=int,
              help="Decode only this crash (1 = the first in the source).")
@click.option("--partial", is_flag=True,
              help="Decode what is there of a cut-off crash print or coredump (notes say what "
                   "is missing) instead of stopping with an error.")
@click.option("--print", "variables", multiple=True, metavar="GLOBAL",
              help="Also show a global variable's value from the captured memory, through "
                   "DWARF (like gdb's print); repeatable.  Fields whose memory was not "
                   "captured say so.")
@click.option("--json", "as_json", is_flag=True, help="Everything, as one JSON document.")
def decode_command(source: Path, elf: Path | None, target_name: str | None,
                   crash_index: int | None, partial: bool, variables: tuple[str, ...],
                   as_json: bool) -> None:
    """Decode crash evidence: which fault and why, where, the backtrace, the firmware.

    SOURCE is a bundle directory or archive, a console capture or pasted
    log with the firmware's crash log(s), a Zephyr fatal-error log or
    coredump, or CmBacktrace output.  Several crashes in one log are each
    decoded (or pick one with --crash).

    \b
    JSON keys: source, fault, location, frames, firmware, reset_reason,
    uptime_ms, config, registers, registers_hex, console, variables, notes,
    warnings.
    """
    from collector.elf import ElfImage
    from collector.sources import load_evidence
    from targets import load_target

    target = load_target(target_name) if target_name else None
    image = ElfImage.open_cached(elf) if elf else None
    crashes = load_evidence(source, image, target, partial_ok=partial)
    if target is None:
        bundle_target = (crashes[0].extra.get("bundle") or {}).get("target") if crashes else None
        try:
            target = load_target(bundle_target or "mps2-an385")
        except InputError:
            target = None
    if crash_index is not None:
        if not 1 <= crash_index <= len(crashes):
            raise InputError(f"there are {len(crashes)} crash(es) in the source",
                             path=source, field="--crash", value=crash_index)
        crashes = [crashes[crash_index - 1]]
    decoded = [decode_evidence(ev, image, target, variables=variables) for ev in crashes]
    if as_json:
        doc: Any = decoded[0].to_json() if len(decoded) == 1 else {
            "crashes": [d.to_json() for d in decoded]}
        click.echo(json.dumps(doc, indent=2))
        return
    for i, d in enumerate(decoded):
        if len(decoded) > 1:
            line = d.evidence.extra.get("console_line_number")
            click.echo(f"=== crash {i + 1} of {len(decoded)}"
                       + (f" (line {line})" if line else "") + " ===")
        click.echo(format_text(d))
        if i + 1 < len(decoded):
            click.echo()


# -- for the timeline and the post-mortem ---------------------------------------------


class ElfCrashDecoder:
    """A :class:`timeline.bundle_events.CrashDecoder`: decodes each crash log in a bundle
    with the ELF whose build ID the crash names, found under ``search_dirs``.

    Crashes whose build has no ELF on the search path stay undecoded (the
    report says so); a decode that fails is logged and left out, never raised.
    """

    def __init__(self, search_dirs: list[Path]) -> None:
        self.search_dirs = search_dirs
        self._elves: dict[str, Any] = {}
        self._captures: dict[Path, Any] = {}
        self.missing: set[str] = set()

    def _capture(self, bundle: Path, image: ElfImage, regs: dict[str, int]) -> Any:
        """The bundle's debug capture, when it was taken after this very crash (its crash
        record holds the same CFSR and the same pc, PSP and MSP where both state them):
        then the unwinder can walk the captured stack."""
        if bundle not in self._captures:
            from collector.sources import load_evidence

            found = None
            if (bundle / "swd").is_dir() or (bundle / "gdb").is_dir():
                try:
                    found = load_evidence(bundle, image)[0]
                except CrashcartError:
                    found = None
            self._captures[bundle] = found
        ev = self._captures[bundle]
        if ev is None:
            return None
        record = ev.extra.get("crash_record") or {}
        if record.get("cfsr") != regs.get("cfsr"):
            return None
        shared = [k for k in ("pc", "psp", "msp") if k in record and k in regs]
        if not shared or any(record[k] != regs[k] for k in shared):
            return None
        return ev

    def _image(self, build_id: str | None) -> ElfImage | None:
        if not build_id:
            return None
        if build_id not in self._elves:
            from collector.elf import ElfImage
            from replay.scenario import find_elf_by_build_id

            path = find_elf_by_build_id(build_id, self.search_dirs)
            self._elves[build_id] = ElfImage.open_cached(path) if path else None
            if path is None:
                self.missing.add(build_id)
        return self._elves[build_id]

    def __call__(self, crash: Any, *, bundle: Path) -> Any:
        from collector.evidence import CrashEvidence, MemoryImage
        from timeline.model import DecodedFault

        image = self._image(crash.build_id)
        if image is None:
            return None
        regs = {k: v for k, v in crash.registers}
        if not crash.frame_available:
            for name in STACKED_REGISTERS:
                regs.pop(name, None)
        captured = self._capture(bundle, image, regs)
        if captured is not None and not crash.frame_available:
            # No stacked frame in the log, but the debugger caught the core in
            # this crash's handler: unwind from there (through a stack scan).
            ev = captured
        else:
            memory = captured.memory if captured is not None else MemoryImage(elf=image)
            ev = CrashEvidence(source="crashlog", origin=str(bundle), registers=regs,
                               registers_at="stacked", memory=memory,
                               fault_name=crash.fault, firmware_version=crash.firmware_version,
                               build_id=crash.build_id, build_id_origin="crash log")
        try:
            d = decode_evidence(ev, image if "pc" in ev.registers else None)
        except CrashcartError as exc:
            LOG.warning("%s: crash not decoded: %s", bundle, exc)
            return None
        summary = (d.fault or {}).get("summary") or crash.fault or "fault"
        loc = d.location or {}
        explanations = tuple(f"{b['register']}.{b['name']}: {b['meaning']}"
                             for b in (d.fault or {}).get("bits", []))
        if not crash.frame_available:
            explanations += (
                "the stacked frame was not written (stacking failed); the location and "
                "backtrace come from a stack scan of the debugger-captured stack"
                if loc.get("how") == "scan" else
                "the stacked frame was not readable (stacking failed), so there is no "
                "faulting PC to symbolize",)
        return DecodedFault(summary=summary, function=loc.get("function"), file=loc.get("file"),
                            line=loc.get("line"), backtrace=_backtrace_entries(d),
                            explanations=explanations)


def _backtrace_entries(d: Decoded) -> tuple[str, ...]:
    """The backtrace for a report line: from the interrupted code outward (the fault
    handler's own frames are left out), one entry per source-level frame with inline
    levels first, as gdb's bt; a recursion is one entry with its count."""
    frames = d.frames
    start = (d.location or {}).get("frame_index")
    if isinstance(start, int) and 0 < start < len(frames):
        frames = frames[start:]

    def where(f: dict[str, Any], inlined: bool = False) -> str:
        return (f"{f.get('function') or '??'} ({(f.get('file') or '??').rsplit('/', 1)[-1]}:"
                f"{f.get('line') or '?'}){' [inlined]' if inlined else ''}")

    entries: list[list[Any]] = []  # [text, count]
    for f in frames:
        for text in (*(where(i, True) for i in f.get("inlined") or ()), where(f)):
            if entries and entries[-1][0] == text:
                entries[-1][1] += 1
            else:
                entries.append([text, 1])
    return tuple(t if n == 1 else f"{t} ×{n}" for t, n in entries)
