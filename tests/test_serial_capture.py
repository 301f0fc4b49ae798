"""Serial capture into a bundle: lossless, timestamped, crash-marked, survives a lost port."""

from __future__ import annotations

import json
import socket
import threading
import time

from collector.bundle import BundleWriter, read_manifest, verify_bundle
from collector.device_config import load_config_file
from collector.serial_capture import SerialCapture, _MarkerScanner
from replay.sim import SimulatedBoard, run_simulation

from .conftest import CONFIG_DIR

MARKERS = ("*** CRASH BEGIN ***", "*** CRASH END ***")


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_marker_scanner_across_chunks():
    s = _MarkerScanner(b"<BEGIN>", b"<END>")
    stream = b"xx<BEG" + b"IN>body<E" + b"ND>yy<BEGIN>"
    found = []
    offset = 0
    for chunk in (b"xx<BEG", b"IN>body<E", b"ND>yy<BEGIN>"):
        found += s.feed(offset, chunk)
        offset += len(chunk)
    assert found == [("begin", 2), ("end", stream.index(b"<END>")),
                     ("begin", stream.rindex(b"<BEGIN>"))]


def test_capture_from_the_simulated_board(tmp_path, target, elf_100):
    cfg = load_config_file(CONFIG_DIR / "bad-adc-channel.yaml")
    reference = run_simulation(target, elf_100, config=cfg, time_limit_ns=10**9).transcript
    stop = threading.Event()
    with BundleWriter(tmp_path / "b", target=target.name) as bundle:
        with SimulatedBoard(target, elf_100, config=cfg, console=False,
                            time_limit_ns=10**9) as board:
            cap = SerialCapture(bundle, board.serial_url, crash_markers=MARKERS)
            t = threading.Thread(target=cap.run, args=(stop,))
            t.start()
            board.wait_console_attached()
            board.run()
            time.sleep(0.2)
            stop.set()
            t.join(10)
    raw = (tmp_path / "b" / "serial" / "console.raw").read_bytes()
    assert raw == reference
    crashes = jsonl(tmp_path / "b" / "serial" / "crashes.jsonl")
    assert crashes[-1]["complete"] is True
    assert raw[crashes[-1]["begin_offset"]:].startswith(b"*** CRASH BEGIN ***")
    assert raw[: crashes[-1]["end_offset"]].endswith(b"*** CRASH END ***")
    lines = jsonl(tmp_path / "b" / "serial" / "lines.jsonl")
    assert b"".join(raw[x["offset"]: x["offset"] + x["length"]] for x in lines) == raw
    chunks = jsonl(tmp_path / "b" / "serial" / "chunks.jsonl")
    assert sum(c["size"] for c in chunks) == len(raw)
    assert all(a["mono"] <= b["mono"] for a, b in zip(chunks, chunks[1:]))
    report = verify_bundle(tmp_path / "b")
    assert report.ok
    events = [e["what"] for e in read_manifest(tmp_path / "b")["sources"][0]["events"]]
    assert events[0] == "opened" and "crash-begin" in events and "crash-end" in events


def _flaky_server(port_box, sent, ready, rounds=3, lines_per_round=200):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_box.append(srv.getsockname()[1])
    ready.set()
    n = 0
    for _ in range(rounds):
        conn, _ = srv.accept()
        time.sleep(0.05)  # pyserial flushes input on open: send after it
        for _ in range(lines_per_round):
            data = b"[%8d ms] sample line %d\n" % (n, n)
            conn.sendall(data)
            sent.append(data)
            n += 1
        conn.close()  # the port "disappears" mid-stream
        time.sleep(0.3)  # and is gone for a while
    srv.close()


def test_port_that_disappears_and_returns_loses_nothing(tmp_path):
    box, sent, ready = [], [], threading.Event()
    server = threading.Thread(target=_flaky_server, args=(box, sent, ready))
    server.start()
    ready.wait(5)
    stop = threading.Event()
    with BundleWriter(tmp_path / "b") as bundle:
        cap = SerialCapture(bundle, f"socket://127.0.0.1:{box[0]}")
        t = threading.Thread(target=cap.run, args=(stop,))
        t.start()
        server.join(20)
        time.sleep(0.3)
        stop.set()
        t.join(10)
    raw = (tmp_path / "b" / "serial" / "console.raw").read_bytes()
    assert raw == b"".join(sent)
    src = read_manifest(tmp_path / "b")["sources"][0]
    whats = [e["what"] for e in src["events"]]
    # A reconnect may land in the listen backlog after the last round and be reset.
    assert whats.count("disconnected") >= 3 and whats.count("reconnected") >= 2
    gaps = [e["gap_s"] for e in src["events"] if e["what"] == "reconnected"]
    assert all(g >= 0.2 for g in gaps[:2])
    assert verify_bundle(tmp_path / "b").ok


def test_bytes_sent_the_moment_the_port_opens_are_kept(tmp_path):
    """pyserial's open() flushes input; a board that talks at once must lose nothing."""
    box, ready, payload = [], threading.Event(), b"crashcart sensor-node banner\n" * 200

    def server():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        box.append(srv.getsockname()[1])
        ready.set()
        conn, _ = srv.accept()
        conn.sendall(payload)  # no pause: the bytes race pyserial's open()
        time.sleep(0.3)
        conn.close()
        srv.close()

    thread = threading.Thread(target=server)
    thread.start()
    ready.wait(5)
    stop = threading.Event()
    with BundleWriter(tmp_path / "b") as bundle:
        cap = SerialCapture(bundle, f"socket://127.0.0.1:{box[0]}", reconnect=False)
        t = threading.Thread(target=cap.run, args=(stop,))
        t.start()
        thread.join(10)
        t.join(10)
        stop.set()
    assert (tmp_path / "b" / "serial" / "console.raw").read_bytes() == payload
