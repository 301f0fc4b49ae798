"""The GDB remote server over crash evidence: the engine, real sockets and pipes, gdb-multiarch.

The QEMU tests compare gdb-multiarch on the live halted board with
gdb-multiarch on the evidence captured from that same board and served.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.elf import ElfImage
from collector.evidence import CORE_REGISTERS, FAULT_REGISTERS, CrashEvidence, MemoryImage
from collector.gdbserver import (
    CANNOT_RUN,
    EvidenceGdbServer,
    pick_crash,
    readable_prefix,
    serve_tcp,
)
from crashcart.errors import InputError

from .conftest import ROOT
from .test_corefile import (
    QUESTIONS,
    SECTIONS,
    evidence_from,
    halt_and_capture,
    run_gdb,
)

RAM = 0x20000000
CONSOLE_LOG = ROOT / "fixtures" / "incident" / "evidence" / "node-1" / "serial" / "console.raw"


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#%02x" % (sum(payload) & 0xFF)


def unhex(reply: bytes) -> bytes:
    return bytes.fromhex(reply.decode())


class ScriptedChannel:
    """Feeds the server fixed chunks (then end of stream) and records what it sends."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.sent = bytearray()

    def recv(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def send(self, data: bytes) -> None:
        self.sent += data

    def replies(self) -> list[bytes]:
        """Payloads of the packets sent, in order."""
        out, data = [], bytes(self.sent)
        while b"$" in data:
            start = data.index(b"$")
            end = data.index(b"#", start)
            out.append(data[start + 1:end])
            data = data[end + 3:]
        return out


@pytest.fixture
def image(elf_100) -> ElfImage:
    return ElfImage.open_cached(elf_100)


def synthetic(image: ElfImage, **registers: int) -> CrashEvidence:
    regs = {name: 0x1000 + i for i, name in enumerate(CORE_REGISTERS)}
    regs.update(registers)
    memory = MemoryImage(elf=image)
    memory.add(RAM, bytes(range(256)), "ram-a")
    memory.add(RAM + 0x100, b"\xaa" * 16, "ram-b")  # adjacent to ram-a
    return CrashEvidence(source="test", origin="synthetic", registers=regs, memory=memory,
                         fault_name="BusFault")


def talk(server: EvidenceGdbServer, *payloads: bytes) -> tuple[list[bytes], str]:
    channel = ScriptedChannel(*(frame(p) for p in payloads))
    ended = server.serve(channel)
    return channel.replies(), ended


# -- the engine ---------------------------------------------------------------------------


def test_handshake_acks_and_no_ack_mode(image):
    server = EvidenceGdbServer(synthetic(image))
    channel = ScriptedChannel(frame(b"qSupported:multiprocess+;swbreak+"), b"+",
                              frame(b"QStartNoAckMode"), b"+", frame(b"?"), frame(b"qAttached"))
    assert server.serve(channel) == "disconnect"
    sent = bytes(channel.sent)
    assert sent.startswith(b"+$PacketSize=4000;qXfer:features:read+;QStartNoAckMode+")
    # The OK to QStartNoAckMode is still acknowledged mode; after it, no '+'.
    tail = sent[sent.index(b"$OK#"):]
    assert tail.count(b"+") == 0
    assert channel.replies()[1:] == [b"OK", b"T05thread:1;", b"1"]


def test_bad_checksum_is_refused_and_a_resend_answered(image):
    server = EvidenceGdbServer(synthetic(image))
    channel = ScriptedChannel(b"$qC#00", frame(b"qC"), b"-")
    server.serve(channel)
    # '-' for the corrupt packet, '+' and the answer for the good one, the answer
    # again when gdb says it got it wrong.
    assert bytes(channel.sent) == b"-+" + frame(b"QC1") + frame(b"QC1")
    assert server.stats.bad_checksums == 1 and server.stats.retransmits == 1


def test_garbage_and_malformed_packets_do_not_stop_the_server(image):
    server = EvidenceGdbServer(synthetic(image))
    channel = ScriptedChannel(b"hello\x00\xff", frame(b"mzz,4"), frame(b"m20000000"),
                              b"$qC#zz", b"\x03", frame(b"qC"))
    assert server.serve(channel) == "disconnect"
    assert channel.replies() == [b"E16", b"E16", b"QC1"]
    assert server.stats.garbage_bytes == 7 and server.stats.bad_checksums == 1


def test_a_packet_without_end_is_dropped(image):
    server = EvidenceGdbServer(synthetic(image))
    channel = ScriptedChannel(b"$m" + b"0" * 70000, frame(b"qC"))
    server.serve(channel)
    assert bytes(channel.sent).startswith(b"-")
    assert channel.replies() == [b"QC1"]


def test_registers_unknown_ones_unavailable(image):
    evidence = synthetic(image, msp=0x20005100, psp=0x200040B8, cfsr=0x8200)
    del evidence.registers["r7"]
    server = EvidenceGdbServer(evidence)
    replies, _ = talk(server, b"g", b"p7", b"p1a", b"p1b", b"p20", b"p19", b"p63")
    g = replies[0]
    assert g[7 * 8:8 * 8] == b"xxxxxxxx"
    assert unhex(g[:8]) == (0x1000).to_bytes(4, "little")
    # g: r0-r15, xpsr (25), msp (26), psp (27), then cfsr (32): 20 words.
    assert len(g) == 20 * 8
    assert unhex(g[16 * 8:17 * 8]) == evidence.registers["xpsr"].to_bytes(4, "little")
    assert replies[1] == b"xxxxxxxx"
    assert unhex(replies[2]) == (0x20005100).to_bytes(4, "little")
    assert unhex(replies[3]) == (0x200040B8).to_bytes(4, "little")
    assert unhex(replies[4]) == (0x8200).to_bytes(4, "little")
    assert replies[5] == unhex_reply(evidence.registers["xpsr"])
    assert replies[6] == b"E16"
    xml = server.target_xml.decode()
    assert '<feature name="org.gnu.gdb.arm.m-system">' in xml
    assert 'name="msp" bitsize="32" type="data_ptr" regnum="26"' in xml
    assert 'name="cfsr" bitsize="32" type="int" regnum="32"' in xml
    assert "primask" not in xml  # only what the evidence has


def unhex_reply(value: int) -> bytes:
    return value.to_bytes(4, "little").hex().encode()


def test_target_xml_without_system_registers_is_qemus_layout(image):
    server = EvidenceGdbServer(synthetic(image))
    xml = server.target_xml.decode()
    assert "m-system" not in xml and 'name="xpsr" bitsize="32" type="int" regnum="25"' in xml
    # Read in small pieces: 'm' while more follows, 'l' for the last.
    pieces, offset = [], 0
    while True:
        replies, _ = talk(server, b"qXfer:features:read:target.xml:%x,%x" % (offset, 100))
        pieces.append(replies[0][1:])
        offset += len(replies[0]) - 1
        if replies[0][:1] == b"l":
            break
        assert replies[0][:1] == b"m"
    assert b"".join(pieces) == server.target_xml and len(pieces) > 3
    assert talk(server, b"qXfer:features:read:other.xml:0,100")[0] == [b"E00"]


def test_memory_reads_cross_regions_and_stop_at_what_was_not_captured(image, caplog):
    evidence = synthetic(image)
    server = EvidenceGdbServer(evidence)
    code = image.symbol("adc_read").address & ~1
    with caplog.at_level(logging.WARNING, logger="collector.gdbserver"):
        replies, _ = talk(server, b"m%x,10" % (RAM + 0xF8), b"m%x,40" % (RAM + 0x108),
                          b"m%x,8" % code, b"m%x,4" % (RAM + 0x110), b"m30000000,4",
                          b"m30000000,4", b"mfffffffd,4", b"m%x,0" % RAM)
    assert unhex(replies[0]) == bytes(range(0xF8, 0x100)) + b"\xaa" * 8
    assert unhex(replies[1]) == b"\xaa" * 8  # the rest is not captured: a short read
    assert unhex(replies[2]) == image.read(code, 8)  # read-only ELF memory
    assert replies[3:7] == [b"E14"] * 4
    assert replies[7] == b""
    # The last read is clamped at the end of the address space.
    assert server.stats.missing_reads == [(RAM + 0x110, 4), (0x30000000, 4), (0x30000000, 4),
                                          (0xFFFFFFFD, 3)]
    warned = [r.getMessage() for r in caplog.records]
    # One warning per address; EXC_RETURN values gdb probes are not memory at all.
    captured = "(captured: ram-a 0x20000000..0x20000100, ram-b 0x20000100..0x20000110)"
    assert warned == [f"gdb read 0x20000110 (4 bytes): not captured {captured}",
                      f"gdb read 0x30000000 (4 bytes): not captured {captured}"]
    assert readable_prefix(evidence, RAM + 0x200, 4) == b""


def test_writes_refused_and_running_impossible(image):
    server = EvidenceGdbServer(synthetic(image))
    replies, ended = talk(server, b"M20000000,1:00", b"X20000000,0:", b"Pd=00000000",
                          b"G" + b"00" * 68, b"Z0,1bc,2", b"c", b"vCont;s:1", b"vCont?",
                          b"qOffsets", b"vMustReplyEmpty", b"Hg0", b"Hc-1", b"Hg2", b"T1",
                          b"qfThreadInfo", b"qsThreadInfo", b"D")
    assert replies[:5] == [b"E01"] * 5
    message = b"O" + CANNOT_RUN.encode().hex().encode()
    assert replies[5:9] == [message, b"T05thread:1;", message, b"T11thread:1;"]
    assert replies[9:] == [b"vCont;c;C;s;S", b"", b"", b"OK", b"OK", b"E02", b"OK", b"m1", b"l",
                           b"OK"]
    assert ended == "detach"
    assert talk(server, b"k", b"qC")[0:2] == ([], "kill")


def test_monitor_info_describes_the_evidence(image):
    server = EvidenceGdbServer(synthetic(image))
    replies, _ = talk(server, b"qRcmd," + b"info".hex().encode(), b"qRcmd," + b"x".hex().encode())
    text = unhex(replies[0]).decode()
    assert "evidence: test from synthetic" in text and "fault: BusFault" in text
    assert "ram-a 0x20000000..0x20000100" in text
    assert "unknown monitor command" in unhex(replies[1]).decode()


def test_pick_crash():
    crashes = [CrashEvidence(source="s", origin="o", fault_name=n) for n in ("A", "B")]
    assert pick_crash(crashes, 2, Path("x")) is crashes[1]
    with pytest.raises(InputError, match="2 crashes found") as info:
        pick_crash(crashes, None, Path("x"))
    assert "--crash N (1: A (s); 2: B (s))" in str(info.value)
    with pytest.raises(InputError, match="there is no crash 3"):
        pick_crash(crashes, 3, Path("x"))
    with pytest.raises(InputError, match="no crash found"):
        pick_crash([], None, Path("x"))


# -- over TCP, with a thread serving ------------------------------------------------------


class ThreadedServer:
    """serve_tcp in a thread; ``close()`` makes sure it has returned."""

    def __init__(self, evidence: CrashEvidence) -> None:
        self.server = EvidenceGdbServer(evidence)
        self.ended: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        def listening(host: str, port: int) -> None:
            self.port = port
            self._ready.set()

        self.ended.append(serve_tcp(self.server, on_listening=listening))

    def wait(self, timeout_s: float = 10) -> str:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the server did not end"
        return self.ended[0]

    def close(self) -> None:
        if self._thread.is_alive():
            # Still waiting for a client or serving one: a connection that closes ends it.
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            except OSError:
                pass
            self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[ThreadedServer] = []

    def start(evidence: CrashEvidence) -> ThreadedServer:
        servers.append(ThreadedServer(evidence))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_raw_socket_bad_checksum_then_close(image, serve):
    server = serve(synthetic(image))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"$g#00")
        assert sock.recv(1) == b"-"
        sock.sendall(frame(b"qC"))
        got = b""
        while not got.endswith(frame(b"QC1")):
            got += sock.recv(100)
        assert got == b"+" + frame(b"QC1")
    assert server.wait() == "disconnect"


