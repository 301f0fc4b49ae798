"""Lossless reads: bytes sent just before the peer closes are never dropped."""

from __future__ import annotations

import socket
import threading

import pytest
import serial

from collector.serial_port import PortGone, bytes_waiting, read_chunk


def _server(payload: bytes, ready: threading.Event, port_box: list[int],
            go: threading.Event) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_box.append(srv.getsockname()[1])
    ready.set()
    conn, _ = srv.accept()
    # pyserial's socket open() flushes whatever has arrived: send only after it.
    go.wait(5)
    conn.sendall(payload)
    conn.close()
    srv.close()


@pytest.mark.parametrize("size", [1, 7, 4096, 300_000])
def test_socket_read_keeps_bytes_sent_before_close(size):
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    ready, go, box = threading.Event(), threading.Event(), []
    t = threading.Thread(target=_server, args=(payload, ready, box, go))
    t.start()
    ready.wait(5)
    port = serial.serial_for_url(f"socket://127.0.0.1:{box[0]}", timeout=0.2)
    go.set()
    got = bytearray()
    with pytest.raises(PortGone):
        for _ in range(100_000):
            got += read_chunk(port)
    t.join()
    port.close()
    assert bytes(got) == payload


def test_loop_url():
    port = serial.serial_for_url("loop://", timeout=0.05)
    port.write(b"abc\n")
    assert bytes_waiting(port) == 4
    assert read_chunk(port) == b"abc\n"
    assert read_chunk(port) == b""
    port.close()
    with pytest.raises(PortGone):
        read_chunk(port)
