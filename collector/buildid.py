"""Does the ELF belong to the firmware on the device?  The GNU build ID check.

Symbols, lines and variables from the wrong ELF look plausible and are
wrong, so every decode compares the build ID the device reported with the
ELF's ``NT_GNU_BUILD_ID`` (:attr:`collector.elf.ElfImage.build_id`).

Where a device's ID comes from, in the order :func:`device_build_ids`
lists them (the target file says where they live):

1. the crash record in captured RAM (``firmware.crash_record``: a
   ``build_id`` byte-array member): the firmware that crashed;
2. the build-ID note read from the device's flash (``firmware.build_id``:
   an ELF note, ``namesz descsz type "GNU\\0" id``, ELF spec "Note
   Section"), only when that memory was *captured*: the ELF's own copy
   would always match;
3. the console: the crash log's ``firmware: <version> build-id <hex>`` and
   the boot banner (``console.banner``'s ``build_id`` group), the last one
   printed winning.

A device may print a short ID: a prefix of 8 or more hex digits matches,
and the result says it was a prefix.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collector.crashlog import parse_banner
from crashcart.errors import InputError

if TYPE_CHECKING:
    from collector.elf import ElfImage
    from collector.evidence import CrashEvidence, MemoryImage
    from targets import Target

LOG = logging.getLogger(__name__)

MIN_PREFIX_DIGITS = 8
NT_GNU_BUILD_ID = 3
_FIRMWARE_LINE = re.compile(r"^\s*firmware:\s+\S+\s+build-id\s+([0-9A-Fa-f]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DeviceBuildId:
    """A build ID as the device reported it, and where it was found."""

    build_id: str   # lowercase hex
    source: str     # "crash record at 0x20000040 (captured RAM)", "boot banner", ...


@dataclass(frozen=True)
class BuildIdCheck:
    """The comparison of the ELF's build ID with the device's.

    ``match`` is True (same build), False (different builds: symbol
    results are unverified) or None (unknown: one side has no ID).
    """

    elf_id: str | None
    device_id: str | None
    source: str | None              # where device_id came from
    match: bool | None
    prefix: bool = False            # device_id was a prefix (short ID) of elf_id
    elf_path: str | None = None
    others: tuple[DeviceBuildId, ...] = ()   # further IDs the device reported
    notes: tuple[str, ...] = ()

    @property
    def warning(self) -> str | None:
        """A prominent warning when the IDs differ, naming both; None otherwise."""
        if self.match is not False:
            return None
        elf = f" {self.elf_path}" if self.elf_path else ""
        return (f"WARNING: build ID mismatch: the device reported {self.device_id} "
                f"({self.source}) but the ELF{elf} is {self.elf_id}; symbol results are "
                "unverified. Pass the ELF of the build that was flashed.")

    @property
    def summary(self) -> str:
        """One line for reports."""
        if self.match is True:
            how = (f" (the device gave a {len(self.device_id or '')}-digit prefix)"
                   if self.prefix else "")
            return f"build ID {self.elf_id} matches the device ({self.source}){how}"
        if self.match is False:
            return self.warning or ""
        if self.elf_id is None and self.device_id is None:
            return "build ID unknown: the ELF has no GNU build ID and the device reported none"
        if self.elf_id is None:
            return (f"build ID unverified: the device reported {self.device_id} "
                    f"({self.source}) but the ELF has no GNU build ID (link with "
                    "-Wl,--build-id)")
        return (f"build ID unverified: the ELF is {self.elf_id} but the device reported "
                "none (capture the banner, the crash record or the build-ID note)")

    def to_json(self) -> dict[str, Any]:
        return {"elf_id": self.elf_id, "device_id": self.device_id, "source": self.source,
                "match": self.match, "prefix": self.prefix, "elf_path": self.elf_path,
                "warning": self.warning, "summary": self.summary,
                "others": [{"build_id": o.build_id, "source": o.source} for o in self.others],
                "notes": list(self.notes)}


# -- comparing -------------------------------------------------------------------


def normalize_build_id(text: str, *, what: str = "build ID") -> str:
    """Lowercase hex without ``0x``, spaces or colons; an error if it is not hex."""
    cleaned = text.strip().lower()
    cleaned = cleaned.removeprefix("0x")
    cleaned = cleaned.replace(":", "").replace(" ", "").replace("-", "")
    if not cleaned or any(c not in string.hexdigits for c in cleaned):
        raise InputError(f"{what} is not hexadecimal", value=text,
                         remedy="give the build ID as hex digits, e.g. d0254c72b736b175")
    if len(cleaned) < MIN_PREFIX_DIGITS:
        raise InputError(f"{what} has {len(cleaned)} hex digits; at least "
                         f"{MIN_PREFIX_DIGITS} are needed to tell builds apart", value=text,
                         remedy="give the full build ID, or a prefix of 8 or more digits")
    return cleaned


def compare_build_ids(elf_id: str | None, device_id: str | None) -> tuple[bool | None, bool]:
    """(match, was_prefix): None when either side is unknown."""
    if not elf_id or not device_id:
        return None, False
    if device_id == elf_id:
        return True, False
    if len(device_id) < len(elf_id):
        return elf_id.startswith(device_id), elf_id.startswith(device_id)
    return False, False


def check_build_id(image: ElfImage, device_id: str | None, *, source: str | None = None,
                   others: tuple[DeviceBuildId, ...] = ()) -> BuildIdCheck:
    """Compare ``image``'s build ID with ``device_id`` (hex; a prefix of >= 8 digits is fine)."""
    device = normalize_build_id(device_id, what="device build ID") if device_id else None
    elf_id = image.build_id
    match, prefix = compare_build_ids(elf_id, device)
    notes = []
    disagree = sorted({o.build_id for o in others
                       if device and compare_build_ids(device, o.build_id)[0] is False
                       and compare_build_ids(o.build_id, device)[0] is False})
    if disagree:
        notes.append("the device reported more than one build ID: " + ", ".join(
            f"{o.build_id} ({o.source})" for o in others if o.build_id in disagree) +
            f"; {device} ({source}) was compared (was it reflashed after the crash?)")
    result = BuildIdCheck(elf_id, device, source if device else None, match, prefix,
                          str(image.path), others, tuple(notes))
    if result.warning:
        LOG.warning("%s", result.warning)
    return result


