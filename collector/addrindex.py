"""DWARF read the way GNU binutils 2.40's bfd reads it (``bfd/dwarf2.c``), for addr2line parity.

:class:`DwarfInfo` keeps what bfd keeps per compilation unit (DWARF 5, 7.5.1):
its own ranges, its line table (DWARF 5, 6.2: rows of one address collapse to
the last, sequences are sorted, overlaps trimmed, nested ones dropped; file
names are joined to ``DW_AT_comp_dir`` as recorded), its functions
(subprograms and inlined subroutines with ranges and callers, named directly
or through ``DW_AT_abstract_origin``/``DW_AT_specification``, DWARF 5, 3.3 and
3.3.8) and its variables with a static address.  Units are read in order up to
the first one bfd cannot parse; a unit with malformed DWARF is left out, as
bfd leaves it out, with a warning.  Only :func:`collector.symbolize.build_index`
imports this module, so a lookup served from the cache never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.symbolize import Section, section_data

M64, M32 = (1 << 64) - 1, 0xFFFFFFFF
SHT_NOBITS = 8

# DWARF 5, 7.5: tags, attributes, forms
TAG_COMPILE_UNIT, TAG_INLINED = 0x11, 0x1D
FUNC_TAGS = frozenset((0x2E, 0x03, TAG_INLINED))  # subprogram, entry point, inlined subroutine
VAR_TAGS = frozenset((0x34, 0x0D))  # variable, member
AT_LOCATION, AT_NAME, AT_STMT_LIST, AT_LOW_PC, AT_HIGH_PC = 0x02, 0x03, 0x10, 0x11, 0x12
AT_LANGUAGE, AT_COMP_DIR, AT_ABSTRACT_ORIGIN, AT_DECL_FILE, AT_DECL_LINE = 0x13, 0x1B, 0x31, 0x3A, 0x3B
AT_EXTERNAL, AT_SPECIFICATION, AT_RANGES, AT_CALL_FILE, AT_CALL_LINE = 0x3F, 0x47, 0x55, 0x58, 0x59
AT_LINKAGE_NAMES = frozenset((0x6E, 0x2007))  # DW_AT_linkage_name, DW_AT_MIPS_linkage_name
WANTED = frozenset((AT_LOCATION, AT_NAME, AT_LOW_PC, AT_HIGH_PC, AT_ABSTRACT_ORIGIN,
                    AT_DECL_FILE, AT_DECL_LINE, AT_EXTERNAL, AT_SPECIFICATION, AT_RANGES,
                    AT_CALL_FILE, AT_CALL_LINE, *AT_LINKAGE_NAMES, AT_STMT_LIST, AT_LANGUAGE,
                    AT_COMP_DIR))
F_ADDR, F_STRING, F_BLOCK, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x01, 0x08, 0x09, 0x0D, 0x0E, 0x0F, 0x10
F_INDIRECT, F_EXPRLOC, F_FLAG_PRESENT, F_STRX, F_ADDRX = 0x16, 0x18, 0x19, 0x1A, 0x1B
F_DATA16, F_LINE_STRP, F_IMPLICIT_CONST, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1E, 0x1F, 0x21, 0x1F20, 0x1F21
STRX_FORMS = frozenset((F_STRX, 0x25, 0x26, 0x27, 0x28))
ADDRX_FORMS = frozenset((F_ADDRX, 0x29, 0x2A, 0x2B, 0x2C))
STR_FORMS = frozenset((F_STRING, F_STRP, F_LINE_STRP, F_GNU_STRP_ALT, *STRX_FORMS))
INT_FORMS = frozenset((F_ADDR, 0x05, 0x06, 0x07, 0x0B, 0x0C, F_SDATA, F_UDATA, F_REF_ADDR, 0x11,
                       0x12, 0x13, 0x14, 0x15, 0x17, F_FLAG_PRESENT, 0x20, F_IMPLICIT_CONST,
                       F_GNU_REF_ALT, *ADDRX_FORMS))
BLOCK_SIZE = {0x0A: 1, 0x03: 2, 0x04: 4}  # DW_FORM_block1, block2, block4 (length field)
FIXED_SIZE = {0x0B: 1, 0x11: 1, 0x0C: 1, 0x25: 1, 0x29: 1, 0x05: 2, 0x12: 2, 0x26: 2, 0x2A: 2,
              0x27: 3, 0x2B: 3, 0x06: 4, 0x13: 4, 0x28: 4, 0x2C: 4, 0x07: 8, 0x14: 8, 0x20: 8,
              F_DATA16: 16, F_FLAG_PRESENT: 0, F_IMPLICIT_CONST: 0}
OFFSET_FORMS = frozenset((F_STRP, F_LINE_STRP, 0x17, F_GNU_REF_ALT, F_GNU_STRP_ALT))
# bfd mangle_style() == 0: a DW_AT_name in these languages is the linkage name.
PLAIN_LANGS = frozenset((0x1, 0x2, 0x5, 0x6, 0x7, 0x9, 0xC, 0xF, 0x12, 0x1D, 0x8001, 0x8765,
                         0x8004, 0x8006, 0x8007))
DW_OP_ADDR = 0x03
# DWARF 5, 6.2.5: line number opcodes
LNS_COPY, LNS_ADVANCE_PC, LNS_ADVANCE_LINE, LNS_SET_FILE, LNS_SET_COLUMN = 1, 2, 3, 4, 5
LNS_NEGATE_STMT, LNS_SET_BASIC_BLOCK, LNS_CONST_ADD_PC, LNS_FIXED_ADVANCE_PC = 6, 7, 8, 9
LNE_END_SEQUENCE, LNE_SET_ADDRESS, LNE_DEFINE_FILE, LNE_SET_DISCRIMINATOR = 1, 2, 3, 4
LNE_HP_SOURCE_FILE_CORRELATION = 0x80
LNCT_PATH, LNCT_DIRECTORY_INDEX, LNCT_MD5 = 1, 2, 5
OP_FIXED, OP_STRP, OP_CONST, OP_ULEB, OP_BLOCK, OP_OTHER = range(6)
DEBUG_SECTIONS = ("info", "abbrev", "line", "str", "line_str", "ranges", "rnglists")


class DwarfError(Exception):
    """Malformed DWARF in one unit: the unit is left out (bfd does the same)."""


# -- bounded readers (bfd dwarf2.c read_* and _bfd_safe_read_leb128) --------------------


def _uleb(data: bytes, pos: int, end: int, signed: bool = False) -> tuple[int, int]:
    """_bfd_safe_read_leb128: bits past 64 are dropped; reads stop at ``end``."""
    result = shift = b = 0
    while pos < end:
        b = data[pos]
        pos += 1
        if shift < 64:
            result |= (b & 0x7F) << shift
            shift += 7
        if b < 0x80:
            break
    if signed and shift < 64 and b & 0x40:
        result |= -(1 << shift)
    return result & M64, pos


def _sleb(data: bytes, pos: int, end: int) -> tuple[int, int]:
    return _uleb(data, pos, end, True)


def _fixed(data: bytes, pos: int, end: int, n: int) -> tuple[int, int]:
    if end - pos < n:
        return 0, end
    return int.from_bytes(data[pos:pos + n], "little"), pos + n


def _cstr(data: bytes, pos: int, end: int) -> tuple[str | None, int]:
    """read_string: NUL-terminated; an empty or unterminated string reads as None."""
    stop = data.find(b"\0", pos, end)
    if stop < 0:
        return None, end
    return (data[pos:stop].decode("utf-8", "surrogateescape") if stop > pos else None), stop + 1


def _string_at(section: bytes | None, offset: int) -> str | None:
    if section is None or (offset != 0 and offset >= len(section)):
        return None
    end = section.find(b"\0", offset)
    text = section[offset: end if end >= 0 else len(section)]
    return text.decode("utf-8", "surrogateescape") if text else None


def _block(data: bytes, pos: int, end: int, size: int) -> tuple[bytes | None, int]:
    if size > end - pos:
        return None, end
    return data[pos:pos + size], pos + size


def _fixed_size(form: int, addr_size: int, offset_size: int, version: int) -> int:
    """Size of a fixed-size form, -1 for the others (DWARF 5, 7.5.6)."""
    if form in OFFSET_FORMS:
        return offset_size
    if form == F_REF_ADDR:
        return offset_size if version >= 3 else addr_size
    return addr_size if form == F_ADDR else FIXED_SIZE.get(form, -1)


# -- what bfd keeps of units, functions and variables -------------------------------------


@dataclass(eq=False, slots=True)
class _Abbrev:
    tag: int
    children: bool
    attrs: tuple[tuple[int, int, int], ...]
    plans: dict[tuple[int, int, int], list[tuple[int, int, int, int, int, bool]]] = field(
        default_factory=dict)


@dataclass(eq=False, slots=True)
class _Unit:
    """A unit (DWARF 5, 7.5.1.1) with what bfd's struct comp_unit keeps."""

    index: int
    offset: int
    end: int
    offset_size: int
    version: int = 0
    addr_size: int = 0
    abbrevs: dict[int, _Abbrev] = field(default_factory=dict)
    first_child: int = 0
    lang: int = 0
    comp_dir: str | None = None
    line_offset: int = 0
    has_stmt: bool = False
    base: int = 0
    aranges: list[list[int]] = field(default_factory=lambda: [[0, 0]])
    error: str | None = None  # None: not scanned yet, "": usable
    lines: Any = None  # _LineTable once decoded, False if that failed
    funcs: list[_Func] = field(default_factory=list)
    vars: list[_Var] = field(default_factory=list)
    sizes: tuple[int, int, int] = (0, 0, 0)  # address size, offset size, version



