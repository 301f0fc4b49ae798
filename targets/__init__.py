"""Target descriptions: boards as data.

A target file (``targets/<name>.yaml``) says what a board is and where its
firmware keeps its evidence: the core and architecture, the memory map, the
RAM regions worth capturing, where the crash record, version, build ID and
config live (by ELF symbol where possible), vendor registers such as the
reset cause, the console's formats, and how the simulator runs the board.
Adding a board is adding a file; the loader validates it and every error
names the file, line, field and value.

The format is documented in ``docs/targets.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashcart.errors import InputError
from crashcart.yamlfile import Checker, KeyPath, YamlDocument, load_yaml

TARGETS_DIR = Path(__file__).resolve().parent
SCHEMA_VERSION = 1

# Core -> the architecture profile it implements (ARMv7-M ARM A1.2, ARMv8-M ARM A1.2).
CORES: dict[str, str] = {
    "cortex-m0": "armv6-m",
    "cortex-m0plus": "armv6-m",
    "cortex-m1": "armv6-m",
    "cortex-m3": "armv7-m",
    "cortex-m4": "armv7e-m",
    "cortex-m7": "armv7e-m",
    "cortex-m23": "armv8-m.base",
    "cortex-m33": "armv8-m.main",
    "cortex-m55": "armv8.1-m.main",
}
MEMORY_KINDS = ("code", "ram", "device")
CONFIG_INJECTIONS = ("ram-loader", "none")
U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class MemoryRegion:
    name: str
    kind: str
    start: int
    size: int

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.start + self.size

    def contains(self, address: int, size: int = 1) -> bool:
        return self.start <= address and address + size <= self.end


@dataclass(frozen=True)
class Location:
    """Where something lives: an ELF symbol or a fixed address."""

    symbol: str | None = None
    address: int | None = None
    size: int | None = None
    end_symbol: str | None = None

    def describe(self) -> str:
        if self.symbol is not None:
            return f"symbol {self.symbol}"
        return f"address 0x{self.address:08x}"


@dataclass(frozen=True)
class CaptureRegion:
    """A RAM region to capture: symbol bounds or a fixed range."""

    name: str
    start: int | None = None
    size: int | None = None
    start_symbol: str | None = None
    end_symbol: str | None = None


@dataclass(frozen=True)
class ConfigLocation:
    symbol: str
    derived: dict[str, int | str] = field(default_factory=dict)
    defaults_symbol: str | None = None


@dataclass(frozen=True)
class VendorRegister:
    name: str
    location: Location
    size: int
    description: str = ""
    values: dict[int, str] = field(default_factory=dict)
    mask: int | None = None  # the bits that hold the value (shifted down to bit 0)

    def decode(self, raw: int) -> int:
        """The register's value: ``raw`` masked and shifted by ``mask``."""
        if not self.mask:
            return raw
        shift = (self.mask & -self.mask).bit_length() - 1
        return (raw & self.mask) >> shift


@dataclass(frozen=True)
class Console:
    baudrate: int
    banner: re.Pattern[str] | None
    crash_begin: str
    crash_end: str


@dataclass(frozen=True)
class QemuSettings:
    machine: str
    icount_shift: int
    uart: int
    binary: str = "qemu-system-arm"
    cpu: str | None = None


@dataclass(frozen=True)
class Simulator:
    qemu: QemuSettings
    config_injection: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    path: Path
    cpu: str
    architecture: str
    fpu: bool
    clock_hz: int
    memory: tuple[MemoryRegion, ...]
    capture_regions: tuple[CaptureRegion, ...]
    crash_record: Location | None
    version: Location | None
    build_id: Location | None
    config: ConfigLocation | None
    vendor_registers: tuple[VendorRegister, ...]
    console: Console
    simulator: Simulator | None

    def region_at(self, address: int, size: int = 1) -> MemoryRegion | None:
        for region in self.memory:
            if region.contains(address, size):
                return region
        return None


