"""Scenarios and configs taken from an evidence bundle (docs/bundle-format.md).

* :func:`config_from_bundle` -- the config the device ran: decoded (through
  the firmware's DWARF, :func:`collector.device_config.decode_config`) from
  a captured memory file that covers the config block, or else read from
  the console's ``config`` command output in ``serial/console.raw``.
* :func:`scenario_from_bundle` -- a scenario that replays what the bundle
  shows: its target, its firmware build ID, its config, and the observed
  failure (fault kind and function, or the watchdog) as the expectation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from collector.bundle import read_manifest
from collector.crashlog import parse_banner, parse_crash_log
from collector.device_config import config_layout, decode_config, encode_config
from collector.elf import ElfImage
from crashcart.errors import InputError
from replay.scenario import SCHEMA_VERSION, elf_search_path, find_elf_by_build_id, load_scenario
from replay.sim import find_crash_logs
from replay.verdict import FunctionIndex
from targets import Target, load_target

LOG = logging.getLogger(__name__)

CONSOLE_FILE = "serial/console.raw"
_ADDRESS_IN_NAME = re.compile(r"@0x([0-9a-fA-F]+)")
_FIELD_LINE = re.compile(r"^([a-z_][a-z0-9_]*(?:\[\d+\])?):\s+(-?0x[0-9a-fA-F]+|-?\d+)\s*$")
_CONFIG_OK = re.compile(r"^config: v\d+ ok crc=0x([0-9a-fA-F]{8})", re.MULTILINE)


@dataclass(frozen=True)
class BundleFacts:
    target: str
    console: bytes
    build_id: str | None
    version: str | None
    crash_text: str | None
    watchdog_reset: bool
    config_crc: int | None  # from the boot line "config: v1 ok crc=0x...", if printed


def read_bundle(bundle: Path) -> tuple[dict[str, Any], BundleFacts]:
    manifest = read_manifest(bundle)
    target = manifest.get("target")
    if not isinstance(target, str) or not target:
        raise InputError("the bundle's manifest names no target", path=bundle / "manifest.json",
                         field="target", remedy="capture with `crashcart collect --target`")
    console = b""
    if CONSOLE_FILE in manifest["files"]:
        try:
            console = (bundle / CONSOLE_FILE).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the console capture: {exc.strerror}",
                             path=bundle / CONSOLE_FILE) from None
    t = load_target(target)
    assert t.console is not None
    text = console.decode("utf-8", "replace")
    crashes = find_crash_logs(console, t.console.crash_begin, t.console.crash_end)
    complete = [c for c in crashes if c.complete] or list(crashes)
    crash_text = complete[0].text if complete else None
    build_id = version = None
    if crash_text is not None:
        log = parse_crash_log(crash_text)
        build_id, version = log.build_id, log.firmware_version
    if build_id is None and t.console.banner is not None:
        banners = parse_banner(text, t.console.banner)
        if banners:
            build_id, version = banners[-1].build_id, banners[-1].version
    crc = None
    oks = _CONFIG_OK.findall(text)
    if oks:
        crc = int(oks[-1], 16)
    watchdog = bool(re.search(r"^reset:\s*watchdog\b", text, re.MULTILINE))
    return manifest, BundleFacts(target, console, build_id, version, crash_text, watchdog, crc)


def config_from_bundle(bundle: Path, image: ElfImage, target: Target) -> dict[str, Any]:
    """The config the device ran, from the bundle (memory capture, else console)."""
    manifest, facts = read_bundle(bundle)
    values = _config_from_memory(bundle, manifest, image, target)
    how = "memory capture"
    if values is None:
        values = _config_from_console(facts.console, image, target)
        how = "console `config` output"
    if values is None:
        raise InputError(
            "the bundle holds no copy of the config block (no memory capture covering it, "
            "no `config` command output on the console)", path=bundle,
            remedy="pass the config file with --config, or capture RAM with the debug probe")
    _check_crc(values, facts.config_crc, image, target, bundle, how)
    return values


def _strip_derived(values: dict[str, Any], target: Target) -> dict[str, Any]:
    assert target.config is not None
    return {k: v for k, v in values.items() if k not in target.config.derived}


def _config_from_memory(bundle: Path, manifest: dict[str, Any], image: ElfImage,
                        target: Target) -> dict[str, Any] | None:
    location, ctype = config_layout(image, target)
    address = image.symbol(location.symbol, purpose="the config block").address
    for name, entry in sorted(manifest["files"].items()):
        if entry.get("kind") != "memory":
            continue
        base = entry.get("address")
        if not isinstance(base, int):
            m = _ADDRESS_IN_NAME.search(name)
            if m is None:
                continue
            base = int(m.group(1), 16)
        size = entry.get("size", 0)
        if base <= address and address + ctype.size <= base + size:
            data = (bundle / name).read_bytes()[address - base:address - base + ctype.size]
            if len(data) == ctype.size:
                return _strip_derived(decode_config(image, target, data), target)
    return None


def _config_from_console(console: bytes, image: ElfImage,
                         target: Target) -> dict[str, Any] | None:
    _, ctype = config_layout(image, target)
    names = {m.name for m in ctype.members}
    lines = console.decode("utf-8", "replace").splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == "config source: device"]
    if not starts:
        return None
    values: dict[str, Any] = {}
    arrays: dict[str, dict[int, int]] = {}
    for line in lines[starts[-1] + 1:]:
        m = _FIELD_LINE.match(line.strip())
        if m is None:
            break
        key, raw = m.group(1), m.group(2)
        number = int(raw, 0)
        if "[" in key:
            base, idx = key[:-1].split("[")
            arrays.setdefault(base, {})[int(idx)] = number
        else:
            values[key] = number
    for base, items in arrays.items():
        values[base] = [items[i] for i in sorted(items)]
    values = {k: v for k, v in values.items() if k in names}
    return _strip_derived(values, target) if values else None


def _check_crc(values: dict[str, Any], crc: int | None, image: ElfImage, target: Target,
               bundle: Path, how: str) -> None:
    """The boot line's CRC must match the config found (else the copy is not what booted)."""
    if crc is None or target.config is None:
        return
    crc_field = next((k for k, rule in target.config.derived.items() if rule == "$crc32"), None)
    if crc_field is None:
        return
    _, ctype = config_layout(image, target)
    member = next(m for m in ctype.members if m.name == crc_field)
    blob = encode_config(image, target, values, source=bundle)
    computed = int.from_bytes(blob[member.offset:member.offset + 4], "little")
    if computed != crc:
        LOG.warning("%s: config from the %s has crc 0x%08x, the device booted with 0x%08x "
                    "(the console shows the sanitised config, or the config changed)",
                    bundle, how, computed, crc)