def test_gdb_cannot_access_what_was_not_captured(image, elf_100, serve, caplog):
    server = serve(synthetic(image, pc=image.symbol("adc_read").address & ~1, sp=RAM + 0x80))
    with caplog.at_level(logging.WARNING, logger="collector.gdbserver"):
        run = run_gdb(str(elf_100), commands=(
            f"target remote 127.0.0.1:{server.port}", "echo @@x\\n", "x/4xb 0x20000100",
            "x/xw 0x30000000", "echo @@set\\n", "set var device_config.node_id = 5",
            "echo @@cont\\n", "continue", "step", "echo @@end\\n"), timeout_s=30)
        assert server.wait() == "detach"  # batch gdb detaches when it quits (qAttached: 1)
    assert "0x20000100 <afe_regs+32>:\t0xaa\t0xaa\t0xaa\t0xaa" in run.sections["x"]
    assert "Cannot access memory at address 0x30000000" in run.stderr
    assert "Cannot access memory at address 0x20000024" in run.stderr  # the write
    assert CANNOT_RUN.strip() in run.stdout + run.stderr
    # 'step' ends at once (SIGSTOP): with SIGTRAP gdb would single-step forever.
    assert "Program received signal SIGSTOP" in run.sections["cont"]
    assert any("gdb read 0x30000000 (4 bytes): not captured" in r.getMessage()
               for r in caplog.records)