@dataclass(eq=False, slots=True)
class _Func:
    """bfd struct funcinfo: a subprogram, entry point or inlined subroutine."""

    tag: int
    order: int
    caller: _Func | None
    name: str | None = None
    linkage: bool = False
    file: str | None = None
    line: int = 0
    call_file: str | None = None
    call_line: int = 0
    aranges: list[list[int]] = field(default_factory=lambda: [[0, 0]])
    chain: tuple[tuple[str | None, str | None, int], ...] | None = None


@dataclass(eq=False, slots=True)
class _Var:
    """bfd struct varinfo (kept only when it has a static address)."""

    name: str | None = None
    linkage: bool = False
    file: Any = None
    line: Any = 0
    addr: int = 0
    stack: bool = True


def _arange_add(aranges: list[list[int]], low: int, high: int) -> None:
    """bfd arange_add: fill the empty first range, extend a touching one, or add one."""
    if low == high:
        return
    first = aranges[0]
    if first[1] == 0:
        first[0], first[1] = low, high
        return
    for r in aranges:
        if low == r[1]:
            r[1] = high
            return
        if high == r[0]:
            r[0] = low
            return
    aranges.insert(1, [low, high])


class _LineTable:
    """A decoded line program: file table and bfd's sorted, trimmed sequences."""

    def __init__(self, comp_dir: str | None) -> None:
        self.files: list[tuple[str | None, int]] = []
        self.dirs: list[str | None] = []
        self.comp_dir = comp_dir
        self.v5 = False
        self.seqs: list[list[Any]] = []  # [low, rows]; row = (addr, op, file, line, discr, end)
        self._names: dict[int, str] = {}

    def add_file(self, name: str | None, directory: int) -> None:
        self.files.append((name, directory & M32))
        self._names.clear()

    def filename(self, file: int) -> str:
        """bfd concat_filename: comp_dir / include directory / name, as recorded."""
        file &= M32
        name = self._names.get(file)
        if name is None:
            name = self._names[file] = self._concat(file)
        return name

    def _concat(self, file: int) -> str:
        if not self.v5:  # before DWARF 5 the tables start at 1 and file 0 is unknown
            file -= 1
        if not 0 <= file < len(self.files) or self.files[file][0] is None:
            return "<unknown>"
        name, directory = self.files[file]
        if name is None or name.startswith("/"):
            return name or "<unknown>"
        directory = directory if self.v5 else (directory - 1) & M32
        subdir = self.dirs[directory] if directory < len(self.dirs) else None
        dir_name = self.comp_dir if subdir is None or not subdir.startswith("/") else None
        if dir_name is None:
            dir_name, subdir = subdir, None
        if dir_name is None:
            return name
        return f"{dir_name}/{subdir}/{name}" if subdir is not None else f"{dir_name}/{name}"


