"""Symbolize code addresses: function, file:line and inline chain, as addr2line prints them.

:class:`Symbolizer` answers ``lookup(address)`` with the frames that
``arm-none-eabi-addr2line -f -i -e ELF ADDR`` (GNU binutils 2.40) prints: the
innermost inlined function first, each outer frame at the call site of the
function inlined into it (DWARF 5, 3.3.8), ``??`` where addr2line has them.
:func:`format_addr2line` prints frames byte for byte like addr2line;
:func:`to_json` gives the ``--json`` shape; :func:`symbolize_command` is
``crashcart symbolize``.

The answers come from an :class:`AddressIndex` of sorted address intervals.
:func:`build_index` makes it once per build, running addr2line's lookup over
every address (the DWARF side is :mod:`collector.addrindex`); it is cached
under ``$XDG_CACHE_HOME/crashcart/addrindex/`` keyed by the GNU build ID and
the file's sha256, as a CRC-checked ``marshal`` of ``array('I')`` buffers and
strings.  A cached lookup imports neither pyelftools nor the DWARF reader; a
corrupt, truncated or foreign cache file is ignored and rebuilt.

Differences from addr2line, on purpose: address text that is not hexadecimal
is refused (addr2line reads ``zz`` as 0), so are addresses above 32 bits
(addr2line drops the upper bits), and blank input lines are skipped.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import marshal
import multiprocessing
import os
import struct
import sys
import threading
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from heapq import heappop, heappush
from itertools import accumulate, pairwise, repeat
from itertools import chain as concat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crashcart.errors import CrashcartError, InputError

if TYPE_CHECKING:
    from collector.elf import ElfImage

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"CCADDRIX"
ADDRESS_MAX = 0xFFFFFFFF
NOT_FOUND_TEXT = "??\n??:0\n"
DENSE_MAX = 64 << 20  # code spans up to 64 MiB get a per-address table
M64, LIMIT = (1 << 64) - 1, 1 << 32  # addresses are 32-bit (addr2line masks to the ELF class)
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
TAG_INLINED_SUBROUTINE = 0x1D
_U32 = "I" if array("I").itemsize == 4 else "L"


@dataclass(frozen=True)
class Frame:
    """One level of the answer for an address (addr2line prints two lines for it).

    ``function`` and ``file`` are None where addr2line prints ``??``; ``line``
    is None where it prints ``?``.  ``inlined`` is true for every frame but the
    outermost: that frame's code was inlined into the next one.  The
    ``discriminator`` (DWARF 5, 6.2.2) is the innermost row's; addr2line
    prints it after every frame's line.
    """

    function: str | None
    file: str | None
    line: int | None
    inlined: bool
    discriminator: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "file": self.file, "line": self.line,
                "inlined": self.inlined}


# -- the index and its file format ---------------------------------------------------


class AddressIndex:
    """Sorted address intervals of one build and the answer for each.

    ``starts[i]`` is the first address of interval i (the intervals cover
    0..2**32-1), ``answer_ids[i]`` its answer; answer 0 is "not found".  An
    answer is five numbers in ``answers``: name, file, line, discriminator and
    caller chain; a chain is (name, file, line) triples in ``chain``, from
    ``chain_starts[c]`` to ``chain_starts[c + 1]``.  Names and files index
    ``strings``; string 0 stands for "unknown".  ``dense`` repeats the answer
    of every address (or halfword, ``dense_shift`` 1) of the code from
    ``dense_base`` on, so that looking up code addresses needs no bisection.
    """

    def __init__(self, starts: array, answer_ids: array, answers: array, chain_starts: array,
                 chain: array, strings: tuple[str, ...], warnings: tuple[str, ...],
                 key: tuple[str, str], dense_base: int = 0, dense_shift: int = 0,
                 dense: array | None = None, chain_texts: tuple[str, ...] | None = None) -> None:
        self.starts, self.answer_ids, self.answers = starts, answer_ids, answers
        self.chain_starts, self.chain, self.strings = chain_starts, chain, strings
        self.warnings, self.key = warnings, key
        self.dense_base, self.dense_shift = dense_base, dense_shift
        self.dense = array(_U32) if dense is None else dense
        self._frames: dict[int, list[Frame]] = {}
        self._text: dict[int, str] = {0: NOT_FOUND_TEXT}
        self._callers: dict[tuple[int, int], str] = {}
        self._heads: dict[int, str] = {}
        if chain_texts is None:  # the callers' lines, rendered once when the index is made
            chain_texts = tuple(self._render_callers(c, 0) for c in range(len(chain_starts) - 1))
        self.chain_texts = chain_texts

    @classmethod
    def from_answers(cls, starts: list[int], answers: list[Any], *, warnings: tuple[str, ...],
                     key: tuple[str, str], code: tuple[int, int] | None = None) -> AddressIndex:
        """Pack the builder's output: ``answers[i]`` is None (not found) or
        ``(name, file, line, discriminator, ((caller, call_file, call_line), ...))``
        for the addresses from ``starts[i]`` on; ``code`` is the span to make dense."""
        strings: dict[str | None, int] = {None: 0}
        chains: dict[Any, int] = {(): 0}
        table, chain, chain_starts = array(_U32, [0] * 5), array(_U32), array(_U32, [0, 0])

        def sid(text: str | None) -> int:
            n = strings.get(text)
            if n is None:
                n = strings[text] = len(strings)
            return n

        unique: dict[Any, int] = {None: 0}
        ids = array(_U32, [unique.setdefault(answer, len(unique)) for answer in answers])
        for answer in list(unique)[1:]:
            name, file, line, discriminator, callers = answer
            c = chains.get(callers)
            if c is None:
                c = chains[callers] = len(chains)
                for caller in callers:
                    chain.extend((sid(caller[0]), sid(caller[1]), caller[2] & ADDRESS_MAX))
                chain_starts.append(len(chain) // 3)
            table.extend((sid(name), sid(file), line & ADDRESS_MAX, discriminator & ADDRESS_MAX, c))
        names = tuple("" if s is None else s for s in strings)
        index = cls(array(_U32, starts), ids, table, chain_starts, chain, names, warnings, key)
        if code is not None and 0 < code[1] - code[0] <= DENSE_MAX:
            index._make_dense(*code)
        return index

    def _make_dense(self, lo: int, hi: int) -> None:
        starts, ids = self.starts, self.answer_ids
        first, last = bisect_right(starts, lo) - 1, bisect_right(starts, hi - 1)
        bounds = [lo, *starts[first + 1:last], hi]
        shift = 1 if all(b % 2 == 0 for b in bounds) else 0
        counts = [(b - a) >> shift for a, b in pairwise(bounds)]
        dense = array(_U32, concat.from_iterable(map(repeat, ids[first:last], counts)))
        self.dense_base, self.dense_shift, self.dense = lo, shift, dense

    # lookups

    def answer_ids_for(self, addresses: Iterable[int]) -> list[int]:
        """Answer ids of many addresses (one list comprehension when all are in the code)."""
        values = addresses if isinstance(addresses, list) else list(addresses)
        if not values:
            return []
        low, high = min(values), max(values)
        base, shift, dense = self.dense_base, self.dense_shift, self.dense
        if low >= base and (high - base) >> shift < len(dense) and high <= ADDRESS_MAX:
            return [dense[(a - base) >> shift] for a in values]
        return [self.answer_id(_check(a)) for a in values]

    def answer_id(self, address: int) -> int:
        offset = (address - self.dense_base) >> self.dense_shift
        if 0 <= offset < len(self.dense) and address >= self.dense_base:
            return self.dense[offset]
        return self.answer_ids[bisect_right(self.starts, address) - 1]

    def frames(self, answer: int) -> list[Frame]:
        cached = self._frames.get(answer)
        if cached is None:
            cached = self._frames[answer] = self._decode(answer)
        return cached

    def _render(self, answer: int) -> str:
        """format_frames(self.frames(answer)) without building the frames (the hot path)."""
        t, k = self.answers, 5 * answer
        line, discriminator, c = t[k + 2], t[k + 3], t[k + 4]
        where = (f"{line} (discriminator {discriminator})\n" if discriminator else f"{line}\n"
                 ) if line else "?\n"
        head = self._head(t[k], t[k + 1]) + where
        if c == 0:
            return head
        if not discriminator:
            return head + self.chain_texts[c]
        callers = self._callers.get((c, discriminator))
        if callers is None:
            callers = self._callers[(c, discriminator)] = self._render_callers(c, discriminator)
        return head + callers

    def _render_callers(self, c: int, discriminator: int) -> str:
        out = []
        chain = self.chain
        for i in range(3 * self.chain_starts[c], 3 * self.chain_starts[c + 1], 3):
            line = chain[i + 2]
            where = (f"{line} (discriminator {discriminator})\n" if discriminator
                     else f"{line}\n") if line else "?\n"
            out.append(self._head(chain[i], chain[i + 1]) + where)
        return "".join(out)

    def _head(self, name: int, file: int) -> str:
        """ "function\nfile:" of one frame (shared by every line of a function)."""
        key = (name << 32) | file
        head = self._heads.get(key)
        if head is None:
            s = self.strings
            head = self._heads[key] = f"{s[name] if name else '??'}\n{s[file] if file else '??'}:"
        return head

    def _decode(self, answer: int) -> list[Frame]:
        if answer == 0:
            return []
        s, t = self.strings, self.answers
        name, file, line, discriminator, c = t[5 * answer: 5 * answer + 5]
        callers = self.chain[3 * self.chain_starts[c]: 3 * self.chain_starts[c + 1]]
        frames = [Frame(s[name] if name else None, s[file] if file else None, line or None,
                        bool(callers), discriminator)]
        for i in range(0, len(callers), 3):
            name, file, line = callers[i: i + 3]
            frames.append(Frame(s[name] if name else None, s[file] if file else None,
                                line or None, i + 3 < len(callers)))
        return frames

    # the cache file: MAGIC, CRC-32 of the rest, then a marshal of plain values

    def to_bytes(self) -> bytes:
        payload = marshal.dumps((FORMAT_VERSION, sys.byteorder, self.key, self.warnings,
                                 self.dense_base, self.dense_shift, self.starts.tobytes(),
                                 self.answer_ids.tobytes(), self.answers.tobytes(),
                                 self.chain_starts.tobytes(), self.chain.tobytes(),
                                 self.dense.tobytes(), self.strings,
                                 zlib.compress("\0".join(self.chain_texts).encode(
                                     "utf-8", "surrogateescape"), 1)))
        return MAGIC + struct.pack("<I", zlib.crc32(payload)) + payload

    @classmethod
    def from_bytes(cls, blob: bytes, key: tuple[str, str]) -> AddressIndex | None:
        """The index in ``blob`` if it is intact, current and for ``key``; else None."""
        if blob[:8] != MAGIC or len(blob) < 12:
            return None
        payload = memoryview(blob)[12:]
        if struct.unpack_from("<I", blob, 8)[0] != zlib.crc32(payload):
            return None
        try:
            (version, order, stored_key, warnings, dense_base, dense_shift, *buffers,
             strings, packed_chains) = marshal.loads(payload)
            if version != FORMAT_VERSION or order != sys.byteorder or tuple(stored_key) != key:
                return None
            chain_texts = tuple(zlib.decompress(packed_chains).decode(
                "utf-8", "surrogateescape").split("\0"))
            arrays = []
            for raw in buffers:
                a = array(_U32)
                a.frombytes(raw)
                arrays.append(a)
            starts, ids, answers, chain_starts, chain, dense = arrays
            # The CRC stands for the values; these checks are for the shape.
            if (len(starts) != len(ids) or not starts or starts[0] != 0 or len(answers) % 5
                    or not answers or len(chain) % 3 or dense_shift not in (0, 1)
                    or not 0 <= dense_base <= ADDRESS_MAX or chain_starts[-1] * 3 != len(chain)
                    or not isinstance(strings, tuple) or not strings
                    or len(chain_texts) != len(chain_starts) - 1):
                return None
            return cls(starts, ids, answers, chain_starts, chain, tuple(strings),
                       tuple(warnings), key, dense_base, dense_shift, dense, chain_texts)
        except (ValueError, TypeError, EOFError, IndexError, zlib.error, UnicodeError):
            return None


def format_frames(frames: Sequence[Frame]) -> str:
    """addr2line -f -i output for one address (binutils/addr2line.c translate_addresses)."""
    if not frames:
        return NOT_FOUND_TEXT
    discriminator = frames[0].discriminator
    out = []
    for f in frames:
        file = "??" if f.file is None else f.file
        if f.line is None:
            where = f"{file}:?"
        elif discriminator:
            where = f"{file}:{f.line} (discriminator {discriminator})"
        else:
            where = f"{file}:{f.line}"
        out.append(f"{f.function or '??'}\n{where}\n")
    return "".join(out)


def format_addr2line(results: Iterable[Sequence[Frame]]) -> str:
    """The text addr2line -f -i prints for a run of addresses."""
    return "".join(format_frames(frames) for frames in results)


def to_json(addresses: Sequence[int], results: Sequence[Sequence[Frame]]) -> list[dict[str, Any]]:
    """``--json`` shape: ``[{"address": "0x...", "frames": [{function, file, line, inlined}]}]``."""
    return [{"address": f"0x{a:08x}", "frames": [f.to_json() for f in frames]}
            for a, frames in zip(addresses, results)]


# -- the ELF container, read without pyelftools -----------------------------------------


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    kind: int
    flags: int
    address: int
    size: int
    offset: int
    link: int


def read_sections(data: bytes, path: str | Path | None = None) -> list[Section]:
    """Section headers of an ELF32 little-endian file (System V ABI, 4.1 Sections)."""
    try:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
        if shoff == 0:
            return []
        if shnum == 0:  # extended numbering: the count is in section 0
            shnum = struct.unpack_from("<I", data, shoff + 0x14)[0]
        if shstrndx == 0xFFFF:
            shstrndx = struct.unpack_from("<I", data, shoff + 0x18)[0]
        if shentsize < 40 or shoff + shnum * shentsize > len(data):
            raise InputError(f"{shnum} section headers of {shentsize} bytes at offset {shoff:#x} "
                             f"do not fit in the {len(data)} byte file", path=path,
                             remedy="the file is truncated or corrupt; pass the complete ELF")
        raw = [struct.unpack_from("<IIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    except struct.error:
        raise InputError("truncated ELF header", path=path,
                         remedy="the file is truncated or corrupt; pass the complete ELF") from None
    names = raw[shstrndx][4] if 0 < shstrndx < shnum else None
    out = []
    for i, (name, kind, flags, addr, off, size, link, _info) in enumerate(raw):
        text = ""
        if names is not None and names + name < len(data):
            end = data.find(b"\0", names + name)
            text = data[names + name: end if end >= 0 else len(data)].decode("utf-8", "replace")
        out.append(Section(i, text, kind, flags, addr, size, off, link))
    return out


def section_data(data: bytes, sec: Section) -> bytes:
    """A section's contents, decompressed (``SHF_COMPRESSED`` zlib or GNU ``.zdebug``)."""
    if sec.kind == 8:  # SHT_NOBITS reads as zeros
        return bytes(min(sec.size, 1 << 28))
    raw = data[sec.offset: sec.offset + sec.size]
    if sec.name.startswith(".zdebug") and raw[:4] == b"ZLIB":  # GNU: "ZLIB", big-endian size
        size, raw = int.from_bytes(raw[4:12], "big"), raw[12:]
    elif sec.flags & 0x800 and raw[:4] == b"\1\0\0\0":  # Elf32_Chdr with ELFCOMPRESS_ZLIB
        size, raw = int.from_bytes(raw[4:8], "little"), raw[12:]
    else:
        return raw
    try:
        return zlib.decompressobj().decompress(raw, min(size, 1 << 30)) if size else b""
    except zlib.error:
        return b""


