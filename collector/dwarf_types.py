"""C types from DWARF, and values of those types to and from bytes.

:func:`find_global_type` resolves a global variable's type from
``.debug_info`` into a small frozen model (base, enum, pointer, array,
struct/union with bitfields).  :func:`decode` turns target memory into
Python values; :func:`encode` does the reverse, which is how a YAML config
becomes the bytes the simulator places in the board's RAM.

:func:`find_global` keeps what :func:`find_global_type` strips for the
encoder: typedef names and const/volatile (:class:`TypedefType`,
:class:`QualifiedType`), each type's C spelling (``c_name``, as GDB's
``ptype`` writes it), absolute bit positions of bitfields, and where the
variable lives.  :mod:`collector.variables` prints values with it.

References: DWARF 5 sections 5.1 (base types), 5.5 (structures, unions,
members and bitfields: DW_AT_data_bit_offset, and DWARF 2/3's
DW_AT_bit_offset), 5.6 (enumerations), 5.13 (array subranges).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.construct.core import ConstructError

from crashcart.errors import InputError

if TYPE_CHECKING:
    from elftools.dwarf.die import DIE

    from collector.elf import ElfImage

MAX_DEPTH = 64
MAX_ARRAY = 1 << 20
MAX_CHILDREN = 1 << 22


@dataclass(frozen=True)
class DwarfType:
    name: str
    size: int
    # The C spelling GDB uses ("uint32_t", "const struct fw_info *",
    # "void (*)(int)"); empty when the type was resolved for the encoder.
    c_name: str = field(default="", kw_only=True)


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
    # What it points to: "void", "function", "char" (textual, printed as a
    # string like GDB does) or "data".
    target_kind: str = "data"
    target_c_name: str = ""


@dataclass(frozen=True)
class TypedefType(DwarfType):
    """A typedef (DWARF 5, 5.3); ``name`` is the typedef's name."""

    target: DwarfType


@dataclass(frozen=True)
class QualifiedType(DwarfType):
    """const / volatile / restrict / _Atomic around a type (DWARF 5, 5.2)."""

    target: DwarfType
    qualifiers: tuple[str, ...]


