"""C types from DWARF, and values of those types to and from bytes.

:func:`find_global_type` resolves a global variable's type from
``.debug_info`` into a small frozen model (base, enum, pointer, array,
struct/union with bitfields).  :func:`decode` turns target memory into
Python values; :func:`encode` does the reverse, which is how a YAML config
becomes the bytes the simulator places in the board's RAM.

References: DWARF 5 sections 5.1 (base types), 5.5 (structures, unions,
members and bitfields: DW_AT_data_bit_offset, and DWARF 2/3's
DW_AT_bit_offset), 5.6 (enumerations), 5.13 (array subranges).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError

from crashcart.errors import InputError

if TYPE_CHECKING:
    from elftools.dwarf.die import DIE

    from collector.elf import ElfImage

MAX_DEPTH = 64
MAX_ARRAY = 1 << 20


@dataclass(frozen=True)
class DwarfType:
    name: str
    size: int


@dataclass(frozen=True)
class BaseType(DwarfType):
    encoding: str  # signed, unsigned, boolean, float, signed_char, unsigned_char


@dataclass(frozen=True)
class EnumType(DwarfType):
    enumerators: tuple[tuple[int, str], ...]
    signed: bool

    def name_of(self, value: int) -> str | None:
        for number, name in self.enumerators:
            if number == value:
                return name
        return None

    def value_of(self, name: str) -> int | None:
        for number, label in self.enumerators:
            if label == name:
                return number
        return None


@dataclass(frozen=True)
class PointerType(DwarfType):
    target: str  # name of the pointed-to type ("void" if none)


@dataclass(frozen=True)
class ArrayType(DwarfType):
    element: DwarfType
    count: int


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # bytes from the start of the aggregate
    type: DwarfType
    bit_size: int | None = None  # bitfields only
    bit_offset: int | None = None  # from the least significant bit of the storage unit


@dataclass(frozen=True)
class StructType(DwarfType):
    kind: str  # "struct" or "union"
    members: tuple[Member, ...]

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None


class _Resolver:
    def __init__(self, image: ElfImage) -> None:
        self.image = image
        self.cache: dict[int, DwarfType] = {}

    def fail(self, message: str) -> InputError:
        return InputError(message, path=self.image.path,
                          remedy="the DWARF of this ELF is malformed or unsupported")

    def resolve(self, die: DIE | None, depth: int = 0) -> DwarfType:
        if die is None:
            return BaseType("void", 0, "void")
        if depth > MAX_DEPTH:
            raise self.fail("type nesting deeper than 64 levels")
        cached = self.cache.get(die.offset)
        if cached is not None:
            return cached
        result = self._resolve(die, depth)
        self.cache[die.offset] = result
        return result

    def _resolve(self, die: DIE, depth: int) -> DwarfType:
        tag = die.tag
        name = _name(die)
        if tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                   "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
            inner = self.resolve(_type_die(die), depth + 1)
            return inner
        if tag == "DW_TAG_base_type":
            enc = die.attributes.get("DW_AT_encoding")
            return BaseType(name or "?", _int_attr(die, "DW_AT_byte_size"),
                            _ENCODINGS.get(enc.value if enc else 0, "unsigned"))
        if tag == "DW_TAG_enumeration_type":
            items = []
            for child in die.iter_children():
                if child.tag == "DW_TAG_enumerator":
                    items.append((_int_attr(child, "DW_AT_const_value"), _name(child) or "?"))
            under = _type_die(die)
            signed = any(v < 0 for v, _ in items)
            if under is not None:
                base = self.resolve(under, depth + 1)
                signed = isinstance(base, BaseType) and base.encoding.startswith("signed")
            return EnumType(name or "enum", _int_attr(die, "DW_AT_byte_size", 4),
                            tuple(items), signed)
        if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type"):
            target = _type_die(die)
            tname = "void"
            if target is not None:
                tname = _describe(target)
            return PointerType(tname + " *", _int_attr(die, "DW_AT_byte_size", 4), tname)
        if tag == "DW_TAG_array_type":
            element = self.resolve(_type_die(die), depth + 1)
            dims = []
            for child in die.iter_children():
                if child.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in child.attributes:
                        dims.append(_int_attr(child, "DW_AT_count"))
                    elif "DW_AT_upper_bound" in child.attributes:
                        dims.append(_int_attr(child, "DW_AT_upper_bound") + 1)
                    else:
                        dims.append(0)  # flexible array member
            result: DwarfType = element
            for count in reversed(dims or [0]):
                if count < 0 or count > MAX_ARRAY:
                    raise self.fail(f"array dimension {count} out of range")
                result = ArrayType(f"{result.name}[{count}]", result.size * count, result, count)
            return result
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            kind = "union" if tag == "DW_TAG_union_type" else "struct"
            members = []
            for child in die.iter_children():
                if child.tag != "DW_TAG_member":
                    continue
                members.append(self._member(child, depth, kind))
            return StructType(f"{kind} {name}" if name else kind,
                              _int_attr(die, "DW_AT_byte_size", 0), kind, tuple(members))
        if tag == "DW_TAG_subroutine_type":
            return BaseType("function", 0, "function")
        raise self.fail(f"unsupported DWARF type tag {tag}")

    def _member(self, die: DIE, depth: int, kind: str) -> Member:
        mtype = self.resolve(_type_die(die), depth + 1)
        offset = 0
        loc = die.attributes.get("DW_AT_data_member_location")
        if loc is not None:
            if isinstance(loc.value, int):
                offset = loc.value
            elif isinstance(loc.value, list) and len(loc.value) >= 2 and loc.value[0] == 0x23:
                # DW_OP_plus_uconst <uleb128> (DWARF 2 style location expression)
                offset = _uleb(loc.value[1:])
            else:
                raise self.fail(f"unsupported member location {loc.value!r}")
        bit_size = None
        bit_offset = None
        if "DW_AT_bit_size" in die.attributes:
            bit_size = _int_attr(die, "DW_AT_bit_size")
            if "DW_AT_data_bit_offset" in die.attributes:
                total = _int_attr(die, "DW_AT_data_bit_offset")
                storage = mtype.size or 4
                offset = (total // 8) // storage * storage
                bit_offset = total - offset * 8
            elif "DW_AT_bit_offset" in die.attributes:
                storage = _int_attr(die, "DW_AT_byte_size", mtype.size or 4)
                # DWARF 3: counted from the most significant bit of the storage unit.
                bit_offset = storage * 8 - _int_attr(die, "DW_AT_bit_offset") - bit_size
            else:
                bit_offset = 0
        return Member(_name(die) or "", offset, mtype, bit_size, bit_offset)


_ENCODINGS = {
    0x02: "boolean",
    0x04: "float",
    0x05: "signed",
    0x06: "signed_char",
    0x07: "unsigned",
    0x08: "unsigned_char",
    0x10: "unsigned",  # UTF
}


def _name(die: DIE) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return None
    value = attr.value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int_attr(die: DIE, name: str, default: int | None = None) -> int:
    attr = die.attributes.get(name)
    if attr is None or not isinstance(attr.value, int):
        if default is None:
            raise InputError(f"DWARF entry at offset 0x{die.offset:x} lacks {name}")
        return default
    return attr.value


def _type_die(die: DIE) -> DIE | None:
    if "DW_AT_type" not in die.attributes:
        return None
    return die.get_DIE_from_attribute("DW_AT_type")


def _describe(die: DIE, depth: int = 0) -> str:
    name = _name(die)
    if name:
        prefix = {"DW_TAG_structure_type": "struct ", "DW_TAG_union_type": "union ",
                  "DW_TAG_enumeration_type": "enum "}.get(die.tag, "")
        return prefix + name
    if depth < 8 and die.tag in ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_pointer_type"):
        inner = _type_die(die)
        base = _describe(inner, depth + 1) if inner is not None else "void"
        return base + (" *" if die.tag == "DW_TAG_pointer_type" else "")
    if die.tag == "DW_TAG_subroutine_type":
        return "function"
    return "?"


def _uleb(data: list[int]) -> int:
    result = shift = 0
    for byte in data:
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return result


def find_global_type(image: ElfImage, name: str) -> DwarfType:
    """Resolve the type of the global variable ``name`` from DWARF."""
    try:
        dwarf = image.elf.get_dwarf_info()
        resolver = _Resolver(image)
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            for die in top.iter_children():
                if die.tag != "DW_TAG_variable" or _name(die) != name:
                    continue
                if "DW_AT_type" in die.attributes:
                    return resolver.resolve(_type_die(die))
                if "DW_AT_specification" in die.attributes:
                    spec = die.get_DIE_from_attribute("DW_AT_specification")
                    return resolver.resolve(_type_die(spec))
    except (DWARFError, ELFError, ELFParseError, ValueError, KeyError, IndexError,
            struct.error) as exc:
        raise InputError(f"malformed DWARF: {exc}", path=image.path,
                         remedy="rebuild the ELF, or pass one with intact debug info") from None
    raise InputError(
        f"no global variable '{name}' in the DWARF",
        path=image.path,
        remedy="check the symbol name in the target file and that the ELF was built with -g",
    )


# -- values -------------------------------------------------------------------

_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def decode(dtype: DwarfType, data: bytes, offset: int = 0) -> Any:
    """The value of type ``dtype`` stored at ``data[offset:]`` (little-endian)."""
    if isinstance(dtype, StructType):
        out: dict[str, Any] = {}
        for i, m in enumerate(dtype.members):
            value = decode(m.type, data, offset + m.offset)
            if m.bit_size is not None and isinstance(value, int):
                raw = _read_uint(data, offset + m.offset, m.type.size or 4)
                value = (raw >> (m.bit_offset or 0)) & ((1 << m.bit_size) - 1)
                if _is_signed(m.type) and value >> (m.bit_size - 1):
                    value -= 1 << m.bit_size
            out[m.name or f"<anonymous {i}>"] = value
        return out
    if isinstance(dtype, ArrayType):
        if isinstance(dtype.element, BaseType) and dtype.element.encoding.endswith("char"):
            raw = data[offset : offset + dtype.count]
            return raw.split(b"\0", 1)[0].decode("latin-1")
        return [decode(dtype.element, data, offset + i * dtype.element.size)
                for i in range(dtype.count)]
    if isinstance(dtype, EnumType):
        value = _read_int(data, offset, dtype.size, dtype.signed)
        return dtype.name_of(value) or value
    if isinstance(dtype, PointerType):
        return _read_uint(data, offset, dtype.size)
    if isinstance(dtype, BaseType):
        if dtype.encoding == "float":
            fmt = {4: "<f", 8: "<d"}.get(dtype.size)
            if fmt is None:
                raise InputError(f"unsupported float size {dtype.size}")
            return struct.unpack_from(fmt, data, offset)[0]
        if dtype.encoding == "boolean":
            return bool(_read_uint(data, offset, dtype.size))
        return _read_int(data, offset, dtype.size, _is_signed(dtype))
    raise InputError(f"cannot decode a value of type {dtype.name}")


def encode(dtype: DwarfType, value: Any, *, where: str = "value") -> bytes:
    """Bytes (little-endian) for ``value`` of type ``dtype``.

    ``where`` names the value in errors (``config field 'adc_channel'``).
    """
    buf = bytearray(dtype.size)
    _encode_into(dtype, value, buf, 0, where)
    return bytes(buf)


def _encode_into(dtype: DwarfType, value: Any, buf: bytearray, offset: int, where: str) -> None:
    if isinstance(dtype, StructType):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be a mapping of {dtype.name}'s fields", value=value)
        names = {m.name for m in dtype.members}
        for key in value:
            if key not in names:
                raise InputError(f"{where}: {dtype.name} has no field '{key}'",
                                 remedy="fields: " + ", ".join(m.name for m in dtype.members))
        for m in dtype.members:
            if m.name not in value:
                continue
            sub = f"{where}.{m.name}"
            if m.bit_size is not None:
                v = _check_int(m.type, value[m.name], sub, bits=m.bit_size)
                pos = offset + m.offset
                size = m.type.size or 4
                raw = _read_uint(buf, pos, size)
                mask = ((1 << m.bit_size) - 1) << (m.bit_offset or 0)
                raw = (raw & ~mask) | ((v << (m.bit_offset or 0)) & mask)
                buf[pos : pos + size] = raw.to_bytes(size, "little")
            else:
                _encode_into(m.type, value[m.name], buf, offset + m.offset, sub)
        return
    if isinstance(dtype, ArrayType):
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            return  # zero-fill
        if isinstance(value, str) and isinstance(dtype.element, BaseType):
            raw = value.encode("latin-1", "replace")
            if len(raw) > dtype.count:
                raise InputError(f"{where}: string longer than {dtype.count} bytes", value=value)
            buf[offset : offset + len(raw)] = raw
            return
        if not isinstance(value, list) or len(value) > dtype.count:
            raise InputError(f"{where} must be a list of at most {dtype.count} items", value=value)
        for i, item in enumerate(value):
            _encode_into(dtype.element, item, buf, offset + i * dtype.element.size,
                         f"{where}[{i}]")
        return
    if isinstance(dtype, EnumType) and isinstance(value, str):
        number = dtype.value_of(value)
        if number is None:
            raise InputError(f"{where}: '{value}' is not a value of {dtype.name}",
                             remedy="one of: " + ", ".join(n for _, n in dtype.enumerators))
        value = number
    if isinstance(dtype, BaseType) and dtype.encoding == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number", value=value)
        struct.pack_into({4: "<f", 8: "<d"}[dtype.size], buf, offset, float(value))
        return
    if isinstance(dtype, BaseType) and dtype.encoding == "boolean" and isinstance(value, bool):
        value = int(value)
    v = _check_int(dtype, value, where, bits=dtype.size * 8)
    buf[offset : offset + dtype.size] = (v & ((1 << (dtype.size * 8)) - 1)).to_bytes(
        dtype.size, "little")


def _check_int(dtype: DwarfType, value: Any, where: str, *, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where} must be an integer ({dtype.name})", value=value)
    if _is_signed(dtype):
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    if not low <= value <= high:
        raise InputError(f"{where} is out of range for {dtype.name} ({low}..{high})",
                         value=value)
    return value


def _is_signed(dtype: DwarfType) -> bool:
    if isinstance(dtype, BaseType):
        return dtype.encoding in ("signed", "signed_char")
    if isinstance(dtype, EnumType):
        return dtype.signed
    return False


def _read_uint(data: bytes | bytearray, offset: int, size: int) -> int:
    chunk = bytes(data[offset : offset + size])
    if len(chunk) != size:
        raise InputError(f"value at offset {offset} runs past the end of the data ({len(data)} bytes)")
    return int.from_bytes(chunk, "little")


def _read_int(data: bytes | bytearray, offset: int, size: int, signed: bool) -> int:
    value = _read_uint(data, offset, size)
    if signed and value >> (size * 8 - 1):
        value -= 1 << (size * 8)
    return value
