"""Unwind a Cortex-M stack: registers plus a memory image to a backtrace.

:func:`unwind` walks from the registers the core halted with (or the ones a
crash log stated) to the outermost frame.  Each step uses the best evidence
there is, and every frame says which one (``UnwoundFrame.how``):

``registers``
    The first frame: the registers as given.
``cfi``
    The caller found with the callee's call frame information:
    ``.debug_frame`` (DWARF 5, 6.4 "Call Frame Information") or, without it,
    ``.ARM.exidx`` (ARM EHABI, IHI 0038, 9 "ARM-defined personality
    routines and table formats").
``exception-frame``
    The code an exception interrupted, read from the frame the hardware
    stacked on exception entry (ARMv7-M ARM B1.5.6 "Exception entry
    behavior").  Reached either through a handler whose CFI is marked as a
    signal frame and describes the stacked registers (the fixture's
    ``fault_entry``), or through a return address that is an EXC_RETURN
    value (B1.5.8): the frame is then on the stack EXC_RETURN selects.
``lr``
    No unwind information covers the callee's pc, but its registers are
    live (the first frame, or one unstacked by an exception): the
    callee is taken as a leaf function and the caller is at ``lr``.  This is
    how GDB gets out of a jump to address 0.
``scan``
    CFI or memory missing: the stack is searched upwards for a word that is
    a Thumb return address, i.e. the instruction before it is a ``BL``
    (4 bytes) or ``BLX Rm`` (2 bytes) (ARMv7-M ARM A7.7.18, A7.7.19).  After a
    scanned frame the walk goes on with CFI.

Where the process stack pointer comes from when the probe cannot give it
(QEMU's gdbstub has no MSP/PSP): first ``registers['psp']``; then the
handler's own CFI (a signal-frame CFI gives the frame address whichever
stack it is on); then the firmware's crash record, when the caller names
its symbol and the record agrees with what the unwinder already knows.

Source lines follow GDB's choice (its line table rules, see
:class:`_GdbLineTable`), so a backtrace reads like ``bt``; function names
and inline chains come from :class:`collector.symbolize.Symbolizer`.
"""

from __future__ import annotations

import logging
import posixpath
import struct
import weakref
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.elf import ElfImage
from collector.evidence import MemoryImage, MemoryNotCaptured
from collector.faults import ExcReturn, decode_exc_return, unpack_frame
from collector.symbolize import Symbolizer, read_sections, section_data
from crashcart.errors import CrashcartError, InputError

LOG = logging.getLogger(__name__)

HOWS = ("registers", "cfi", "exception-frame", "tail-call", "lr", "scan")
ARCHES = ("armv6-m", "armv7-m", "armv7e-m", "armv8-m.base", "armv8-m.main")
SP, LR, PC = 13, 14, 15
SHF_EXECINSTR = 0x4
SCAN_LIMIT_BYTES = 16 * 1024  # how far up the stack a scan looks for one return address
SCAN_GAP_BYTES = 1024  # uncaptured memory a scan may step over at its start (a guard's rest)
CFSR_STACKING = {4: "MSTKERR", 12: "STKERR"}  # ARMv7-M ARM B3.2.15: stacking failed
CFSR_LAZY = {5: "MLSPERR", 13: "LSPERR"}


# -- the result --------------------------------------------------------------------------


@dataclass(frozen=True)
class InlineFrame:
    """One level of an inline chain: ``function`` was inlined, called at ``file:line``."""

    function: str | None
    file: str | None
    line: int | None

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "file": self.file, "line": self.line}


@dataclass
class UnwoundFrame:
    """One physical frame of a backtrace.

    ``function``/``file``/``line`` are the outermost function of the frame
    (the one that owns the stack frame) and the line executing in it;
    ``inlined`` holds the functions inlined into it at this pc, innermost
    first, each with its own line.  ``sp`` is the frame's stack pointer (the
    CFA of the frame below it), None when unknown.  ``exception`` is set on
    the frame an exception interrupted.  ``signal_frame`` marks a handler
    whose CFI describes an interrupted context (GDB prints it as
    ``<signal handler called>``).
    """

    index: int
    pc: int
    sp: int | None
    how: str
    function: str | None = None
    file: str | None = None
    line: int | None = None
    inlined: list[InlineFrame] = field(default_factory=list)
    exception: dict[str, Any] | None = None
    registers: dict[str, int] = field(default_factory=dict)
    signal_frame: bool = False
    symbol: str | None = None  # ELF symbol containing pc, when DWARF has no function
    cfi_source: str | None = None  # how == "cfi": ".debug_frame" or ".ARM.exidx"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "pc": self.pc, "sp": self.sp, "how": self.how,
            "function": self.function, "file": self.file, "line": self.line,
            "inlined": [f.to_json() for f in self.inlined],
            "exception": self.exception, "signal_frame": self.signal_frame,
            "symbol": self.symbol, "cfi_source": self.cfi_source,
            "registers": dict(sorted(self.registers.items(), key=lambda kv: _reg_order(kv[0]))),
        }

    def source_frames(self) -> list[InlineFrame]:
        """The frames GDB numbers for this pc: inlined ones innermost first, then the owner."""
        return [*self.inlined, InlineFrame(self.function or self.symbol, self.file, self.line)]


