"""The device's configuration block: YAML values to bytes and back.

The layout comes from the firmware's own DWARF (the type of the global the
target file names, e.g. ``device_config``), so the encoder follows the
firmware's struct as it changes between builds.  A config file sets only
the fields it changes; the others come from the firmware's compiled-in
defaults (``defaults_symbol``, a const struct read from the ELF).  Fields
the target file marks as ``derived`` (magic, version, ``$size``,
``$crc32``) are filled in by the tool unless the config file sets them.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from collector.dwarf_types import StructType, decode, encode
from collector.elf import ElfImage
from crashcart.errors import InputError
from crashcart.yamlfile import Checker, load_yaml
from targets import ConfigLocation, Target


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A firmware config YAML file: a mapping of field name to value."""
    doc = load_yaml(path, what="config file")
    check = Checker(doc, what="config file")
    data = check.mapping((), doc.data if doc.data is not None else None, open_ended=True)
    return dict(data)


def config_layout(image: ElfImage, target: Target) -> tuple[ConfigLocation, StructType]:
    """The config's location and its struct type from DWARF."""
    if target.config is None:
        raise InputError(
            "the target file does not say where the firmware's config lives",
            path=target.path,
            field="firmware.config",
            remedy="add firmware.config.symbol to the target file",
        )
    ctype = image.variable_type(target.config.symbol)
    if not isinstance(ctype, StructType):
        raise InputError(
            f"config symbol '{target.config.symbol}' is a {ctype.name}, not a struct",
            path=image.path,
        )
    return target.config, ctype


def encode_config(
    image: ElfImage, target: Target, values: dict[str, Any], *, source: str | Path = "config"
) -> bytes:
    """Encode ``values`` into the bytes of the firmware's config struct."""
    location, ctype = config_layout(image, target)
    fields = {m.name for m in ctype.members}
    for key in values:
        if key not in fields:
            raise InputError(
                f"{ctype.name} has no field '{key}'",
                path=source,
                field=key,
                remedy="fields of this firmware's config: " + ", ".join(m.name for m in ctype.members),
            )
    full: dict[str, Any] = {}
    crc_field = None
    defaults = firmware_defaults(image, target)
    for m in ctype.members:
        if m.name in values:
            full[m.name] = values[m.name]
            continue
        rule = location.derived.get(m.name)
        if rule is None and defaults is not None:
            full[m.name] = defaults[m.name]
            continue
        if rule is None:
            missing = [f.name for f in ctype.members
                       if f.name not in values and f.name not in location.derived]
            raise InputError(
                "config file does not set " + ", ".join(f"'{n}'" for n in missing),
                path=source,
                remedy="give every field of the firmware's config (see "
                       "fixtures/firmware/configs/default.yaml)",
            )
        if rule == "$size":
            full[m.name] = ctype.size
        elif rule == "$crc32":
            full[m.name] = 0
            crc_field = m
        else:
            full[m.name] = rule
    try:
        blob = bytearray(encode(ctype, full, where="config"))
    except InputError as exc:
        raise InputError(exc.message, path=source, value=exc.value, remedy=exc.remedy) from None
    if crc_field is not None:
        crc = zlib.crc32(bytes(blob[: crc_field.offset])) & 0xFFFFFFFF
        blob[crc_field.offset : crc_field.offset + 4] = crc.to_bytes(4, "little")
    return bytes(blob)


def firmware_defaults(image: ElfImage, target: Target) -> dict[str, Any] | None:
    """The compiled-in default config, read from the ELF, or None if not described."""
    location, ctype = config_layout(image, target)
    if location.defaults_symbol is None:
        return None
    sym = image.symbol(location.defaults_symbol, purpose="the config defaults")
    data = image.read(sym.address, ctype.size)
    if data is None:
        raise InputError(
            f"config defaults '{sym.name}' at 0x{sym.address:08x} are not in the ELF's file data",
            path=image.path,
            remedy="defaults_symbol must name a const struct in flash",
        )
    value = decode(ctype, data)
    assert isinstance(value, dict)
    return value


def decode_config(image: ElfImage, target: Target, blob: bytes) -> dict[str, Any]:
    """Decode the config struct's bytes (from RAM or a capture)."""
    _, ctype = config_layout(image, target)
    if len(blob) < ctype.size:
        raise InputError(f"config data is {len(blob)} bytes, the struct needs {ctype.size}")
    value = decode(ctype, blob)
    assert isinstance(value, dict)
    return value
