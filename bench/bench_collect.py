"""Collect benchmark (issue 4): serial ingest rate, and debug capture over SWD vs GDB remote.

    .venv/bin/python bench/bench_collect.py [--megabytes 64] [--runs 5] [--json]

1. Serial ingest: a local TCP server sends MEGABYTES of console-like lines
   (80 bytes each) as fast as the socket takes them; ``SerialCapture``
   reads them through pyserial's ``socket://`` into a bundle with the
   per-chunk and per-line timestamp indexes.  Reference in the same
   process: a bare ``socket.recv`` loop into memory (the ceiling of this
   machine's loopback).  Target: at least 20 MB/s and zero loss (the
   bundle's console.raw hashes equal to what was sent).
2. Debug capture: registers + 64 KiB of RAM from the same halted QEMU
   board through pyocd with crashcart's probe plugin, and through GDB
   remote (``GdbRemote``), best of RUNS each, side by side.

Prints a table (or JSON); exits non-zero if the serial target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.bundle import BundleWriter, verify_bundle  # noqa: E402
from collector.serial_capture import SerialCapture  # noqa: E402

LINE = 80
TARGET_MB_S = 20.0


def _payload(megabytes: int) -> bytes:
    lines = []
    n = megabytes * 1024 * 1024 // LINE
    for i in range(n):
        text = b"[%10d ms] sample=%6d filtered=%6d\n" % (i, i % 4096, (i * 7) % 4096)
        lines.append(text.ljust(LINE - 1, b".") + b"\n" if len(text) < LINE else text[:LINE])
    return b"".join(lines)


def _server(data: bytes, ready: threading.Event, box: list[int], sent_done: list[float]) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    box.append(srv.getsockname()[1])
    ready.set()
    conn, _ = srv.accept()
    time.sleep(0.05)  # pyserial's socket:// flushes input on open: start after it
    conn.sendall(data)
    sent_done.append(time.monotonic())
    conn.close()
    srv.close()


def serial_ingest(data: bytes) -> dict[str, float | bool]:
    ready, box, done = threading.Event(), [], []
    server = threading.Thread(target=_server, args=(data, ready, box, done))
    server.start()
    ready.wait(5)
    with tempfile.TemporaryDirectory() as tmp:
        stop = threading.Event()
        with BundleWriter(Path(tmp) / "b") as bundle:
            cap = SerialCapture(bundle, f"socket://127.0.0.1:{box[0]}", reconnect=False)
            t0 = time.monotonic()
            thread = threading.Thread(target=cap.run, args=(stop,))
            thread.start()
            while cap.stats.bytes < len(data) and thread.is_alive():
                time.sleep(0.001)
            t1 = time.monotonic()
            stop.set()
            thread.join(30)
        server.join(10)
        raw = (Path(tmp) / "b" / "serial" / "console.raw").read_bytes()
        intact = verify_bundle(Path(tmp) / "b").ok
    lossless = hashlib.sha256(raw).digest() == hashlib.sha256(data).digest()
    return {"seconds": t1 - t0, "mb_s": len(data) / (t1 - t0) / 1e6, "lossless": lossless,
            "bundle_intact": intact, "lines": cap.stats.lines, "chunks": cap.stats.chunks}


def socket_reference(data: bytes) -> dict[str, float]:
    ready, box, done = threading.Event(), [], []
    server = threading.Thread(target=_server, args=(data, ready, box, done))
    server.start()
    ready.wait(5)
    sock = socket.create_connection(("127.0.0.1", box[0]))
    got = bytearray()
    t0 = time.monotonic()
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    t1 = time.monotonic()
    sock.close()
    server.join(10)
    assert bytes(got) == data
    return {"seconds": t1 - t0, "mb_s": len(data) / (t1 - t0) / 1e6}


def debug_capture(runs: int) -> dict[str, float]:
    from pyocd.core.session import Session

    from collector.device_config import load_config_file
    from collector.gdbremote import GdbRemote
    from collector.pyocd_probe import QemuProbe
    from replay.sim import SimulatedBoard
    from targets import load_target

    target = load_target("mps2-an385")
    elf = ROOT / "fixtures/firmware/elf/sensor-node-1.0.0.elf"
    config = load_config_file(ROOT / "fixtures/firmware/configs/bad-adc-channel.yaml")
    ram, size = 0x20000000, 64 * 1024
    best = {"pyocd": float("inf"), "gdb": float("inf")}
    with SimulatedBoard(target, elf, config=config, gdb=True, time_limit_ns=10**12) as board:
        board.resume()
        deadline = time.monotonic() + 20
        while board.qmp.command("query-status")["status"] == "running":
            if time.monotonic() > deadline:
                raise SystemExit("the board did not reach its fault")
            time.sleep(0.02)
        cwd = os.getcwd()
        for _ in range(runs):
            t0 = time.perf_counter()
            probe = QemuProbe(*board.gdb_address)
            session = Session(probe, options={"connect_mode": "attach",
                                              "resume_on_disconnect": False,
                                              "target_override": "cortex_m"},
                              project_dir=cwd, no_config=True)
            session.open()
            core = session.target.selected_core
            core.read_core_registers_raw(["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8",
                                          "r9", "r10", "r11", "r12", "sp", "lr", "pc", "xpsr"])
            data = bytes(core.read_memory_block8(ram, size))
            session.close()
            best["pyocd"] = min(best["pyocd"], time.perf_counter() - t0)
            assert len(data) == size
            t0 = time.perf_counter()
            with GdbRemote(*board.gdb_address) as gdb:
                gdb.read_registers()
                other = gdb.read_memory(ram, size, physical_fallback=True)
            best["gdb"] = min(best["gdb"], time.perf_counter() - t0)
            assert other == data
        os.chdir(cwd)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = _payload(args.megabytes)
    ref = socket_reference(data)
    ingest = serial_ingest(data)
    debug = debug_capture(args.runs)
    result = {"serial_ingest": ingest, "socket_reference": ref, "debug_capture_s": debug,
              "megabytes": args.megabytes}
    ok = bool(ingest["lossless"]) and float(ingest["mb_s"]) >= TARGET_MB_S
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"serial ingest, {args.megabytes} MiB of 80-byte lines through socket://")
        print(f"  bare socket.recv loop  {ref['mb_s']:8.1f} MB/s  (reference, same process)")
        print(f"  crashcart SerialCapture{ingest['mb_s']:8.1f} MB/s  "
              f"ratio {float(ingest['mb_s']) / ref['mb_s']:.2f}x of the reference, target "
              f">= {TARGET_MB_S:g} MB/s; lossless: {ingest['lossless']}; "
              f"{ingest['chunks']} chunks, {ingest['lines']} lines indexed")
        print(f"registers + 64 KiB RAM from the same halted QEMU board, best of {args.runs}")
        print(f"  GDB remote (GdbRemote)   {debug['gdb'] * 1000:7.1f} ms  (reference)")
        print(f"  SWD (pyocd + plugin)     {debug['pyocd'] * 1000:7.1f} ms  "
              f"ratio {debug['pyocd'] / debug['gdb']:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
