"""Replay scenarios: what to run on the simulated board and what to expect.

A scenario file (YAML, format in ``docs/scenario-format.md``) names a
target, a firmware (an ELF path, or a GNU build ID looked up in a search
path of ELFs), a config (inline values, a config file, or the config
captured in an evidence bundle), stimulus at points fixed in the board's
execution, a run limit in virtual time, and expectations.  It is loaded
with :func:`crashcart.yamlfile.load_yaml` and checked field by field, so
every error names the file, line, field and value and says what to do.

Relative paths in a scenario are relative to the scenario file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from collector.elf import ElfImage
from crashcart.errors import InputError
from crashcart.units import format_ns, parse_duration_ns
from crashcart.yamlfile import Checker, KeyPath, YamlDocument, load_yaml

SCHEMA_VERSION = 1
#: Environment variable with extra directories of ELFs for build-ID lookup.
ELF_PATH_ENV = "CRASHCART_ELF_PATH"
FAULT_KINDS = ("HardFault", "MemManage", "BusFault", "UsageFault", "NMI", "Lockup")
DEFAULT_TIME_LIMIT_NS = 1_000_000_000
MAX_TIME_LIMIT_NS = 600 * 1_000_000_000

_TOP_KEYS = ("scenario", "name", "description", "target", "firmware", "config", "stimulus",
             "run", "expect", "describes")
_BUILD_ID = r"[0-9a-f]{8,40}"


@dataclass(frozen=True)
class FirmwareRef:
    """Which firmware to boot: a path, or a build ID to find in ``search_path``."""

    path: Path | None = None
    build_id: str | None = None
    search_path: tuple[Path, ...] = ()

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"build-id {self.build_id}"


@dataclass(frozen=True)
class ConfigSpec:
    """Where the firmware config comes from; ``values`` override ``file``/``bundle``."""

    values: dict[str, Any] | None = None
    file: Path | None = None
    bundle: Path | None = None

    @property
    def empty(self) -> bool:
        return self.values is None and self.file is None and self.bundle is None


@dataclass(frozen=True)
class Trigger:
    """When a stimulus step happens: a point fixed in the board's execution.

    kind ``boot`` (before the first instruction), ``symbol`` (the ``count``-th
    time execution reaches ``symbol``), ``console`` (right after the firmware
    wrote ``text`` to the console), ``time`` (at the first SysTick exception
    at which the SysTick time since the start of the run reaches ``time_ns``;
    see ``docs/scenario-format.md``).
    """

    kind: str
    symbol: str | None = None
    count: int = 1
    text: str | None = None
    time_ns: int | None = None

    def describe(self) -> str:
        if self.kind == "boot":
            return "boot"
        if self.kind == "symbol":
            nth = "" if self.count == 1 else f" (time {self.count})"
            return f"symbol {self.symbol} reached{nth}"
        if self.kind == "time":
            assert self.time_ns is not None
            return f"SysTick time {format_ns(self.time_ns)} reached"
        return f"console printed {self.text!r}"


@dataclass(frozen=True)
class MemoryWrite:
    """Bytes to write at ``address`` or at ``symbol`` + ``offset``."""

    data: bytes
    address: int | None = None
    symbol: str | None = None
    offset: int = 0

    def describe(self) -> str:
        where = f"0x{self.address:08x}" if self.address is not None else (
            f"{self.symbol}+{self.offset}" if self.offset else str(self.symbol))
        return f"write {self.data.hex()} at {where}"


@dataclass(frozen=True)
class StimulusStep:
    at: Trigger
    console: bytes | None = None
    write: MemoryWrite | None = None

    def describe(self) -> str:
        what = []
        if self.write is not None:
            what.append(self.write.describe())
        if self.console is not None:
            what.append(f"console input {self.console.decode('utf-8', 'replace')!r}")
        return f"at {self.at.describe()}: " + ", ".join(what)


@dataclass(frozen=True)
class LogPattern:
    """A console line to look for: plain text (substring) or a regular expression."""

    text: str
    regex: bool = False

    def search(self, transcript: str) -> str | None:
        """The first matching line, or None."""
        for line in transcript.splitlines():
            if (re.search(self.text, line) if self.regex else self.text in line):
                return line
        return None

    def describe(self) -> str:
        return f"/{self.text}/" if self.regex else repr(self.text)


@dataclass(frozen=True)
class FaultExpectation:
    kind: str
    function: str | None = None

    def describe(self) -> str:
        return self.kind + (f" in {self.function}" if self.function else "")


@dataclass(frozen=True)
class Expectations:
    """What must hold.  ``no_fault`` and ``fault`` exclude each other."""

    no_fault: bool = False
    fault: FaultExpectation | None = None
    log_present: tuple[LogPattern, ...] = ()
    log_absent: tuple[LogPattern, ...] = ()
    resets: int | None = None
    resets_min: int | None = None
    resets_max: int | None = None
    watchdog: bool | None = None

    @property
    def describes_failure(self) -> bool:
        return self.fault is not None or self.watchdog is True


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str | None
    target: str
    firmware: FirmwareRef | None
    config: ConfigSpec
    stimulus: tuple[StimulusStep, ...]
    time_limit_ns: int
    allow_resets: int
    expect: Expectations
    describes: str  # "failure" (met = the incident reproduces) or "health"

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def with_config(self, config: ConfigSpec) -> Scenario:
        return replace(self, config=config)


# -- loading ------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Load and check a scenario file."""
    doc = load_yaml(path, what="scenario file")
    return _Parser(doc).parse()


