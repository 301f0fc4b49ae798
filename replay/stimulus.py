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

* ``at: {time: T}`` -- SysTick time, counted without stopping the VM: a
  breakpoint per tick would stop it a thousand times a second, and every
  stop moves QEMU's virtual clock on to its next timer deadline (below),
  which is the next tick: the firmware would get a few hundred
  instructions per "millisecond".  Our QEMU plugin (``qemu_plugin/vclock.c``)
  counts instead: at every entry to the SysTick handler (word 15 of the
  vector table at VTOR, read before boot) it adds (SYST_RVR + 1) / f to the
  elapsed SysTick time, f being the target's ``core.clock_hz`` when
  SYST_CSR.CLKSOURCE is 1.  When the armed time is reached it stops the VM
  before the handler's first instruction, as a breakpoint would (stop reply
  T05), and reports the tick in ``systick-report``.  The driver talks to the
  plugin through files in the board's work directory, written only while
  the VM is stopped.

Each stop lets QEMU's virtual clock catch up with its next timer deadline
when the VM resumes (icount "warp"), so a step with many stops (a console
trigger over a long boot text) shifts the guest's timers a little.  The
shift is the same on every run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from collector.elf import ElfImage
from crashcart.errors import EnvironmentProblem, InputError, TargetError
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

# ARMv7-M ARM B3.2.5 (VTOR) and B1.5.3 (the vector table): SysTick is exception 15.
VTOR = 0xE000ED08
SYSTICK_EXCEPTION = 15
SYST_CSR_CLKSOURCE = 1 << 2
# Files shared with the plugin (qemu_plugin/vclock.c) in the board's work directory.
SYSTICK_TRIGGER_FILE = "systick-trigger"
SYSTICK_REPORT_FILE = "systick-report"


@dataclass(frozen=True)
class SystickFire:
    """What the plugin reported when a time trigger stopped the VM."""

    fire: int  # how many times a time trigger fired in this run, this one included
    exception: int  # SysTick exceptions counted since the start of the run
    elapsed_ns: int  # SysTick time since the start of the run
    rvr: int
    csr: int


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
        self._systick_handler: int | None = None
        self._fires = 0
        self._last_fire: SystickFire | None = None

    # -- public --------------------------------------------------------------

    def prepare(self) -> None:
        self.gdb = GdbStub(self.board.gdb_address)
        if any(step.at.kind == "time" for step in self.steps):
            self._systick_handler = self._find_systick_handler()
            self._write_systick_trigger(None)  # before boot: the plugin reads it at once
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
        if self._systick_handler is not None:
            report = self._systick_report()
            if report.startswith("error symbols"):
                raise EnvironmentProblem(
                    "this QEMU does not export the functions the time trigger's plugin uses "
                    "to stop the VM (qemu_system_debug_request, cpu_stop_current, "
                    "cpu_loop_exit, qemu_get_cpu, cpu_memory_rw_debug)",
                    remedy="use Debian's qemu-system-arm 7.2 (./dev.sh setup), or trigger on "
                           "a symbol instead of a time")

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
        elif trigger.kind == "time":
            self._write_systick_trigger(trigger.time_ns)

    def _disarm(self, trigger: Trigger) -> None:
        gdb = self.gdb
        assert gdb is not None
        if trigger.kind == "symbol":
            gdb.remove(gdbstub.SOFTWARE_BREAKPOINT, self._symbol_address(trigger.symbol), 2)
        elif trigger.kind == "time":
            self._write_systick_trigger(None)
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
        if trigger.kind == "time":
            return self._systick_fired()
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
        if step.at.kind == "time" and self._last_fire is not None:
            where = (f" (SysTick exception {self._last_fire.exception}, SysTick time "
                     f"{self._last_fire.elapsed_ns / 1e6:g} ms, pc 0x{pc or 0:08x})")
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

    # -- SysTick time --------------------------------------------------------

    def _find_systick_handler(self) -> int:
        """Word 15 of the vector table at VTOR, read before boot (ARMv7-M B1.5.3)."""
        gdb = self.gdb
        assert gdb is not None
        vtor = int.from_bytes(gdb.read_memory(VTOR, 4), "little")
        raw = gdb.read_memory(vtor, 4 * (SYSTICK_EXCEPTION + 1))
        vectors = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
        handler = vectors[SYSTICK_EXCEPTION]
        firmware = self.image.path
        if handler == 0 or not handler & 1:
            raise InputError(f"the firmware's vector table (VTOR 0x{vtor:08x}) has no SysTick "
                             f"handler (word 15 is 0x{handler:08x})", path=firmware,
                             remedy="a time trigger counts SysTick exceptions: use it with "
                                    "firmware that runs SysTick, or trigger on a symbol")
        shared = [n for n in range(2, SYSTICK_EXCEPTION) if vectors[n] == handler]
        if shared:
            raise InputError(f"the SysTick handler 0x{handler & ~1:08x} also serves exception "
                             f"{shared[0]}, so its entries cannot be counted as ticks",
                             path=firmware, remedy="give SysTick its own handler, or trigger "
                                                   "on a symbol")
        return handler & ~1

    def _plugin_file(self, name: str) -> Path:
        assert self.board.workdir is not None
        return self.board.workdir / name

    def _write_systick_trigger(self, time_ns: int | None) -> None:
        """Tell the plugin the handler, the clocks and the armed time (None: disarmed)."""
        assert self._systick_handler is not None
        target = self.board.target
        cpu_hz = target.clock_hz
        line = (f"v1 {self._systick_handler:x} {cpu_hz} 0 {0 if time_ns is None else 1} "
                f"{time_ns or 0}\n")
        path = self._plugin_file(SYSTICK_TRIGGER_FILE)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(line)
        os.replace(tmp, path)

    def _systick_report(self) -> str:
        try:
            return self._plugin_file(SYSTICK_REPORT_FILE).read_text()
        except OSError:
            return ""

    def _systick_fired(self) -> bool:
        report = self._systick_report().split()
        if report[:1] == ["error"] and report[1:2] == ["clksource"]:
            csr = int(report[4], 16)
            target = self.board.target
            if csr & SYST_CSR_CLKSOURCE:
                raise InputError("the target file gives no processor clock, so SysTick "
                                 "periods cannot be turned into time", path=target.path,
                                 field="core.clock_hz", value=target.clock_hz,
                                 remedy="set core.clock_hz to the clock SysTick counts")
            raise InputError(f"the firmware runs SysTick from the external reference clock "
                             f"(SYST_CSR 0x{csr:08x}, CLKSOURCE 0), whose frequency the time "
                             f"trigger does not know", path=self.image.path,
                             remedy="trigger on a symbol or a console line instead, or run "
                                    "SysTick from the processor clock (CLKSOURCE 1)")
        if report[:1] != ["fired"] or len(report) < 6 or int(report[1]) != self._fires + 1:
            return False  # a stop that is not the plugin's
        self._fires += 1
        self._last_fire = SystickFire(int(report[1]), int(report[2]), int(report[3]),
                                      int(report[4], 16), int(report[5], 16))
        return True

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