@dataclass(frozen=True)
class FunctionType(DwarfType):
    """A subroutine type (DWARF 5, 5.7); only ever seen through a pointer."""


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
    # Bitfields: bits from the start of the aggregate to the field, counted
    # as DWARF 4's DW_AT_data_bit_offset counts them (DWARF 5, 5.7.6): from
    # the least significant bit of byte 0 on a little-endian target, from
    # the most significant bit on a big-endian one.
    data_bit_offset: int | None = None


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
    """DIEs to the model.

    ``keep`` keeps typedefs and qualifiers and fills in ``c_name`` (for
    printing); without it they are looked through, as the encoder wants.
    """

    def __init__(self, image: Any, *, keep: bool = False) -> None:
        self.image = image
        self.keep = keep
        self.little_endian = bool(getattr(image.elf, "little_endian", True))
        self.cache: dict[int, DwarfType] = {}
        self._complete: dict[tuple[str, str], DIE] | None = None

    def fail(self, message: str) -> InputError:
        return InputError(message, path=self.image.path,
                          remedy="the DWARF of this ELF is malformed or unsupported")

    def resolve(self, die: DIE | None, depth: int = 0) -> DwarfType:
        if die is None:
            return BaseType("void", 0, "void", c_name="void")
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
        c_name = c_type_name(die) if self.keep else ""
        if tag == "DW_TAG_typedef":
            inner = self.resolve(_type_die(die), depth + 1)
            if not self.keep:
                return inner
            return TypedefType(name or "?", inner.size, inner, c_name=c_name)
        if tag in _QUALIFIERS:
            inner = self.resolve(_type_die(die), depth + 1)
            if not self.keep:
                return inner
            quals = [_QUALIFIERS[tag]]
            while isinstance(inner, QualifiedType):  # const volatile T: one node
                quals.extend(inner.qualifiers)
                inner = inner.target
            return QualifiedType(inner.name, inner.size, inner, tuple(quals), c_name=c_name)
        if tag == "DW_TAG_base_type":
            enc = die.attributes.get("DW_AT_encoding")
            return BaseType(name or "?", _int_attr(die, "DW_AT_byte_size"),
                            _ENCODINGS.get(enc.value if enc else 0, "unsigned"), c_name=c_name)
        if tag == "DW_TAG_enumeration_type":
            items = []
            for child in _children(die):
                if child.tag == "DW_TAG_enumerator":
                    items.append((_int_attr(child, "DW_AT_const_value"), _name(child) or "?"))
            under = _type_die(die)
            signed = any(v < 0 for v, _ in items)
            if under is not None:
                base = _strip(self.resolve(under, depth + 1))
                signed = isinstance(base, BaseType) and base.encoding.startswith("signed")
            # DW_FORM_data<n> enumerator values are unsigned in pyelftools:
            # sign them by the enum's size when the underlying type is signed.
            size = _int_attr(die, "DW_AT_byte_size", 4)
            if signed and 0 < size <= 8:
                items = [(v - (1 << (8 * size)) if v >> (8 * size - 1) & 1 and v > 0 else v, n)
                         for v, n in items]
            return EnumType(name or "enum", size, tuple(items), signed, c_name=c_name)
        if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type",
                   "DW_TAG_rvalue_reference_type"):
            target = _type_die(die)
            tname = "void"
            if target is not None:
                tname = _describe(target)
            kind = _pointee_kind(target)
            return PointerType(tname + " *", _int_attr(die, "DW_AT_byte_size", 4), tname,
                               kind, c_type_name(target) if self.keep and target is not None
                               else ("void" if self.keep else ""), c_name=c_name)
        if tag == "DW_TAG_array_type":
            element = self.resolve(_type_die(die), depth + 1)
            dims = []
            for child in _children(die):
                if child.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in child.attributes:
                        dims.append(_int_attr(child, "DW_AT_count"))
                    elif "DW_AT_upper_bound" in child.attributes:
                        upper = child.attributes["DW_AT_upper_bound"]
                        if not isinstance(upper.value, int):
                            dims.append(0)  # a VLA bound (an expression): size unknown
                        else:
                            lower = child.attributes.get("DW_AT_lower_bound")
                            low = lower.value if lower is not None and isinstance(
                                lower.value, int) else 0
                            dims.append(upper.value - low + 1)
                    else:
                        dims.append(0)  # flexible array member
            result: DwarfType = element
            names = _array_c_names(die, len(dims or [0])) if self.keep else []
            for level, count in enumerate(reversed(dims or [0])):
                if count < 0 or count > MAX_ARRAY:
                    raise self.fail(f"array dimension {count} out of range")
                if result.size * count > 1 << 32:
                    raise self.fail(f"array of {count} x {result.size} bytes is too large")
                inner_c = names[-1 - level] if names else ""
                result = ArrayType(f"{result.name}[{count}]", result.size * count, result, count,
                                   c_name=inner_c)
            return result
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            kind = "union" if tag == "DW_TAG_union_type" else "struct"
            if "DW_AT_declaration" in die.attributes and name:
                full = self._complete_type(tag, name)
                if full is not None and full.offset != die.offset:
                    return self.resolve(full, depth + 1)
            members = []
            for child in _children(die):
                if child.tag != "DW_TAG_member":
                    continue
                members.append(self._member(child, depth, kind))
            return StructType(f"{kind} {name}" if name else kind,
                              _int_attr(die, "DW_AT_byte_size", 0), kind, tuple(members),
                              c_name=c_name)
        if tag == "DW_TAG_subroutine_type":
            return FunctionType("function", 0, c_name=c_name) if self.keep else \
                BaseType("function", 0, "function")
        if tag == "DW_TAG_unspecified_type":
            return BaseType(name or "void", 0, "void", c_name=c_name)
        raise self.fail(f"unsupported DWARF type tag {tag}")

    def _complete_type(self, tag: str, name: str) -> DIE | None:
        """The definition of a struct declared but not defined in this unit."""
        if self._complete is None:
            self._complete = {}
            for cu in self.image.elf.get_dwarf_info().iter_CUs():
                for die in _children(cu.get_top_DIE()):
                    if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type",
                                   "DW_TAG_class_type") and \
                            "DW_AT_declaration" not in die.attributes:
                        key = (die.tag, _name(die) or "")
                        self._complete.setdefault(key, die)
        return self._complete.get((tag, name))

    def _member(self, die: DIE, depth: int, kind: str) -> Member:
        mtype = self.resolve(_type_die(die), depth + 1)
        storage_type = _strip(mtype)
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
        data_bit_offset = None
        if "DW_AT_bit_size" in die.attributes:
            bit_size = _int_attr(die, "DW_AT_bit_size")
            if not 0 < bit_size <= 64:
                raise self.fail(f"bitfield '{_name(die)}' of {bit_size} bits")
            if "DW_AT_data_bit_offset" in die.attributes:
                total = _int_attr(die, "DW_AT_data_bit_offset")
                data_bit_offset = total
                storage = storage_type.size or 4
                offset = (total // 8) // storage * storage
                bit_offset = total - offset * 8
            elif "DW_AT_bit_offset" in die.attributes:
                storage = _int_attr(die, "DW_AT_byte_size", storage_type.size or 4)
                from_msb = _int_attr(die, "DW_AT_bit_offset")
                # DWARF 3, 5.6.6: counted from the most significant bit of the
                # storage unit at DW_AT_data_member_location.
                bit_offset = storage * 8 - from_msb - bit_size
                if self.little_endian:
                    data_bit_offset = offset * 8 + bit_offset
                else:
                    data_bit_offset = offset * 8 + from_msb
            else:
                bit_offset = 0
                data_bit_offset = offset * 8 if self.little_endian else \
                    offset * 8 + (storage_type.size or 4) * 8 - bit_size
            if data_bit_offset is not None and data_bit_offset < 0:
                raise self.fail(f"bitfield '{_name(die)}' at bit {data_bit_offset}")
        return Member(_name(die) or "", offset, mtype, bit_size, bit_offset, data_bit_offset)


_QUALIFIERS = {
    "DW_TAG_const_type": "const",
    "DW_TAG_volatile_type": "volatile",
    "DW_TAG_restrict_type": "restrict",
    "DW_TAG_atomic_type": "_Atomic",
}

_ENCODINGS = {
    0x02: "boolean",
    0x04: "float",
    0x05: "signed",
    0x06: "signed_char",
    0x07: "unsigned",
    0x08: "unsigned_char",
    0x10: "unsigned",  # UTF
}


def _strip(dtype: DwarfType) -> DwarfType:
    while isinstance(dtype, (TypedefType, QualifiedType)):
        dtype = dtype.target
    return dtype


def strip(dtype: DwarfType) -> DwarfType:
    """``dtype`` without typedefs and qualifiers (what the bytes mean)."""
    return _strip(dtype)


def _children(die: DIE) -> Iterator[DIE]:
    """``die``'s children, refusing a DW_AT_sibling chain that does not move forward.

    pyelftools follows DW_AT_sibling to skip subtrees; a damaged one that
    points back makes its iterator go round forever (found by fuzzing).
    Children follow their parent in .debug_info order (DWARF 5, 2.3).
    """
    last = die.offset
    for count, child in enumerate(die.iter_children()):
        if child.offset <= last or count > MAX_CHILDREN:
            raise DWARFError(f"children of the DIE at 0x{die.offset:x} loop back "
                             f"(0x{child.offset:x} after 0x{last:x})")
        last = child.offset
        yield child


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
                  "DW_TAG_enumeration_type": "enum "}.get(str(die.tag), "")
        return prefix + name
    if depth < 8 and die.tag in ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_pointer_type"):
        inner = _type_die(die)
        base = _describe(inner, depth + 1) if inner is not None else "void"
        return base + (" *" if die.tag == "DW_TAG_pointer_type" else "")
    if die.tag == "DW_TAG_subroutine_type":
        return "function"
    return "?"