class _Parser:
    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.check = Checker(doc, what="scenario file")
        self.base = doc.path.parent

    def parse(self) -> Scenario:
        c = self.check
        if self.doc.data is None:
            c.fail((), "the scenario file is empty",
                   remedy="start from an example in docs/scenario-format.md")
        top = c.mapping((), self.doc.data, required=("scenario", "target", "expect"),
                        optional=_TOP_KEYS)
        version = c.integer(("scenario",), top["scenario"], minimum=1)
        if version != SCHEMA_VERSION:
            c.fail(("scenario",), f"this crashcart reads scenario format {SCHEMA_VERSION}",
                   version, remedy=f"set 'scenario: {SCHEMA_VERSION}'")
        name = self.doc.path.name.removesuffix(".yaml").removesuffix(".yml").removesuffix(
            ".replay")
        if top.get("name") is not None:
            name = c.string(("name",), top["name"], pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*")
        description = None
        if top.get("description") is not None:
            description = c.string(("description",), top["description"])
        target = c.string(("target",), top["target"])
        firmware = None if top.get("firmware") is None else self._firmware(top["firmware"])
        config = ConfigSpec() if top.get("config") is None else self._config(top["config"])
        stimulus = () if top.get("stimulus") is None else self._stimulus(top["stimulus"])
        time_limit, resets = self._run(top.get("run"))
        for i, step in enumerate(stimulus):
            if step.at.time_ns is not None and step.at.time_ns >= time_limit:
                c.fail(("stimulus", i, "at", "time"), f"the run ends at {format_ns(time_limit)} "
                       "of virtual time, before this SysTick time can be reached",
                       self.doc.data["stimulus"][i]["at"]["time"],
                       remedy="raise run.time_limit (the firmware's SysTick time runs behind "
                              "the virtual clock)")
        expect = self._expect(top["expect"])
        describes = "failure" if expect.describes_failure else "health"
        if top.get("describes") is not None:
            describes = c.string(("describes",), top["describes"], choices=("failure", "health"))
        if expect.resets is not None and expect.resets > resets + 1:
            c.fail(("expect", "resets"), f"expects {expect.resets} resets but the run ends at "
                   f"reset {resets + 1} (run.resets lets {resets} through)", expect.resets,
                   remedy=f"set run.resets to at least {expect.resets - 1}")
        return Scenario(self.doc.path, name, description, target, firmware, config, stimulus,
                        time_limit, resets, expect, describes)

    # -- sections -------------------------------------------------------------

    def _path_value(self, path: KeyPath, value: Any) -> Path:
        text = self.check.string(path, value)
        if not text.strip():
            self.check.fail(path, "must not be empty", value)
        p = Path(os.path.expanduser(text))
        return p if p.is_absolute() else (self.base / p)

    def _firmware(self, value: Any) -> FirmwareRef:
        c = self.check
        if isinstance(value, str):
            return FirmwareRef(path=self._path_value(("firmware",), value))
        m = c.mapping(("firmware",), value, optional=("path", "build_id", "search_path"))
        if ("path" in m) == ("build_id" in m):
            c.fail(("firmware",), "give exactly one of 'path' and 'build_id'",
                   remedy="firmware: {path: build/fw.elf} or firmware: {build_id: 3f2a..., "
                          "search_path: [builds/]}")
        if "path" in m:
            if "search_path" in m:
                c.fail(("firmware", "search_path"), "only used with build_id")
            return FirmwareRef(path=self._path_value(("firmware", "path"), m["path"]))
        build_id = c.string(("firmware", "build_id"), m["build_id"], pattern=_BUILD_ID)
        dirs: list[Path] = []
        if m.get("search_path") is not None:
            items = m["search_path"]
            if isinstance(items, str):
                dirs.append(self._path_value(("firmware", "search_path"), items))
            else:
                for i, item in enumerate(c.sequence(("firmware", "search_path"), items)):
                    dirs.append(self._path_value(("firmware", "search_path", i), item))
        return FirmwareRef(build_id=build_id, search_path=tuple(dirs))

    def _config(self, value: Any) -> ConfigSpec:
        c = self.check
        if isinstance(value, str):
            return ConfigSpec(file=self._path_value(("config",), value))
        m = c.mapping(("config",), value, optional=("values", "file", "bundle"))
        if "file" in m and "bundle" in m:
            c.fail(("config",), "give 'file' or 'bundle', not both",
                   remedy="use 'values' to change fields on top of either")
        values = None
        if m.get("values") is not None:
            values = dict(c.mapping(("config", "values"), m["values"], open_ended=True))
        file = None if m.get("file") is None else self._path_value(("config", "file"), m["file"])
        bundle = None if m.get("bundle") is None else self._path_value(("config", "bundle"),
                                                                         m["bundle"])
        return ConfigSpec(values=values, file=file, bundle=bundle)

    def _stimulus(self, value: Any) -> tuple[StimulusStep, ...]:
        c = self.check
        steps = []
        for i, item in enumerate(c.sequence(("stimulus",), value)):
            p: KeyPath = ("stimulus", i)
            m = c.mapping(p, item, required=("at",), optional=("console", "write"))
            trigger = self._trigger(p + ("at",), m["at"])
            console = None
            if m.get("console") is not None:
                text = c.string(p + ("console",), m["console"])
                if not text:
                    c.fail(p + ("console",), "must not be empty")
                console = text.encode("utf-8")
                if trigger.kind == "boot":
                    c.fail(p + ("at",), "console input cannot be delivered before boot (the "
                           "firmware has not enabled its UART receiver yet)", "boot",
                           remedy="deliver it when a symbol is reached (e.g. the main loop) "
                                  "or when the firmware printed a prompt")
            write = None if m.get("write") is None else self._write(p + ("write",), m["write"])
            if console is None and write is None:
                c.fail(p, "a stimulus step needs 'console' or 'write'")
            steps.append(StimulusStep(trigger, console, write))
        return tuple(steps)

    def _trigger(self, path: KeyPath, value: Any) -> Trigger:
        c = self.check
        if value == "boot":
            return Trigger("boot")
        if isinstance(value, str):
            c.fail(path, "must be 'boot' or a mapping with 'symbol', 'console' or 'time'", value,
                   remedy="at: boot | at: {symbol: app_run} | at: {console: 'sensor-node up'} "
                          "| at: {time: 50ms}")
        m = c.mapping(path, value, optional=("symbol", "count", "console", "time"))
        if sum(key in m for key in ("symbol", "console", "time")) != 1:
            c.fail(path, "give exactly one of 'symbol', 'console' and 'time'")
        if "time" in m:
            if "count" in m:
                c.fail(path + ("count",), "only used with symbol")
            return Trigger("time", time_ns=self._trigger_time(path + ("time",), m["time"]))
        if "console" in m:
            if "count" in m:
                c.fail(path + ("count",), "only used with symbol")
            text = c.string(path + ("console",), m["console"])
            if not text:
                c.fail(path + ("console",), "must not be empty")
            return Trigger("console", text=text)
        symbol = c.string(path + ("symbol",), m["symbol"], pattern=r"[A-Za-z_.$][\w.$]*")
        count = 1 if m.get("count") is None else c.integer(path + ("count",), m["count"],
                                                             minimum=1, maximum=100_000)
        return Trigger("symbol", symbol=symbol, count=count)

    def _trigger_time(self, path: KeyPath, raw: Any) -> int:
        c = self.check
        remedy = "for example time: 50ms (SysTick time since the start of the run)"
        if not isinstance(raw, str):
            c.fail(path, "must be a duration with a unit", raw, remedy=remedy)
        try:
            ns = parse_duration_ns(raw, what="a time trigger")
        except InputError as exc:
            c.fail(path, exc.message, raw, remedy=remedy)
        if ns > MAX_TIME_LIMIT_NS:
            c.fail(path, "must be at most 600s (the longest run)", raw)
        return ns

    def _write(self, path: KeyPath, value: Any) -> MemoryWrite:
        c = self.check
        m = c.mapping(path, value, optional=("address", "symbol", "offset", "bytes", "value",
                                             "size"))
        if ("address" in m) == ("symbol" in m):
            c.fail(path, "give exactly one of 'address' and 'symbol'")
        if ("bytes" in m) == ("value" in m):
            c.fail(path, "give exactly one of 'bytes' (hex) and 'value' (with 'size')")
        address = None if m.get("address") is None else c.integer(
            path + ("address",), m["address"], minimum=0, maximum=0xFFFFFFFF)
        symbol = None if m.get("symbol") is None else c.string(path + ("symbol",), m["symbol"])
        offset = 0 if m.get("offset") is None else c.integer(path + ("offset",), m["offset"],
                                                             minimum=0, maximum=0xFFFFFF)
        if address is not None and "offset" in m:
            c.fail(path + ("offset",), "only used with symbol")
        if "bytes" in m:
            raw = c.string(path + ("bytes",), m["bytes"]).replace(" ", "")
            try:
                data = bytes.fromhex(raw)
            except ValueError:
                c.fail(path + ("bytes",), "must be hex digits, two per byte", m["bytes"],
                       remedy="for example bytes: '06' or bytes: 'de ad be ef'")
            if not data or len(data) > 4096:
                c.fail(path + ("bytes",), "must hold 1 to 4096 bytes", m["bytes"])
        else:
            size = 4 if m.get("size") is None else c.integer(path + ("size",), m["size"])
            if size not in (1, 2, 4):
                c.fail(path + ("size",), "must be 1, 2 or 4", size)
            number = c.integer(path + ("value",), m["value"], minimum=-(1 << (8 * size - 1)),
                               maximum=(1 << (8 * size)) - 1)
            data = (number & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return MemoryWrite(data, address, symbol, offset)

    def _run(self, value: Any) -> tuple[int, int]:
        c = self.check
        if value is None:
            return DEFAULT_TIME_LIMIT_NS, 0
        m = c.mapping(("run",), value, optional=("time_limit", "resets"))
        limit = DEFAULT_TIME_LIMIT_NS
        if m.get("time_limit") is not None:
            raw = m["time_limit"]
            if not isinstance(raw, str):
                c.fail(("run", "time_limit"), "must be a duration with a unit", raw,
                       remedy="for example 500ms or 2s")
            try:
                limit = parse_duration_ns(raw, what="run.time_limit")
            except InputError as exc:
                c.fail(("run", "time_limit"), exc.message, raw, remedy=exc.remedy)
            if limit > MAX_TIME_LIMIT_NS:
                c.fail(("run", "time_limit"), "must be at most 600s of virtual time", raw)
        resets = 0 if m.get("resets") is None else c.integer(("run", "resets"), m["resets"],
                                                             minimum=0, maximum=100)
        return limit, resets

    def _expect(self, value: Any) -> Expectations:
        c = self.check
        p: KeyPath = ("expect",)
        m = c.mapping(p, value, optional=("fault", "log", "resets", "watchdog"))
        if not m:
            c.fail(p, "no expectations: say what must hold",
                   remedy="for example expect: {fault: none} or expect: {fault: BusFault}")
        no_fault = False
        fault = None
        if "fault" in m:
            raw = m["fault"]
            if raw == "none" or raw is False:
                no_fault = True
            elif isinstance(raw, str):
                fault = FaultExpectation(self._kind(p + ("fault",), raw))
            else:
                fm = c.mapping(p + ("fault",), raw, required=("kind",), optional=("function",))
                fn = None if fm.get("function") is None else c.string(
                    p + ("fault", "function"), fm["function"])
                fault = FaultExpectation(self._kind(p + ("fault", "kind"), fm["kind"]), fn)
        present: list[LogPattern] = []
        absent: list[LogPattern] = []
        if m.get("log") is not None:
            lm = c.mapping(p + ("log",), m["log"], optional=("present", "absent"))
            for key, out in (("present", present), ("absent", absent)):
                if lm.get(key) is None:
                    continue
                for i, item in enumerate(c.sequence(p + ("log", key), lm[key], min_items=1)):
                    out.append(self._pattern(p + ("log", key, i), item))
        resets = rmin = rmax = None
        if m.get("resets") is not None:
            raw = m["resets"]
            if isinstance(raw, dict):
                rm = c.mapping(p + ("resets",), raw, optional=("min", "max"))
                if not rm:
                    c.fail(p + ("resets",), "give 'min' and/or 'max'")
                rmin = None if rm.get("min") is None else c.integer(p + ("resets", "min"),
                                                                   rm["min"], minimum=0)
                rmax = None if rm.get("max") is None else c.integer(p + ("resets", "max"),
                                                                   rm["max"], minimum=0)
                if rmin is not None and rmax is not None and rmin > rmax:
                    c.fail(p + ("resets",), "min is larger than max", raw)
            else:
                resets = c.integer(p + ("resets",), raw, minimum=0, maximum=101)
        watchdog = None if m.get("watchdog") is None else c.boolean(p + ("watchdog",),
                                                                    m["watchdog"])
        if no_fault and watchdog:
            c.fail(p + ("watchdog",), "a watchdog firing is a fault (NMI), but fault: none "
                   "is expected", True)
        return Expectations(no_fault, fault, tuple(present), tuple(absent), resets, rmin, rmax,
                            watchdog)

    def _kind(self, path: KeyPath, value: Any) -> str:
        text = self.check.string(path, value)
        for kind in FAULT_KINDS:
            if text.lower() == kind.lower():
                return kind
        self.check.fail(path, "unknown fault kind", value,
                        remedy="one of " + ", ".join(FAULT_KINDS) + ", or 'none'")

    def _pattern(self, path: KeyPath, value: Any) -> LogPattern:
        if isinstance(value, str):
            if not value:
                self.check.fail(path, "must not be empty")
            return LogPattern(value)
        m = self.check.mapping(path, value, required=("regex",))
        text = self.check.string(path + ("regex",), m["regex"])
        try:
            re.compile(text)
        except re.error as exc:
            self.check.fail(path + ("regex",), f"not a valid regular expression: {exc}", text)
        return LogPattern(text, regex=True)


# -- firmware lookup -----------------------------------------------------------


def elf_search_path(extra: tuple[Path, ...] | list[Path] = ()) -> list[Path]:
    """Directories searched for a build ID: the given ones, then $CRASHCART_ELF_PATH."""
    dirs = list(extra)
    env = os.environ.get(ELF_PATH_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    return dirs


def find_elf_by_build_id(build_id: str, dirs: list[Path]) -> Path | None:
    """The first ``*.elf`` under ``dirs`` (recursively) whose GNU build ID starts with ``build_id``."""
    for d in dirs:
        if not d.is_dir():
            continue
        for candidate in sorted(d.rglob("*.elf")):
            try:
                bid = ElfImage.open_cached(candidate).build_id
            except InputError:
                continue
            if bid is not None and bid.startswith(build_id.lower()):
                return candidate
    return None


def resolve_firmware(scenario: Scenario, override: Path | None = None,
                     extra_search: tuple[Path, ...] = ()) -> Path:
    """The ELF to boot: ``override``, the scenario's path, or its build ID found on disk."""
    if override is not None:
        return override
    ref = scenario.firmware
    if ref is None:
        raise InputError("the scenario names no firmware", path=scenario.path, field="firmware",
                         remedy="add firmware: {path: ...} or pass --firmware ELF")
    if ref.path is not None:
        if not ref.path.is_file():
            raise InputError("firmware ELF not found", path=scenario.path, field="firmware",
                             value=str(ref.path), remedy="check the path (relative paths are "
                             "relative to the scenario file)")
        return ref.path
    assert ref.build_id is not None
    dirs = elf_search_path(tuple(ref.search_path) + tuple(extra_search))
    found = find_elf_by_build_id(ref.build_id, dirs)
    if found is None:
        where = ", ".join(str(d) for d in dirs) or "nowhere (no search path)"
        raise InputError(f"no ELF with build ID {ref.build_id} in {where}", path=scenario.path,
                         field="firmware.build_id", value=ref.build_id,
                         remedy=f"add the build's directory to firmware.search_path or to "
                                f"${ELF_PATH_ENV}, or pass --firmware ELF")
    return found


def scenario_files(paths: list[Path]) -> list[Path]:
    """Scenario files named directly or found in directories (``*.yaml``)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.yaml") if not q.name.startswith("invalid_"))
        else:
            out.append(p)
    return out


__all__ = [
    "ConfigSpec",
    "Expectations",
    "FaultExpectation",
    "FirmwareRef",
    "LogPattern",
    "MemoryWrite",
    "Scenario",
    "StimulusStep",
    "Trigger",
    "elf_search_path",
    "find_elf_by_build_id",
    "load_scenario",
    "resolve_firmware",
]
