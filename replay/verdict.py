"""Verdicts: a scenario's expectations checked against one run, with the evidence.

A :class:`Verdict` says whether the expectations were met and carries what
shows it: each check with expected and observed values, the UART
transcript, the faults read from the crash logs (through the collector's
crash-log parser and, when present, its fault decoder), the virtual time,
instruction count, guest resets and the reason the run ended.  Verdicts
are serialised in one place, :meth:`Verdict.to_json`.

Fault facts stay compatible with the collector's decode: ``kind`` is the
fault's name (HardFault, MemManage, BusFault, UsageFault, NMI, or Lockup
when QEMU reported a lockup), ``cfsr``/``hfsr``/``pc`` are the crash log's
values, and ``function`` is the function whose address range holds the
stacked PC (ELF function symbols, Thumb bit cleared).
"""

from __future__ import annotations

import bisect as _bisect
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

from collector.crashlog import parse_crash_log
from collector.elf import ElfImage
from replay.scenario import Expectations, FaultExpectation, Scenario

LOG = logging.getLogger(__name__)

TRANSCRIPT_TAIL_LINES = 20
_WATCHDOG_RESET = re.compile(r"^reset:\s*watchdog\b", re.MULTILINE)


@dataclass(frozen=True)
class FaultFacts:
    """One fault seen in a run."""

    kind: str
    name: str  # as the firmware printed it ("NMI/watchdog"), or "Lockup"
    cfsr: int | None = None
    hfsr: int | None = None
    pc: int | None = None
    lr: int | None = None
    mmfar: int | None = None
    bfar: int | None = None
    function: str | None = None
    frame_valid: bool = False
    uptime_ms: int | None = None
    summary: str | None = None  # the fault decoder's one-line explanation, when available
    bits: tuple[str, ...] = ()

    def describe(self) -> str:
        text = self.kind
        if self.function:
            text += f" in {self.function}"
        regs = []
        if self.pc is not None and self.frame_valid:
            regs.append(f"pc 0x{self.pc:08x}")
        if self.cfsr is not None:
            regs.append(f"cfsr 0x{self.cfsr:08x}")
        if self.hfsr:
            regs.append(f"hfsr 0x{self.hfsr:08x}")
        if regs:
            text += " (" + ", ".join(regs) + ")"
        return text

    def to_json(self) -> dict[str, Any]:
        def hx(v: int | None) -> str | None:
            return None if v is None else f"0x{v:08x}"

        return {"kind": self.kind, "name": self.name, "cfsr": hx(self.cfsr),
                "hfsr": hx(self.hfsr), "pc": hx(self.pc), "lr": hx(self.lr),
                "mmfar": hx(self.mmfar), "bfar": hx(self.bfar), "function": self.function,
                "frame_valid": self.frame_valid, "uptime_ms": self.uptime_ms,
                "summary": self.summary, "bits": list(self.bits)}


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    observed: str
    met: bool


@dataclass(frozen=True)
class Observation:
    """What one run showed (the evidence), independent of any expectation."""

    firmware: str
    build_id: str | None
    target: str
    outcome: str
    exit_reason: str
    virtual_ns: int
    instructions: int
    resets: int
    transcript: bytes
    faults: tuple[FaultFacts, ...]
    watchdog_fired: bool
    config: dict[str, Any] | None = None
    config_sha256: str | None = None
    stimulus_log: tuple[str, ...] = ()
    wall_s: float = 0.0
    qemu_retries: int = 0

    @property
    def transcript_text(self) -> str:
        return self.transcript.decode("utf-8", "replace")

    def transcript_tail(self, lines: int = TRANSCRIPT_TAIL_LINES) -> str:
        return "\n".join(self.transcript_text.splitlines()[-lines:])


