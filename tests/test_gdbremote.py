"""The GDB remote client against QEMU 7.2's real gdbstub and against broken fake stubs.

The fakes stand in only for what QEMU will not do on request: close the
connection in the middle of a packet, send garbage, send bad checksums.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from collector.device_config import load_config_file
from collector.elf import ElfImage
from collector.gdbremote import (
    GdbConnectionLost,
    GdbMemoryError,
    GdbRemote,
    GdbRemoteError,
)
from crashcart.errors import TargetError
from replay.sim import SimulatedBoard

from .conftest import CONFIG_DIR

RAM = 0x20000000
# Generous virtual-time limit: these boards are stopped by the tests, not by time.
LONG_RUN_NS = 3_600_000_000_000


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def vm_status(board: SimulatedBoard) -> str:
    assert board.qmp is not None
    return str(board.qmp.command("query-status")["status"])


def boot(board: SimulatedBoard) -> None:
    """Resume the board and wait until the firmware has printed its banner."""
    board.resume()
    wait_for(lambda: b"crashcart sensor-node" in board.transcript)


@pytest.fixture
def board(target, elf_100) -> Iterator[SimulatedBoard]:
    """The fixture firmware with the default config on QEMU, paused at reset, gdbstub open."""
    with SimulatedBoard(target, elf_100, config=load_config_file(CONFIG_DIR / "default.yaml"),
                        gdb=True, time_limit_ns=LONG_RUN_NS) as b:
        yield b


@pytest.fixture
def running_board(board) -> SimulatedBoard:
    boot(board)
    return board


@pytest.fixture
def guard(elf_100) -> int:
    """The MPU no-access guard at the bottom of the process stack (board.c)."""
    return ElfImage.open_cached(elf_100).symbol("__stack_guard_start").address


# -- against QEMU -----------------------------------------------------------------


@pytest.mark.qemu
def test_attach_to_running_board_drains_stop_and_reads_description(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        assert gdb.was_running_at_attach  # QEMU stopped the VM and said T02
        assert gdb.last_stop is not None and gdb.last_stop.signal == 2
        assert not gdb.running
        assert vm_status(running_board) == "paused"
        assert gdb.packet_size == 4096
        assert gdb.max_read_size == 2040
        names = [r.name for r in gdb.registers]
        assert names == [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "xpsr"]
        assert gdb.register("xpsr").regnum == 25
        assert {"c", "s"} <= gdb.vcont_actions


@pytest.mark.qemu
def test_attach_to_paused_board_sees_no_stop_reply(board):
    with GdbRemote(*board.gdb_address) as gdb:
        assert not gdb.was_running_at_attach
        regs = gdb.read_registers()
    # Reset state: the PC is the reset vector's Reset_Handler, Thumb bit clear in the PC.
    assert regs["pc"] == ElfImage.open_cached(board.firmware).symbol("Reset_Handler").address & ~1


@pytest.mark.qemu
def test_registers_from_g_and_p_agree(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        regs = gdb.read_registers()
        assert len(regs) == 17
        for name, value in regs.items():
            assert gdb.read_register(name) == value
        assert gdb.read_register(25) == regs["xpsr"]
        with pytest.raises(GdbRemoteError):
            gdb.register("msp")  # QEMU 7.2 does not describe it


@pytest.mark.qemu
def test_reads_are_chunked_below_qemus_limit(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        # QEMU answers E22 to a single 'm' longer than 2048 bytes ...
        assert gdb._command(b"m%x,%x" % (RAM, 2049)) == b"E22"
        sent = gdb.stats.packets_sent
        # ... so 8 KiB go out as five packets of at most 2040 bytes,
        data = gdb.read_memory(RAM, 8192)
        assert gdb.stats.packets_sent - sent == 5
        # and give the same bytes as many small reads.
        small = b"".join(gdb.read_memory(RAM + i, 256) for i in range(0, 8192, 256))
        assert data == small
        assert data[:4] == b"CCFG"  # the config block's magic, placed by the loader


@pytest.mark.qemu
def test_stopped_stops_a_running_vm_and_continues_it(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        gdb.cont()
        wait_for(lambda: vm_status(running_board) == "running")
        with pytest.raises(GdbRemoteError, match="running"):
            gdb.read_memory(RAM, 4)
        with gdb.stopped() as had_to_stop:
            assert had_to_stop
            assert vm_status(running_board) == "paused"
            assert gdb.read_memory(RAM, 4) == b"CCFG"
        wait_for(lambda: vm_status(running_board) == "running")
        assert gdb.running
        stop = gdb.interrupt()
        assert stop.signal == 2 and not gdb.running
        step = gdb.step()
        assert step.signal == 5


@pytest.mark.qemu
def test_vm_resumed_behind_the_clients_back_is_noticed(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        running_board.resume()  # QMP cont: the client still believes the VM is stopped
        wait_for(lambda: vm_status(running_board) == "running")
        # QEMU eats the '$' of the next packet to stop the VM and sends T02 instead.
        assert gdb.read_memory(RAM, 4) == b"CCFG"
        assert gdb.stats.async_stops == 1 and gdb.stats.resent_after_stop == 1
        assert vm_status(running_board) == "paused"
        # A QMP stop while the client let the VM run arrives as a stop reply.
        gdb.cont()
        wait_for(lambda: vm_status(running_board) == "running")
        running_board.pause()
        stop = gdb.poll_stop(timeout_s=2.0)
        assert stop is not None and stop.signal == 2
        assert not gdb.running


@pytest.mark.qemu
def test_mpu_guard_is_refused_but_readable_physically(running_board, guard):
    with GdbRemote(*running_board.gdb_address) as gdb:
        # QEMU checks debug reads against the MPU (the firmware's guard is no-access).
        with pytest.raises(GdbMemoryError) as info:
            gdb.read_memory(guard, 16)
        assert info.value.memory_address == guard
        # QEMU checks a whole 1 KiB page by its first address: the stack above the
        # 256-byte guard is refused too, up to the next page.
        with pytest.raises(GdbMemoryError):
            gdb.read_memory(guard + 256, 4)
        assert len(gdb.read_memory((guard | 0x3FF) + 1, 4)) == 4
        physical = gdb.read_physical_memory(guard, 256)
        assert len(physical) == 256
        assert gdb.read_memory(guard - 64, 512, physical_fallback=True)[64:320] == physical


@pytest.mark.qemu
def test_unmapped_memory_gives_memory_error_quickly(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        started = time.monotonic()
        with pytest.raises(GdbMemoryError) as info:
            gdb.read_memory(0xFFFF0000, 8)
        assert time.monotonic() - started < 1.0
        assert isinstance(info.value, TargetError)
        assert info.value.memory_address == 0xFFFF0000
        assert "0xffff0000" in str(info.value)
        with pytest.raises(GdbMemoryError):
            gdb.read_physical_memory(0xFFFF0000, 8)


@pytest.mark.qemu
def test_writes_are_recorded(running_board):
    with GdbRemote(*running_board.gdb_address) as gdb:
        assert gdb.writes == []
        scratch = RAM + 0x3F0000  # far above the firmware's RAM use
        gdb.write_memory(scratch, b"\x01\x02\x03\x04")
        assert gdb.read_memory(scratch, 4) == b"\x01\x02\x03\x04"
        assert [(w.address, w.data) for w in gdb.writes] == [(scratch, b"\x01\x02\x03\x04")]
        r12 = gdb.read_register("r12")
        gdb.write_register("r12", r12 ^ 0xFF)
        assert gdb.read_register("r12") == r12 ^ 0xFF
        assert [(w.name, w.value) for w in gdb.register_writes] == [("r12", r12 ^ 0xFF)]


@pytest.mark.qemu
def test_close_leaves_vm_stopped_and_detach_resumes_it(running_board):
    gdb = GdbRemote(*running_board.gdb_address)
    gdb.open()
    gdb.close()
    assert vm_status(running_board) == "paused"
    with GdbRemote(*running_board.gdb_address) as gdb:
        assert not gdb.was_running_at_attach
        gdb.detach()
        assert not gdb.is_open
    wait_for(lambda: vm_status(running_board) == "running")


@pytest.mark.qemu
def test_qemu_exit_gives_connection_lost(running_board):
    gdb = GdbRemote(*running_board.gdb_address, timeout_s=2.0)
    gdb.open()
    running_board.close()
    started = time.monotonic()
    with pytest.raises(GdbConnectionLost) as info:
        gdb.read_memory(RAM, 4)
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value, TargetError) and info.value.remedy
    assert not gdb.is_open


def test_nobody_listening_gives_target_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(GdbRemoteError, match="cannot connect") as info:
            GdbRemote("127.0.0.1", port, connect_timeout_s=1.0).open()
    assert info.value.exit_status == 4


# -- against fake stubs -------------------------------------------------------------


class FakeStub:
    """A one-connection TCP server that runs ``handler(conn)`` in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(5)
        self.address = self._server.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(handler,), daemon=True)
        self._thread.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _serve(self, handler: Callable[[socket.socket], None]) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(0.2)
            try:
                handler(conn)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()