def _pointee_kind(die: DIE | None) -> str:
    """void, function, char or data: how GDB prints a pointer to it."""
    depth = 0
    while die is not None and die.tag in ("DW_TAG_typedef", *_QUALIFIERS) and depth < MAX_DEPTH:
        # GDB (c_textual_element_type) treats a pointer to a typedef of char
        # as textual only through the name; qualifiers are transparent.
        if die.tag == "DW_TAG_typedef" and _name(die) in ("char", "signed char",
                                                           "unsigned char"):
            return "char"
        die = _type_die(die)
        depth += 1
    if die is None:
        return "void"
    if die.tag == "DW_TAG_subroutine_type":
        return "function"
    if die.tag == "DW_TAG_base_type":
        enc = die.attributes.get("DW_AT_encoding")
        size = die.attributes.get("DW_AT_byte_size")
            # GDB treats every one-byte integer as a character (c_textual_element_type).
        if enc is not None and enc.value in (0x05, 0x06, 0x07, 0x08) and size is not None \
                and size.value == 1:
            return "char"
    return "data"


# -- C spelling of types (what GDB's ptype writes) ----------------------------

def c_type_name(die: DIE | None) -> str:
    """The C spelling of a type DIE, as GDB prints it (``(type) 0x...``)."""
    return _decl(die, "", 0)