@dataclass(frozen=True)
class Verdict:
    scenario: str
    scenario_path: str
    describes: str  # failure | health
    met: bool
    checks: tuple[Check, ...]
    observation: Observation
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reproduces(self) -> bool:
        """The incident the scenario describes happened on this run."""
        return self.met if self.describes == "failure" else not self.met

    @property
    def faulted(self) -> bool:
        return bool(self.observation.faults)

    @property
    def label(self) -> str:
        """Per build: ``reproduces``, ``clean``, or ``other failure``."""
        if self.reproduces:
            return "reproduces"
        if not self.faulted:
            return "clean"
        return "other failure"

    def first_fault(self) -> FaultFacts | None:
        return self.observation.faults[0] if self.observation.faults else None

    def summary(self) -> str:
        obs = self.observation
        fault = self.first_fault()
        seen = fault.describe() if fault else "no fault"
        state = "met" if self.met else "NOT met"
        return (f"{self.scenario} on {_short(obs.firmware)}: expectations {state}; {self.label}; "
                f"{seen}; {obs.virtual_ns / 1e6:.3f} ms virtual, ended by {obs.exit_reason}")

    def report(self, *, tail_lines: int = TRANSCRIPT_TAIL_LINES) -> str:
        """A readable report: every check expected vs observed, then the transcript tail."""
        obs = self.observation
        lines = [self.summary()]
        for c in self.checks:
            mark = "ok  " if c.met else "FAIL"
            lines.append(f"  {mark} {c.name}: expected {c.expected}; observed {c.observed}")
        for f in obs.faults:
            if f.summary:
                lines.append(f"  fault decode: {f.summary}")
        for s in obs.stimulus_log:
            lines.append(f"  stimulus: {s}")
        lines.append(f"  run: outcome {obs.outcome}, {obs.instructions} instructions, "
                     f"{obs.resets} guest reset(s), firmware build-id {obs.build_id}")
        lines.append(f"  transcript (last {tail_lines} lines):")
        lines += ["    | " + ln for ln in obs.transcript_tail(tail_lines).splitlines()]
        return "\n".join(lines)

    def to_json(self, *, transcript: bool = True) -> dict[str, Any]:
        obs = self.observation
        data: dict[str, Any] = {
            "format": "crashcart-replay-verdict",
            "scenario": self.scenario,
            "scenario_path": self.scenario_path,
            "describes": self.describes,
            "met": self.met,
            "reproduces": self.reproduces,
            "label": self.label,
            "checks": [{"name": c.name, "expected": c.expected, "observed": c.observed,
                        "met": c.met} for c in self.checks],
            "firmware": obs.firmware,
            "build_id": obs.build_id,
            "target": obs.target,
            "outcome": obs.outcome,
            "exit_reason": obs.exit_reason,
            "virtual_ns": obs.virtual_ns,
            "virtual_ms": round(obs.virtual_ns / 1e6, 6),
            "instructions": obs.instructions,
            "resets": obs.resets,
            "watchdog_fired": obs.watchdog_fired,
            "faults": [f.to_json() for f in obs.faults],
            "config": obs.config,
            "config_sha256": obs.config_sha256,
            "stimulus": list(obs.stimulus_log),
            "wall_s": round(obs.wall_s, 4),
            "qemu_retries": obs.qemu_retries,
        }
        if transcript:
            data["transcript"] = obs.transcript_text
        data.update(self.extra)
        return data


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# -- building observations -------------------------------------------------------


class FunctionIndex:
    """Function symbols of an ELF sorted by address, for PC -> function."""

    _cache: ClassVar[weakref.WeakKeyDictionary[ElfImage, FunctionIndex]] = (
        weakref.WeakKeyDictionary())

    def __init__(self, image: ElfImage) -> None:
        funcs = sorted((s.address & ~1, s.size, s.name) for s in image.symbols.values()
                       if s.kind == "function" and s.size > 0)
        self.starts = [f[0] for f in funcs]
        self.funcs = funcs

    @classmethod
    def of(cls, image: ElfImage) -> FunctionIndex:
        index = cls._cache.get(image)
        if index is None:
            index = cls._cache[image] = cls(image)
        return index

    def function_at(self, pc: int) -> str | None:
        pc &= ~1
        i = _bisect.bisect_right(self.starts, pc) - 1
        if i < 0:
            return None
        start, size, name = self.funcs[i]
        return name if start <= pc < start + size else None