# -- .debug_info and .debug_abbrev (bfd stash_comp_unit, parse_comp_unit) -----------------


class DwarfInfo:
    """The DWARF sections of one file, read the way bfd reads them.

    ``units`` are the units bfd would read (it stops at the first it cannot
    parse).  :meth:`unit_ok` decodes a unit's line program and scans its DIEs
    on first use; after that ``u.lines``, ``u.funcs`` and ``u.vars`` hold what
    bfd's struct comp_unit holds.
    """

    @classmethod
    def from_elf(cls, data: bytes, sections: list[Section]) -> DwarfInfo | None:
        """The DWARF of an ELF, None without .debug_info (bfd read_section, find_debug_info)."""
        found: dict[str, bytes] = {}
        for key in DEBUG_SECTIONS:  # .debug_X, else the compressed .zdebug_X
            sec = next((s for name in (".debug_" + key, ".zdebug_" + key)
                        for s in sections if s.name == name), None)
            if sec is not None and (key != "info" or sec.kind != SHT_NOBITS):
                found[key] = section_data(data, sec)
        return cls(found) if "info" in found else None

    def __init__(self, sections: dict[str, bytes]) -> None:
        self.sec = sections
        self.info = sections.get("info", b"")
        self.units: list[_Unit] = []
        self.warnings: list[str] = []
        self._abbrevs: dict[int, dict[int, _Abbrev] | None] = {}
        self._lines0: _LineTable | None = None
        self._strings: dict[int, str | None] = {}
        self._origins: dict[int, list[tuple[int, int, Any]]] = {}
        self._read_units()

    def warn(self, offset: int, message: str) -> None:
        self.warnings.append(f"DWARF unit at .debug_info+{offset:#x}: {message}")

    def _read_units(self) -> None:
        data, size, pos = self.info, len(self.info), 0
        while pos < size:
            start = pos
            length, pos = _fixed(data, pos, size, 4)
            offset_size = 4
            if length in (0, 0xFFFFFFFF):  # 64-bit DWARF (and IRIX's variant)
                length, pos = _fixed(data, pos, size, 8 if length else 4)
                offset_size = 8
            if length == 0 or length > size - pos:
                if length:
                    self.warn(start, f"unit length {length:#x} runs past the end of .debug_info")
                return
            unit = self._parse_unit(_Unit(len(self.units), start, pos + length, offset_size), pos)
            if unit is None:
                return  # bfd trusts nothing after a unit it cannot parse
            self.units.append(unit)
            pos += length

    def _parse_unit(self, u: _Unit, pos: int) -> _Unit | None:
        data, end = self.info, u.end
        u.version, pos = _fixed(data, pos, end, 2)
        if not 2 <= u.version <= 5:
            if u.version:
                self.warn(u.offset, f"DWARF version {u.version} is not supported")
            return None
        unit_type = 1
        if u.version >= 5:
            unit_type, pos = _fixed(data, pos, end, 1)
            u.addr_size, pos = _fixed(data, pos, end, 1)
        abbrev_offset, pos = _fixed(data, pos, end, u.offset_size)
        if u.version < 5:
            u.addr_size, pos = _fixed(data, pos, end, 1)
        pos += {2: 8 + u.offset_size, 4: 8}.get(unit_type, 0)  # DW_UT_type, DW_UT_skeleton
        u.sizes = (u.addr_size, u.offset_size, u.version)
        if u.addr_size not in (2, 4, 8):
            self.warn(u.offset, f"address size {u.addr_size} is not supported")
            return None
        abbrevs = self._read_abbrevs(abbrev_offset)
        code, pos = _uleb(data, pos, end)
        abbrev = abbrevs.get(code & M32) if abbrevs is not None else None
        if abbrev is None:
            if code:
                self.warn(u.offset, f"no abbreviation {code} at .debug_abbrev+{abbrev_offset:#x}")
            return None
        u.abbrevs = abbrevs or {}
        low = high = 0
        relative = False
        try:
            values, pos = self.values(u, abbrev, pos, end)
            for name, form, val in values:
                if name == AT_COMP_DIR:
                    u.comp_dir = val if form in STR_FORMS else None
                elif form not in INT_FORMS:
                    continue
                elif name == AT_STMT_LIST:
                    u.has_stmt, u.line_offset = True, val
                elif name == AT_LOW_PC:
                    low = val
                    u.base = val if abbrev.tag == TAG_COMPILE_UNIT else u.base
                elif name == AT_HIGH_PC:
                    high, relative = val, form != F_ADDR
                elif name == AT_RANGES:
                    self.read_ranges(u, u.aranges, val)
                elif name == AT_LANGUAGE:
                    u.lang = val
        except DwarfError as exc:
            self.warn(u.offset, str(exc))
            return None
        if relative:
            high = (high + low) & M64
        if high != 0:
            _arange_add(u.aranges, low, high)
        u.first_child = pos
        return u

    def _read_abbrevs(self, offset: int) -> dict[int, _Abbrev] | None:
        """bfd read_abbrevs: until code 0, the section end, or a code seen already."""
        if offset in self._abbrevs:
            return self._abbrevs[offset]
        data = self.sec.get("abbrev")
        table: dict[int, _Abbrev] | None = None
        if data is not None and (offset == 0 or offset < len(data)):
            table, end = {}, len(data)
            code, pos = _uleb(data, offset, end)
            while code & M32:
                tag, pos = _uleb(data, pos, end)
                children, pos = _fixed(data, pos, end, 1)
                attrs = []
                while True:
                    name, pos = _uleb(data, pos, end)
                    form, pos = _uleb(data, pos, end)
                    ic = 0
                    if form == F_IMPLICIT_CONST:
                        ic, pos = _sleb(data, pos, end)
                    if name == 0:
                        break
                    attrs.append((name & M32, form & M32, ic))
                table[code & M32] = _Abbrev(tag & M32, children != 0, tuple(attrs))
                if pos >= end:
                    break
                code, pos = _uleb(data, pos, end)
                if code & M32 in table:
                    break
        self._abbrevs[offset] = table
        return table

    def line_table(self, u: _Unit) -> _LineTable | None:
        """The unit's line table (bfd shares the one at offset 0), None if unusable."""
        if u.lines is None:
            u.lines = False
            if u.has_stmt and u.line_offset == 0 and self._lines0 is not None:
                u.lines = self._lines0
            elif u.has_stmt:
                try:
                    u.lines = _decode_lines(self, u)
                except DwarfError as exc:
                    self.warn(u.offset, f"line program: {exc}; the unit is left out")
                if u.lines and u.line_offset == 0:
                    self._lines0 = u.lines
        return u.lines or None

    def unit_ok(self, u: _Unit) -> bool:
        """Line table decoded and DIEs scanned (bfd comp_unit_maybe_decode_line_info)."""
        if u.error is None:
            table = self.line_table(u)
            u.error = "no line table"
            if table is not None:
                try:
                    if u.first_child < u.end:
                        _scan_unit(self, u, table)
                    u.error = ""
                except DwarfError as exc:
                    u.error, u.funcs, u.vars = str(exc), [], []
                    self.warn(u.offset, f"{exc}; the unit is left out")
        return u.error == ""

    # attribute values (bfd read_attribute_value)

    def read_value(self, data: bytes, u: _Unit, form: int, ic: int, pos: int,
                   end: int) -> tuple[Any, int]:
        """One attribute value; DwarfError where bfd returns NULL."""
        if pos >= end and form != F_FLAG_PRESENT:
            raise DwarfError("attribute runs past the end of its unit")
        n = _fixed_size(form, *u.sizes)
        if n >= 0:
            if form in (F_FLAG_PRESENT, F_IMPLICIT_CONST):
                return (1 if form == F_FLAG_PRESENT else ic), pos
            if form == F_DATA16:
                return _block(data, pos, end, 16)
            if n > end - pos and form in (F_STRP, F_LINE_STRP, F_GNU_STRP_ALT):
                return None, end
            val, pos = _fixed(data, pos, end, n)
        elif form == F_STRING:
            return _cstr(data, pos, end)
        elif form in (F_BLOCK, F_EXPRLOC) or form in BLOCK_SIZE:
            if form in BLOCK_SIZE:
                size, pos = _fixed(data, pos, end, BLOCK_SIZE[form])
            else:
                size, pos = _uleb(data, pos, end)
            return _block(data, pos, end, size)
        elif form == F_SDATA:
            return _sleb(data, pos, end)
        elif form in (F_UDATA, 0x15, 0x22, 0x23, F_STRX, F_ADDRX):  # +ref_udata, loc/rnglistx
            val, pos = _uleb(data, pos, end)
        elif form == F_INDIRECT:
            form, pos, ic = _indirect(data, pos, end, ic)
            return self.read_value(data, u, form, ic, pos, end)
        else:
            raise DwarfError(f"unhandled attribute form {form:#x}")
        if form == F_STRP or form == F_LINE_STRP:
            return _string_at(self.sec.get("str" if form == F_STRP else "line_str"), val), pos
        # .gnu_debugaltlink strings and DW_FORM_strx (split DWARF, which GCC does not
        # emit otherwise) are not followed; DW_FORM_addrx stays an index.
        return (None if form in STR_FORMS else val), pos

    def values(self, u: _Unit, abbrev: _Abbrev, pos: int, end: int, collect: bool = True,
               partial: bool = False) -> tuple[list[tuple[int, int, Any]], int]:
        """(name, form, value) of the WANTED attributes of one DIE and where the next starts.

        An attribute starting at or past the unit's end is an error, as in bfd;
        with ``partial`` the values read before it are returned instead.
        """
        plan = abbrev.plans.get(u.sizes) or _plan(abbrev, u.sizes)
        if not collect and plan[0][3] >= 0 and pos + plan[0][3] < end:
            return [], pos + plan[0][3]  # every attribute has a fixed size: one step
        data, strings = self.info, self._strings
        out: list[tuple[int, int, Any]] = []
        for name, form, ic, op, n, wanted in plan[1:]:
            keep = collect and wanted
            if pos >= end and form != F_FLAG_PRESENT:
                if partial:
                    break
                raise DwarfError("attribute runs past the end of its unit")
            if op == OP_FIXED and pos + n <= end:
                if keep:
                    out.append((name, form, int.from_bytes(data[pos:pos + n], "little")))
                pos += n
            elif op == OP_STRP and pos + n <= end:
                if keep:
                    off = int.from_bytes(data[pos:pos + n], "little")
                    k = off if form == F_STRP else -1 - off
                    text = strings.get(k, "")
                    if text == "":
                        text = strings[k] = _string_at(
                            self.sec.get("str" if form == F_STRP else "line_str"), off)
                    out.append((name, form, text))
                pos += n
            elif op == OP_CONST:
                if keep:
                    out.append((name, form, ic))
            elif op == OP_ULEB or op == OP_BLOCK:
                number = data[pos]
                if number < 0x80:
                    pos += 1
                else:
                    number, pos = _uleb(data, pos, end)
                if op == OP_BLOCK:
                    block, pos = _block(data, pos, end, number)
                    if keep:
                        out.append((name, form, block))
                elif keep:
                    out.append((name, form, number))
            else:
                try:
                    if form == F_INDIRECT:
                        form, pos, ic = _indirect(data, pos, end, ic)
                    val, pos = self.read_value(data, u, form, ic, pos, end)
                except DwarfError:
                    if partial:
                        break
                    raise
                if keep:
                    out.append((name, form, val))
        return out, pos

    # range lists (DWARF 4, 2.17.3 .debug_ranges; DWARF 5, 2.17.3 .debug_rnglists)

    def read_ranges(self, u: _Unit, aranges: list[list[int]], offset: int) -> None:
        width = u.addr_size
        if u.version <= 4:
            data = self.sec.get("ranges")
            if data is None or offset > len(data):
                raise DwarfError("range list outside .debug_ranges")
            pos, end, base = offset, len(data), u.base
            select = M64 if width == 8 else -1  # bfd tests for -1UL: never with 32-bit addresses
            while True:
                if 2 * width > end - pos:
                    raise DwarfError("range list runs past the end of .debug_ranges")
                low, pos = _fixed(data, pos, end, width)
                high, pos = _fixed(data, pos, end, width)
                if low == 0 and high == 0:
                    return
                if low == select and high != select:
                    base = high
                else:
                    _arange_add(aranges, (base + low) & M64, (base + high) & M64)
        data = self.sec.get("rnglists")
        if data is None:
            raise DwarfError("no .debug_rnglists section")
        pos, end, base = offset, len(data), u.base
        while True:
            if pos >= end:
                raise DwarfError("range list runs past the end of .debug_rnglists")
            kind = data[pos]
            pos += 1
            if kind == 0:  # DW_RLE_end_of_list
                return
            if kind == 4:  # DW_RLE_offset_pair: two ULEB128s, usually of one or two bytes
                if (pos + 4 <= end and data[pos + 1] < 0x80 <= data[pos]
                        and data[pos + 3] < 0x80 <= data[pos + 2]):
                    a = (data[pos] & 0x7F) | data[pos + 1] << 7
                    b = (data[pos + 2] & 0x7F) | data[pos + 3] << 7
                    pos += 4
                else:
                    a, pos = _uleb(data, pos, end)
                    b, pos = _uleb(data, pos, end)
                _arange_add(aranges, (base + a) & M64, (base + b) & M64)
                continue
            if kind not in (5, 6, 7) or (2 if kind == 6 else 1) * width > end - pos:
                raise DwarfError(f"range list entry {kind:#x} is not supported or truncated")
            low, pos = _fixed(data, pos, end, width)
            if kind == 5:  # DW_RLE_base_address
                base = low
            elif kind == 6:  # DW_RLE_start_end
                high, pos = _fixed(data, pos, end, width)
                _arange_add(aranges, low, high)
            else:  # DW_RLE_start_length
                length, pos = _uleb(data, pos, end)
                _arange_add(aranges, low, (low + length) & M64)