@dataclass
class Backtrace:
    frames: list[UnwoundFrame]
    stop_reason: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"frames": [f.to_json() for f in self.frames], "stop_reason": self.stop_reason,
                "warnings": list(self.warnings)}

    def format(self) -> str:
        """GDB-like text: one line per frame, inline frames numbered as GDB numbers them."""
        lines = []
        n = 0
        repeat = 0  # frames like the one before (deep recursion), shown once as a count
        for i, frame in enumerate(self.frames):
            prev = self.frames[i - 1] if i else None
            same = (prev is not None and not frame.signal_frame and frame.exception is None
                    and prev.exception is None and not prev.signal_frame
                    and (frame.pc, frame.function, frame.how) == (prev.pc, prev.function, prev.how))
            if same:
                repeat += 1
                if repeat > 2:
                    n += len(frame.source_frames())
                    nxt = self.frames[i + 1] if i + 1 < len(self.frames) else None
                    if nxt is None or (nxt.pc, nxt.function, nxt.how) != (frame.pc, frame.function,
                                                                          frame.how):
                        lines.append(f"     ... {repeat - 2} more frames like the one above "
                                     f"(recursion), up to #{n - 1}")
                    continue
            else:
                repeat = 0
            if frame.signal_frame:
                lines.append(f"{_num(n)}<signal handler called>  [{frame.how}: "
                             f"{frame.function or frame.symbol or '??'} 0x{frame.pc:08x}]")
                n += 1
                continue
            chain = frame.source_frames()
            for k, src in enumerate(chain):
                where = f" at {src.file}:{src.line}" if src.file and src.line else ""
                addr = f"0x{frame.pc:08x} in " if k == 0 and frame.index > 0 else ""
                tag = f"  [{frame.how}]" if k == 0 else ""
                lines.append(f"{_num(n)}{addr}{src.function or '??'} (){where}{tag}")
                n += 1
            if frame.exception is not None:
                exc = frame.exception
                trusted = "trusted" if exc.get("trusted") else "NOT trusted: " + "; ".join(
                    exc.get("why_untrusted", []))
                er = exc.get("exc_return")
                er_text = f"EXC_RETURN 0x{er:08x}" if er is not None else "EXC_RETURN unknown"
                fa = exc.get("frame_address")
                fa_text = f"0x{fa:08x}" if fa is not None else "?"
                lines.append(f"     ^ interrupted by an exception: {exc.get('frame_type') or '?'} "
                             f"frame at {fa_text} on {exc.get('stack') or '?'}, {er_text}, "
                             f"{trusted}")
        lines.append(f"Backtrace stopped: {self.stop_reason}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _num(n: int) -> str:
    """GDB's frame number column: "#7  ", "#42 ", "#149 "."""
    label = f"#{n}"
    return label.ljust(4) if len(label) < 4 else label + " "


# -- the entry point ---------------------------------------------------------------------


def unwind(image: ElfImage, registers: Mapping[str, int], memory: MemoryImage, *,
           arch: str = "armv7-m", registers_at: str = "handler", max_frames: int = 64,
           symbolizer: Symbolizer | None = None, crash_record_symbol: str | None = None,
           past_main: bool = False) -> Backtrace:
    """Unwind from ``registers`` through ``memory``; never raises for bad evidence.

    ``registers`` uses crashcart's names (r0..r12, sp, lr, pc, xpsr, and
    optionally msp, psp, exc_return, cfsr).  ``registers_at`` is
    ``"handler"`` (halted where the registers are the core's) or
    ``"stacked"`` (pc/lr are the interrupted code's, as a crash log states
    them; sp is then taken from msp/psp and exc_return when given).
    ``crash_record_symbol`` names the firmware's crash record (the target
    file's ``firmware.crash_record.symbol``), a last source of PSP.  Like
    GDB, the walk stops at ``main`` unless ``past_main``.

    Bad arguments (an unknown arch, a register value that is not a 32-bit
    integer) raise :class:`~crashcart.errors.InputError`; everything the
    evidence lacks ends the walk with a ``stop_reason`` instead.
    """
    if arch not in ARCHES:
        raise InputError("unknown architecture", field="arch", value=arch,
                         remedy=f"use one of {', '.join(ARCHES)}")
    if registers_at not in ("handler", "stacked"):
        raise InputError("registers_at must be 'handler' or 'stacked'", field="registers_at",
                         value=registers_at)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise InputError("max_frames must be a positive integer", field="max_frames",
                         value=max_frames)
    regs: dict[str, int] = {}
    for name, value in registers.items():
        key = str(name).lower()
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise InputError("a register value must be an integer from 0 to 0xFFFFFFFF",
                             field=f"registers.{key}", value=value)
        regs[key] = value
    if "pc" not in regs:
        raise InputError("no pc among the registers: there is nothing to unwind from",
                         field="registers", value=sorted(regs),
                         remedy="pass at least pc (and sp, lr) of the halted or crashed core")
    walker = _Unwinder(image, memory, arch, symbolizer or Symbolizer(image),
                       crash_record_symbol, past_main)
    return walker.run(regs, registers_at, max_frames)


# -- the walk ----------------------------------------------------------------------------


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _State:
    pc: int
    sp: int | None
    regs: dict[int, int]  # DWARF register number -> value (what is known)
    how: str
    interrupted: bool  # pc is the interrupted instruction (not a return address)
    exception: dict[str, Any] | None = None
    lr_live: bool = False  # lr is this frame's own (first frame, exception frame): leaf rule
    used_return: int | None = None  # "lr" frames: the return address already followed
    cfi_source: str | None = None  # how == "cfi": the table the caller was found with


class _Unwinder:
    def __init__(self, image: ElfImage, memory: MemoryImage, arch: str, symbolizer: Symbolizer,
                 crash_record_symbol: str | None, past_main: bool) -> None:
        self.image = image
        self.memory = memory
        self.arch = arch
        self.symbolizer = symbolizer
        self.crash_record_symbol = crash_record_symbol
        self.past_main = past_main
        self.tables = _tables_for(image)
        self.warnings: list[str] = []
        self.psp: tuple[int, str] | None = None  # (value, where from)
        self.msp_entry: int | None = None  # MSP right after the innermost exception's stacking
        self.cfsr: int | None = None
        self.exceptions_crossed = 0
        self.given: dict[str, int] = {}

    # -- driver ------------------------------------------------------------

    def run(self, regs: dict[str, int], registers_at: str, max_frames: int) -> Backtrace:
        self.given = regs
        self.cfsr = regs.get("cfsr")
        if "psp" in regs:
            self.psp = (regs["psp"], "registers")
        state = self._first_state(regs, registers_at)
        frames: list[UnwoundFrame] = []
        seen: set[tuple[int, int | None]] = set()
        stop = ""
        while True:
            frame = self._frame(len(frames), state)
            frames.append(frame)
            seen.add((state.pc, state.sp))
            if frame.function == "main" and not self.past_main:
                stop = "reached main (like GDB with 'backtrace past-main' off)"
                break
            if len(frames) >= max_frames:
                stop = f"max_frames ({max_frames}) reached"
                break
            try:
                caller = self._caller(state)
            except _Stop as s:
                stop = s.reason
                break
            for pc in self._tail_calls(state, caller):
                if len(frames) >= max_frames:
                    break
                frames.append(self._frame(len(frames), _State(
                    pc, caller.sp, {PC: pc} if caller.sp is None else {PC: pc, SP: caller.sp},
                    "tail-call", False)))
            if len(frames) >= max_frames:
                stop = f"max_frames ({max_frames}) reached"
                break
            if (caller.pc, caller.sp) in seen:
                stop = (f"loop: frame pc 0x{caller.pc:08x} sp {_hex(caller.sp)} repeats "
                        "(corrupt stack?)")
                break
            if (caller.sp is not None and state.sp is not None and caller.sp < state.sp
                    and caller.exception is None):
                stop = (f"the caller's sp 0x{caller.sp:08x} is below this frame's sp "
                        f"0x{state.sp:08x}: the stack does not grow that way (corrupt stack?)")
                break
            state = caller
        return Backtrace(frames, stop, self.warnings)

    def _first_state(self, regs: dict[str, int], registers_at: str) -> _State:
        dregs = {_DWARF_NUMBER[name]: value for name, value in regs.items()
                 if name in _DWARF_NUMBER}
        sp = regs.get("sp")
        exception = None
        if registers_at == "stacked":
            sp, exception = self._stacked_sp(regs)
            if sp is None:
                dregs.pop(SP, None)
            else:
                dregs[SP] = sp
        return _State(regs["pc"] & ~1, sp, dregs, "registers", True, exception, LR in dregs)

    def _stacked_sp(self, regs: dict[str, int]) -> tuple[int | None, dict[str, Any] | None]:
        """For registers a crash log stated: the sp before the exception, if it can be known."""
        exc_return = regs.get("exc_return")
        if exc_return is None:
            if "sp" in regs:
                return regs["sp"], None
            self.warnings.append("registers are the stacked ones and neither sp nor exc_return "
                                 "with msp/psp is given: the interrupted sp is unknown")
            return None, None
        try:
            exc = decode_exc_return(exc_return, self.arch)
        except CrashcartError as err:
            self.warnings.append(f"exc_return: {err.message}")
            return regs.get("sp"), None
        stack_reg = "psp" if exc.stack and "PSP" in exc.stack else "msp"
        frame_address = regs.get(stack_reg)
        if frame_address is None:
            self.warnings.append(f"EXC_RETURN 0x{exc_return:08x} says the frame is on the "
                                 f"{stack_reg.upper()}, which is not given")
            return regs.get("sp"), None
        info = self._exception_info(exc, exc_return, "registers", frame_address, "exc-return")
        words = self.memory.try_read(frame_address, 32)
        size = 0x20 + (4 if regs.get("xpsr", 0) & 1 << 9 else 0)
        if words is not None:
            size = unpack_frame(words, exc, self.arch, frame_address=frame_address).size_bytes
        sp = (frame_address + size) & 0xFFFFFFFF
        info["sp_before_exception"] = sp
        self._judge(info, first=True)
        self.exceptions_crossed = 1
        return sp, info

    def _tail_calls(self, state: _State, caller: _State) -> list[int]:
        """Frames of functions that tail-called their way from ``caller`` to ``state``.

        GDB's tail-call unwinder (gdb/dwarf2/frame-tailcall.c and
        ``call_site_find_chain`` in gdb/dwarf2/loc.c) from DWARF 5 call site
        entries (3.4.1): the call site at the caller's return address names
        its target; tail call sites (DW_AT_call_tail_call) lead from there to
        this frame's function.  Chains that are not unique keep only their
        common ends, as GDB does.  Returns return pcs, innermost first.
        """
        if caller.how != "cfi" or state.how == "scan":
            return []
        entry = self.tables.function_entry(state.pc if state.interrupted else state.pc - 1)
        if entry is None:
            return []
        chain = self.tables.call_sites().chain(caller.pc, entry)
        return [site for site in reversed(chain)]

    # -- one frame's description -------------------------------------------

    def _frame(self, index: int, state: _State) -> UnwoundFrame:
        lookup = state.pc if state.interrupted else max(state.pc - 1, 0)
        function = file = symbol = None
        line = None
        inlined: list[InlineFrame] = []
        chain = self.symbolizer.lookup(lookup) if self._is_code(lookup) else []
        gdb_line = self.tables.lines(lookup) if chain and chain[-1].function else None
        if chain and chain[-1].function:
            # Symbolizer: innermost first; each outer frame carries the call site line.
            inner_file, inner_line = (gdb_line if gdb_line is not None
                                      else (chain[0].file, chain[0].line))
            files = [inner_file] + [f.file for f in chain[1:]]
            lines = [inner_line] + [f.line for f in chain[1:]]
            for k, fr in enumerate(chain[:-1]):
                inlined.append(InlineFrame(fr.function, _norm(files[k]), lines[k]))
            function, file, line = chain[-1].function, _norm(files[-1]), lines[-1]
        else:
            sym = self.tables.symbol_at(state.pc)
            symbol = sym
        regs = {_NAMES[n]: v for n, v in sorted(state.regs.items()) if n in _NAMES}
        regs["pc"] = state.pc
        if state.sp is not None:
            regs["sp"] = state.sp
        return UnwoundFrame(index=index, pc=state.pc, sp=state.sp, how=state.how,
                            function=function, file=file, line=line, inlined=inlined,
                            exception=state.exception, registers=regs,
                            signal_frame=self.tables.is_signal_frame(lookup), symbol=symbol,
                            cfi_source=state.cfi_source)

    def _is_code(self, address: int) -> bool:
        return self.tables.in_code(address)

    # -- one step ------------------------------------------------------------

    def _caller(self, state: _State) -> _State:
        lookup = state.pc if state.interrupted else max(state.pc - 1, 0)
        if state.how == "registers" and not self._is_code(state.pc):
            note = f"pc 0x{state.pc:08x} is outside the firmware's code"
            if state.lr_live and self._is_code(state.regs.get(LR, 0) & ~1):
                self.warnings.append(note + ": continuing from lr")
            elif state.lr_live and _is_exc_return(state.regs.get(LR, 0), self.arch):
                self.warnings.append(note + ": lr is an EXC_RETURN value")
            else:
                return self._scan_or_stop(state, note)
        row = self.tables.cfi(lookup)
        if row is not None:
            if state.sp is None and row.needs_sp():
                return self._scan_or_stop(state, "the stack pointer of this frame is unknown "
                                          "(pass sp, or msp/psp with exc_return)")
            try:
                caller = self._step_cfi(state, row)
                if caller.how == "cfi":
                    caller.cfi_source = ".debug_frame"
                return caller
            except _Stop:
                raise
            except MemoryNotCaptured as err:
                return self._scan_or_stop(state, f"CFI needs memory that was not captured: "
                                          f"{err.message}", after_cfi=row)
            except _CfiError as err:
                return self._scan_or_stop(state, f"CFI at 0x{lookup:08x}: {err}")
        why = f"no unwind information for 0x{state.pc:08x}"
        exidx = self.tables.exidx(lookup)
        if exidx is not None and exidx.error is not None:
            # A broken entry (or table) is no information: never the previous entry's rules.
            why = f".ARM.exidx at 0x{lookup:08x}: {exidx.error}"
        elif exidx is not None and exidx.cant_unwind:
            # EHABI 5: EXIDX_CANTUNWIND; GNU ld also puts it after code without unwind
            # tables (assembly), so it means "no information", as it does for GDB.
            why = (f"0x{state.pc:08x} is in a function marked EXIDX_CANTUNWIND (.ARM.exidx): "
                   "no unwind information")
        elif exidx is not None and state.interrupted and lookup == exidx.start and state.lr_live:
            # The table describes the frame after the prologue (EHABI 9.3 undoes it); at the
            # function's first instruction nothing is pushed yet: the leaf rule is exact.
            exidx = None
        elif exidx is not None and state.sp is not None:
            try:
                return self._step_exidx(state, exidx)
            except MemoryNotCaptured as err:
                return self._scan_or_stop(state, f".ARM.exidx unwinding needs memory that was "
                                          f"not captured: {err.message}")
            except _CfiError as err:
                return self._scan_or_stop(state, f".ARM.exidx at 0x{lookup:08x}: {err}")
        if state.lr_live and LR in state.regs:
            if exidx is not None:
                self.warnings.append(f"{why}: continuing from lr")
            return self._return_to(state, state.regs[LR], state.sp, dict(state.regs), "lr")
        return self._scan_or_stop(state, why)

    def _return_to(self, state: _State, ra: int, cfa: int | None, caller_regs: dict[int, int],
                   how: str) -> _State:
        """The caller at return address ``ra`` (an EXC_RETURN value crosses an exception)."""
        if _is_exc_return(ra, self.arch):
            return self._cross_exc_return(state, ra, cfa)
        pc = ra & ~1
        if ra == 0 and how != "exception-frame":
            raise _Stop("return address is 0: outermost frame")
        if not self._is_code(pc):
            raise _Stop(f"return address 0x{ra:08x} ({how}) is outside the firmware's code")
        caller_regs[SP] = cfa if cfa is not None else caller_regs.get(SP, 0)
        caller_regs[PC] = pc
        if cfa is None:
            caller_regs.pop(SP, None)
        if how == "lr":  # the callee may have saved lr: a scan from here must skip that copy
            return _State(pc, cfa, {SP: cfa} if cfa is not None else {}, how, False,
                          used_return=ra)
        return _State(pc, cfa, caller_regs, how, False)

    def _step_cfi(self, state: _State, row: _Row) -> _State:
        if row.signal:
            return self._cross_signal_frame(state, row)
        read = self.memory.read_u32
        regs = state.regs
        cfa = row.cfa_value(regs, read)
        caller, addresses = self._apply_rules(row, regs, cfa)
        for n, address in addresses.items():
            caller[n] = read(address)
        ra_rule = row.rules.get(row.ra_column)
        if ra_rule is not None and ra_rule[0] == "undefined":
            raise _Stop("outermost frame: the CFI marks the return address undefined")
        if row.ra_column not in caller:
            raise _Stop(f"the return address of 0x{state.pc:08x} is unknown (lr not known "
                        "in this frame)")
        ra = caller[PC] if PC in row.rules and PC in caller else caller[row.ra_column]
        return self._return_to(state, ra, cfa, caller, "cfi")

    def _apply_rules(self, row: _Row, regs: Mapping[int, int], cfa: int | None
                     ) -> tuple[dict[int, int], dict[int, int]]:
        """Register rules (DWARF 5, 6.4.1): caller values, and addresses still to read."""
        read = self.memory.read_u32
        caller: dict[int, int] = {}
        addresses: dict[int, int] = {}
        for n in range(16):
            rule = row.rules.get(n)
            if rule is None:
                # DWARF leaves it unspecified: like GDB, take it as unchanged for the
                # AAPCS callee-saved registers and lr (r0-r3, r12 are lost in a call).
                if n in regs and (4 <= n <= 11 or n == LR):
                    caller[n] = regs[n]
                continue
            kind = rule[0]
            if kind in ("offset", "val_offset") and cfa is None:
                continue
            if kind == "same":
                if n in regs:
                    caller[n] = regs[n]
            elif kind == "offset":
                addresses[n] = (cfa + rule[1]) & 0xFFFFFFFF  # type: ignore[operator]
            elif kind == "val_offset":
                caller[n] = (cfa + rule[1]) & 0xFFFFFFFF  # type: ignore[operator]
            elif kind == "register":
                if rule[1] in regs:
                    caller[n] = regs[rule[1]]
            elif kind in ("expr", "val_expr"):
                try:
                    value = _evaluate(rule[1], regs, read, push_cfa=cfa)
                except (MemoryNotCaptured, _CfiError):
                    continue
                (addresses if kind == "expr" else caller)[n] = value
        return caller, addresses

    # -- exceptions ------------------------------------------------------------

    def _cross_signal_frame(self, state: _State, row: _Row) -> _State:
        """A handler whose CFI describes the interrupted context (CIE augmentation "S").

        The frame address is where the CFI says r0 was saved (the hardware
        frame starts with r0, B1.5.6); the CFA is the SP before the exception.
        """
        cfa: int | None = None
        cfa_error = None
        try:
            cfa = row.cfa_value(state.regs, self.memory.read_u32)
        except (MemoryNotCaptured, _CfiError) as err:
            cfa_error = err.message if isinstance(err, MemoryNotCaptured) else str(err)
        caller, addresses = self._apply_rules(row, state.regs, cfa)
        frame_address = addresses.get(0)
        if frame_address is None:
            if cfa is None:
                raise _Stop(f"signal frame CFI at 0x{state.pc:08x}: {cfa_error}")
            frame_address = (cfa - 0x20) & 0xFFFFFFFF
        exc_return, source = self._exc_return_for(frame_address, state)
        exc = None
        if exc_return is not None:
            try:
                exc = decode_exc_return(exc_return, self.arch)
            except CrashcartError as err:
                self.warnings.append(f"EXC_RETURN from {source}: {err.message}")
        info = self._exception_info(exc, exc_return, source, frame_address, "signal-frame-cfi")
        first = self.exceptions_crossed == 0
        self.exceptions_crossed += 1
        try:
            if cfa_error is not None:
                raise _CfiError(cfa_error)
            for n, address in addresses.items():
                caller[n] = self.memory.read_u32(address)
            frame_bytes = self.memory.read(frame_address, 0x20)
        except (MemoryNotCaptured, _CfiError) as err:
            text = err.message if isinstance(err, MemoryNotCaptured) else str(err)
            info["why_untrusted"].append(text)
            self._judge(info, first=first)
            return self._after_bad_frame(state, info, frame_address)
        assert cfa is not None
        unpacked = unpack_frame(frame_bytes, exc or _BASIC, self.arch, frame_address=frame_address)
        info["sp_before_exception"] = cfa
        info["frame_size"] = unpacked.size_bytes
        info["stacked"] = unpacked.registers
        if exc is None:
            self._infer_exc_return(info, unpacked.xpsr, frame_address, state.sp)
        self._judge(info, first=first, pc=unpacked.pc)
        if not info["trusted"]:
            return self._after_bad_frame(state, info, frame_address)
        if info.get("stack") == "MSP" and self.msp_entry is None:
            self.msp_entry = frame_address
        pc = caller.get(PC, unpacked.pc)
        caller[SP] = cfa
        caller[PC] = pc & ~1
        return _State(pc & ~1, cfa, caller, "exception-frame", True, info, LR in caller)

    def _infer_exc_return(self, info: dict[str, Any], xpsr: int, frame_address: int,
                          handler_sp: int | None) -> None:
        """EXC_RETURN from what is certain, on cores without FP and Security Extension.

        B1.5.8: the return mode is that of the interrupted code (stacked IPSR
        0 = Thread); Handler mode always uses the MSP.  A Thread mode frame
        below the handler's own stack pointer cannot be on the MSP.
        """
        if self.arch not in ("armv6-m", "armv7-m"):
            return
        if xpsr & 0x1FF:
            value, why = 0xFFFFFFF1, "stacked IPSR is not 0: Handler mode, MSP"
        elif handler_sp is not None and frame_address < handler_sp:
            value, why = 0xFFFFFFFD, ("stacked IPSR 0: Thread mode; the frame is below the "
                                      "handler's sp, so on the PSP")
        else:
            note = "EXC_RETURN unknown: Thread mode, but MSP or PSP cannot be told apart"
            info["notes"] = [*info.get("notes", []), note]
            info["return_mode"] = "Thread"
            return
        exc = decode_exc_return(value, self.arch)
        info.update(exc_return=value, exc_return_source=f"inferred ({why})",
                    return_mode=exc.return_mode, stack=exc.stack, frame_type=exc.frame_type)

    def _cross_exc_return(self, state: _State, exc_return: int, handler_cfa: int | None) -> _State:
        """The return address is EXC_RETURN: the frame is on the stack it selects."""
        try:
            exc = decode_exc_return(exc_return, self.arch)
        except CrashcartError as err:
            raise _Stop(f"return address 0x{exc_return:08x} looks like EXC_RETURN but is not "
                        f"one: {err.message}") from None
        uses_psp = bool(exc.stack and "PSP" in exc.stack)
        if uses_psp:
            psp = self._find_psp(exc_return)
            if psp is None:
                raise _Stop(f"EXC_RETURN 0x{exc_return:08x}: the frame is on the PSP and the "
                            "PSP is unknown (give registers['psp'], or capture the crash "
                            "record)")
            frame_address, source = psp
        else:
            if handler_cfa is None:
                raise _Stop(f"EXC_RETURN 0x{exc_return:08x}: the frame is on the MSP but the "
                            "handler's stack pointer is unknown")
            frame_address, source = handler_cfa, "handler CFA"
            if self.msp_entry is None:
                self.msp_entry = frame_address
        info = self._exception_info(exc, exc_return, "return address", frame_address,
                                    "exc-return")
        info["stack_pointer_source"] = source
        needed = 0x28 if exc.callee_registers_stacked else 0
        needed += 0x20 if not exc.extended_frame else 0x68
        try:
            data = self.memory.read(frame_address, needed)
        except MemoryNotCaptured as err:
            info["trusted"] = False
            info["why_untrusted"].append(f"not captured: {err.message}")
            self._judge(info, first=self.exceptions_crossed == 0)
            self.exceptions_crossed += 1
            return self._after_bad_frame(state, info, frame_address)
        fpccr = self.given.get("fpccr")
        unpacked = unpack_frame(data, exc, self.arch, frame_address=frame_address,
                                fpccr=fpccr, fpcar=self.given.get("fpcar"))
        info["frame_size"] = unpacked.size_bytes
        info["sp_before_exception"] = unpacked.sp_before_exception
        info["stacked"] = unpacked.registers
        if unpacked.notes:
            info["notes"] = list(unpacked.notes)
        if unpacked.integrity_signature_ok is False:
            info["why_untrusted"].append("integrity signature is wrong")
        self._judge(info, first=self.exceptions_crossed == 0, pc=unpacked.pc)
        self.exceptions_crossed += 1
        if not info["trusted"]:
            return self._after_bad_frame(state, info, frame_address)
        caller = {_DWARF_NUMBER[k]: v for k, v in unpacked.registers.items() if k in _DWARF_NUMBER}
        for n in range(4, 12):  # the handler preserved them (AAPCS), unless stacked
            if n not in caller and n in state.regs:
                caller[n] = state.regs[n]
        sp = unpacked.sp_before_exception
        assert sp is not None
        caller[SP] = sp
        caller[PC] = unpacked.pc & ~1
        return _State(unpacked.pc & ~1, sp, caller, "exception-frame", True, info, True)

    def _exception_info(self, exc: ExcReturn | None, exc_return: int | None, source: str | None,
                        frame_address: int, found_by: str) -> dict[str, Any]:
        return {
            "found_by": found_by,
            "exc_return": exc_return,
            "exc_return_source": source if exc_return is not None else None,
            "return_mode": exc.return_mode if exc else None,
            "stack": exc.stack if exc else None,
            "frame_type": exc.frame_type if exc else ("basic" if self.arch in ("armv6-m",
                                                                               "armv7-m",
                                                                               "armv8-m.base")
                                                      else None),
            "frame_address": frame_address,
            "frame_size": None,
            "sp_before_exception": None,
            "stacked": None,
            "trusted": True,
            "why_untrusted": [],
        }

    def _judge(self, info: dict[str, Any], *, first: bool, pc: int | None = None) -> None:
        why: list[str] = info["why_untrusted"]
        if first and self.cfsr is not None:
            for bit, name in CFSR_STACKING.items():
                if self.cfsr >> bit & 1:
                    why.append(f"CFSR.{name}: stacking the frame failed, the words there "
                               "were not written by this exception (ARMv7-M ARM B3.2.15)")
        if info["frame_address"] % 4:
            why.append(f"frame address 0x{info['frame_address']:08x} is not word aligned")
        info["trusted"] = not why
        if pc is not None and pc and not self._is_code(pc & ~1) and info["trusted"]:
            info.setdefault("notes", []).append(
                f"stacked pc 0x{pc:08x} is outside the firmware's code")

    def _exc_return_for(self, frame_address: int, state: _State) -> tuple[int | None, str | None]:
        """EXC_RETURN of an exception whose frame was found by a signal-frame CFI."""
        if self.exceptions_crossed == 0 and "exc_return" in self.given:
            return self.given["exc_return"], "registers"
        record = self._crash_record()
        if record and "exc_return" in record:
            value = record["exc_return"]
            stack = record.get("psp") if value & 4 else record.get("msp")
            if stack == frame_address:
                return value, "crash record"
        return None, None

    def _find_psp(self, exc_return: int) -> tuple[int, str] | None:
        if self.psp is not None:
            return self.psp
        record = self._crash_record()
        if not record or not record.get("psp"):
            return None
        # The record must describe this crash: its MSP (after stacking) is the
        # innermost exception's frame address on the MSP, which we know.
        if "msp" in record and self.msp_entry is not None and record["msp"] != self.msp_entry:
            self.warnings.append(
                f"crash record ignored: its msp 0x{record['msp']:08x} is not the MSP of this "
                f"exception (0x{self.msp_entry:08x}); it is from an earlier crash")
            return None
        if "msp" in record and self.msp_entry is None:
            self.warnings.append("PSP from the crash record, which could not be checked "
                                 "against this exception's MSP")
        self.psp = (record["psp"], "crash record")
        return self.psp

    def _crash_record(self) -> dict[str, int] | None:
        if self.crash_record_symbol is None:
            return None
        if hasattr(self, "_record"):
            return self._record  # type: ignore[has-type,no-any-return]
        self._record: dict[str, int] | None = None
        try:
            self._record = _read_crash_record(self.image, self.memory, self.crash_record_symbol)
        except CrashcartError as err:
            self.warnings.append(f"crash record not usable: {err.message}")
        return self._record

    def _after_bad_frame(self, state: _State, info: dict[str, Any], frame_address: int) -> _State:
        """An exception frame that cannot be used: report it, then scan above it."""
        why = "; ".join(info["why_untrusted"])
        start = (frame_address + 0x20) & 0xFFFFFFFF
        try:
            found = self._scan(start)
        except _Stop as s:
            raise _Stop(f"exception frame at 0x{frame_address:08x} unusable ({why}); "
                        f"{s.reason}") from None
        found.exception = info
        self.warnings.append(f"exception frame at 0x{frame_address:08x} unusable ({why}): "
                             f"frames below it come from a stack scan from 0x{start:08x}")
        return found

    # -- exidx -----------------------------------------------------------------

    def _step_exidx(self, state: _State, entry: _ExidxEntry) -> _State:
        assert state.sp is not None
        vsp, caller, pc_set = _ehabi_execute(entry.instructions, state.regs, state.sp,
                                              self.memory.read_u32)
        caller[SP] = vsp
        ra = caller[PC] if pc_set else caller.get(LR)
        if ra is None:  # EHABI 9.3 "Finish": pc = lr when no instruction popped r15
            raise _CfiError("the return address is unknown (lr not known in this frame)")
        found = self._return_to(state, ra, vsp, caller, "cfi")
        if found.how == "cfi":
            found.cfi_source = ".ARM.exidx"
        return found

    # -- scanning ---------------------------------------------------------------

    def _scan_or_stop(self, state: _State, why: str, after_cfi: _Row | None = None) -> _State:
        if state.sp is None:
            raise _Stop(why + "; no stack pointer to scan from")
        try:
            found = self._scan(state.sp, skip=state.used_return, via=state)
        except _Stop as s:
            raise _Stop(f"{why}; {s.reason}") from None
        self.warnings.append(f"{why}: frame {found.pc:#010x} found by a stack scan")
        return found

    def _scan(self, start: int, *, skip: int | None = None, via: _State | None = None) -> _State:
        """The first word at or above ``start`` that is a return address.

        A Thumb return address (bit 0 set) counts when the instruction before
        it is a call.  An EXC_RETURN value counts too (when ``via`` is given):
        a handler that pushed lr on entry keeps it right below the SP it was
        entered with, so the exception frame is crossed from there.  ``skip``
        is a return address the walk already followed (from lr); its first
        copy on the stack is where the callee saved it, not another frame.
        """
        address = (start + 3) & ~3
        end = address + SCAN_LIMIT_BYTES
        read_any = False
        while address < end:
            word = self.memory.try_read_u32(address)
            if word is None:
                if read_any:
                    raise _Stop(f"stack scan ran out of captured memory at 0x{address:08x}")
                if address - start >= SCAN_GAP_BYTES:
                    end = address
                    break
                address += 4
                continue
            read_any = True
            if skip is not None and word == skip:
                skip = None
            elif word & 1 and self._after_call(word & ~1):
                return _State(word & ~1, address + 4, {PC: word & ~1, SP: address + 4,
                                                         LR: word}, "scan", False)
            elif via is not None and _is_exc_return(word, self.arch) and self._valid_exc(word):
                self.warnings.append(f"stack scan: EXC_RETURN 0x{word:08x} at 0x{address:08x}, "
                                     "taken as the handler's saved lr")
                return self._cross_exc_return(via, word, address + 4)
            address += 4
        if not read_any:
            raise _Stop(f"stack scan: no captured memory at 0x{start:08x}..0x{end:08x}")
        raise _Stop(f"stack scan found no return address in 0x{start:08x}..0x{end:08x}")

    def _valid_exc(self, value: int) -> bool:
        try:
            decode_exc_return(value, self.arch)
        except CrashcartError:
            return False
        return True

    def _after_call(self, ret: int) -> bool:
        """Is the instruction before ``ret`` a BL (4 bytes) or BLX Rm (2 bytes)?"""
        if not self._is_code(ret - 2):
            return False
        hw = self.memory.try_read(ret - 4, 4)
        if hw is None:
            return False
        first, second = struct.unpack("<HH", hw)
        # A7.7.18 BL, encoding T1: 11110 S imm10 | 11 J1 1 J2 imm11
        if first & 0xF800 == 0xF000 and second & 0xD000 == 0xD000:
            return True
        # A7.7.19 BLX (register), encoding T1: 0100 0111 1 Rm 000
        return second & 0xFF87 == 0x4780


# -- helpers ------------------------------------------------------------------------------

_NAMES = {**{n: f"r{n}" for n in range(13)}, SP: "sp", LR: "lr", PC: "pc"}
_DWARF_NUMBER = {v: k for k, v in _NAMES.items()}
_BASIC = 0xFFFFFFF9  # only for the frame layout of a basic frame when EXC_RETURN is unknown


def _reg_order(name: str) -> int:
    return _DWARF_NUMBER.get(name, 99)


def _hex(value: int | None) -> str:
    return "?" if value is None else f"0x{value:08x}"


def _norm(path: str | None) -> str | None:
    return None if path is None else posixpath.normpath(path)


def _is_exc_return(value: int, arch: str) -> bool:
    # B1.5.8: EXC_RETURN values have bits [31:28] = 0xF (v8-M: 0xFF prefix too).
    return value >> 24 == 0xFF


def _read_crash_record(image: ElfImage, memory: MemoryImage, symbol: str) -> dict[str, int]:
    from collector import dwarf_types

    sym = image.get_symbol(symbol)
    if sym is None:
        raise InputError(f"the firmware has no symbol {symbol!r}", field="crash_record_symbol",
                         value=symbol)
    dtype = image.variable_type(symbol)
    data = memory.read(sym.address, dtype.size)
    value = dwarf_types.decode(dtype, data)
    if not isinstance(value, dict):
        raise InputError(f"{symbol} is not a struct", field="crash_record_symbol", value=symbol)
    out = {k: v for k, v in value.items() if k in ("msp", "psp", "exc_return") and
           isinstance(v, int)}
    if "psp" not in out:
        raise InputError(f"{symbol} has no member 'psp'", field="crash_record_symbol",
                         value=symbol)
    if "magic" in value and isinstance(value["magic"], int) and value["magic"] == 0:
        raise InputError(f"{symbol} is empty (magic 0)", field="crash_record_symbol",
                         value=symbol)
    return out


# -- per-ELF tables (cached) ---------------------------------------------------------------


_TABLES: weakref.WeakKeyDictionary[ElfImage, _Tables] = weakref.WeakKeyDictionary()


def entry_sp(image: ElfImage, pc: int, registers: Mapping[str, int]) -> tuple[int, str] | None:
    """The stack pointer on entry to the function executing at ``pc`` (its CFA).

    For an exception handler halted with ``lr`` still holding EXC_RETURN this is
    the address of the stacked exception frame, wherever in the handler ``pc``
    is (after ``push {r4, r5, r6}`` it is ``sp + 12``).  From ``.debug_frame``
    only; ``None`` when it has no row for ``pc`` or the CFA is an expression or
    based on a register not given.  Returns the value and how it was found.
    """
    row = _tables_for(image).cfi(pc)      # None outside the code (see _Tables.cfi)
    if row is None or row.cfa[0] != "reg":
        return None
    number, offset = row.cfa[1], row.cfa[2]
    name = "sp" if number == SP else f"r{number}"
    base = registers.get(name)
    if base is None:
        return None
    return (base + offset) & 0xFFFFFFFF, f"{name}{offset:+d} (the handler's CFA at pc, .debug_frame)"


def _tables_for(image: ElfImage) -> _Tables:
    tables = _TABLES.get(image)
    if tables is None:
        tables = _Tables(image)
        _TABLES[image] = tables
    return tables


class _Tables:
    """What the unwinder needs from one ELF: code ranges, CFI, exidx, symbols, gdb lines."""

    def __init__(self, image: ElfImage) -> None:
        self.image = image
        sections = read_sections(image.data, image.path)
        self.code = sorted((s.address, s.address + s.size) for s in sections
                           if s.flags & SHF_EXECINSTR and s.flags & 0x2 and s.size)
        self._code_starts = [a for a, _ in self.code]
        self.fdes: list[_Fde] = []
        self.warnings: list[str] = []
        frame = next((s for s in sections if s.name == ".debug_frame"), None)
        if frame is not None:
            try:
                self.fdes = _parse_debug_frame(section_data(image.data, frame))
            except _CfiError as err:
                self.warnings.append(f".debug_frame is malformed ({err}); not used")
                LOG.warning("%s: .debug_frame is malformed: %s", image.path, err)
        self.fdes.sort(key=lambda f: f.start)
        self._fde_starts = [f.start for f in self.fdes]
        exidx = next((s for s in sections if s.name == ".ARM.exidx"), None)
        self.exidx_entries: list[_ExidxEntry] = []
        self.exidx_error: str | None = None  # the whole table is unusable
        if exidx is not None:
            self.exidx_entries, self.exidx_error = _parse_exidx(
                image, exidx.address, section_data(image.data, exidx))
            if self.exidx_error is not None:
                self.warnings.append(f".ARM.exidx is malformed ({self.exidx_error}); not used")
                LOG.warning("%s: .ARM.exidx is malformed: %s", image.path, self.exidx_error)
        self._exidx_starts = [e.start for e in self.exidx_entries]
        self._rows: dict[int, list[_Row]] = {}
        self._lines: _GdbLineTable | None = None
        self._functions: list[tuple[int, int]] | None = None
        self._function_starts: list[int] = []
        self._call_sites: _CallSites | None = None

    def in_code(self, address: int) -> bool:
        i = bisect_right(self._code_starts, address) - 1
        return i >= 0 and address < self.code[i][1]

    def _fde(self, pc: int) -> _Fde | None:
        i = bisect_right(self._fde_starts, pc) - 1
        if i >= 0 and pc < self.fdes[i].end:
            return self.fdes[i]
        return None

    def cfi(self, pc: int) -> _Row | None:
        # GNU ld leaves the FDEs of functions --gc-sections removed at address 0 (over the
        # vector table): an address outside the code has no CFI, whatever they say.
        fde = self._fde(pc) if self.in_code(pc) else None
        if fde is None:
            return None
        rows = self._rows.get(fde.start)
        if rows is None:
            rows = fde.rows()
            self._rows[fde.start] = rows
        starts = [r.start for r in rows]
        return rows[bisect_right(starts, pc) - 1]

    def is_signal_frame(self, pc: int) -> bool:
        fde = self._fde(pc)
        return fde is not None and fde.cie.signal

    def exidx(self, pc: int) -> _ExidxEntry | None:
        """The ``.ARM.exidx`` entry covering ``pc``; one with ``error`` when it is unusable."""
        if not self.in_code(pc):
            return None
        if self.exidx_error is not None:
            return _ExidxEntry(pc, False, b"", f".ARM.exidx is malformed ({self.exidx_error})")
        # An entry covers up to the next entry's start (EHABI 5: the table is sorted).
        i = bisect_right(self._exidx_starts, pc) - 1
        if i < 0:
            return None
        return self.exidx_entries[i]

    def symbol_at(self, address: int) -> str | None:
        best = None
        for sym in self.image.symbols.values():
            if sym.kind in ("section", "file") or not sym.name or sym.name.startswith("$"):
                continue
            start = sym.address & ~1 if sym.kind == "function" else sym.address
            if start <= address and (best is None or start > best[0]):
                if sym.size and address >= start + sym.size:
                    continue
                best = (start, sym.name)
        return None if best is None else best[1]

    def function_entry(self, address: int) -> int | None:
        """Start of the function symbol containing ``address``."""
        if self._functions is None:
            funcs = sorted({(sym.address & ~1, sym.size) for sym in self.image.symbols.values()
                            if sym.kind == "function" and sym.size})
            self._functions = funcs
            self._function_starts = [a for a, _ in funcs]
        i = bisect_right(self._function_starts, address) - 1
        if i >= 0 and address < self._functions[i][0] + self._functions[i][1]:
            return self._functions[i][0]
        return None

    def call_sites(self) -> _CallSites:
        if self._call_sites is None:
            self._call_sites = _CallSites(self)
        return self._call_sites

    def lines(self, address: int) -> tuple[str | None, int | None] | None:
        if self._lines is None:
            self._lines = _GdbLineTable(self.image)
        return self._lines.lookup(address)


# -- call sites (DWARF 5, 3.4.1) ---------------------------------------------------------------


class _CallSites:
    """DW_TAG_call_site entries: return pc -> target entry, and tail calls per function."""

    def __init__(self, tables: _Tables) -> None:
        self.targets: dict[int, int | None] = {}
        self.tail: dict[int, list[tuple[int, int]]] = {}  # function entry -> (return pc, target)
        image = tables.image
        try:
            if image.has_dwarf:
                self._read(image, tables)
        except Exception as err:  # noqa: BLE001 - pyelftools raises many kinds on bad DWARF
            LOG.warning("%s: call sites not read: %s", image.path, err)

    def _read(self, image: ElfImage, tables: _Tables) -> None:
        dwarf = image.elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag not in ("DW_TAG_call_site", "DW_TAG_GNU_call_site"):
                    continue
                attrs = die.attributes
                ret = attrs.get("DW_AT_call_return_pc") or attrs.get("DW_AT_low_pc")
                if ret is None:
                    continue
                return_pc = ret.value & ~1
                tail = "DW_AT_call_tail_call" in attrs or "DW_AT_GNU_tail_call" in attrs
                target = None
                for name in ("DW_AT_call_origin", "DW_AT_abstract_origin"):
                    if name in attrs:
                        target = self._entry(image, die.get_DIE_from_attribute(name))
                        break
                self.targets[return_pc] = target
                if tail and target is not None:
                    caller = tables.function_entry(return_pc - 1)
                    if caller is not None:
                        self.tail.setdefault(caller, []).append((return_pc, target))

    @staticmethod
    def _entry(image: ElfImage, die: Any) -> int | None:
        for _ in range(4):
            attrs = die.attributes
            if "DW_AT_low_pc" in attrs:
                return int(attrs["DW_AT_low_pc"].value) & ~1
            if "DW_AT_name" in attrs:
                name = attrs["DW_AT_name"].value
                sym = image.get_symbol(name.decode("utf-8", "replace")
                                       if isinstance(name, bytes) else str(name))
                return None if sym is None or sym.kind != "function" else sym.address & ~1
            ref = next((a for a in ("DW_AT_specification", "DW_AT_abstract_origin")
                        if a in attrs), None)
            if ref is None:
                return None
            die = die.get_DIE_from_attribute(ref)
        return None

    def chain(self, caller_return_pc: int, callee_entry: int) -> list[int]:
        """Return pcs of the tail call sites from the caller's call to the callee, outer first."""
        first = self.targets.get(caller_return_pc)
        if first is None or first == callee_entry:
            return []
        result: tuple[list[int], int, int] | None = None  # chain, common prefix, common suffix

        def visit(function: int, path: list[int], seen: set[int]) -> None:
            nonlocal result
            for return_pc, target in self.tail.get(function, []):
                if return_pc in seen:
                    continue
                here = [*path, return_pc]
                if target == callee_entry:
                    if result is None:
                        result = (here, len(here), len(here))
                    else:
                        old, pre, suf = result
                        pre = min(pre, _common_prefix(old, here))
                        suf = min(suf, _common_prefix(old[::-1], here[::-1]))
                        result = (old, pre, suf)
                    continue
                visit(target, here, seen | {return_pc})

        visit(first, [], set())
        if result is None:
            return []
        chain, pre, suf = result
        if pre + suf >= len(chain):
            return chain
        return chain[:pre] + chain[len(chain) - suf:]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


# -- .debug_frame (DWARF 5, 6.4) ------------------------------------------------------------


class _CfiError(Exception):
    pass


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _CfiError("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _CfiError("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


@dataclass
class _Cie:
    code_align: int
    data_align: int
    ra_column: int
    instructions: bytes
    signal: bool


@dataclass
class _Row:
    start: int
    cfa: tuple[Any, ...]  # ("reg", n, offset) or ("expr", bytes)
    rules: dict[int, tuple[Any, ...]]
    ra_column: int
    signal: bool

    def needs_sp(self) -> bool:
        return self.cfa[0] != "reg" or self.cfa[1] == SP

    def cfa_value(self, regs: Mapping[int, int], read: Callable[[int], int]) -> int:
        if self.cfa[0] == "reg":
            base = regs.get(self.cfa[1])
            if base is None:
                raise _CfiError(f"the CFA is based on r{self.cfa[1]}, which is unknown here")
            return (base + self.cfa[2]) & 0xFFFFFFFF
        return _evaluate(self.cfa[1], regs, read)


@dataclass
class _Fde:
    start: int
    end: int
    cie: _Cie
    instructions: bytes

    def rows(self) -> list[_Row]:
        cie = self.cie
        initial = _execute_cfa(cie.instructions, cie, self.start, None)
        return _execute_cfa(self.instructions, cie, self.start, initial[-1])


def _parse_debug_frame(data: bytes) -> list[_Fde]:
    cies: dict[int, _Cie | None] = {}
    fdes: list[_Fde] = []
    pos = 0
    while pos + 4 <= len(data):
        offset = pos
        length, = struct.unpack_from("<I", data, pos)
        if length == 0xFFFFFFFF:
            raise _CfiError("64-bit DWARF is not supported for 32-bit Cortex-M")
        body_end = pos + 4 + length
        if length == 0 or body_end > len(data):
            if length == 0:
                pos += 4
                continue
            raise _CfiError(f"entry at 0x{offset:x} runs past the section end")
        cie_id, = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8:body_end]
        if cie_id == 0xFFFFFFFF:
            cies[offset] = _parse_cie(body, offset)
        else:
            cie = cies.get(cie_id)
            if cie_id not in cies:
                cies[cie_id] = cie = _parse_cie_at(data, cie_id)
            if cie is not None and len(body) >= 8:
                start, size = struct.unpack_from("<II", body, 0)
                if size:
                    fdes.append(_Fde(start & ~1, (start & ~1) + size, cie, body[8:]))
        pos = body_end
    return fdes


def _parse_cie_at(data: bytes, offset: int) -> _Cie | None:
    if offset + 8 > len(data):
        return None
    length, cie_id = struct.unpack_from("<II", data, offset)
    if cie_id != 0xFFFFFFFF or offset + 4 + length > len(data):
        return None
    return _parse_cie(data[offset + 8:offset + 4 + length], offset)


def _parse_cie(body: bytes, offset: int) -> _Cie | None:
    version = body[0] if body else 0
    end = body.find(b"\0", 1)
    if end < 0:
        raise _CfiError(f"CIE at 0x{offset:x}: unterminated augmentation")
    augmentation = body[1:end].decode("latin-1")
    pos = end + 1
    if augmentation and set(augmentation) - {"S"}:
        LOG.info("CIE at 0x%x: augmentation %r not understood; its FDEs are skipped",
                 offset, augmentation)
        return None
    if version >= 4:
        pos += 2  # address_size, segment_selector_size
    code_align, pos = _uleb(body, pos)
    data_align, pos = _sleb(body, pos)
    if version == 1:
        ra = body[pos]
        pos += 1
    else:
        ra, pos = _uleb(body, pos)
    return _Cie(code_align, data_align, ra, body[pos:], "S" in augmentation)


def _execute_cfa(ins: bytes, cie: _Cie, start: int, initial: _Row | None) -> list[_Row]:
    """Run call frame instructions (DWARF 5, 6.4.2) into rows by location."""
    init_rules = dict(initial.rules) if initial else {}
    row = _Row(start, initial.cfa if initial else ("reg", SP, 0), dict(init_rules),
               cie.ra_column, cie.signal)
    rows = [row]
    stack: list[tuple[tuple[Any, ...], dict[int, tuple[Any, ...]]]] = []
    loc = start
    pos = 0

    def advance(delta: int) -> None:
        nonlocal loc, row
        loc += delta * cie.code_align
        if row.start == loc:
            return
        row = _Row(loc, row.cfa, dict(row.rules), cie.ra_column, cie.signal)
        rows.append(row)

    while pos < len(ins):
        op = ins[pos]
        pos += 1
        high, low = op & 0xC0, op & 0x3F
        if high == 0x40:
            advance(low)
        elif high == 0x80:
            off, pos = _uleb(ins, pos)
            row.rules[low] = ("offset", off * cie.data_align)
        elif high == 0xC0:
            row.rules.pop(low, None)
            if low in init_rules:
                row.rules[low] = init_rules[low]
        elif op == 0x00:
            pass
        elif op == 0x01:
            loc = struct.unpack_from("<I", ins, pos)[0] & ~1
            pos += 4
            advance(0)
        elif op in (0x02, 0x03, 0x04):
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            if pos + size > len(ins):
                raise _CfiError("truncated advance_loc")
            delta = int.from_bytes(ins[pos:pos + size], "little")
            pos += size
            advance(delta)
        elif op in (0x05, 0x11, 0x14, 0x15):
            reg, pos = _uleb(ins, pos)
            if op in (0x05, 0x14):
                off, pos = _uleb(ins, pos)
            else:
                off, pos = _sleb(ins, pos)
            row.rules[reg] = ("offset" if op in (0x05, 0x11) else "val_offset",
                              off * cie.data_align)
        elif op == 0x06:
            reg, pos = _uleb(ins, pos)
            row.rules.pop(reg, None)
            if reg in init_rules:
                row.rules[reg] = init_rules[reg]
        elif op == 0x07:
            reg, pos = _uleb(ins, pos)
            row.rules[reg] = ("undefined",)
        elif op == 0x08:
            reg, pos = _uleb(ins, pos)
            row.rules[reg] = ("same",)
        elif op == 0x09:
            reg, pos = _uleb(ins, pos)
            other, pos = _uleb(ins, pos)
            row.rules[reg] = ("register", other)
        elif op == 0x0A:
            stack.append((row.cfa, dict(row.rules)))
        elif op == 0x0B:
            if not stack:
                raise _CfiError("DW_CFA_restore_state without remember_state")
            row.cfa, row.rules = stack.pop()
            row.rules = dict(row.rules)
        elif op in (0x0C, 0x12):
            reg, pos = _uleb(ins, pos)
            if op == 0x0C:
                off, pos = _uleb(ins, pos)
            else:
                off, pos = _sleb(ins, pos)
                off *= cie.data_align
            row.cfa = ("reg", reg, off)
        elif op == 0x0D:
            reg, pos = _uleb(ins, pos)
            row.cfa = ("reg", reg, row.cfa[2] if row.cfa[0] == "reg" else 0)
        elif op in (0x0E, 0x13):
            if op == 0x0E:
                off, pos = _uleb(ins, pos)
            else:
                off, pos = _sleb(ins, pos)
                off *= cie.data_align
            if row.cfa[0] != "reg":
                raise _CfiError("def_cfa_offset after a CFA expression")
            row.cfa = ("reg", row.cfa[1], off)
        elif op == 0x0F:
            size, pos = _uleb(ins, pos)
            row.cfa = ("expr", ins[pos:pos + size])
            pos += size
        elif op in (0x10, 0x16):
            reg, pos = _uleb(ins, pos)
            size, pos = _uleb(ins, pos)
            row.rules[reg] = ("expr" if op == 0x10 else "val_expr", ins[pos:pos + size])
            pos += size
        elif op == 0x2E:  # DW_CFA_GNU_args_size
            _, pos = _uleb(ins, pos)
        elif op == 0x2F:  # DW_CFA_GNU_negative_offset_extended
            reg, pos = _uleb(ins, pos)
            off, pos = _uleb(ins, pos)
            row.rules[reg] = ("offset", -off * cie.data_align)
        else:
            raise _CfiError(f"call frame instruction 0x{op:02x} not understood")
    return rows


def _evaluate(expr: bytes, regs: Mapping[int, int], read: Callable[[int], int], *,
              push_cfa: int | None = None) -> int:
    """A DWARF expression (DWARF 5, 2.5) over 32-bit values: the subset CFI uses."""
    stack: list[int] = [] if push_cfa is None else [push_cfa]
    pos = 0
    m = 0xFFFFFFFF

    def pop() -> int:
        if not stack:
            raise _CfiError("DWARF expression stack underflow")
        return stack.pop()

    while pos < len(expr):
        op = expr[pos]
        pos += 1
        if 0x30 <= op <= 0x4F:  # DW_OP_lit0..31
            stack.append(op - 0x30)
        elif 0x70 <= op <= 0x8F:  # DW_OP_breg0..31
            off, pos = _sleb(expr, pos)
            reg = op - 0x70
            if reg not in regs:
                raise _CfiError(f"expression uses r{reg}, which is unknown here")
            stack.append((regs[reg] + off) & m)
        elif op == 0x06:  # deref
            stack.append(read(pop()))
        elif op == 0x12:  # dup
            v = pop()
            stack += [v, v]
        elif op == 0x13:  # drop
            pop()
        elif op == 0x14:  # over
            if len(stack) < 2:
                raise _CfiError("DWARF expression stack underflow")
            stack.append(stack[-2])
        elif op == 0x16:  # swap
            b, a = pop(), pop()
            stack += [b, a]
        elif op == 0x23:  # plus_uconst
            v, pos = _uleb(expr, pos)
            stack.append((pop() + v) & m)
        elif op in (0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D):  # const1u/1s/2u/2s/4u/4s
            size = {0x08: 1, 0x09: 1, 0x0A: 2, 0x0B: 2, 0x0C: 4, 0x0D: 4}[op]
            raw = expr[pos:pos + size]
            if len(raw) != size:
                raise _CfiError("truncated constant")
            stack.append(int.from_bytes(raw, "little", signed=op in (0x09, 0x0B, 0x0D)) & m)
            pos += size
        elif op == 0x10:  # constu
            v, pos = _uleb(expr, pos)
            stack.append(v & m)
        elif op == 0x11:  # consts
            v, pos = _sleb(expr, pos)
            stack.append(v & m)
        elif op in (0x1A, 0x1C, 0x1E, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27):
            b, a = pop(), pop()
            if op == 0x1A:
                r = a & b
            elif op == 0x1C:
                r = a - b
            elif op == 0x1E:
                r = a * b
            elif op == 0x21:
                r = a | b
            elif op == 0x22:
                r = a + b
            elif op == 0x24:
                r = a << b if b < 32 else 0
            elif op == 0x25:
                r = a >> b
            elif op == 0x26:  # shra
                sa = a - (1 << 32) if a & 0x80000000 else a
                r = sa >> min(b, 31)
            else:
                r = a ^ b
            stack.append(r & m)
        elif op == 0x1F:  # neg
            stack.append(-pop() & m)
        elif op == 0x20:  # not
            stack.append(~pop() & m)
        else:
            raise _CfiError(f"DWARF expression operation 0x{op:02x} not understood")
    if not stack:
        raise _CfiError("DWARF expression left no value")
    return stack[-1] & m


# -- .ARM.exidx (ARM EHABI, IHI 0038) -------------------------------------------------------


@dataclass
class _ExidxEntry:
    start: int
    cant_unwind: bool
    instructions: bytes
    error: str | None = None  # why this entry cannot be used (it still ends the one before)
    table: str = ".ARM.exidx"  # where the instructions are: ".ARM.exidx" or ".ARM.extab"


def _prel31(word: int, place: int) -> int:
    # EHABI 4.4.2: a 31-bit place-relative offset, sign-extended from bit 30.
    offset = word & 0x7FFFFFFF
    if offset & 0x40000000:
        offset -= 0x80000000
    return (place + offset) & 0xFFFFFFFF


def _parse_exidx(image: ElfImage, address: int, data: bytes
                 ) -> tuple[list[_ExidxEntry], str | None]:
    """The index table (EHABI 5) as entries, and why the whole table is unusable, if it is.

    A bad entry is kept with its ``error`` (so the entry before it does not
    appear to cover its function); a table out of order is unusable, as a
    binary search over it would find wrong entries.
    """
    out: list[_ExidxEntry] = []
    if len(data) % 8:
        return [], f"size {len(data)} is not a multiple of 8 bytes"
    for i in range(0, len(data), 8):
        w0, w1 = struct.unpack_from("<II", data, i)
        here = address + i
        if w0 & 0x80000000:
            return [], f"entry at 0x{here:08x}: bit 31 of the function offset is set"
        start = _prel31(w0, here) & ~1
        if out and start < out[-1].start:
            return [], (f"entries out of order: 0x{start:08x} (entry at 0x{here:08x}) follows "
                        f"0x{out[-1].start:08x}")
        out.append(_exidx_entry(image, start, w1, here + 4))
    return out, None


def _exidx_entry(image: ElfImage, start: int, w1: int, place: int) -> _ExidxEntry:
    if w1 == 1:  # EXIDX_CANTUNWIND (EHABI 5)
        return _ExidxEntry(start, True, b"")
    table = ".ARM.exidx"
    if w1 & 0x80000000:  # the compact model inline (EHABI 5, 6.3)
        words = [w1]
    else:  # prel31 to the .ARM.extab entry
        at = _prel31(w1, place)
        first = image.read(at, 4)
        if first is None:
            return _ExidxEntry(start, False, b"", f"its .ARM.extab entry 0x{at:08x} is outside "
                               "the ELF's loaded data")
        head = int.from_bytes(first, "little")
        if not head & 0x80000000:
            return _ExidxEntry(start, False, b"", f"generic personality routine (.ARM.extab "
                               f"0x{at:08x}): its unwinding cannot be interpreted")
        table = ".ARM.extab"
        words = [head]
        if (head >> 24) & 0x0F in (1, 2):  # EHABI 10.2: byte 2 counts the words that follow
            extra = (head >> 16) & 0xFF
            more = image.read(at + 4, 4 * extra) if extra else b""
            if more is None:
                return _ExidxEntry(start, False, b"", f".ARM.extab entry 0x{at:08x} is "
                                   f"truncated: {extra} more words do not fit the ELF")
            words += struct.unpack(f"<{extra}I", more)
    head = words[0]
    index = (head >> 24) & 0x0F
    if index == 0:  # Su16: three instruction bytes
        ins = bytes([(head >> 16) & 0xFF, (head >> 8) & 0xFF, head & 0xFF])
    elif index in (1, 2):  # Lu16 / Lu32: two bytes, then whole words
        ins = bytes([(head >> 8) & 0xFF, head & 0xFF])
        for w in words[1:]:
            ins += w.to_bytes(4, "big")
    else:
        return _ExidxEntry(start, False, b"", f"personality routine index {index} is not "
                           "one of the ARM-defined ones (0, 1, 2)")
    return _ExidxEntry(start, False, ins, table=table)


def _ehabi_execute(ins: bytes, regs: Mapping[int, int], sp: int,
                   read: Callable[[int], int]) -> tuple[int, dict[int, int], bool]:
    """Frame unwinding instructions (EHABI 9.3); returns (vsp, registers, pc popped)."""
    vsp = sp
    out = {n: v for n, v in regs.items() if 4 <= n <= 11 or n == LR}
    pc_set = False
    pos = 0

    def pop_mask(mask: int, base: int) -> None:
        nonlocal vsp, pc_set
        for bit in range(16):
            if mask >> bit & 1:
                out[base + bit] = read(vsp)
                vsp = (vsp + 4) & 0xFFFFFFFF
                if base + bit == PC:
                    pc_set = True
        if base == 4 and mask >> (SP - 4) & 1:
            # EHABI 9.3 remark: a popped r13 is written to vsp after the whole instruction.
            vsp = out.pop(SP)

    while pos < len(ins):
        op = ins[pos]
        pos += 1
        if op & 0xC0 == 0x00:
            vsp = (vsp + ((op & 0x3F) << 2) + 4) & 0xFFFFFFFF
        elif op & 0xC0 == 0x40:
            vsp = (vsp - ((op & 0x3F) << 2) - 4) & 0xFFFFFFFF
        elif op & 0xF0 == 0x80:
            if pos >= len(ins):
                raise _CfiError("truncated unwind instruction")
            mask = ((op & 0x0F) << 8) | ins[pos]
            pos += 1
            if mask == 0:
                raise _CfiError("the unwind table refuses to unwind here")
            pop_mask(mask, 4)
        elif op & 0xF0 == 0x90:
            reg = op & 0x0F
            if reg in (13, 15):
                raise _CfiError("reserved unwind instruction")
            if reg not in out and reg not in regs:
                raise _CfiError(f"vsp = r{reg}, which is unknown")
            vsp = out.get(reg, regs.get(reg, 0))
        elif op & 0xF0 == 0xA0:
            count = op & 0x07
            pop_mask(((1 << (count + 1)) - 1) << 0, 4)
            if op & 0x08:
                pop_mask(1 << 10, 4)  # r14
        elif op == 0xB0:
            break
        elif op == 0xB1:
            if pos >= len(ins):
                raise _CfiError("truncated unwind instruction")
            mask = ins[pos]
            pos += 1
            if mask == 0 or mask & 0xF0:
                raise _CfiError("reserved unwind instruction")
            pop_mask(mask, 0)
        elif op == 0xB2:
            v, pos = _uleb(ins, pos)
            vsp = (vsp + 0x204 + (v << 2)) & 0xFFFFFFFF
        elif op == 0xB4:  # pop the return address authentication code (PACBTI, v8.1-M)
            vsp = (vsp + 4) & 0xFFFFFFFF
        elif op == 0xB5:  # use vsp as the PAC modifier: no effect on the unwind
            pass
        elif op in (0xB3, 0xC8, 0xC9):
            if pos >= len(ins):
                raise _CfiError("truncated unwind instruction")
            count = (ins[pos] & 0x0F) + 1
            pos += 1
            vsp = (vsp + 8 * count + (4 if op == 0xB3 else 0)) & 0xFFFFFFFF
        elif op & 0xF8 == 0xB8:
            vsp = (vsp + 8 * ((op & 0x07) + 1) + 4) & 0xFFFFFFFF
        elif op & 0xF8 == 0xD0:
            vsp = (vsp + 8 * ((op & 0x07) + 1)) & 0xFFFFFFFF
        else:
            raise _CfiError(f"unwind instruction 0x{op:02x} not supported (iWMMX or spare)")
    return vsp, out, pc_set


# -- line numbers as GDB chooses them --------------------------------------------------------


class _GdbLineTable:
    """File and line for an address, chosen the way GDB 13 chooses them.

    addr2line and GDB read the same DWARF line program but keep different
    rows where several sit at one address.  GDB (dwarf2/read.c
    ``lnp_state_machine::record_line``, buildsym.c ``record_line``, symtab.c
    ``find_pc_sect_line``) keeps one table per source file, ends a file's
    table with a line-0 marker when the program switches to another file at a
    new row (the marker deletes that file's rows at the same address), drops
    a non-statement row that switches file at an unchanged address, drops
    sequences that start at 0 in units that do not, then takes, among the
    files of the unit, the last row at or below the address with the highest
    address (walking back to a statement row at the same address).
    """

    def __init__(self, image: ElfImage) -> None:
        self.units: list[tuple[list[tuple[int, int]], dict[str, list[tuple[int, int, bool]]]]] = []
        try:
            if image.has_dwarf:
                self._read(image)
        except Exception as err:  # noqa: BLE001 - pyelftools raises many kinds on bad DWARF
            LOG.warning("%s: line table not read: %s", image.path, err)
            self.units = []

    def _read(self, image: ElfImage) -> None:
        dwarf = image.elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            ranges = _cu_ranges(dwarf, cu, top)
            if not ranges:
                continue
            prog = dwarf.line_program_for_CU(cu)
            if prog is None:
                continue
            lowpc = min(lo for lo, _ in ranges)
            files = self._file_names(prog, top)
            tables: dict[str, list[tuple[int, int, bool]]] = {}
            last_file: str | None = None
            last_line = 0
            last_address: int | None = None
            recording = True
            seq_started = False
            for entry in prog.get_entries():
                st = entry.state
                if st is None:
                    continue
                if not seq_started:
                    recording = not (st.address == 0 and lowpc > 0)
                    seq_started = True
                cur = files(st.file)
                if st.end_sequence:
                    if recording and last_file is not None:
                        _record(tables.setdefault(last_file, []), 0, st.address, True)
                    last_file, last_line, last_address, seq_started = None, 0, None, False
                    continue
                if not recording:
                    continue
                changed = cur != last_file
                ignore = (changed and last_address == st.address and not st.is_stmt) or \
                    st.line == 0
                if changed and not ignore and last_file is not None:
                    _record(tables.setdefault(last_file, []), 0, st.address, True)
                if not ignore:
                    if changed or st.line != last_line or not st.discriminator:
                        _record(tables.setdefault(cur, []), st.line, st.address,
                                bool(st.is_stmt))
                    last_file, last_line = cur, st.line
                last_address = st.address
            for name, rows in tables.items():
                # buildsym: stable sort by pc, end markers first among equal pcs.
                rows.sort(key=lambda r: (r[0], r[1] != 0))
                tables[name] = rows
            self.units.append((ranges, tables))

    @staticmethod
    def _file_names(prog: Any, top: Any) -> Callable[[int], str]:
        header = prog.header
        version = header["version"]
        dirs = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
                for d in header["include_directory"]]
        comp_dir = top.attributes.get("DW_AT_comp_dir")
        comp = comp_dir.value.decode("utf-8", "replace") if comp_dir else ""
        names: dict[int, str] = {}
        for i, fe in enumerate(header["file_entry"]):
            name = fe.name.decode("utf-8", "replace") if isinstance(fe.name, bytes) else fe.name
            index = i if version >= 5 else i + 1
            d = fe.dir_index
            if version < 5:
                directory = dirs[d - 1] if 0 < d <= len(dirs) else comp
            else:
                directory = dirs[d] if d < len(dirs) else comp
            if not name.startswith("/") and directory:
                name = posixpath.join(directory, name)
            names[index] = posixpath.normpath(name)
        return lambda n: names.get(n, f"<file {n}>")

    def lookup(self, address: int) -> tuple[str | None, int | None] | None:
        for ranges, tables in self.units:
            if not any(lo <= address < hi for lo, hi in ranges):
                continue
            best: tuple[int, int, bool] | None = None
            best_file = None
            for name, rows in tables.items():
                i = bisect_right(rows, address, key=lambda r: r[0]) - 1
                if i < 0:
                    continue
                prev = rows[i]
                if prev[1] and (best is None or prev[0] > best[0]):
                    j = i
                    if not prev[2]:
                        while j > 0 and rows[j - 1][0] == rows[j][0] and rows[j - 1][1] \
                                and not rows[j][2]:
                            j -= 1
                        if rows[j][2]:
                            prev = rows[j]
                    best, best_file = prev, name
            if best is None:
                return None
            return best_file, best[1]
        return None


