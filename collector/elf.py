"""The firmware image: an ELF file read with pyelftools.

:class:`ElfImage` is the one place crashcart opens an ELF.  It checks that
the file is a 32-bit little-endian ARM executable, then answers lazily:
symbols, the GNU build ID, loadable segments and reads of their file data,
and (through :mod:`collector.dwarf_types`) the types of global variables.

Malformed files raise :class:`~crashcart.errors.InputError` naming the file
and what is wrong with it; they never escape as pyelftools exceptions.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection

from crashcart.errors import InputError

if TYPE_CHECKING:
    from collector.dwarf_types import DwarfType

LOG = logging.getLogger(__name__)

EM_ARM = "EM_ARM"
MAX_ELF_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    kind: str  # "function", "object", "notype", "section", ...
    binding: str

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD program header."""

    vaddr: int
    paddr: int
    file_size: int
    mem_size: int
    flags: int
    offset: int


class ElfImage:
    """A firmware ELF.  Construction reads the file; everything else is lazy."""

    _open: dict[tuple[str, int, int], ElfImage] = {}

    @classmethod
    def open_cached(cls, path: str | Path) -> ElfImage:
        """A shared instance for an unchanged file (same path, size and mtime).

        Repeated runs of one build (replay matrices, bisect) then parse its
        symbols and DWARF once per process.
        """
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            return cls(path)  # raises the proper InputError
        key = (str(p), st.st_size, st.st_mtime_ns)
        image = cls._open.get(key)
        if image is None:
            image = cls(p)
            cls._open[key] = image
        return image

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise InputError("ELF file not found", path=self.path, remedy="check the path") from None
        except OSError as exc:
            raise InputError(f"cannot read ELF file: {exc.strerror}", path=self.path) from None
        if size > MAX_ELF_BYTES:
            raise InputError(f"ELF file is {size} bytes, over the {MAX_ELF_BYTES} byte limit",
                             path=self.path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read ELF file: {exc.strerror}", path=self.path) from None
        self._variable_types: dict[str, DwarfType] = {}
        if self.data[:4] != b"\x7fELF":
            raise InputError(
                f"not an ELF file (starts with {self.data[:4].hex() or 'nothing'})",
                path=self.path,
                remedy="pass the .elf the build produced, not a .bin or .hex",
            )
        try:
            self.elf = ELFFile(io.BytesIO(self.data))
            machine = self.elf["e_machine"]
            elfclass = self.elf.elfclass
            little = self.elf.little_endian
        except (ELFError, ELFParseError, ValueError, KeyError, IndexError) as exc:
            raise InputError(f"malformed ELF header: {exc}", path=self.path) from None
        if machine != EM_ARM or elfclass != 32 or not little:
            raise InputError(
                f"not a 32-bit little-endian ARM ELF (machine {machine}, {elfclass}-bit,"
                f" {'little' if little else 'big'}-endian)",
                path=self.path,
                remedy="pass the Cortex-M firmware's ELF",
            )

    # -- symbols ----------------------------------------------------------

    @cached_property
    def symbols(self) -> dict[str, Symbol]:
        """Named symbols by name (the first definition wins)."""
        out: dict[str, Symbol] = {}
        try:
            for section in self.elf.iter_sections():
                if not isinstance(section, SymbolTableSection):
                    continue
                for sym in section.iter_symbols():
                    name = sym.name
                    if not name or name.startswith("$") or name in out:
                        continue
                    # str(): pyelftools gives a bare int for types and bindings it
                    # has no name for (damaged or processor-specific values).
                    kind = str(sym["st_info"]["type"]).replace("STT_", "").lower()
                    if kind == "func":
                        kind = "function"
                    out[name] = Symbol(
                        name=name,
                        address=sym["st_value"],
                        size=sym["st_size"],
                        kind=kind,
                        binding=str(sym["st_info"]["bind"]).replace("STB_", "").lower(),
                    )
        except (ELFError, ELFParseError, ValueError, KeyError, IndexError) as exc:
            raise InputError(f"malformed symbol table: {exc}", path=self.path) from None
        return out

    def get_symbol(self, name: str) -> Symbol | None:
        return self.symbols.get(name)

    def symbol(self, name: str, *, purpose: str = "") -> Symbol:
        """The symbol ``name``, or an error that says why it was needed."""
        sym = self.symbols.get(name)
        if sym is None:
            why = f" (needed for {purpose})" if purpose else ""
            raise InputError(
                f"symbol '{name}' not found in the ELF{why}",
                path=self.path,
                remedy="check that this ELF is the firmware the target file describes",
            )
        return sym

    # -- build ID ---------------------------------------------------------

    @cached_property
    def build_id(self) -> str | None:
        """The GNU build ID (NT_GNU_BUILD_ID) as lowercase hex, or None."""
        try:
            for section in self.elf.iter_sections():
                if not isinstance(section, NoteSection):
                    continue
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"]).lower()
        except (ELFError, ELFParseError, ValueError, KeyError, IndexError) as exc:
            LOG.warning("%s: unreadable note section: %s", self.path, exc)
        return None

    # -- segments and memory ----------------------------------------------

    @cached_property
    def load_segments(self) -> tuple[Segment, ...]:
        out = []
        try:
            for seg in self.elf.iter_segments():
                if seg["p_type"] != "PT_LOAD":
                    continue
                out.append(
                    Segment(
                        vaddr=seg["p_vaddr"],
                        paddr=seg["p_paddr"],
                        file_size=seg["p_filesz"],
                        mem_size=seg["p_memsz"],
                        flags=seg["p_flags"],
                        offset=seg["p_offset"],
                    )
                )
        except (ELFError, ELFParseError, ValueError, KeyError, IndexError) as exc:
            raise InputError(f"malformed program headers: {exc}", path=self.path) from None
        return tuple(out)

    def read(self, address: int, size: int) -> bytes | None:
        """Bytes at ``address`` from the file data of a loadable segment.

        Returns None when the range is not entirely file-backed (for example
        .bss or .noinit, which only exist on the device).
        """
        for seg in self.load_segments:
            if seg.vaddr <= address and address + size <= seg.vaddr + seg.file_size:
                start = seg.offset + (address - seg.vaddr)
                chunk = self.data[start : start + size]
                return chunk if len(chunk) == size else None
        return None

    # -- DWARF --------------------------------------------------------------

    @cached_property
    def has_dwarf(self) -> bool:
        try:
            return bool(self.elf.has_dwarf_info()) and self.elf.get_section_by_name(
                ".debug_info"
            ) is not None
        except (ELFError, ELFParseError, ValueError):
            return False

    def variable_type(self, name: str) -> DwarfType:
        """The DWARF type of the global variable ``name``."""
        from collector.dwarf_types import find_global_type

        cached = self._variable_types.get(name)
        if cached is not None:
            return cached
        if not self.has_dwarf:
            raise InputError(
                "the ELF has no DWARF debug information",
                path=self.path,
                remedy="pass the unstripped ELF built with -g",
            )
        dtype = find_global_type(self, name)
        self._variable_types[name] = dtype
        return dtype