@pytest.fixture
def fake_stub() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeStub]]:
    stubs: list[FakeStub] = []

    def start(handler: Callable[[socket.socket], None]) -> FakeStub:
        stub = FakeStub(handler)
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.close()


def packet(payload: bytes) -> bytes:
    return b"$" + payload + b"#%02x" % (sum(payload) & 0xFF)


def recv_some(conn: socket.socket) -> bytes:
    try:
        return conn.recv(4096)
    except TimeoutError:
        return b""


def test_stub_closing_mid_packet_gives_connection_lost(fake_stub):
    def handler(conn: socket.socket) -> None:
        while b"qSupported" not in recv_some(conn):
            pass
        conn.sendall(b"+$PacketSize=1000;qXfer:feat")  # ... and hang up mid-packet

    stub = fake_stub(handler)
    started = time.monotonic()
    with pytest.raises(GdbConnectionLost, match="connection lost"):
        GdbRemote(*stub.address, timeout_s=5.0).open()
    assert time.monotonic() - started < 2.0


def test_stub_sending_garbage_gives_error_quickly(fake_stub):
    def handler(conn: socket.socket) -> None:
        noise = bytes(range(256)).replace(b"$", b"").replace(b"+", b"").replace(b"-", b"")
        while not stub.stopping:
            conn.sendall(noise)
            time.sleep(0.01)

    stub = fake_stub(handler)
    started = time.monotonic()
    with pytest.raises(GdbRemoteError, match="garbage") as info:
        GdbRemote(*stub.address, timeout_s=0.5).open()
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value, TargetError)