def _record(rows: list[tuple[int, int, bool]], line: int, address: int, is_stmt: bool) -> None:
    """buildsym_compunit::record_line (GDB 13)."""
    if line == 0:
        last_line = None
        while rows:
            last_line = rows[-1][1]
            if rows[-1][0] != address:
                break
            rows.pop()
        if last_line is None or last_line == 0:
            return
    rows.append((address, line, is_stmt))


def _cu_ranges(dwarf: Any, cu: Any, top: Any) -> list[tuple[int, int]]:
    attrs = top.attributes
    if "DW_AT_ranges" in attrs:
        try:
            rl = dwarf.range_lists()
            if rl is None:
                return []
            out = []
            base = attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in attrs else 0
            for r in rl.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
                if hasattr(r, "begin_offset"):
                    lo, hi = r.begin_offset, r.end_offset
                    if not getattr(r, "is_absolute", False):
                        lo, hi = lo + base, hi + base
                    if hi > lo and lo != 0:
                        out.append((lo, hi))
                elif hasattr(r, "base_address"):
                    base = r.base_address
            return out
        except Exception:  # noqa: BLE001 - malformed range lists: the unit is skipped
            return []
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        lo = attrs["DW_AT_low_pc"].value
        hi = attrs["DW_AT_high_pc"].value
        if attrs["DW_AT_high_pc"].form != "DW_FORM_addr":
            hi += lo
        return [(lo, hi)] if hi > lo else []
    return []
