"""Stimulus at points fixed in the guest's execution, through QEMU's gdbstub.

Inputs are never raced against the wall clock (architecture notes,
"Determinism"): every stimulus step happens while the VM is stopped at a
point defined by the guest's own execution, and the VM resumes only when
the input is in place.

* ``at: boot`` -- the machine starts paused (``-S``); memory is written
  before the first instruction.
* ``at: {symbol: S, count: N}`` -- a breakpoint (``Z0``) at S; the N-th hit
  stops the VM before S's first instruction.
* ``at: {console: TEXT}`` -- a write watchpoint (``Z2``) on the UART's data
  register stops the VM at each byte the firmware prints, until the
  transcript ends in TEXT (the byte count makes the check exact).
* console input -- the CMSDK UART holds one received byte (RXFULL in its
  STATE register).  Each byte is sent to the console socket while the VM is
  stopped and the driver waits, reading STATE through the gdbstub, until
  QEMU has put it in the receive register; a read watchpoint (``Z3``) on
  the data register then stops the VM when the guest reads it, and the next
  byte is delivered.  So every byte arrives at the same instruction on
  every run.

QEMU stops on a watchpoint before the access; the driver removes the
watchpoint, single-steps the access and re-inserts it, as gdb does.

Each stop lets QEMU's virtual clock catch up with its next timer deadline
when the VM resumes (icount "warp"), so a step with many stops (a console
trigger over a long boot text) shifts the guest's timers a little.  The
shift is the same on every run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from collector.elf import ElfImage
from crashcart.errors import InputError, TargetError
from replay import gdbstub
from replay.gdbstub import GdbStub, StopReply
from replay.scenario import MemoryWrite, StimulusStep, Trigger
from replay.sim import SimulatedBoard

LOG = logging.getLogger(__name__)

# CMSDK APB UART (ARM DDI 0479, "APB UART"): DATA at +0, STATE at +4, RXFULL = STATE bit 1.
# Base addresses of the QEMU MPS2 boards' UARTs (QEMU hw/arm/mps2.c), indexed like
# the target file's simulator.qemu.uart.  This belongs in the target file.
CMSDK_UART_BASES = {
    "mps2-an385": (0x40004000, 0x40005000, 0x40006000, 0x40007000, 0x40009000),
    "mps2-an386": (0x40004000, 0x40005000, 0x40006000, 0x40007000, 0x40009000),
    "mps2-an500": (0x40004000, 0x40005000, 0x40006000, 0x40007000, 0x40009000),
    "mps2-an511": (0x40004000, 0x40005000, 0x40006000, 0x40007000, 0x40009000),
}
STATE_RXFULL = 1 << 1
DELIVERY_TIMEOUT_S = 5.0
SETTLE_S = 0.1


@dataclass(frozen=True)
class UartLayout:
    data: int
    state: int


def uart_layout(machine: str, index: int) -> UartLayout | None:
    bases = CMSDK_UART_BASES.get(machine)
    if bases is None or index >= len(bases):
        return None
    return UartLayout(bases[index], bases[index] + 4)


class StimulusDriver:
    """Delivers a scenario's stimulus to a started, still paused, board.

    Call :meth:`prepare` before the board is resumed (it applies the ``boot``
    steps and arms the first trigger), :meth:`start` to follow the run in a
    thread, and :meth:`finish` after the run to learn what was delivered.
    """

    def __init__(self, board: SimulatedBoard, image: ElfImage,
                 steps: tuple[StimulusStep, ...]) -> None:
        self.board = board
        self.image = image
        self.steps = steps
        self.log: list[str] = []
        self.error: BaseException | None = None
        self.gdb: GdbStub | None = None
        self._thread: threading.Thread | None = None
        sim = board.target.simulator
        assert sim is not None
        self.uart = uart_layout(sim.qemu.machine, sim.qemu.uart)
        if self.uart is None and any(s.console is not None or s.at.kind == "console"
                                     for s in steps):
            raise InputError(f"console stimulus is not supported on QEMU machine "
                             f"{sim.qemu.machine} (no CMSDK UART layout known)",
                             path=board.target.path,
                             remedy="use memory writes, or add the machine's UART layout")
        self._index = 0
        self._hits = 0
        self._tx_count = 0
        self._tx_base = 0
        self._search_from = 0
        self._watch_kind: int | None = None

    # -- public --------------------------------------------------------------

    def prepare(self) -> None:
        self.gdb = GdbStub(self.board.gdb_address)
        while self._index < len(self.steps) and self.steps[self._index].at.kind == "boot":
            self._act(self.steps[self._index])
            self._index += 1
        if self._index < len(self.steps):
            self._arm(self.steps[self._index].at, pre_boot=True)

    def start(self) -> None:
        if self._index >= len(self.steps):
            return
        self._thread = threading.Thread(target=self._follow, name="stimulus", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """Wait for the driver after the run ended; raise what went wrong in it."""
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.gdb is not None:
            self.gdb.close()
            self.gdb = None
        if self.error is not None:
            raise self.error

    @property
    def pending(self) -> list[str]:
        return [s.describe() for s in self.steps[self._index:]]

    # -- the run -------------------------------------------------------------

    def _follow(self) -> None:
        gdb = self.gdb
        assert gdb is not None
        try:
            while self._index < len(self.steps):
                stop = gdb.wait_stop(timeout_s=None)
                if stop is None or stop.exited:
                    return  # QEMU ended (time limit, reset that ends the run, ...)
                if not stop.is_trap:
                    continue  # stopped by someone else (a guest reset pausing QEMU)
                step = self.steps[self._index]
                if not self._triggered(step.at, stop):
                    gdb.cont()
                    continue
                self._disarm(step.at)
                self._act(step)
                self._index += 1
                if self._index < len(self.steps):
                    self._arm(self.steps[self._index].at, pre_boot=False)
                gdb.cont()
        except BaseException as exc:
            self.error = exc
            LOG.debug("stimulus failed", exc_info=True)
            try:
                gdb.query("k")  # end QEMU so the run does not wait for its wall-clock guard
            except TargetError:
                pass

    def _arm(self, trigger: Trigger, *, pre_boot: bool) -> None:
        gdb = self.gdb
        assert gdb is not None
        self._hits = 0
        if trigger.kind == "symbol":
            gdb.insert(gdbstub.SOFTWARE_BREAKPOINT, self._symbol_address(trigger.symbol), 2)
        elif trigger.kind == "console":
            assert self.uart is not None
            self._tx_count = 0
            self._tx_base = 0 if pre_boot else self._settled_transcript_length()
            self._search_from = self._tx_base
            gdb.insert(gdbstub.WRITE_WATCHPOINT, self.uart.data, 4)

    def _disarm(self, trigger: Trigger) -> None:
        gdb = self.gdb
        assert gdb is not None
        if trigger.kind == "symbol":
            gdb.remove(gdbstub.SOFTWARE_BREAKPOINT, self._symbol_address(trigger.symbol), 2)
        # console triggers are already disarmed by _triggered

    def _triggered(self, trigger: Trigger, stop: StopReply) -> bool:
        gdb = self.gdb
        assert gdb is not None
        if trigger.kind == "symbol":
            self._hits += 1
            if self._hits >= trigger.count:
                return True
            address = self._symbol_address(trigger.symbol)
            gdb.remove(gdbstub.SOFTWARE_BREAKPOINT, address, 2)
            gdb.step()
            gdb.insert(gdbstub.SOFTWARE_BREAKPOINT, address, 2)
            return False
        assert trigger.kind == "console" and self.uart is not None and trigger.text is not None
        if stop.watch_address is None:
            return False
        gdb.remove(gdbstub.WRITE_WATCHPOINT, self.uart.data, 4)
        gdb.step()  # the store to the data register happens now
        self._tx_count += 1
        want = trigger.text.encode("utf-8")
        transcript = self._wait_transcript(self._tx_base + self._tx_count)
        window = transcript[max(self._search_from, self._tx_base + self._tx_count - len(want)):
                            self._tx_base + self._tx_count]
        if window.endswith(want):
            return True
        gdb.insert(gdbstub.WRITE_WATCHPOINT, self.uart.data, 4)
        return False

    # -- actions -------------------------------------------------------------

    def _act(self, step: StimulusStep) -> None:
        gdb = self.gdb
        assert gdb is not None
        pc = None
        if step.at.kind != "boot":
            regs = gdb.registers()
            pc = regs[15] if len(regs) > 15 else None
        where = f" (pc 0x{pc:08x})" if pc is not None else ""
        if step.write is not None:
            address = self._write_address(step.write)
            gdb.write_memory(address, step.write.data)
            if gdb.read_memory(address, len(step.write.data)) != step.write.data:
                raise TargetError(f"memory at 0x{address:08x} did not take the stimulus write "
                                  f"({step.write.data.hex()})",
                                  remedy="write to RAM the firmware does not reinitialise")
        if step.console is not None:
            self._deliver(step.console)
        self.log.append(step.describe() + where)

    def _deliver(self, data: bytes) -> None:
        gdb = self.gdb
        assert gdb is not None and self.uart is not None
        for k in range(len(data)):
            if k:
                gdb.insert(gdbstub.READ_WATCHPOINT, self.uart.data, 4)
                gdb.cont()
                while True:
                    stop = gdb.wait_stop(timeout_s=None)
                    if stop is None or stop.exited:
                        raise TargetError(f"the run ended before the firmware read console "
                                          f"input byte {k + 1} of {len(data)}")
                    if stop.is_trap and stop.watch_address is not None:
                        break
                    if stop.is_trap:  # a breakpoint of ours is not armed now; go on
                        gdb.cont()
                gdb.remove(gdbstub.READ_WATCHPOINT, self.uart.data, 4)
                gdb.step()  # the guest's read of the data register happens now
            self.board.write_console(data[k:k + 1])
            self._wait_rx_full(k, len(data))

    def _wait_rx_full(self, k: int, total: int) -> None:
        gdb = self.gdb
        assert gdb is not None and self.uart is not None
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            state = int.from_bytes(gdb.read_memory(self.uart.state, 4), "little")
            if state & STATE_RXFULL:
                return
            if time.monotonic() > deadline:
                raise TargetError(
                    f"the UART did not take console input byte {k + 1} of {total} "
                    f"(STATE 0x{state:08x}): its receiver is off at this point",
                    remedy="deliver console input after the firmware enabled its UART "
                           "(e.g. at its main loop, or when it printed a prompt)")
            time.sleep(0.0005)

    # -- helpers -------------------------------------------------------------

    def _symbol_address(self, name: str | None) -> int:
        assert name is not None
        return self.image.symbol(name, purpose="a stimulus trigger").address & ~1

    def _write_address(self, write: MemoryWrite) -> int:
        if write.address is not None:
            return write.address
        assert write.symbol is not None
        return self.image.symbol(write.symbol, purpose="a stimulus write").address + write.offset

    def _wait_transcript(self, length: int) -> bytes:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            transcript = self.board.transcript
            if len(transcript) >= length or time.monotonic() > deadline:
                return transcript
            time.sleep(0.0005)

    def _settled_transcript_length(self) -> int:
        """Transcript length once every byte printed before this stop has arrived."""
        last = len(self.board.transcript)
        stable_since = time.monotonic()
        while time.monotonic() - stable_since < SETTLE_S:
            time.sleep(0.005)
            now = len(self.board.transcript)
            if now != last:
                last, stable_since = now, time.monotonic()
        return last
