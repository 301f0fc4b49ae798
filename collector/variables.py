"""Values of global variables, read through DWARF from a memory image.

:func:`read_variable` finds a global's type and address in the ELF's DWARF
(:func:`collector.dwarf_types.find_global`), reads its bytes from a
:class:`~collector.evidence.MemoryImage` (captured RAM first, then the
ELF's read-only segments) and builds a :class:`Value` tree: base types,
enums, pointers (with the symbol they point into), arrays, structs, unions,
bitfields.  Memory that was not captured is reported per field
(``Value.missing``), never raised.

:func:`render` prints the tree the way GDB 13's ``print`` does (C
language, default settings: ``print elements 200``, ``repeats 10``,
``print symbol on``, ``print null-stop off``), so a value can be checked
against ``gdb -batch -ex 'print var'``; the rules below cite GDB's source
(valprint.c, c-valprint.c, minsyms.c, printcmd.c) where they come from.
:meth:`Value.to_json` is the machine form; docs/variables.md describes it.
"""

from __future__ import annotations

import logging
import math
import struct
import weakref
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from elftools.elf.sections import SymbolTableSection

from collector.dwarf_types import (
    DWARF_READ_ERRORS,
    ArrayType,
    BaseType,
    DwarfType,
    EnumType,
    FunctionType,
    Member,
    PointerType,
    QualifiedType,
    StructType,
    TypedefType,
    find_global,
    strip,
)
from crashcart.errors import InputError

if TYPE_CHECKING:
    from collector.elf import ElfImage
    from collector.evidence import MemoryImage

LOG = logging.getLogger(__name__)

PRINT_ELEMENTS = 200      # GDB "set print elements"
REPEAT_THRESHOLD = 10     # GDB "set print repeats"
MAX_VALUES = 100_000      # array elements built per variable, over all nesting levels
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

Fetch = Callable[[int, int], "bytes | None"]