def _indirect(data: bytes, pos: int, end: int, ic: int) -> tuple[int, int, int]:
    form, pos = _uleb(data, pos, end)
    if form == F_IMPLICIT_CONST:
        ic, pos = _sleb(data, pos, end)
    return form & M32, pos, ic


def _plan(abbrev: _Abbrev, sizes: tuple[int, int, int]) -> list[tuple[int, int, int, int, int, bool]]:
    """How to read each attribute of ``abbrev`` in a unit of these sizes; the first
    entry holds the DIE's total size when every attribute has a fixed size (else -1)."""
    plan = []
    for name, form, ic in abbrev.attrs:
        n = _fixed_size(form, *sizes)
        if form in (F_STRP, F_LINE_STRP):
            op = OP_STRP
        elif form in (F_FLAG_PRESENT, F_IMPLICIT_CONST):
            op, ic = OP_CONST, (1 if form == F_FLAG_PRESENT else ic)
        elif n > 0 and form not in STRX_FORMS and form not in ADDRX_FORMS and form != F_DATA16 \
                and form != F_GNU_STRP_ALT:
            op = OP_FIXED
        elif form == F_UDATA or form == 0x15:
            op = OP_ULEB
        elif form == F_EXPRLOC or form == F_BLOCK:
            op = OP_BLOCK
        else:
            op = OP_OTHER
        plan.append((name, form, ic, op, n, name in WANTED))
    total = -1 if any(step[4] < 0 for step in plan) else sum(step[4] for step in plan)
    abbrev.plans[sizes] = plan = [(0, 0, 0, total, 0, False), *plan]
    return plan