def _array_c_names(die: DIE, levels: int) -> list[str]:
    """C names of an array type and of each of its sub-array levels, outermost first."""
    dims = _dims(die) or ["[]"]
    element = _type_die(die)
    return [_decl(element, "".join(dims[level:]), 0) for level in range(levels)]


def _dims(die: DIE) -> list[str]:
    dims = []
    for child in _children(die):
        if child.tag != "DW_TAG_subrange_type":
            continue
        count = child.attributes.get("DW_AT_count")
        upper = child.attributes.get("DW_AT_upper_bound")
        if count is not None and isinstance(count.value, int):
            dims.append(f"[{count.value}]")
        elif upper is not None and isinstance(upper.value, int):
            dims.append(f"[{upper.value + 1}]")
        else:
            dims.append("[]")
    return dims


def _decl(die: DIE | None, inner: str, depth: int) -> str:
    """A C abstract declarator: the type ``die`` around ``inner`` (``*``, ``[3]``)."""
    def join(base: str) -> str:
        return f"{base} {inner}" if inner else base

    if die is None:
        return join("void")
    if depth > 32:
        return join("?")
    tag = die.tag
    name = _name(die)
    if tag in ("DW_TAG_base_type", "DW_TAG_typedef", "DW_TAG_unspecified_type"):
        return join(name or "?")
    if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_enumeration_type",
               "DW_TAG_class_type"):
        word = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
                "DW_TAG_enumeration_type": "enum", "DW_TAG_class_type": "class"}[tag]
        return join(f"{word} {name}" if name else f"{word} {{...}}")
    if tag in _QUALIFIERS:
        quals = [_QUALIFIERS[tag]]
        target = _type_die(die)
        while target is not None and target.tag in _QUALIFIERS and depth < 32:
            quals.append(_QUALIFIERS[target.tag])
            target = _type_die(target)
            depth += 1
        words = " ".join(quals)
        if target is not None and target.tag == "DW_TAG_pointer_type":   # int * const
            return _pointer(target, f"* {words}" + (f" {inner}" if inner else ""), depth)
        return f"{words} " + _decl(target, inner, depth + 1)               # const int
    if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
        mark = "*" if tag == "DW_TAG_pointer_type" else "&"
        return _pointer(die, mark + inner, depth)
    if tag == "DW_TAG_array_type":
        return _decl(_type_die(die), inner + "".join(_dims(die) or ["[]"]), depth + 1)
    if tag == "DW_TAG_subroutine_type":
        params = []
        varargs = False
        for child in _children(die):
            if child.tag == "DW_TAG_formal_parameter":
                params.append(_decl(_type_die(child), "", depth + 1))
            elif child.tag == "DW_TAG_unspecified_parameters":
                varargs = True
        if varargs:
            params.append("...")
        prototyped = _flag(die, "DW_AT_prototyped")
        plist = ", ".join(params) if params else ("void" if prototyped else "")
        return _decl(_type_die(die), f"{inner}({plist})", depth + 1)
    return join(name or "?")