# -- the command line and --pipe ----------------------------------------------------------


def crashcart(*args: str) -> list[str]:
    return [sys.executable, "-m", "crashcart.cli", *args]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_cli_serves_a_console_log_and_exits_when_gdb_leaves(elf_100, processes):
    proc = subprocess.Popen(crashcart("gdbserver", str(CONSOLE_LOG), "--elf", str(elf_100),
                                      "--crash", "1", "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("crashcart gdbserver: listening on 127.0.0.1:"), line
    port = int(line.split("listening on 127.0.0.1:")[1].split(";")[0])
    run = run_gdb(str(elf_100), commands=(
        f"target remote 127.0.0.1:{port}", "echo @@bt\\n", "bt", "echo @@end\\n", "disconnect"))
    # The crash log's registers: the faulting frame first, its SP derived from PSP.
    assert run.sections["bt"].startswith("#0  0x000001bc in adc_read (")
    # The log has no RAM: gdb stops where the stack was not captured.
    assert "Cannot access memory at address 0x200040" in run.sections["bt"]
    assert proc.wait(10) == 0  # 'disconnect' closes the connection: the server ends
    assert b"crashcart gdbserver: gdb disconnect" in proc.stderr.read()


def test_cli_errors_are_clear(elf_100, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(crashcart("gdbserver", *args), capture_output=True, text=True,
                              timeout=60, check=False)

    both = run(str(CONSOLE_LOG), "--elf", str(elf_100), "--port", "0", "--pipe")
    assert both.returncode == 2 and "exactly one of --port N and --pipe" in both.stderr
    several = run(str(CONSOLE_LOG), "--elf", str(elf_100), "--pipe")
    assert several.returncode == 2 and "pick one with --crash N" in several.stderr
    other = tmp_path / "other.elf"
    other.write_bytes(b"not an elf")
    bad = run(str(CONSOLE_LOG), "--elf", str(other), "--pipe", "--crash", "1")
    assert bad.returncode == 2 and "not an ELF file" in bad.stderr
    for result in (both, several, bad):
        assert "Traceback" not in result.stderr


def test_pipe_with_gdb_target_remote_bar(elf_100, tmp_path):
    pidfile = tmp_path / "server.pid"
    # The pipe command records its pid so the test can see it end with gdb.
    command = (f"sh -c 'echo $$ > {pidfile}; exec {sys.executable} -m crashcart.cli gdbserver "
               f"{CONSOLE_LOG} --elf {elf_100} --crash 2 --pipe'")
    try:
        run = run_gdb(str(elf_100), commands=(
            f"target remote | {command}", "echo @@regs\\n", "info registers pc sp",
            "echo @@end\\n", "monitor info"))
        assert "<adc_read+16>" in run.sections["regs"]
        assert "evidence: crashlog from" in run.stdout + run.stderr
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the --pipe server outlived gdb"
    finally:
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by gdb) has ended too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# -- against the halted QEMU board ----------------------------------------------------------


def assert_live_answers(exported, capture) -> None:  # type: ignore[no-untyped-def]
    """The served session answers as the live one did.

    ``info registers`` may list more: the SCB fault registers the capture
    read as memory, which QEMU's gdbstub does not offer as registers.
    """
    for section in SECTIONS:
        live = capture.live.sections[section]
        assert live.strip(), section
        got = exported.sections[section]
        if section != "registers":
            assert got == live, section
            continue
        assert got.startswith(live), got
        extra = [line.split() for line in got[len(live):].splitlines()]
        assert [name for name, *_ in extra] == [n for n in FAULT_REGISTERS
                                                if n in capture.registers]
        for name, value, *_ in extra:
            assert int(value, 16) == capture.registers[name], name


@pytest.mark.qemu
@pytest.mark.parametrize("config", ["bad-adc-channel", "zero-averaging-window"])
def test_served_evidence_gives_gdb_the_live_answers(target, elf_100, image, serve, config):
    capture = halt_and_capture(target, elf_100, config, "fault_handler_c")
    server = serve(evidence_from(capture, image))
    exported = run_gdb(str(elf_100), commands=(
        f"target remote 127.0.0.1:{server.port}", *QUESTIONS, "disconnect"))
    assert_live_answers(exported, capture)
    assert server.wait() == "disconnect"


@pytest.mark.qemu
def test_failed_stacking_stops_where_live_gdb_stops(target, elf_100, image, serve):
    """deep-cascade: the frame was never stacked (MSTKERR); its address is in the MPU guard.

    Captured as gdb can read the board (the guard page left out), the served
    evidence answers E14 there and gdb stops exactly as it does live.
    """
    capture = halt_and_capture(target, elf_100, "deep-cascade", "fault_handler_c",
                               physical=False)
    guard = image.symbol("__stack_guard_start").address
    assert all(not start <= guard < start + len(data) for start, data, _ in capture.regions)
    server = serve(evidence_from(capture, image))
    exported = run_gdb(str(elf_100), commands=(
        f"target remote 127.0.0.1:{server.port}", *QUESTIONS, "disconnect"))
    assert "Backtrace stopped: Cannot access memory at address 0x200020ec" in \
        capture.live.sections["bt"]
    assert_live_answers(exported, capture)
    assert server.wait() == "disconnect"
    assert (0x200020EC, 4) in server.server.stats.missing_reads


def _msp_psp(gdb) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """MSP and PSP at fault_entry: step its first two instructions (mrs r0, msp; mrs r1, psp)."""
    gdb.step()
    gdb.step()
    regs = gdb.read_registers()
    return {"msp": regs["r0"], "psp": regs["r1"]}


@pytest.mark.qemu
def test_exception_entry_unwinds_with_psp_only_when_served(target, elf_100, image, serve):
    """At fault_entry LR is EXC_RETURN; gdb's M-profile unwinder needs the stack it names.

    QEMU 7.2 gives gdb no PSP, so live gdb reads the frame from SP (the MSP)
    and unwinds garbage; served evidence without MSP/PSP does the same.
    Served with MSP/PSP (org.gnu.gdb.arm.m-system), gdb finds the frame on
    the PSP and unwinds into the faulting function.
    """
    # gdb without PSP reads the "frame" above the main stack's top: capture that too.
    top = image.symbol("__main_stack_top").address
    capture = halt_and_capture(target, elf_100, "bad-adc-channel", "*fault_entry",
                               extra=((top, top + 0x40),), after=_msp_psp)
    assert capture.registers["lr"] == 0xFFFFFFFD
    live_bt = capture.live.sections["bt"]
    assert "adc_read" not in live_bt

    without = serve(evidence_from(capture, image, drop=("msp", "psp")))
    exported = run_gdb(str(elf_100), commands=(
        f"target remote 127.0.0.1:{without.port}", *QUESTIONS, "disconnect"))
    assert_live_answers(exported, capture)

    with_psp = serve(evidence_from(capture, image))
    served = run_gdb(str(elf_100), commands=(
        f"target remote 127.0.0.1:{with_psp.port}", "echo @@bt\\n", "bt", "echo @@sys\\n",
        "info registers msp psp", "echo @@end\\n", "disconnect"))
    bt = served.sections["bt"]
    assert "0x000001bc in adc_read (ch=<optimized out>, gain_index=<optimized out>, " \
           "timeout_ms=10) at src/adc.c:92" in bt
    assert "sample_tick (now_ms=now_ms@entry=10) at src/sampler.c:125" in bt
    assert bt.rstrip().endswith("in main () at src/main.c:32")
    assert f"psp            0x{capture.registers['psp']:x}" in served.sections["sys"]