def test_stub_with_bad_checksums_gives_error(fake_stub):
    def handler(conn: socket.socket) -> None:
        while not stub.stopping:
            got = recv_some(conn)
            # Answer every packet, and resend on every '-', with a wrong checksum.
            for _ in range(got.count(b"$") + got.count(b"-")):
                conn.sendall(b"+$OK#00")  # the checksum of "OK" is 0x9a

    stub = fake_stub(handler)
    with pytest.raises(GdbRemoteError, match="bad checksums"):
        GdbRemote(*stub.address, timeout_s=0.5).open()


def test_silent_stub_times_out(fake_stub):
    stub = fake_stub(lambda conn: stub._stop.wait(5))
    started = time.monotonic()
    with pytest.raises(GdbRemoteError, match="timed out"):
        GdbRemote(*stub.address, timeout_s=0.3).open()
    assert time.monotonic() - started < 2.0


def test_chunks_follow_a_small_packet_size(fake_stub):
    """A stub that says PacketSize=0x100 gets 'm' requests of at most 120 bytes."""
    memory = bytes(i & 0xFF for i in range(4096))
    requests: list[tuple[int, int]] = []

    def handler(conn: socket.socket) -> None:
        buffer = b""
        while not stub.stopping:
            buffer += recv_some(conn)
            while b"#" in buffer and len(buffer) >= buffer.index(b"#") + 3:
                start, end = buffer.index(b"$"), buffer.index(b"#")
                payload, buffer = buffer[start + 1:end], buffer[end + 3:]
                conn.sendall(b"+")
                if payload.startswith(b"qSupported"):
                    reply = b"PacketSize=100"
                elif payload == b"?":
                    reply = b"S05"
                elif payload.startswith(b"m"):
                    addr, length = (int(x, 16) for x in payload[1:].split(b","))
                    requests.append((addr, length))
                    reply = memory[addr:addr + length].hex().encode()
                else:
                    reply = b""
                conn.sendall(packet(reply))

    stub = fake_stub(handler)
    with GdbRemote(*stub.address, timeout_s=2.0) as gdb:
        assert gdb.max_read_size == 120
        assert [r.name for r in gdb.registers][-1] == "xpsr"  # no target.xml: ARM defaults
        assert gdb.read_memory(100, 1000) == memory[100:1100]
    assert max(length for _, length in requests) == 120
    assert len(requests) == 9


def test_escapes_and_run_length_encoding_are_decoded():
    assert GdbRemote._decode(b"0* ") == b"0000"  # '*' + chr(29 + 3) repeats three more
    assert GdbRemote._decode(b"a}\x03b") == b"a#b"  # '}' escapes with xor 0x20
    assert GdbRemote._decode(b"plain") == b"plain"