def scenario_from_bundle(bundle: Path, out: Path, *, search_path: tuple[Path, ...] = (),
                         config_file: Path | None = None, time_limit: str | None = None,
                         name: str | None = None) -> Path:
    """Write a scenario replaying the bundle's failure to ``out``; return ``out``."""
    _, facts = read_bundle(bundle)
    target = load_target(facts.target)
    if facts.build_id is None:
        raise InputError("the bundle shows no firmware build ID (no banner, no crash log)",
                         path=bundle / CONSOLE_FILE,
                         remedy="capture from boot, or write the scenario by hand")
    dirs = elf_search_path(search_path)
    elf = find_elf_by_build_id(facts.build_id, dirs)
    if elf is None:
        where = ", ".join(str(d) for d in dirs) or "no search path given"
        raise InputError(f"no ELF with build ID {facts.build_id} found ({where})",
                         path=bundle, value=facts.build_id,
                         remedy="pass --elf-path DIR with the build's ELF")
    image = ElfImage.open_cached(elf)
    out = out.resolve()
    doc: dict[str, Any] = {"scenario": SCHEMA_VERSION,
                           "name": name or _safe_name(bundle.resolve().name)}
    doc["description"] = (f"Replays the failure captured in bundle {bundle.resolve().name} "
                          f"(firmware {facts.version or '?'}).")
    doc["target"] = facts.target
    doc["firmware"] = {"build_id": facts.build_id,
                       "search_path": [_rel(d.resolve(), out.parent) for d in dirs]}
    if config_file is not None:
        doc["config"] = {"file": _rel(config_file.resolve(), out.parent)}
    else:
        doc["config"] = {"values": config_from_bundle(bundle, image, target)}
    expect: dict[str, Any] = {}
    uptime_ms = None
    if facts.crash_text is not None:
        fault = parse_crash_log(facts.crash_text)
        uptime_ms = fault.uptime_ms
        kind = "NMI" if (fault.fault or "").upper().startswith("NMI") else (fault.fault or "")
        pc = fault.registers.get("pc")
        frame_ok = not any("frame: unavailable" in n for n in fault.notes)
        function = FunctionIndex.of(image).function_at(pc) if pc and frame_ok else None
        if kind == "NMI":
            expect["watchdog"] = True
        expect["fault"] = {"kind": kind, "function": function} if function else kind
    elif facts.watchdog_reset:
        expect["watchdog"] = True
    else:
        raise InputError("the bundle shows no failure to replay (no crash log, no watchdog "
                         "reset)", path=bundle / CONSOLE_FILE,
                         remedy="write a scenario by hand with the behaviour to check")
    limit = time_limit or _limit_for(uptime_ms)
    doc["run"] = {"time_limit": limit}
    doc["expect"] = expect
    header = (f"# Written by `crashcart replay from-bundle` from {bundle}.\n"
              f"# The expectation is the failure the bundle shows; edit it to make a check.\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False),
                   encoding="utf-8")
    load_scenario(out)  # what we wrote must load
    return out


def _limit_for(uptime_ms: int | None) -> str:
    if uptime_ms is None:
        return "1s"
    ms = max(1000, int(uptime_ms * 1.5) + 500)
    return f"{min(ms, 600_000)}ms"


def _rel(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name or "from-bundle"