def verify_build(image: ElfImage, found: list[DeviceBuildId]) -> BuildIdCheck:
    """Check ``image`` against the first of ``found`` (see :func:`device_build_ids`)."""
    if not found:
        return check_build_id(image, None)
    first, rest = found[0], tuple(found[1:])
    return check_build_id(image, first.build_id, source=first.source, others=rest)


# -- finding the device's ID -------------------------------------------------------


def build_id_from_note(data: bytes) -> str:
    """The ID in a GNU build-ID note (``namesz descsz type name desc``, 4-byte aligned)."""
    if len(data) < 12:
        raise InputError(f"build-ID note is {len(data)} bytes, shorter than its 12-byte header")
    namesz = int.from_bytes(data[0:4], "little")
    descsz = int.from_bytes(data[4:8], "little")
    ntype = int.from_bytes(data[8:12], "little")
    name_end = 12 + namesz
    desc_start = 12 + (namesz + 3) // 4 * 4
    if namesz != 4 or data[12:name_end] != b"GNU\0" or ntype != NT_GNU_BUILD_ID:
        raise InputError("memory at the build-ID location is not a GNU build-ID note",
                         value=data[:16].hex(),
                         remedy="the device runs other firmware, or the note was not captured "
                                "(firmware.build_id in the target file)")
    if not MIN_PREFIX_DIGITS // 2 <= descsz <= 64 or desc_start + descsz > len(data):
        raise InputError(f"GNU build-ID note has a {descsz}-byte ID that does not fit",
                         value=data[:16].hex())
    return data[desc_start:desc_start + descsz].hex()