def fault_from_crash_log(text: str, image: ElfImage | None, arch: str | None) -> FaultFacts:
    """Fault facts from one crash log, through the collector's parser."""
    log = parse_crash_log(text)
    name = log.fault or "unknown"
    kind = "NMI" if name.upper().startswith("NMI") else name
    regs = log.registers
    frame_valid = not any("frame: unavailable" in n for n in log.notes)
    pc = regs.get("pc")
    function = None
    if image is not None and pc is not None and frame_valid and pc & ~1:
        function = FunctionIndex.of(image).function_at(pc)
    summary = None
    bits: tuple[str, ...] = ()
    if arch is not None:
        summary, bits = _decode(arch, regs)
    return FaultFacts(kind=kind, name=name, cfsr=regs.get("cfsr"), hfsr=regs.get("hfsr"), pc=pc,
                      lr=regs.get("lr"), mmfar=regs.get("mmfar"), bfar=regs.get("bfar"),
                      function=function, frame_valid=frame_valid, uptime_ms=log.uptime_ms,
                      summary=summary, bits=bits)


def _decode(arch: str, regs: dict[str, int]) -> tuple[str | None, tuple[str, ...]]:
    """The collector's fault decoder, when this checkout has it (collector/faults.py)."""
    try:
        from collector.faults import decode_fault
    except ImportError:
        return None, ()
    try:
        report = decode_fault(arch, regs)
    except Exception as exc:  # noqa: BLE001 - a decode problem must not lose the verdict
        LOG.debug("fault decode failed: %s", exc)
        return None, ()
    return report.summary, tuple(report.bit_names())


def watchdog_fired(transcript: str, faults: tuple[FaultFacts, ...]) -> bool:
    return any(f.kind == "NMI" for f in faults) or bool(_WATCHDOG_RESET.search(transcript))


# -- evaluating expectations ------------------------------------------------------


def evaluate(scenario: Scenario, obs: Observation, *,
             extra: dict[str, Any] | None = None) -> Verdict:
    checks = check_expectations(scenario.expect, obs)
    return Verdict(scenario.name, str(scenario.path), scenario.describes,
                   all(c.met for c in checks), tuple(checks), obs, dict(extra or {}))


def check_expectations(expect: Expectations, obs: Observation) -> list[Check]:
    checks: list[Check] = []
    faults = obs.faults
    seen = "; ".join(f.describe() for f in faults) or "no fault"
    if expect.no_fault:
        checks.append(Check("fault", "no fault", seen, not faults))
    if expect.fault is not None:
        want = expect.fault
        checks.append(Check("fault", want.describe(), seen,
                            any(_fault_matches(want, f) for f in faults)))
    text = obs.transcript_text
    for pattern in expect.log_present:
        line = pattern.search(text)
        checks.append(Check("log present", pattern.describe(),
                            repr(line) if line is not None else "not in the transcript",
                            line is not None))
    for pattern in expect.log_absent:
        line = pattern.search(text)
        checks.append(Check("log absent", f"no line matching {pattern.describe()}",
                            repr(line) if line is not None else "absent", line is None))
    if expect.resets is not None:
        checks.append(Check("resets", str(expect.resets), str(obs.resets),
                            obs.resets == expect.resets))
    if expect.resets_min is not None or expect.resets_max is not None:
        lo = expect.resets_min if expect.resets_min is not None else 0
        hi = expect.resets_max
        wanted = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
        ok = obs.resets >= lo and (hi is None or obs.resets <= hi)
        checks.append(Check("resets", wanted, str(obs.resets), ok))
    if expect.watchdog is not None:
        checks.append(Check("watchdog", "fired" if expect.watchdog else "not fired",
                            "fired" if obs.watchdog_fired else "not fired",
                            obs.watchdog_fired == expect.watchdog))
    return checks


def _fault_matches(want: FaultExpectation, fault: FaultFacts) -> bool:
    if fault.kind.lower() != want.kind.lower():
        return False
    return want.function is None or fault.function == want.function