def _pointer(die: DIE, inner: str, depth: int) -> str:
    target = _type_die(die)
    if target is not None and target.tag in ("DW_TAG_subroutine_type", "DW_TAG_array_type"):
        inner = f"({inner})"  # void (*)(int), int (*)[3]
    return _decl(target, inner, depth + 1)


def _uleb(data: list[int]) -> int:
    result = shift = 0
    for byte in data:
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return result


# What pyelftools raises on damaged input besides its own exceptions: its
# bundled construct's errors, assertions (an address_size of 0 in a unit
# header), NotImplementedError (DW_AT_sibling in a block form), and the
# builtins its parsers trip over.
DWARF_READ_ERRORS: tuple[type[BaseException], ...] = (
    DWARFError, ELFError, ELFParseError, ConstructError, AssertionError, ValueError, KeyError,
    IndexError, struct.error, zlib.error, AttributeError, TypeError, OverflowError,
    RecursionError, NotImplementedError)
_DWARF_ERRORS = DWARF_READ_ERRORS


@dataclass(frozen=True)
class GlobalVariable:
    """A global (or file-static) variable found in DWARF."""

    name: str
    type: DwarfType
    address: int | None   # from DW_AT_location (DW_OP_addr), if it has one
    external: bool
    declaration_only: bool


def find_global_type(image: ElfImage, name: str) -> DwarfType:
    """Resolve the type of the global variable ``name`` from DWARF."""
    try:
        dwarf = image.elf.get_dwarf_info()
        resolver = _Resolver(image)
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            for die in _children(top):
                if die.tag != "DW_TAG_variable" or _name(die) != name:
                    continue
                if "DW_AT_type" in die.attributes:
                    return resolver.resolve(_type_die(die))
                if "DW_AT_specification" in die.attributes:
                    spec = die.get_DIE_from_attribute("DW_AT_specification")
                    return resolver.resolve(_type_die(spec))
    except InputError:
        raise
    except _DWARF_ERRORS as exc:
        raise InputError(f"malformed DWARF: {exc}", path=image.path,
                         remedy="rebuild the ELF, or pass one with intact debug info") from None
    raise InputError(
        f"no global variable '{name}' in the DWARF",
        path=image.path,
        remedy="check the symbol name in the target file and that the ELF was built with -g",
    )