@dataclass(frozen=True)
class Value:
    """One value: a variable, a member, an array element or a run of equal elements.

    ``value`` is the scalar (int, float, bool; the number for enums and
    pointers; the text up to the first NUL for char arrays) or None for
    aggregates and for memory that was not captured (``missing`` says
    which bytes).  ``repeats`` > 1 stands for that many equal consecutive
    array elements (GDB's ``<repeats N times>``).
    """

    name: str                      # "device_config", "magic", "[3]", "" (anonymous member)
    type_name: str                 # C spelling: "uint32_t", "struct fw_info", "char [16]"
    kind: str                      # int char bool float enum pointer array struct union other
    address: int | None
    size: int
    value: Any = None
    enumerator: str | None = None  # enums: the enumerator's name, None if unknown
    symbol: str | None = None      # pointers: "crash_record", "fw_info+8"
    string: str | None = None      # char arrays and char pointers: the text (up to NUL)
    bit_size: int | None = None
    bit_offset: int | None = None  # bitfields: bits from the start of the enclosing aggregate
    members: tuple[Value, ...] = ()
    length: int | None = None      # arrays: number of elements
    index: int | None = None       # array elements: the (first) index
    repeats: int = 1
    truncated: bool = False        # arrays: more elements than were read (print elements)
    missing: str | None = None     # why the value is unknown (memory not captured)
    raw: bytes | None = field(default=None, repr=False, compare=False)
    top_type_prefix: bool = field(default=False, repr=False, compare=False)
    flag_enum: tuple[tuple[int, str], ...] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def text(self) -> str:
        """GDB ``print``-like rendering of this value."""
        return render(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; keys with no information are left out."""
        out: dict[str, Any] = {"name": self.name, "type": self.type_name, "kind": self.kind,
                               "address": None if self.address is None
                               else f"0x{self.address:08x}", "size": self.size}
        if self.missing is not None:
            out["missing"] = self.missing
        elif self.kind not in ("struct", "union", "array") or self.string is not None:
            out["value"] = _json_scalar(self.value)
        for key in ("enumerator", "symbol", "string", "bit_size", "bit_offset", "length",
                    "index"):
            item = getattr(self, key)
            if item is not None:
                out[key] = item
        if self.repeats != 1:
            out["repeats"] = self.repeats
        if self.truncated:
            out["truncated"] = True
        if self.members:
            out["members"] = [m.to_json() for m in self.members]
        out["text"] = render(self, top=False)
        return out


def _json_scalar(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


# -- reading -------------------------------------------------------------------


def read_variable(image: ElfImage, memory: MemoryImage, name: str, *,
                  max_elements: int = PRINT_ELEMENTS) -> Value:
    """The value of the global variable ``name`` in ``memory``.

    Raises :class:`~crashcart.errors.InputError` when the ELF has no DWARF,
    no such variable or malformed DWARF; memory that was not captured only
    marks the affected fields ``missing``.
    """
    if not image.has_dwarf:
        raise InputError("the ELF has no DWARF debug information, so variables cannot be read",
                         path=image.path, remedy="pass the unstripped ELF built with -g")
    var = find_global(image, name)
    address = var.address
    if address is None:
        sym = image.get_symbol(name)
        if sym is None:
            raise InputError(f"global variable '{name}' has no address (no DW_AT_location and "
                             "no symbol)", path=image.path,
                             remedy="it may have been optimised away; keep it referenced or "
                                    "build with -O0")
        address = sym.address
    namer = SymbolNamer.for_image(image)
    builder = _Builder(memory.try_read, namer, little_endian=True, max_elements=max_elements)
    return builder.top(var.type, name, address)


def value_of(dtype: DwarfType, name: str, address: int, fetch: Fetch, *,
             namer: SymbolNamer | None = None, little_endian: bool = True,
             max_elements: int = PRINT_ELEMENTS) -> Value:
    """Build the value of type ``dtype`` at ``address`` from ``fetch(address, size)``.

    ``fetch`` returns the bytes or None when they are not known.  This is
    the layer under :func:`read_variable` for callers with their own
    memory source (a live GDB remote, a big-endian image).
    """
    builder = _Builder(fetch, namer, little_endian=little_endian, max_elements=max_elements)
    return builder.top(dtype, name, address)


class _Builder:
    def __init__(self, fetch: Fetch, namer: SymbolNamer | None, *, little_endian: bool,
                 max_elements: int) -> None:
        self._fetch = fetch
        self.namer = namer
        self.order: Any = "little" if little_endian else "big"
        self.little = little_endian
        self.max_elements = max(1, max_elements)
        # Nested arrays multiply: [100][100][100] would be 200 x 200 x 200
        # printed elements.  Past this many values, arrays stop (truncated).
        self.budget = MAX_VALUES

    def fetch(self, address: int, size: int) -> bytes | None:
        if size <= 0:
            return b""
        if address < 0 or address + size > 1 << 32:
            return None
        data = self._fetch(address, size)
        return data if data is not None and len(data) == size else None

    def top(self, dtype: DwarfType, name: str, address: int) -> Value:
        value = self.build(dtype, name, address, None, 0)
        if value.kind == "pointer":
            return _replace(value, top_type_prefix=True)
        return value

    def build(self, dtype: DwarfType, name: str, address: int, data: bytes | None,
              depth: int) -> Value:
        t = strip(dtype)
        tname = dtype.c_name or dtype.name
        if depth > 64:
            return Value(name, tname, "other", address, t.size, missing="nested too deeply")
        if data is None and not isinstance(t, (StructType, ArrayType)):
            data = self.fetch(address, t.size)
        if isinstance(t, StructType):
            return self._struct(t, tname, name, address, data, depth)
        if isinstance(t, ArrayType):
            return self._array(t, tname, name, address, data, depth)
        if data is None:
            return Value(name, tname, _kind(t), address, t.size, missing=_missing(address, t.size))
        return self._scalar(t, tname, name, address, data)

    # -- aggregates --

    def _struct(self, t: StructType, tname: str, name: str, address: int,
                data: bytes | None, depth: int) -> Value:
        if data is None:
            data = self.fetch(address, t.size)
        members = []
        for m in t.members:
            members.append(self._member(m, address, data, depth))
        return Value(name, tname, t.kind, address, t.size, members=tuple(members), raw=data,
                     missing=None if data is not None or any(v.missing is None for v in members)
                     or not members else _missing(address, t.size))

    def _member(self, m: Member, base: int, data: bytes | None, depth: int) -> Value:
        mt = strip(m.type)
        mname = m.name
        tname = m.type.c_name or m.type.name
        if m.bit_size is not None:
            start_bit = m.data_bit_offset if m.data_bit_offset is not None else \
                m.offset * 8 + (m.bit_offset or 0)
            first = start_bit // 8
            nbytes = (start_bit + m.bit_size + 7) // 8 - first
            chunk = None
            if data is not None and first + nbytes <= len(data):
                chunk = data[first:first + nbytes]
            if chunk is None:
                chunk = self.fetch(base + first, nbytes)
            if chunk is None:
                return Value(mname, tname, _kind(mt), base + first, nbytes, bit_size=m.bit_size,
                             bit_offset=start_bit, missing=_missing(base + first, nbytes))
            raw = int.from_bytes(chunk, self.order)
            shift = start_bit % 8 if self.little else nbytes * 8 - start_bit % 8 - m.bit_size
            number = (raw >> shift) & ((1 << m.bit_size) - 1)
            if _signed(mt) and number >> (m.bit_size - 1):
                number -= 1 << m.bit_size
            scalar = self._scalar(mt, tname, mname, base + first, chunk, number=number)
            return _replace(scalar, bit_size=m.bit_size, bit_offset=start_bit, size=nbytes)
        sub = None
        if data is not None and m.offset + mt.size <= len(data):
            sub = data[m.offset:m.offset + mt.size]
        return self.build(m.type, mname, base + m.offset, sub, depth + 1)

    def _array(self, t: ArrayType, tname: str, name: str, address: int,
               data: bytes | None, depth: int) -> Value:
        if data is None and t.size <= 1 << 20:
            data = self.fetch(address, t.size)
        elem = t.element
        esize = strip(elem).size
        string = None
        textual = _textual(strip(elem))
        if textual and data is not None:
            string = data.split(b"\0", 1)[0].decode("latin-1")
        elements: list[Value] = []
        i = printed = 0
        count = t.count
        # GDB valprint.c value_print_array_elements: runs of more than
        # `repeats` equal elements print once; they count as `repeats`
        # towards `print elements`.
        while i < count and printed < self.max_elements and self.budget > 0:
            self.budget -= 1
            raw = self._element_bytes(data, address, i, esize)
            reps = 1
            if raw is not None and esize > 0:
                while i + reps < count and self._element_bytes(data, address, i + reps,
                                                               esize) == raw:
                    reps += 1
            value = self.build(elem, f"[{i}]", address + i * esize, raw, depth + 1)
            if reps > REPEAT_THRESHOLD:
                elements.append(_replace(value, index=i, repeats=reps))
                printed += REPEAT_THRESHOLD
                i += reps
            else:
                elements.append(_replace(value, index=i))
                printed += 1
                i += 1
        missing = None
        if data is None and elements and all(e.missing for e in elements):
            # Nothing of the array is known: say so once, not per element.
            missing = _missing(address, t.size)
            elements = []
        return Value(name, tname, "array", address, t.size, value=string, string=string,
                     members=tuple(elements), length=count, truncated=i < count, raw=data,
                     missing=missing, flag_enum=None)

    def _element_bytes(self, data: bytes | None, address: int, i: int, esize: int) -> bytes | None:
        if data is not None:
            return data[i * esize:(i + 1) * esize]
        return self.fetch(address + i * esize, esize)

    # -- scalars --

    def _scalar(self, t: DwarfType, tname: str, name: str, address: int, data: bytes,
                number: int | None = None) -> Value:
        if isinstance(t, EnumType):
            if number is None:
                number = int.from_bytes(data, self.order, signed=t.signed)
            return Value(name, tname, "enum", address, t.size, value=number,
                         enumerator=t.name_of(number), raw=data,
                         flag_enum=_flag_enum(t))
        if isinstance(t, PointerType):
            if number is None:
                number = int.from_bytes(data, self.order)
            symbol = None
            string = None
            if self.namer is not None:
                symbol = self.namer.name(number, code=t.target_kind == "function")
            if t.target_kind == "char" and number != 0:
                string = self._c_string(number)
            return Value(name, tname, "pointer", address, t.size, value=number, symbol=symbol,
                         string=string, raw=data)
        if isinstance(t, BaseType):
            enc = t.encoding
            if enc == "float" and number is None:
                fmt = {4: "f", 8: "d"}.get(t.size)
                if fmt is None:
                    return Value(name, tname, "float", address, t.size, raw=data,
                                 missing=f"{t.size}-byte floating point is not supported")
                prefix = "<" if self.little else ">"
                return Value(name, tname, "float", address, t.size,
                             value=struct.unpack(prefix + fmt, data)[0], raw=data)
            if number is None:
                if t.size > 16 or t.size == 0:
                    return Value(name, tname, "other", address, t.size, raw=data,
                                 missing=f"cannot show a {t.size}-byte {t.name}")
                number = int.from_bytes(data, self.order, signed=_signed(t))
            if enc == "boolean":
                return Value(name, tname, "bool", address, t.size,
                             value=bool(number) if number in (0, 1) else number, raw=data)
            kind = "char" if _textual(t) else "int"
            return Value(name, tname, kind, address, t.size, value=number, raw=data)
        return Value(name, tname, "other", address, t.size, raw=data,
                     missing=f"cannot show a value of type {tname}")

    def _c_string(self, address: int) -> str | None:
        """The NUL-terminated string at ``address`` (at most print-elements chars)."""
        out = bytearray()
        while len(out) < self.max_elements:
            byte = self.fetch(address + len(out), 1)
            if byte is None:
                return None if not out else out.decode("latin-1") + "..."
            if byte == b"\0":
                break
            out += byte
        return out.decode("latin-1")


def _replace(value: Value, **changes: Any) -> Value:
    from dataclasses import replace

    return replace(value, **changes)


def _missing(address: int, size: int) -> str:
    return f"memory 0x{address:08x}..0x{address + size:08x} ({size} bytes) was not captured"


def _kind(t: DwarfType) -> str:
    if isinstance(t, EnumType):
        return "enum"
    if isinstance(t, PointerType):
        return "pointer"
    if isinstance(t, StructType):
        return t.kind
    if isinstance(t, ArrayType):
        return "array"
    if isinstance(t, BaseType):
        if t.encoding == "float":
            return "float"
        if t.encoding == "boolean":
            return "bool"
        return "char" if _textual(t) else "int"
    return "other"


def _signed(t: DwarfType) -> bool:
    if isinstance(t, BaseType):
        return t.encoding in ("signed", "signed_char")
    if isinstance(t, EnumType):
        return t.signed
    return False


def _textual(t: DwarfType) -> bool:
    # GDB c-lang.c c_textual_element_type: a one-byte integer is a character.
    return isinstance(t, BaseType) and t.size == 1 and t.encoding in (
        "signed", "unsigned", "signed_char", "unsigned_char")


def _flag_enum(t: EnumType) -> tuple[tuple[int, str], ...] | None:
    """The enumerators if GDB would treat ``t`` as a flag enum, else None.

    GDB 13 dwarf2/read.c (update_enumeration_type_from_children): every
    value non-negative and no two values sharing a bit.
    """
    mask = 0
    for number, _ in t.enumerators:
        if number < 0:
            return None
        if mask & number:
            return None
        mask |= number
    return t.enumerators


# -- symbols for pointers --------------------------------------------------------


class SymbolNamer:
    """``<symbol+offset>`` for addresses, chosen the way GDB chooses them.

    GDB minsyms.c (lookup_minimal_symbol_by_pc_section): only symbols of the
    section that holds the address; among those the last one at or below
    it, preferring one with a size; a sized symbol the address is past is
    not used.  printcmd.c (build_address_symbolic): a zero-sized symbol is
    used only in code.  An address in no allocated section has no name.
    """

    _cache: ClassVar[weakref.WeakKeyDictionary[Any, SymbolNamer]] = weakref.WeakKeyDictionary()

    def __init__(self, sections: list[tuple[int, int, bool, list[tuple[int, str, int]]]]) -> None:
        self._sections = sorted(sections, key=lambda s: s[0])
        self._starts = [s[0] for s in self._sections]

    @classmethod
    def for_image(cls, image: ElfImage) -> SymbolNamer:
        """The namer of ``image``, built once per image."""
        namer = cls._cache.get(image)
        if namer is None:
            namer = cls.from_elf(image)
            cls._cache[image] = namer
        return namer

    @classmethod
    def from_elf(cls, image: Any) -> SymbolNamer:
        """Build from an ElfImage (or anything with ``elf``, a pyelftools ELFFile)."""
        sections: list[tuple[int, int, bool, list[tuple[int, str, int]]]] = []
        by_index: dict[int, list[tuple[int, str, int]]] = {}
        try:
            elf = image.elf
            for index, sec in enumerate(elf.iter_sections()):
                flags = sec["sh_flags"]
                if not flags & SHF_ALLOC or sec["sh_size"] == 0:
                    continue
                syms: list[tuple[int, str, int]] = []
                by_index[index] = syms
                sections.append((sec["sh_addr"], sec["sh_addr"] + sec["sh_size"],
                                 bool(flags & SHF_EXECINSTR), syms))
            for sec in elf.iter_sections():
                if not isinstance(sec, SymbolTableSection):
                    continue
                for sym in sec.iter_symbols():
                    name = sym.name
                    kind = sym["st_info"]["type"]
                    shndx = sym["st_shndx"]
                    if not name or name.startswith("$") or kind in ("STT_SECTION", "STT_FILE"):
                        continue
                    if not isinstance(shndx, int) or shndx not in by_index:
                        continue
                    address = sym["st_value"]
                    if kind == "STT_FUNC":
                        address &= ~1  # Thumb bit (ELF for the Arm Architecture, 5.5.3)
                    by_index[shndx].append((address, name, sym["st_size"]))
        except DWARF_READ_ERRORS as exc:
            LOG.warning("symbol table unreadable, pointers shown without symbols: %s", exc)
            return cls([])
        for _, _, _, syms in sections:
            syms.sort(key=lambda s: (s[0], s[1]))
        return cls(sections)

    def name(self, address: int, *, code: bool = False) -> str | None:
        """``symbol`` or ``symbol+offset`` for ``address``, or None."""
        if code:
            address &= ~1
        i = bisect_right(self._starts, address) - 1
        # Sections may overlap only through bad input; the last starting at or
        # below the address that contains it wins.
        while i >= 0:
            start, end, is_code, syms = self._sections[i]
            if start <= address < end:
                return self._in_section(address, is_code, syms)
            i -= 1
        return None

    @staticmethod
    def _in_section(address: int, is_code: bool, syms: list[tuple[int, str, int]]) -> str | None:
        hi = bisect_right(syms, (address, "\uffff")) - 1
        best_zero = None
        chosen = None
        while hi >= 0:
            size = syms[hi][2]
            if size == 0:
                if best_zero is None:
                    best_zero = syms[hi]
                hi -= 1
                continue
            chosen = syms[hi]
            break
        if chosen is not None and address >= chosen[0] + chosen[2]:
            chosen = None
        if chosen is None:
            chosen = best_zero
        if chosen is None:
            return None
        if chosen[2] == 0 and not is_code:
            return None  # printcmd.c: zero-sized data symbols are not useful
        offset = address - chosen[0]
        return chosen[1] if offset == 0 else f"{chosen[1]}+{offset}"


# -- rendering -----------------------------------------------------------------------


def render(value: Value, *, top: bool = True) -> str:
    """``value`` as GDB's ``print`` shows it (without the ``$1 = ``)."""
    if value.missing is not None and not value.members:
        return "<not captured>"
    kind = value.kind
    if kind in ("struct", "union"):
        parts = []
        for m in value.members:
            text = render(m, top=False)
            parts.append(f"{m.name} = {text}" if m.name else text)
        return "{" + ", ".join(parts) + "}"
    if kind == "array":
        return _render_array(value)
    if kind == "pointer":
        text = f"0x{value.value:x}"
        if value.symbol is not None:
            text += f" <{value.symbol}>"
        if value.string is not None:
            text += " " + gdb_string(value.string.encode("latin-1"), terminated=False)
        if top and value.top_type_prefix and not _plain_char_pointer(value):
            text = f"({value.type_name}) {text}"
        return text
    if kind == "enum":
        return _render_enum(value)
    if kind == "bool":
        if value.value is True:
            return "true"
        if value.value is False:
            return "false"
        return str(value.value)
    if kind == "char":
        return f"{value.value} {char_literal(value.value)}"
    if kind == "float":
        return gdb_float(value.value, value.raw, value.size)
    if kind == "int":
        return str(value.value)
    return f"<{value.missing or 'unknown'}>"


def _plain_char_pointer(value: Value) -> bool:
    # c-valprint.c c_value_print: no "(char *)" prefix for an unnamed pointer
    # whose target is named exactly "char" (qualifiers aside).
    name = value.type_name
    for qual in ("const ", "volatile "):
        name = name.replace(qual, "")
    return name.strip() == "char *"


def _render_array(value: Value) -> str:
    if value.missing is not None and not value.members:
        return "<not captured>"
    if value.raw is not None and value.members and value.members[0].kind == "char":
        return gdb_string(value.raw, terminated=True)
    parts = []
    for m in value.members:
        text = render(m, top=False)
        if m.repeats > 1:
            text += f" <repeats {m.repeats} times>"
        parts.append(text)
    return "{" + ", ".join(parts) + ("..." if value.truncated else "") + "}"


def _render_enum(value: Value) -> str:
    if value.enumerator is not None:
        return value.enumerator
    number = value.value
    if value.flag_enum is None:
        return str(number)
    # valprint.c generic_val_print_enum_1
    parts = []
    rest = number
    for enum_value, enum_name in value.flag_enum:
        if enum_value and rest & enum_value == enum_value:
            parts.append(enum_name)
            rest &= ~enum_value
    if rest:
        parts.append(f"unknown: 0x{rest:x}")
    if not parts:
        return "0"
    return "(" + " | ".join(parts) + ")"


_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def _emit(byte: int, quoter: str) -> str:
    # valprint.c print_wchar, with a host charset of ASCII (LC_ALL=C).
    if byte in _ESCAPES:
        return _ESCAPES[byte]
    if 0x20 <= byte < 0x7F:
        ch = chr(byte)
        return "\\" + ch if ch in (quoter, "\\") else ch
    return f"\\{byte & 0o777:03o}"


def char_literal(number: int) -> str:
    """GDB's ``'A'`` / ``'\\377'`` after a character's number."""
    return "'" + _emit(number & 0xFF, "'") + "'"


def gdb_string(data: bytes, *, terminated: bool, limit: int = PRINT_ELEMENTS,
               force_ellipses: bool = False) -> str:
    """A char array (``terminated``) or string as GDB prints it (valprint.c generic_printstr)."""
    length = len(data)
    if terminated and not force_ellipses and length and data[-1] == 0:
        length -= 1  # the one trailing NUL is not shown
    if length == 0:
        return '""'
    groups: list[tuple[int, int]] = []
    pos = printed = 0
    while printed < limit and pos < length:
        byte = data[pos]
        n = 1
        while pos + n < length and data[pos + n] == byte:
            n += 1
        groups.append((byte, n))
        pos += n
        printed += n
    finished = pos >= length
    out = []
    state = "start"
    for byte, n in groups:
        if n > REPEAT_THRESHOLD:
            if state == "single":
                out.append('"')
            if state != "start":
                out.append(", ")
            out.append("'" + _emit(byte, '"') + f"' <repeats {n} times>")
            state = "repeat"
        else:
            if state != "single":
                if state != "start":
                    out.append(", ")
                out.append('"')
            out.append(_emit(byte, '"') * n)
            state = "single"
    if state == "single":
        out.append('"')
    if force_ellipses or not finished:
        out.append("...")
    return "".join(out)


def gdb_float(number: float, raw: bytes | None, size: int) -> str:
    """%g with 9 (float) or 17 (double) digits, as GDB's floatformat_printf_format."""
    if math.isnan(number):
        mantissa = 0
        if raw is not None:
            bits = int.from_bytes(raw, "little")
            mantissa = bits & ((1 << 23) - 1 if size == 4 else (1 << 52) - 1)
            negative = bits >> (size * 8 - 1) & 1
        else:
            negative = 0
        return ("-" if negative else "") + f"nan(0x{mantissa:x})"
    if math.isinf(number):
        return "-inf" if number < 0 else "inf"
    digits = 9 if size == 4 else 17
    return f"{number:.{digits}g}"


def json_value(value: Value) -> dict[str, Any]:
    """``value.to_json()`` (a function for callers that map over values)."""
    return value.to_json()


__all__ = [
    "FunctionType",
    "QualifiedType",
    "SymbolNamer",
    "TypedefType",
    "Value",
    "char_literal",
    "gdb_float",
    "gdb_string",
    "json_value",
    "read_variable",
    "render",
    "value_of",
]