def device_build_ids(image: ElfImage, target: Target, *, memory: MemoryImage | None = None,
                     console: str | None = None) -> list[DeviceBuildId]:
    """Every build ID the device reported, most relevant first (see the module doc).

    Only memory that came from the device counts: the ELF's own bytes
    prove nothing.  Unreadable or empty places are skipped (and logged).
    """
    found: list[DeviceBuildId] = []
    if memory is not None:
        record = _from_crash_record(image, target, memory)
        if record is not None:
            found.append(record)
        note = _from_note(image, target, memory)
        if note is not None:
            found.append(note)
    if console:
        found.extend(_from_console(console, target))
    return found


def device_build_ids_from_evidence(image: ElfImage, target: Target,
                                   evidence: CrashEvidence) -> list[DeviceBuildId]:
    """:func:`device_build_ids` over a :class:`~collector.evidence.CrashEvidence`."""
    found = device_build_ids(image, target, memory=evidence.memory,
                             console="\n".join(evidence.console_lines) or None)
    if evidence.build_id:
        try:
            reported = normalize_build_id(evidence.build_id)
            if all(f.build_id != reported for f in found):
                found.append(DeviceBuildId(reported, evidence.build_id_origin or evidence.source))
        except InputError as exc:
            LOG.warning("%s: build ID %r ignored: %s", evidence.origin, evidence.build_id,
                        exc.message)
    return found


def _address(image: ElfImage, symbol: str | None, address: int | None) -> int | None:
    if symbol is not None:
        sym = image.get_symbol(symbol)
        return sym.address if sym is not None else None
    return address


def _from_crash_record(image: ElfImage, target: Target,
                       memory: MemoryImage) -> DeviceBuildId | None:
    loc = target.crash_record
    if loc is None:
        return None
    from collector.variables import read_variable

    name = loc.symbol
    if name is None or not image.has_dwarf:
        return None
    try:
        record = read_variable(image, memory, name)
    except InputError as exc:
        LOG.info("crash record not readable for its build ID: %s", exc.message)
        return None
    field_value = next((m for m in record.members if m.name == "build_id"), None)
    if field_value is None or field_value.address is None or field_value.missing is not None:
        return None
    if memory.origin(field_value.address, field_value.size) != "captured":
        return None
    raw = memory.try_read(field_value.address, field_value.size)
    if raw is None or not any(raw) or all(b == 0xFF for b in raw):
        return None  # no crash recorded (zeroed or erased)
    return DeviceBuildId(raw.hex(), f"crash record {name} at 0x{field_value.address:08x} "
                                    "(captured RAM)")


def _from_note(image: ElfImage, target: Target, memory: MemoryImage) -> DeviceBuildId | None:
    loc = target.build_id
    if loc is None:
        return None
    start = _address(image, loc.symbol, loc.address)
    if start is None:
        return None
    size = loc.size
    if size is None and loc.end_symbol is not None:
        end = _address(image, loc.end_symbol, None)
        size = end - start if end is not None and end > start else None
    size = size if size is not None and 12 <= size <= 4096 else 36
    if memory.origin(start, size) != "captured":
        return None
    data = memory.try_read(start, size)
    if data is None:
        return None
    try:
        build_id = build_id_from_note(data)
    except InputError as exc:
        LOG.warning("build-ID note at 0x%08x: %s", start, exc.message)
        return None
    where = f"{loc.symbol} " if loc.symbol else ""
    return DeviceBuildId(build_id, f"build-ID note {where}at 0x{start:08x} (captured memory)")


def _from_console(text: str, target: Target) -> list[DeviceBuildId]:
    found = []
    logs = _FIRMWARE_LINE.findall(text)
    if logs:
        found.append(DeviceBuildId(logs[-1].lower(), "console crash log (firmware: line)"))
    if target.console is not None and target.console.banner is not None:
        banners = parse_banner(text, target.console.banner)
        if banners:
            found.append(DeviceBuildId(banners[-1].build_id.lower(), "console boot banner"))
    out = []
    for item in found:
        try:
            out.append(DeviceBuildId(normalize_build_id(item.build_id), item.source))
        except InputError:
            LOG.warning("console build ID %r is not usable", item.build_id)
    return out