def find_global(image: Any, name: str) -> GlobalVariable:
    """The global variable ``name`` with its full type (typedefs, qualifiers, C names).

    ``image`` is an :class:`~collector.elf.ElfImage` (or anything with
    ``elf``, a pyelftools ``ELFFile``, and ``path``).  A definition with a
    location wins over a declaration; an external variable over a
    file-static one of the same name.
    """
    try:
        dwarf = image.elf.get_dwarf_info()
        resolver = _Resolver(image, keep=True)
        best: tuple[int, DIE, DIE] | None = None
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            for die in _children(top):
                if die.tag != "DW_TAG_variable":
                    continue
                spec = die
                if _name(die) is None and "DW_AT_specification" in die.attributes:
                    spec = die.get_DIE_from_attribute("DW_AT_specification")
                elif _name(die) is None and "DW_AT_abstract_origin" in die.attributes:
                    spec = die.get_DIE_from_attribute("DW_AT_abstract_origin")
                if _name(spec) != name:
                    continue
                rank = (2 if "DW_AT_location" in die.attributes else 0) + \
                    (1 if _flag(die, "DW_AT_external") or _flag(spec, "DW_AT_external") else 0)
                if best is None or rank > best[0]:
                    best = (rank, die, spec)
            if best is not None and best[0] == 3:
                break
        if best is None:
            raise InputError(
                f"no global variable '{name}' in the DWARF",
                path=image.path,
                remedy="check the spelling; locals and optimised-away globals have no "
                       "global entry (build with -g, and keep the variable referenced)",
            )
        _, die, spec = best
        tdie = _type_die(die) if "DW_AT_type" in die.attributes else _type_die(spec)
        if tdie is None:
            raise InputError(f"global variable '{name}' has no type in the DWARF",
                             path=image.path, remedy="rebuild with -g")
        dtype = resolver.resolve(tdie)
        return GlobalVariable(name, dtype, _location_address(die),
                              _flag(die, "DW_AT_external") or _flag(spec, "DW_AT_external"),
                              "DW_AT_location" not in die.attributes)
    except InputError:
        raise
    except _DWARF_ERRORS as exc:
        raise InputError(f"malformed DWARF: {exc}", path=image.path,
                         remedy="rebuild the ELF, or pass one with intact debug info") from None


def _flag(die: DIE, name: str) -> bool:
    attr = die.attributes.get(name)
    return bool(attr is not None and attr.value)


def _location_address(die: DIE) -> int | None:
    """DW_AT_location if it is exactly DW_OP_addr <address> (DWARF 5, 2.5.1.1)."""
    attr = die.attributes.get("DW_AT_location")
    if attr is None or not isinstance(attr.value, list) or not attr.value:
        return None
    expr = attr.value
    if expr[0] != 0x03:  # DW_OP_addr
        return None
    size = die.cu["address_size"]
    if len(expr) != 1 + size:
        return None
    little = die.dwarfinfo.config.little_endian
    return int.from_bytes(bytes(expr[1:]), "little" if little else "big")


# -- values -------------------------------------------------------------------

_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def _is_text(raw: bytes) -> bool:
    return all(b in _TEXT_BYTES for b in raw)


def decode(dtype: DwarfType, data: bytes, offset: int = 0) -> Any:
    """The value of type ``dtype`` stored at ``data[offset:]`` (little-endian)."""
    dtype = _strip(dtype)
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
            raw = bytes(data[offset : offset + dtype.count])
            text, _, rest = raw.partition(b"\0")
            if _is_text(text) and not rest.strip(b"\0"):
                return text.decode("latin-1")
            # Not a NUL-terminated string (a build ID, a MAC address, a hash in a
            # uint8_t array): every byte is kept; JSON writers show it as hex.
            return raw
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
    dtype = _strip(dtype)
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
        if isinstance(value, (bytes, bytearray)) and isinstance(dtype.element, BaseType):
            if len(value) > dtype.count:
                raise InputError(f"{where}: {len(value)} bytes, the array holds {dtype.count}",
                                 value=value.hex())
            buf[offset : offset + len(value)] = value
            return
        if isinstance(value, str) and isinstance(dtype.element, BaseType):
            encoded = value.encode("latin-1", "replace")
            if len(encoded) > dtype.count:
                raise InputError(f"{where}: string longer than {dtype.count} bytes", value=value)
            buf[offset : offset + len(encoded)] = encoded
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
    dtype = _strip(dtype)
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