# -- line number programs (DWARF 5, 6.2; bfd decode_line_info) ---------------------------


def _decode_lines(dwarf: DwarfInfo, u: _Unit) -> _LineTable:
    data = dwarf.sec.get("line")
    if data is None:
        raise DwarfError("no .debug_line section")
    if (u.line_offset != 0 and u.line_offset >= len(data)) or len(data) < 16:
        raise DwarfError(f"line program offset {u.line_offset:#x} is outside .debug_line")
    pos, end = u.line_offset, len(data)
    total, pos = _fixed(data, pos, end, 4)
    offset_size = 4
    if total == 0xFFFFFFFF or (total == 0 and u.addr_size == 8):
        total, pos = _fixed(data, pos, end, 8 if total else 4)
        offset_size = 8
    if total > end - pos:
        raise DwarfError("line program runs past the end of .debug_line")
    end = pos + total
    version, pos = _fixed(data, pos, end, 2)
    if not 2 <= version <= 5:
        raise DwarfError(f"line program version {version} is not supported")
    if pos + offset_size + (8 if version >= 5 else 6 if version >= 4 else 5) >= end:
        raise DwarfError("line program header is truncated")
    if version >= 5:  # address_size, segment_selector_size
        if data[pos + 1]:
            raise DwarfError("line program uses segment selectors")
        pos += 2
    pos += offset_size  # header_length: bfd reads the tables that follow instead
    min_len, max_ops = data[pos], (data[pos + 1] if version >= 4 else 1)
    pos += 2 if version >= 4 else 1
    if max_ops == 0:
        raise DwarfError("line program has maximum_operations_per_instruction 0")
    line_base = data[pos + 1] - 256 * (data[pos + 1] >= 128)
    line_range, opcode_base = data[pos + 2], data[pos + 3]
    pos += 4
    if pos + opcode_base - 1 >= end:
        raise DwarfError("line program opcode lengths are truncated")
    lengths = [1, *data[pos: pos + max(opcode_base - 1, 0)]]
    pos += max(opcode_base - 1, 0)
    table = _LineTable(u.comp_dir)
    if version >= 5:  # DWARF 5, 6.2.4.1: described directory and file entries
        pos = _entries(dwarf, u, data, pos, end, lambda name, d: table.dirs.append(name))
        pos = _entries(dwarf, u, data, pos, end, table.add_file)
        table.v5 = True
    else:
        while (name := _cstr(data, pos, end))[0] is not None:
            table.dirs.append(name[0])
            pos = name[1]
        pos = name[1]
        while (name := _cstr(data, pos, end))[0] is not None:
            directory, pos = _uleb(data, name[1], end)
            _time, pos = _uleb(data, pos, end)
            _size, pos = _uleb(data, pos, end)
            table.add_file(name[0], directory)
        pos = name[1]
    seqs = _program(data, pos, end, table, u.addr_size, min_len, max_ops, line_base,
                    line_range, opcode_base, lengths)
    table.seqs = _sort_sequences(seqs)
    return table