def list_targets() -> list[str]:
    """Names of the targets shipped with crashcart."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name_or_path: str | Path) -> Target:
    """Load a target by shipped name (``mps2-an385``) or by file path."""
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or "/" in text:
        path = candidate
    else:
        path = TARGETS_DIR / f"{text}.yaml"
        if not path.exists():
            raise InputError(
                f"unknown target '{text}'",
                remedy="known targets: " + ", ".join(list_targets())
                + "; or pass the path of a target file",
            )
    doc = load_yaml(path, what="target file")
    return _TargetParser(doc).parse()


class _TargetParser:
    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.check = Checker(doc, what="target file")

    def parse(self) -> Target:
        c = self.check
        top = c.mapping(
            (),
            self.doc.data,
            required=("schema", "name", "core", "memory", "console"),
            optional=("description", "capture", "firmware", "vendor_registers", "simulator"),
        )
        schema = c.integer(("schema",), top["schema"])
        if schema != SCHEMA_VERSION:
            c.fail(
                ("schema",),
                f"unsupported target schema version (this crashcart reads {SCHEMA_VERSION})",
                schema,
                remedy="upgrade crashcart or rewrite the file for schema 1",
            )
        name = c.string(("name",), top["name"], pattern=r"[a-z0-9][a-z0-9._-]*")
        description = c.string(("description",), top.get("description", ""))
        cpu, architecture, fpu, clock_hz = self._core(top["core"])
        memory = self._memory(top["memory"])
        capture = self._capture(top.get("capture", {}))
        firmware = c.mapping(
            ("firmware",),
            top.get("firmware", {}),
            optional=("crash_record", "version", "build_id", "config"),
        )
        crash_record = self._location(("firmware", "crash_record"), firmware.get("crash_record"))
        version = self._location(("firmware", "version"), firmware.get("version"))
        build_id = self._location(("firmware", "build_id"), firmware.get("build_id"))
        config = self._config(firmware.get("config"))
        vendor = self._vendor_registers(top.get("vendor_registers", []))
        console = self._console(top["console"])
        simulator = self._simulator(top.get("simulator"))
        target = Target(
            name=name,
            description=description,
            path=self.doc.path,
            cpu=cpu,
            architecture=architecture,
            fpu=fpu,
            clock_hz=clock_hz,
            memory=memory,
            capture_regions=capture,
            crash_record=crash_record,
            version=version,
            build_id=build_id,
            config=config,
            vendor_registers=vendor,
            console=console,
            simulator=simulator,
        )
        self._check_addresses(target)
        return target

    def _core(self, value: Any) -> tuple[str, str, bool, int]:
        c = self.check
        core = c.mapping(
            ("core",), value, required=("cpu", "architecture"), optional=("fpu", "clock_hz")
        )
        cpu = c.string(("core", "cpu"), core["cpu"], choices=sorted(CORES))
        arch = c.string(
            ("core", "architecture"), core["architecture"], choices=sorted(set(CORES.values()))
        )
        if CORES[cpu] != arch:
            c.fail(
                ("core", "architecture"),
                f"{cpu} implements {CORES[cpu]}, not {arch}",
                arch,
                remedy=f"set architecture: {CORES[cpu]}",
            )
        fpu = c.boolean(("core", "fpu"), core.get("fpu", False))
        if fpu and arch in ("armv6-m", "armv7-m", "armv8-m.base"):
            c.fail(("core", "fpu"), f"{arch} has no floating-point extension", fpu)
        clock = c.integer(("core", "clock_hz"), core.get("clock_hz", 0), minimum=0, maximum=10**10)
        return cpu, arch, fpu, clock

    def _memory(self, value: Any) -> tuple[MemoryRegion, ...]:
        c = self.check
        regions: list[MemoryRegion] = []
        for i, item in enumerate(c.sequence(("memory",), value, min_items=1)):
            p: KeyPath = ("memory", i)
            m = c.mapping(p, item, required=("name", "kind", "start", "size"))
            region = MemoryRegion(
                name=c.string(p + ("name",), m["name"]),
                kind=c.string(p + ("kind",), m["kind"], choices=MEMORY_KINDS),
                start=c.integer(p + ("start",), m["start"], minimum=0, maximum=U32),
                size=c.integer(p + ("size",), m["size"], minimum=1, maximum=U32 + 1),
            )
            if region.end > U32 + 1:
                c.fail(
                    p + ("size",),
                    f"region runs past the 32-bit address space (ends at 0x{region.end:x})",
                    m["size"],
                )
            for other in regions:
                if region.start < other.end and other.start < region.end:
                    c.fail(p, f"region overlaps '{other.name}'", region.name)
                if region.name == other.name:
                    c.fail(p + ("name",), "region name used twice", region.name)
            regions.append(region)
        if not any(r.kind == "ram" for r in regions):
            c.fail(("memory",), "no region of kind 'ram'", remedy="describe the board's RAM")
        return tuple(regions)

    def _capture(self, value: Any) -> tuple[CaptureRegion, ...]:
        c = self.check
        cap = c.mapping(("capture",), value, optional=("ram_regions",))
        out: list[CaptureRegion] = []
        for i, item in enumerate(c.sequence(("capture", "ram_regions"), cap.get("ram_regions", []))):
            p: KeyPath = ("capture", "ram_regions", i)
            m = c.mapping(
                p, item, required=("name",), optional=("start", "size", "start_symbol", "end_symbol")
            )
            by_symbol = "start_symbol" in m or "end_symbol" in m
            by_address = "start" in m or "size" in m
            if by_symbol == by_address:
                c.fail(p, "give either start and size, or start_symbol and end_symbol")
            if by_symbol:
                for key in ("start_symbol", "end_symbol"):
                    if key not in m:
                        c.fail(p, f"missing required key '{key}'")
                out.append(
                    CaptureRegion(
                        name=c.string(p + ("name",), m["name"]),
                        start_symbol=c.string(p + ("start_symbol",), m["start_symbol"]),
                        end_symbol=c.string(p + ("end_symbol",), m["end_symbol"]),
                    )
                )
            else:
                for key in ("start", "size"):
                    if key not in m:
                        c.fail(p, f"missing required key '{key}'")
                out.append(
                    CaptureRegion(
                        name=c.string(p + ("name",), m["name"]),
                        start=c.integer(p + ("start",), m["start"], minimum=0, maximum=U32),
                        size=c.integer(p + ("size",), m["size"], minimum=1, maximum=U32 + 1),
                    )
                )
        return tuple(out)

    def _location(self, path: KeyPath, value: Any) -> Location | None:
        if value is None:
            return None
        c = self.check
        m = c.mapping(path, value, optional=("symbol", "address", "size", "end_symbol"))
        if ("symbol" in m) == ("address" in m):
            c.fail(path, "give exactly one of 'symbol' or 'address'",
                   ", ".join(f"{k}={m[k]}" for k in ("symbol", "address") if k in m) or None)
        size = m.get("size")
        if size is not None:
            size = c.integer(path + ("size",), size, minimum=1, maximum=U32)
        if "symbol" in m:
            end = m.get("end_symbol")
            return Location(
                symbol=c.string(path + ("symbol",), m["symbol"]),
                size=size,
                end_symbol=None if end is None else c.string(path + ("end_symbol",), end),
            )
        if "end_symbol" in m:
            c.fail(path + ("end_symbol",), "end_symbol goes with symbol, not address")
        if size is None:
            c.fail(path, "a fixed address needs a 'size'")
        return Location(
            address=c.integer(path + ("address",), m["address"], minimum=0, maximum=U32), size=size
        )

    def _config(self, value: Any) -> ConfigLocation | None:
        if value is None:
            return None
        c = self.check
        p: KeyPath = ("firmware", "config")
        m = c.mapping(p, value, required=("symbol",), optional=("derived", "defaults_symbol"))
        derived = c.mapping(p + ("derived",), m.get("derived", {}), open_ended=True)
        out: dict[str, int | str] = {}
        for key, v in derived.items():
            if isinstance(v, str):
                c.string(p + ("derived", key), v, choices=("$size", "$crc32"))
            else:
                c.integer(p + ("derived", key), v, minimum=-(2**63), maximum=2**64 - 1)
            out[key] = v
        defaults = m.get("defaults_symbol")
        return ConfigLocation(
            symbol=c.string(p + ("symbol",), m["symbol"]),
            derived=out,
            defaults_symbol=None if defaults is None
            else c.string(p + ("defaults_symbol",), defaults),
        )

    def _vendor_registers(self, value: Any) -> tuple[VendorRegister, ...]:
        c = self.check
        out: list[VendorRegister] = []
        for i, item in enumerate(c.sequence(("vendor_registers",), value)):
            p: KeyPath = ("vendor_registers", i)
            m = c.mapping(
                p,
                item,
                required=("name", "size"),
                optional=("symbol", "address", "description", "values", "mask"),
            )
            size = c.integer(p + ("size",), m["size"])
            mask = None
            if "mask" in m:
                mask = c.integer(p + ("mask",), m["mask"])
                if not 0 < mask < 1 << (8 * size):
                    c.fail(p + ("mask",), f"must be a non-zero mask of at most {8 * size} bits",
                           mask)
            if size not in (1, 2, 4):
                c.fail(p + ("size",), "must be 1, 2 or 4 (bytes)", size)
            loc = self._location(
                p, {k: m[k] for k in ("symbol", "address") if k in m} | {"size": size}
            )
            assert loc is not None
            values = c.mapping(p + ("values",), m.get("values", {}), open_ended=True,
                               string_keys=False)
            names: dict[int, str] = {}
            for k, v in values.items():
                if isinstance(k, bool) or not isinstance(k, int):
                    c.fail(p + ("values",), "value keys must be integers", k)
                names[k] = c.string(p + ("values", k), v)
            out.append(
                VendorRegister(
                    name=c.string(p + ("name",), m["name"]),
                    location=loc,
                    size=size,
                    description=c.string(p + ("description",), m.get("description", "")),
                    values=names,
                    mask=mask,
                )
            )
        return tuple(out)

    def _console(self, value: Any) -> Console:
        c = self.check
        p: KeyPath = ("console",)
        m = c.mapping(
            p, value, required=("crash_begin", "crash_end"), optional=("baudrate", "banner")
        )
        banner = None
        if "banner" in m:
            text = c.string(p + ("banner",), m["banner"])
            try:
                banner = re.compile(text)
            except re.error as exc:
                c.fail(p + ("banner",), f"not a valid regular expression: {exc}", text)
            for group in ("version", "build_id"):
                if group not in banner.groupindex:
                    c.fail(
                        p + ("banner",),
                        f"regular expression has no named group '{group}'",
                        text,
                        remedy=f"capture it with (?P<{group}>...)",
                    )
        begin = c.string(p + ("crash_begin",), m["crash_begin"])
        end = c.string(p + ("crash_end",), m["crash_end"])
        if not begin or not end or begin == end:
            c.fail(p, "crash_begin and crash_end must be two different non-empty markers")
        return Console(
            baudrate=c.integer(p + ("baudrate",), m.get("baudrate", 115200), minimum=1),
            banner=banner,
            crash_begin=begin,
            crash_end=end,
        )

    def _simulator(self, value: Any) -> Simulator | None:
        if value is None:
            return None
        c = self.check
        p: KeyPath = ("simulator",)
        m = c.mapping(p, value, required=("qemu",), optional=("config_injection",))
        q = c.mapping(
            p + ("qemu",),
            m["qemu"],
            required=("machine", "icount_shift"),
            optional=("uart", "binary", "cpu"),
        )
        qemu = QemuSettings(
            machine=c.string(p + ("qemu", "machine"), q["machine"], pattern=r"[A-Za-z0-9._-]+"),
            icount_shift=c.integer(
                p + ("qemu", "icount_shift"), q["icount_shift"], minimum=0, maximum=10
            ),
            uart=c.integer(p + ("qemu", "uart"), q.get("uart", 0), minimum=0, maximum=3),
            binary=c.string(
                p + ("qemu", "binary"), q.get("binary", "qemu-system-arm"), pattern=r"[\w./-]+"
            ),
            cpu=None if "cpu" not in q else c.string(p + ("qemu", "cpu"), q["cpu"]),
        )
        injection = c.string(
            p + ("config_injection",),
            m.get("config_injection", "none"),
            choices=CONFIG_INJECTIONS,
        )
        return Simulator(qemu=qemu, config_injection=injection)

    def _check_addresses(self, target: Target) -> None:
        c = self.check
        for i, reg in enumerate(target.capture_regions):
            if reg.start is not None and reg.size is not None:
                if target.region_at(reg.start, reg.size) is None:
                    c.fail(
                        ("capture", "ram_regions", i),
                        f"0x{reg.start:08x}+0x{reg.size:x} is not inside one memory region",
                        reg.name,
                    )
        for i, vreg in enumerate(target.vendor_registers):
            addr = vreg.location.address
            if addr is not None and target.region_at(addr, vreg.size) is None:
                c.fail(
                    ("vendor_registers", i, "address"),
                    "address is not inside any memory region",
                    f"0x{addr:08x}",
                )