STT_NOTYPE, STT_FUNC, STT_SECTION, STT_FILE, STT_ARM_TFUNC = 0, 2, 3, 4, 13
STB_LOCAL, STB_GLOBAL = 0, 1


@dataclass(frozen=True)
class Symbol:
    """An ELF symbol as bfd canonicalizes it (elf_slurp_symbol_table, elf32_arm_swap_symbol_in)."""

    name: str
    value: int  # st_value; STT_FUNC has the Thumb bit cleared
    size: int
    kind: int  # STT_ARM_TFUNC reads as STT_FUNC
    bind: int
    other: int
    shndx: int
    file: str | None  # the STT_FILE name _bfd_elf_find_function reports with it


def read_symbols(data: bytes, sections: list[Section]) -> list[Symbol]:
    """``.symtab`` (else ``.dynsym``) in file order, without the null symbol."""
    table = next((s for s in sections if s.kind == 2), None)  # SHT_SYMTAB
    if table is None:
        table = next((s for s in sections if s.kind == 11), None)  # SHT_DYNSYM
    if table is None or not 0 <= table.link < len(sections):
        return []
    strtab, raw = section_data(data, sections[table.link]), section_data(data, table)
    out: list[Symbol] = []
    file: str | None = None
    seen = 0  # 0 nothing yet, 1 a symbol, 2 a file symbol after a symbol
    for st_name, value, size, info, other, shndx in struct.iter_unpack(
            "<IIIBBH", raw[16: len(raw) // 16 * 16]):
        end = strtab.find(b"\0", st_name)
        name = strtab[st_name: end if end >= 0 else len(strtab)].decode("utf-8", "surrogateescape")
        kind, bind = info & 0xF, info >> 4
        if kind in (STT_FUNC, 10) and value & 1:  # STT_FUNC, STT_GNU_IFUNC
            value &= ~1
        kind = STT_FUNC if kind == STT_ARM_TFUNC else kind
        if kind == STT_FILE:
            file, seen = name, 2 if seen else 0
            out.append(Symbol(name, value, size, kind, bind, other, shndx, None))
            continue
        shown = file if file is not None and (bind == STB_LOCAL or seen != 2) else None
        out.append(Symbol(name, value, size, kind, bind, other, shndx, shown))
        seen = seen or 1
    return out


def function_symbols(symbols: list[Symbol], sec: Section) -> tuple[list[int], list[Symbol]]:
    """Sorted addresses in ``sec`` and the symbol addr2line names a function by from each on.

    elf32_arm_maybe_function_sym: STT_FUNC and STT_NOTYPE symbols of the
    section, no mapping symbols ($a, $t, $d ...), size 0 counts as 1; then
    _bfd_elf_find_function: the highest address at or below, the largest size,
    the first in the table.
    """
    best: dict[int, tuple[int, Symbol]] = {}
    for sym in symbols:
        if sym.shndx != sec.index or sym.kind not in (STT_NOTYPE, STT_FUNC):
            continue
        if sym.kind == STT_NOTYPE and not sym.size and sym.bind == STB_LOCAL and sym.other & 3 == 2:
            continue  # hidden local zero-size NOTYPE: annobin's markers
        name = sym.name
        if (sym.bind == STB_LOCAL and len(name) >= 2 and name[0] == "$" and "a" <= name[1] <= "z"
                and (len(name) == 2 or name[2] == ".")):
            continue  # bfd_is_arm_special_symbol_name
        size = sym.size or 1
        if sym.value not in best or size > best[sym.value][0]:
            best[sym.value] = (size, sym)
    keys = sorted(best)
    return keys, [best[k][1] for k in keys]


def read_build_id(data: bytes, sections: list[Section] | None = None) -> str | None:
    """The NT_GNU_BUILD_ID note (lowercase hex) from the SHT_NOTE sections, or None."""
    try:
        secs = read_sections(data) if sections is None else sections
    except InputError:
        return None
    for sec in secs:
        if sec.kind != 7:  # SHT_NOTE
            continue
        note, pos = data[sec.offset: sec.offset + sec.size], 0
        while pos + 12 <= len(note):
            namesz, descsz, kind = struct.unpack_from("<III", note, pos)
            name_at = pos + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            if kind == 3 and note[name_at:name_at + namesz] == b"GNU\0":
                return note[desc_at: desc_at + descsz].hex()
            pos = desc_at + (descsz + 3) // 4 * 4
    return None


# -- building the index: bfd's lookup over every address at once --------------------


def _stab(items: list[tuple[int, int, Any, Any]]) -> list[tuple[int, int, Any, Any]]:
    """Disjoint (lo, hi, key, payload): where items overlap, the smallest key wins.

    Items that overlap nothing pass straight through; overlapping clusters are
    swept with a heap.
    """
    items.sort(key=itemgetter(0))
    reach = list(accumulate((it[1] for it in items), max))
    # item k starts a new cluster when it begins at or after every earlier end
    starts = [0, *(k for k in range(1, len(items)) if items[k][0] >= reach[k - 1]), len(items)]
    out: list[tuple[int, int, Any, Any]] = []
    for i, j in pairwise(starts):
        if j == i + 1:
            out.append(items[i])
            continue
        cluster = items[i:j]
        heap: list[tuple[Any, int, int, Any]] = []
        k = 0
        for a, b in pairwise(sorted({p for it in cluster for p in it[:2]})):
            while k < len(cluster) and cluster[k][0] == a:
                heappush(heap, (cluster[k][2], k, cluster[k][1], cluster[k][3]))
                k += 1
            while heap and heap[0][2] <= a:
                heappop(heap)
            if heap:
                key, _k, _hi, payload = heap[0]
                if out and out[-1][1] == a and out[-1][3] is payload:
                    out[-1] = (out[-1][0], b, key, payload)
                else:
                    out.append((a, b, key, payload))
    return out


def _line_intervals(table: Any) -> list[tuple[int, int, Any]]:
    """bfd lookup_address_in_line_info_table for every address: the row below, per sequence.

    (Comparisons instead of min() and max() here and in the other loops over
    every interval: a builtin call per row costs a tenth of the whole build.)
    """
    out: list[tuple[int, int, Any]] = []
    put = out.append
    for low, rows in table.seqs:
        high = min(rows[-1][0], LIMIT)
        for row, nxt in pairwise(rows):
            a, b = row[0], nxt[0]
            if a < b:
                a, b = (a if a > low else low), (b if b < high else high)  # noqa: FURB136
                if a < b:
                    put((a, b, row))
    out.sort(key=itemgetter(0))
    return out


def _overlay(a: list[tuple[int, int, Any]], b: list[tuple[int, int, Any]]
             ) -> list[tuple[int, int, Any]]:
    """Pair two sorted disjoint interval lists: (lo, hi, (a's payload, b's payload))."""
    out: list[tuple[int, int, Any]] = []
    i = j = 0
    na, nb = len(a), len(b)
    alo, ahi, av = a[0] if na else (0, 0, None)
    blo, bhi, bv = b[0] if nb else (0, 0, None)
    while i < na and j < nb:
        if ahi <= blo or bhi <= alo:  # one ends before the other starts
            if ahi <= blo:
                out.append((alo, ahi, (av, None)))
                i += 1
                alo, ahi, av = a[i] if i < na else (0, 0, None)
            else:
                out.append((blo, bhi, (None, bv)))
                j += 1
                blo, bhi, bv = b[j] if j < nb else (0, 0, None)
            continue
        if alo < blo:
            out.append((alo, blo, (av, None)))
            alo = blo
        elif blo < alo:
            out.append((blo, alo, (None, bv)))
            blo = alo
        hi = ahi if ahi < bhi else bhi  # noqa: FURB136
        out.append((alo, hi, (av, bv)))
        alo = blo = hi
        if ahi == hi:
            i += 1
            alo, ahi, av = a[i] if i < na else (0, 0, None)
        if bhi == hi:
            j += 1
            blo, bhi, bv = b[j] if j < nb else (0, 0, None)
    if i < na:
        out.append((alo, ahi, (av, None)))
        out.extend((lo, hi, (v, None)) for lo, hi, v in a[i + 1:])
    if j < nb:
        out.append((blo, bhi, (None, bv)))
        out.extend((lo, hi, (None, v)) for lo, hi, v in b[j + 1:])
    return out


def _clip(cover: list[tuple[int, int, Any]], ranges: list[list[int]]) -> list[tuple[int, int, Any]]:
    """``cover`` within a unit's own ranges (bfd comp_unit_contains_address)."""
    union: list[list[int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if union and lo <= union[-1][1]:
            union[-1][1] = max(union[-1][1], hi)
        else:
            union.append([lo, hi])
    out = []
    k, n = 0, len(union)
    for item in cover:
        lo, hi, payload = item
        while k < n and union[k][1] <= lo:
            k += 1
        if k < n and union[k][0] <= lo and hi <= union[k][1]:
            out.append(item)
            continue
        m = k
        while m < n and union[m][0] < hi:
            if max(lo, union[m][0]) < min(hi, union[m][1]):
                out.append((max(lo, union[m][0]), min(hi, union[m][1]), payload))
            m += 1
    return out


_FORKED: Any = None  # the DwarfInfo a forked child reads (it gets the memory, not a pickle)
PARALLEL_MIN = 2 << 20  # .debug_info bytes from which a second process reads half the units


def _unit_covers(indexes: list[int], dwarf: Any = None) -> list[tuple[int, str, Any, Any, Any]]:
    """For each unit: its state, functions, variables and (lo, hi, unit, (row, function))."""
    dwarf = dwarf or _FORKED
    out: list[tuple[int, str, Any, Any, Any]] = []
    for index in indexes:
        u = dwarf.units[index]
        if not dwarf.unit_ok(u):
            out.append((index, u.error, [], [], []))
            continue
        funcs = [(lo, min(hi, LIMIT), (hi - lo, -f.order), f)
                 for f in u.funcs for lo, hi in f.aranges if lo < hi and lo < LIMIT]
        cover = _overlay(_line_intervals(dwarf.line_table(u)),
                         [it[:2] + it[3:] for it in _stab(funcs)])
        if u.aranges[0][1] != 0:
            cover = _clip(cover, u.aranges)
        out.append((index, u.error, u.funcs, u.vars, [(lo, hi, index, p) for lo, hi, p in cover]))
    return out


class _Builder:
    """bfd's lookup (``_bfd_dwarf2_find_nearest_line``), run over every address of one ELF."""

    def __init__(self, image: ElfImage) -> None:
        from collector.addrindex import DwarfInfo

        data = image.data
        self.sections = read_sections(data, image.path)
        self.symbols = read_symbols(data, self.sections)
        self.warnings: list[str] = []
        dwarf = DwarfInfo.from_elf(data, self.sections)
        self.has_dwarf = dwarf is not None
        self.dwarf = dwarf if dwarf is not None else DwarfInfo({})
        if not self.has_dwarf:
            self.warnings.append("no DWARF debug information (.debug_info)" + (
                " and no symbol table: every address prints ??" if not self.symbols else
                ": function names come from the symbol table, without file or line")
                + "; pass the unstripped ELF built with -g")

    def run(self) -> tuple[list[int], list[Any]]:
        """Interval starts over 0..2**32 and each one's answer (None: not found)."""
        cover = self._dwarf_cover()
        self.warnings.extend(self.dwarf.warnings[:20])
        if len(self.dwarf.warnings) > 20:
            self.warnings.append(f"... and {len(self.dwarf.warnings) - 20} more DWARF problems")
        pieces: list[tuple[int, int, int, Any]] = []
        starts_of_cover = [c[0] for c in cover]
        alloc = [s for s in self.sections if s.flags & SHF_ALLOC and s.size and s.address < LIMIT]
        alloc_by_address = sorted((s.address, s.address + s.size) for s in alloc)
        for order, sec in enumerate(alloc):
            pieces.extend((lo, hi, order, answer)
                          for lo, hi, answer in self._section(sec, cover, starts_of_cover))
        starts: list[int] = []
        answers: list[Any] = []
        end = 0
        pieces.sort(key=itemgetter(0))
        if any(a[1] > b[0] for a, b in pairwise(alloc_by_address)):
            pieces = _stab(pieces)  # overlapping sections: the first in the header table wins
        for lo, hi, _order, answer in pieces:
            if lo > end:
                starts.append(end)
                answers.append(None)
            elif answers and lo == end and answers[-1] == answer:
                end = hi
                continue
            starts.append(lo)
            answers.append(answer)
            end = hi
        if end < LIMIT or not starts:
            starts.append(end)
            answers.append(None)
        return starts, answers

    def _dwarf_cover(self) -> list[tuple[int, int, Any, Any]]:
        """(lo, hi, unit, (row, function)) of every address .debug_info knows.

        The units are independent until here: with a large .debug_info and a
        second core, a forked child reads every other unit meanwhile.
        """
        global _FORKED
        units, done = self.dwarf.units, []
        child = None
        if (len(self.dwarf.info) > PARALLEL_MIN and len(units) > 1 and (os.cpu_count() or 1) > 1
                and sys.platform == "linux" and threading.active_count() == 1):
            _FORKED = self.dwarf
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
            child = pool.submit(_unit_covers, [u.index for u in units[1::2]])
            units = units[0::2]
        try:
            done = _unit_covers([u.index for u in units], self.dwarf)
            if child is not None:
                try:
                    theirs = child.result()
                except Exception:  # noqa: BLE001 - e.g. the child was killed: do it here
                    theirs = _unit_covers([u.index for u in self.dwarf.units[1::2]], self.dwarf)
                for index, error, funcs, variables, items in theirs:
                    unit = self.dwarf.units[index]
                    unit.error, unit.funcs, unit.vars = error, funcs, variables
                    done.append((index, error, funcs, variables, items))
        finally:
            if child is not None:
                pool.shutdown(cancel_futures=True)
                _FORKED = None
        return _stab([item for *_unit, items in done for item in items])  # first unit wins

    def _section(self, sec: Section, cover: list[tuple[int, int, Any, Any]],
                 cover_starts: list[int]) -> list[tuple[int, int, Any]]:
        """Answers in one SHF_ALLOC section (addr2line find_address_in_section)."""
        lo, hi = sec.address, min(sec.address + sec.size, LIMIT)
        keys, syms = function_symbols(self.symbols, sec)
        exact: dict[int, Symbol] = {}
        if self.has_dwarf and self.symbols and not sec.flags & SHF_EXECINSTR:
            for sym in self.symbols:  # the first global symbol there, else the last one
                if (sym.shndx == sec.index and sym.kind != STT_SECTION and lo <= sym.value < hi
                        and (sym.value not in exact or exact[sym.value].bind != STB_GLOBAL)):
                    exact[sym.value] = sym
        bounds = sorted({x for x in (*keys, *exact, *(a + 1 for a in exact)) if lo < x < hi}
                        | {hi})
        out: list[tuple[int, int, Any]] = []
        k, nc, b, p = max(bisect_right(cover_starts, lo) - 1, 0), len(cover), 0, lo
        while p < hi:
            while bounds[b] <= p:
                b += 1
            q = bounds[b]
            if exact and p in exact:
                answer = self._declaration(exact[p], p, keys, syms)
            else:
                while k < nc and cover[k][1] <= p:
                    k += 1
                row = func = None
                if k < nc:
                    c_lo, c_hi, _unit, found = cover[k]
                    if c_lo <= p:
                        row, func = found
                        q = c_hi if c_hi < q else q  # noqa: FURB136
                    elif c_lo < q:
                        q = c_lo
                answer = self._answer(row, func, p, keys, syms)
            if answer is not None:
                out.append((p, q, answer))
            p = q
        return out

    @staticmethod
    def _answer(row: Any, func: Any, address: int, keys: list[int],
                syms: list[Symbol]) -> Any:
        """_bfd_dwarf2_find_nearest_line's result at one address (None: not found)."""
        fun = None
        if func is not None and func.linkage:
            name = func.name
        else:  # no linkage name: the symbol table names the function
            i = bisect_right(keys, address) - 1
            fun = syms[i] if i >= 0 else None
            if row is None and func is None and fun is None:
                return None
            name = fun.name if fun is not None else func.name if func is not None else None
        filename = row[2] if row is not None else None
        if filename is None and fun is not None:
            filename = fun.file
        chain = _chain(func) if func is not None and func.tag == TAG_INLINED_SUBROUTINE else ()
        if row is None:
            return (name or None, filename, 0, 0, chain)
        return (name or None, filename, row[3], row[4], chain)

    def _declaration(self, sym: Symbol, address: int, keys: list[int], syms: list[Symbol]) -> Any:
        """At a data symbol's address: the declaration of that name (bfd do_line lookup)."""
        where = None
        is_func = sym.kind == STT_FUNC
        for u in self.dwarf.units:
            if (is_func and u.aranges[0][1] != 0
                    and not any(lo <= address < hi for lo, hi in u.aranges)):
                continue
            if not self.dwarf.unit_ok(u):
                continue
            if is_func:  # lookup_symbol_in_function_table: the shortest, the last DIE first
                best, best_len = None, M64 + 1
                for f in reversed(u.funcs):
                    for lo, hi in f.aranges:
                        if (lo <= address < hi and hi - lo < best_len and f.file and f.name
                                and f.name in sym.name):
                            best, best_len = f, hi - lo
                where = (best.file, best.line) if best is not None else None
            else:  # lookup_symbol_in_variable_table
                where = next(((v.file, v.line) for v in reversed(u.vars)
                              if v.addr == address and v.file and v.name and v.name in sym.name),
                             None)
            if where is not None:
                break
        i = bisect_right(keys, address) - 1
        fun = syms[i] if i >= 0 else None
        if where is None and fun is None:
            return None
        filename, line = where if where is not None else (None, 0)
        if filename is None and fun is not None:
            filename = fun.file
        return ((fun.name or None) if fun is not None else None, filename, line, 0, ())


def _chain(func: Any) -> tuple[tuple[str | None, str | None, int], ...]:
    """The callers of an inlined subroutine, each at its call site (DWARF 5, 3.3.8.2)."""
    if func.chain is None:
        frames = []
        f = func
        while f.caller is not None:
            frames.append((f.caller.name or None, f.call_file, f.call_line))
            f = f.caller
        func.chain = tuple(frames)
    return func.chain


def build_index(image: ElfImage, key: tuple[str, str]) -> AddressIndex:
    """The address index of ``image``; ``key`` is (build ID, sha256) for the cache."""
    collecting = gc.isenabled()
    gc.disable()  # millions of small tuples: the cyclic collector would double the time
    try:
        builder = _Builder(image)
        starts, answers = builder.run()
        code = [(s.address, min(s.address + s.size, LIMIT)) for s in builder.sections
                if s.flags & SHF_ALLOC and s.flags & SHF_EXECINSTR and s.size and s.address < LIMIT]
        span = (min(c[0] for c in code), max(c[1] for c in code)) if code else None
        return AddressIndex.from_answers(starts, answers, warnings=tuple(builder.warnings),
                                         key=key, code=span)
    finally:
        if collecting:
            gc.enable()


# -- the cache ---------------------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/crashcart/addrindex`` (``~/.cache`` when unset or relative)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "crashcart" / "addrindex"


def cache_path(key: tuple[str, str]) -> Path:
    build_id, sha256 = key
    return cache_dir() / f"{build_id or 'no-build-id'}-{sha256}.v{FORMAT_VERSION}.idx"


def load_cached(key: tuple[str, str]) -> AddressIndex | None:
    path = cache_path(key)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    index = AddressIndex.from_bytes(blob, key)
    if index is None:
        LOG.info("%s: ignoring a corrupt or foreign address index; rebuilding it", path)
    return index


def save_cached(index: AddressIndex) -> None:
    path = cache_path(index.key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(index.to_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        LOG.warning("cannot write the address index cache %s: %s", path, exc)
        try:
            tmp.unlink()
        except OSError:
            pass


# -- the symbolizer ------------------------------------------------------------------


class Symbolizer:
    """Addresses of one build to frames.  Construction is cheap; the index is
    loaded (or built and cached) on the first lookup."""

    def __init__(self, image: ElfImage, cache: bool = True) -> None:
        self._image: ElfImage | None = image
        self.path = image.path
        self._data = image.data
        self.cache = cache

    @classmethod
    def from_path(cls, path: str | Path, cache: bool = True) -> Symbolizer:
        """A symbolizer that opens the ELF with pyelftools only if it must build the index."""
        self = cls.__new__(cls)
        self._image = None
        self.path = Path(path)
        self.cache = cache
        try:
            self._data = self.path.read_bytes()
        except FileNotFoundError:
            raise InputError("ELF file not found", path=self.path, remedy="check the path") from None
        except OSError as exc:
            raise InputError(f"cannot read ELF file: {exc.strerror}", path=self.path) from None
        return self

    @cached_property
    def key(self) -> tuple[str, str]:
        """(GNU build ID or "", sha256 of the file): what the cache is keyed by."""
        return read_build_id(self._data) or "", hashlib.sha256(self._data).hexdigest()

    @cached_property
    def index(self) -> AddressIndex:
        if self.cache:
            index = load_cached(self.key)
            if index is not None:
                return index
        from collector.elf import ElfImage

        if self._image is None:
            self._image = ElfImage(self.path)
        index = build_index(self._image, self.key)
        for warning in index.warnings:  # callers show them: see ``warnings``
            LOG.info("%s: %s", self.path, warning)
        if self.cache:
            save_cached(index)
        return index

    @property
    def warnings(self) -> tuple[str, ...]:
        """What limits the answers for this ELF (no DWARF, malformed units ...)."""
        return self.index.warnings

    def lookup(self, address: int) -> list[Frame]:
        """The frames for ``address``, innermost first; [] where addr2line prints ??/??:0."""
        return self.index.frames(self.index.answer_id(_check(address)))

    def lookup_many(self, addresses: Iterable[int]) -> list[list[Frame]]:
        index = self.index
        return [index.frames(answer) for answer in index.answer_ids_for(addresses)]

    def addr2line_text(self, addresses: Iterable[int]) -> str:
        """Exactly what ``addr2line -f -i -e ELF`` prints for ``addresses``."""
        index = self.index
        ids = index.answer_ids_for(addresses)
        texts = index._text  # answer -> text, filled here (the hot path of the command)
        for answer in set(ids).difference(texts):
            texts[answer] = index._render(answer)
        return "".join([texts[i] for i in ids])


def _check(address: int) -> int:
    if not 0 <= address <= ADDRESS_MAX:
        raise InputError("address is outside the 32-bit address space", value=hex(address),
                         remedy="pass a Cortex-M address (at most 8 hex digits)")
    return address


def parse_address(text: str | bytes, *, source: str = "argument", line: int | None = None) -> int:
    """A hex address with or without 0x; InputError naming the text (and line) otherwise."""
    try:
        value = int(text, 16)  # also takes 0x, surrounding blanks, signs and underscores ...
        if 0 <= value <= ADDRESS_MAX and not _ODD.intersection(text):  # ... which we refuse
            return value
    except ValueError:
        pass
    shown = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).strip()
    digits = shown[2:] if shown[:2] in ("0x", "0X") else shown
    hexadecimal = bool(digits) and all(c in "0123456789abcdefABCDEF" for c in digits)
    raise InputError("address is wider than 32 bits" if hexadecimal else "not a hex address",
                     path=source, line=line, value=shown,
                     remedy="give addresses in hex, with or without 0x, one per line")


_ODD = frozenset("_+-") | frozenset(b"_+-")


def read_addresses(data: bytes, source: str = "<stdin>") -> list[int]:
    """One address per line; blank lines are skipped."""
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    try:  # one C-level pass for well-formed input; the careful pass names the bad line
        values = [int(line, 16) for line in lines]
        if not any(c in data for c in (b"_", b"+", b"-")) and max(values, default=0) <= ADDRESS_MAX:
            return values
    except ValueError:
        pass
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            out.append(parse_address(line, source=source, line=n))
    return out


# -- the command ---------------------------------------------------------------------


@click.command("symbolize")
@click.option("--elf", "elf", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The firmware ELF of the build the addresses come from.")
@click.argument("addresses", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: address and frames per address.")
@click.option("--no-cache", is_flag=True, help="Build the address index afresh; do not cache it.")
def symbolize_command(elf: Path, addresses: tuple[str, ...], as_json: bool, no_cache: bool) -> None:
    """Print function, file:line and inline chain for each ADDRESS, like addr2line -f -i.

    ADDRESSes are hex, with or without 0x; without any, they are read from
    stdin, one per line.  The output is what `arm-none-eabi-addr2line -f -i -e
    ELF` prints.  The index of an ELF is cached (keyed by build ID and sha256),
    so later runs do not read its DWARF again.
    """
    if addresses:
        values = [parse_address(a, source="command line", line=n) for n, a in
                  enumerate(addresses, 1)]
    else:
        values = read_addresses(sys.stdin.buffer.read())
    symbolizer = Symbolizer.from_path(elf, cache=not no_cache)
    index = symbolizer.index
    for warning in index.warnings:
        click.echo(f"crashcart: warning: {elf}: {warning}", err=True)
    if as_json:
        import json

        click.echo(json.dumps(to_json(values, symbolizer.lookup_many(values)), indent=1))
        return
    out = symbolizer.addr2line_text(values)
    sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """``python -m collector.symbolize``: the command with crashcart's exit statuses."""
    try:
        symbolize_command.main(args=argv, prog_name="crashcart symbolize", standalone_mode=False)
    except CrashcartError as exc:
        click.echo(f"crashcart: error: {exc}", err=True)
        sys.exit(exc.exit_status)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("crashcart: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