def _entries(dwarf: DwarfInfo, u: _Unit, data: bytes, pos: int, end: int, add: Any) -> int:
    """bfd read_formatted_entries: only string paths and data directory indexes count."""
    count, pos = _fixed(data, pos, end, 1)
    formats = pos
    for _ in range(2 * count):
        _v, pos = _uleb(data, pos, end)
    entries, pos = _uleb(data, pos, end)
    if (count == 0 and entries) or entries > end - pos:
        raise DwarfError("line program file table is malformed")
    for _ in range(entries):
        fp, name, directory = formats, None, 0
        for _ in range(count):
            kind, fp = _uleb(data, fp, end)
            if not LNCT_PATH <= kind <= LNCT_MD5:
                raise DwarfError(f"unknown line table content type {kind}")
            form, fp = _uleb(data, fp, end)
            val, pos = dwarf.read_value(data, u, form & M32, 0, pos, end)
            if kind == LNCT_PATH and form in (F_STRING, F_LINE_STRP, *STRX_FORMS):
                name = val
            elif kind == LNCT_DIRECTORY_INDEX and form in (0x0B, 0x05, 0x06, 0x07, F_UDATA):
                directory = val
        add(name, directory)
    return pos


def _program(data: bytes, pos: int, end: int, table: _LineTable, addr_size: int, min_len: int,
             max_ops: int, line_base: int, line_range: int, opcode_base: int,
             lengths: list[int]) -> list[list[Any]]:
    """Run the line number state machine (DWARF 5, 6.2.2) into bfd's sequences."""
    seqs: list[list[Any]] = []
    rows: list[tuple[Any, ...]] = []

    def add(row: tuple[Any, ...]) -> None:  # bfd add_line_info: the cases after the common two
        nonlocal rows
        if rows and rows[-1][:2] == row[:2] and rows[-1][5] == row[5]:
            rows[-1] = row  # the last row of an address is kept (bfd, PR ld/4986)
        elif not rows or rows[-1][5]:
            rows = [row]
            seqs.append([row[0], rows])
        elif row[5] or _after(row, rows[-1]):
            rows.append(row)
        else:  # out of order: bfd keeps rows sorted by (address, op_index)
            j = len(rows)
            while j > 0 and not _after(row, rows[j - 1]):
                j -= 1
            rows.insert(j, row)
            seqs[-1][0] = min(seqs[-1][0], row[0])

    fast = max_ops == 1 and line_range != 0
    step_addr = [(op - opcode_base) // line_range * min_len if fast and op >= opcode_base else 0
                 for op in range(256)]
    step_line = [line_base + (op - opcode_base) % line_range if fast and op >= opcode_base else 0
                 for op in range(256)]
    while pos < end:
        address = op_index = discriminator = 0
        line, done = 1, False
        filename = table.filename(0 if table.v5 else 1) if table.files else None
        while not done and pos < end:
            op = data[pos]
            pos += 1
            if op >= opcode_base:  # special opcode (6.2.5.1)
                if fast:
                    address += step_addr[op]
                    line = (line + step_line[op]) & M32
                    address &= M64
                elif line_range == 0:
                    raise DwarfError("line program has line_range 0")
                else:
                    step = op_index + (op - opcode_base) // line_range
                    address = (address + step // max_ops * min_len) & M64
                    op_index = step % max_ops & 0xFF
                    line = (line + line_base + (op - opcode_base) % line_range) & M32
            elif op == LNS_SET_COLUMN:
                if pos < end and data[pos] < 0x80:
                    pos += 1
                else:
                    _column, pos = _uleb(data, pos, end)
                continue
            elif op == LNS_NEGATE_STMT or op == LNS_SET_BASIC_BLOCK:
                continue  # bfd keeps is_stmt false rows too
            elif op == LNS_ADVANCE_LINE:
                if pos < end and data[pos] < 0x80:
                    delta = data[pos] - (128 if data[pos] & 0x40 else 0)
                    pos += 1
                else:
                    delta, pos = _sleb(data, pos, end)
                line = (line + delta) & M32
                continue
            elif op == LNS_SET_FILE:
                if pos < end and data[pos] < 0x80:
                    filename = table.filename(data[pos])
                    pos += 1
                else:
                    number, pos = _uleb(data, pos, end)
                    filename = table.filename(number)
                continue
            elif op == 0:  # extended opcode (6.2.5.3)
                length, pos = _uleb(data, pos, end)
                ext, pos = _fixed(data, pos, end, 1)
                if ext == LNE_END_SEQUENCE:
                    done = True
                    add((address, op_index, filename, line, discriminator, True))
                    discriminator = 0
                elif ext == LNE_SET_ADDRESS:
                    address, pos = _fixed(data, pos, end, addr_size)
                    op_index = 0
                elif ext == LNE_DEFINE_FILE:
                    name, pos = _cstr(data, pos, end)
                    directory, pos = _uleb(data, pos, end)
                    _time, pos = _uleb(data, pos, end)
                    _size, pos = _uleb(data, pos, end)
                    table.add_file(name, directory)
                elif ext == LNE_SET_DISCRIMINATOR:
                    discriminator, pos = _uleb(data, pos, end)
                    discriminator &= M32
                elif ext == LNE_HP_SOURCE_FILE_CORRELATION:
                    pos += (length - 1) & M32
                else:
                    raise DwarfError(f"unknown extended line opcode {ext:#x}")
                continue
            elif op == LNS_ADVANCE_PC:
                step, pos = _uleb(data, pos, end)
                if max_ops == 1:
                    address = (address + min_len * step) & M64
                else:  # bfd assigns here instead of adding
                    address = ((op_index + step) // max_ops * min_len) & M64
                    op_index = (op_index + step) % max_ops & 0xFF
                continue
            elif op == LNS_CONST_ADD_PC:
                if line_range == 0:
                    raise DwarfError("line program has line_range 0")
                step = op_index + (255 - opcode_base) // line_range
                address = (address + min_len * (step // max_ops)) & M64
                op_index = step % max_ops & 0xFF
                continue
            elif op == LNS_FIXED_ADVANCE_PC:
                step, pos = _fixed(data, pos, end, 2)
                address, op_index = (address + step) & M64, 0
                continue
            elif op != LNS_COPY:  # an opcode this reader does not know: skip its operands
                for _ in range(lengths[op]):
                    _v, pos = _uleb(data, pos, end)
                continue
            # a special opcode or DW_LNS_copy appends a row
            row = (address, op_index, filename, line, discriminator, False)
            if rows and not rows[-1][5] and rows[-1][0] < address:
                rows.append(row)
            elif rows and not rows[-1][5] and rows[-1][0] == address and rows[-1][1] == op_index:
                rows[-1] = row  # the last row of an address is kept (bfd, PR ld/4986)
            else:
                add(row)
            discriminator = 0
    return seqs


def _after(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    return row[0] > other[0] or (row[0] == other[0] and row[1] > other[1])


def _sort_sequences(seqs: list[list[Any]]) -> list[list[Any]]:
    """bfd sort_line_sequences: by start, longest first; trim overlaps, drop nested ones."""
    newest = seqs[::-1]
    order = sorted(range(len(newest)), key=lambda i: (
        newest[i][0], -newest[i][1][-1][0], -newest[i][1][-1][1], i))
    kept: list[list[Any]] = []
    high = None
    for i in order:
        low, rows = newest[i]
        if high is not None and low < high:
            if rows[-1][0] <= high:
                continue
            low = high
        high = rows[-1][0]
        kept.append([low, rows])
    return kept


# -- the DIE tree (DWARF 5, 3.3 and 3.3.8; bfd scan_unit_for_symbols) --------------------


def _scan_unit(dwarf: DwarfInfo, u: _Unit, lines: _LineTable) -> None:
    """Collect the unit's function entries (with their callers) and static variables."""
    data, end, pos, abbrevs, sizes = dwarf.info, u.end, u.first_child, u.abbrevs, u.sizes
    plain = u.lang in PLAIN_LANGS
    nested: list[_Func | None] = [None]
    level = 0
    while level >= 0:
        if pos >= end:
            raise DwarfError("DIE tree runs past the end of the unit")
        code = data[pos]
        if code < 0x80:
            pos += 1
        else:
            code, pos = _uleb(data, pos, end)
            code &= M32
        if code == 0:
            level -= 1
            continue
        abbrev = abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(f"DIE uses unknown abbreviation {code}")
        if abbrev.tag in FUNC_TAGS:
            caller = None
            if abbrev.tag == TAG_INLINED:  # the innermost enclosing function entry
                caller = next((f for f in reversed(nested[:level]) if f is not None), None)
            func = _Func(abbrev.tag, len(u.funcs), caller)
            u.funcs.append(func)
            nested[level] = func
            values, pos = dwarf.values(u, abbrev, pos, end)
            _function(dwarf, u, func, values, lines, plain)
        else:
            nested[level] = None
            if abbrev.tag in VAR_TAGS:
                values, pos = dwarf.values(u, abbrev, pos, end)
                _variable(dwarf, u, values, lines)
            else:
                plan = abbrev.plans.get(sizes) or _plan(abbrev, sizes)
                if 0 <= plan[0][3] and pos + plan[0][3] < end:
                    pos += plan[0][3]  # every attribute has a fixed size: one step
                else:
                    pos = dwarf.values(u, abbrev, pos, end, collect=False)[1]
        if abbrev.children:
            level += 1
            if level == len(nested):
                nested.append(None)
            nested[level] = None


def _function(dwarf: DwarfInfo, u: _Unit, f: _Func, values: list[tuple[int, int, Any]],
              lines: _LineTable, plain: bool) -> None:
    low = high = 0
    relative = False
    for name, form, val in values:
        if form not in INT_FORMS:
            if form in STR_FORMS and (name in AT_LINKAGE_NAMES or name == AT_NAME and f.name is None):
                f.name, f.linkage = val, f.linkage or plain or name != AT_NAME
        elif name == AT_LOW_PC:
            low = val
        elif name == AT_HIGH_PC:
            high, relative = val, form != F_ADDR
        elif name == AT_CALL_FILE:
            f.call_file = lines.filename(val)
        elif name == AT_CALL_LINE:
            f.call_line = val & M32
        elif name == AT_ABSTRACT_ORIGIN or name == AT_SPECIFICATION:
            _abstract_instance(dwarf, u, form, val, 0, f)
        elif name == AT_RANGES:
            dwarf.read_ranges(u, f.aranges, val)
        elif name == AT_DECL_FILE:
            f.file = lines.filename(val)
        elif name == AT_DECL_LINE:
            f.line = val & M32
    if relative:
        high = (high + low) & M64
    if high != 0:
        _arange_add(f.aranges, low, high)


def _variable(dwarf: DwarfInfo, u: _Unit, values: list[tuple[int, int, Any]],
              lines: _LineTable) -> None:
    v = _Var()
    for name, form, val in values:
        is_int = form in INT_FORMS
        if name == AT_SPECIFICATION and is_int and val:
            try:
                _abstract_instance(dwarf, u, form, val, 0, v)
            except DwarfError:
                pass  # bfd reports it and reads on
        elif name == AT_NAME and form in STR_FORMS:
            v.name = val
        elif name == AT_DECL_FILE and is_int:
            v.file = lines.filename(val)
        elif name == AT_DECL_LINE and is_int:
            v.line = val & M32
        elif name == AT_EXTERNAL and is_int and val:
            v.stack = False
        elif name == AT_LOCATION and val and (form in BLOCK_SIZE or form in (F_BLOCK, F_EXPRLOC)) \
                and val[0] == DW_OP_ADDR:  # DWARF 5, 2.5.1.1: a static address
            v.stack = False
            if len(val) == u.addr_size + 1:
                v.addr = int.from_bytes(val[1:], "little")
    if not v.stack:
        u.vars.append(v)


def _abstract_instance(dwarf: DwarfInfo, u: _Unit, form: int, ref: int, depth: int, into: Any) -> None:
    """Name and declaration through DW_AT_abstract_origin/specification (DWARF 5, 3.3.8.1)."""
    if depth == 100:
        raise DwarfError("abstract instance recursion")
    if form == F_GNU_REF_ALT:
        raise DwarfError("reference into a .gnu_debugaltlink file")
    if form == F_REF_ADDR:
        if ref == 0:
            return
        target = next((t for t in dwarf.units if t.offset <= ref < t.end), None)
        if target is None:
            raise DwarfError(f"DW_FORM_ref_addr {ref:#x} is outside every unit")
        pos = ref
    else:
        if ref == 0 or ref >= u.end - u.offset:
            raise DwarfError(f"abstract instance reference {ref:#x} is outside its unit")
        target, pos = u, u.offset + ref
    values = dwarf._origins.get(pos)  # inlined copies of a function share its origin
    if values is None:
        code, start = _uleb(dwarf.info, pos, target.end)
        abbrev = target.abbrevs.get(code & M32)
        if abbrev is None and code & M32:
            raise DwarfError(f"abstract instance uses unknown abbreviation {code}")
        values = dwarf._origins[pos] = [] if abbrev is None else dwarf.values(
            target, abbrev, start, target.end, partial=True)[0]
    for name, form2, val in values:
        if name == AT_NAME:
            if into.name is None and form2 in STR_FORMS:
                into.name = val
                into.linkage = into.linkage or target.lang in PLAIN_LANGS
        elif name == AT_SPECIFICATION and form2 in INT_FORMS:
            _abstract_instance(dwarf, target, form2, val, depth + 1, into)
        elif name in AT_LINKAGE_NAMES and form2 in STR_FORMS:
            into.name, into.linkage = val, True
        elif name == AT_DECL_FILE:
            table = dwarf.line_table(target)
            if table is None:
                raise DwarfError("declaration file in a unit without a line table")
            if form2 in INT_FORMS:
                into.file = table.filename(val)
        elif name == AT_DECL_LINE and form2 in INT_FORMS:
            into.line = val & M32
