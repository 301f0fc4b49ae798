"""Lossless reads from a pyserial port of any URL kind.

pyserial's ``read(n)`` on a ``socket://`` port collects into a local buffer
and raises ``SerialException('socket disconnected')`` when the peer closes,
discarding what it had already received.  Evidence must not be lost that
way, so every capture reads through :func:`read_chunk`: block for one byte
(nothing to lose), then take exactly what the OS has buffered, which a
single ``recv`` returns in full.
"""

from __future__ import annotations

import fcntl
import struct
import termios

import serial


class PortGone(Exception):
    """The port disappeared (cable pulled, peer closed); nothing was lost."""


def bytes_waiting(port: serial.SerialBase) -> int:
    """Bytes that a read can return without blocking (exact for sockets too)."""
    sock = getattr(port, "_socket", None)
    if sock is not None:
        # pyserial's socket in_waiting only says 0 or 1; ask the kernel.
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    return int(port.in_waiting)


def read_chunk(port: serial.SerialBase, max_bytes: int = 1 << 16) -> bytes:
    """Up to ``max_bytes`` bytes; empty after the port's timeout with no data.

    Raises :class:`PortGone` when the port is closed or disconnected.
    """
    try:
        waiting = bytes_waiting(port)
        if waiting == 0:
            first = port.read(1)
            if not first:
                return b""
            waiting = bytes_waiting(port)
            if waiting == 0:
                return first
            return first + port.read(min(waiting, max_bytes - 1))
        return port.read(min(waiting, max_bytes))
    except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
        # TypeError/AttributeError: pyserial after close() from another thread.
        raise PortGone(str(exc)) from None


def close_port(port: serial.SerialBase) -> None:
    """Close ``port`` at once.

    pyserial's ``socket://`` close sleeps 0.3 s after shutting the socket
    down; a capture or a simulator run closes many ports, so close the
    socket directly and mark the port closed.
    """
    sock = getattr(port, "_socket", None)
    if sock is None:
        port.close()
        return
    try:
        sock.close()
    except OSError:
        pass
    port._socket = None  # type: ignore[attr-defined]
    port.is_open = False


def open_port(url: str, *, baudrate: int, timeout: float | None) -> serial.SerialBase:
    """Open a console port without discarding what is already waiting in it.

    pyserial's ``open()`` ends with ``reset_input_buffer()``; for
    ``socket://`` that reads and throws away every byte that arrived
    between the TCP connect and the end of ``open()`` — for a board that
    starts talking as soon as a client connects, its boot banner.  Evidence
    capture keeps those bytes: the flush is skipped while opening.  (For a
    tty the flush drops bytes the kernel buffered before we opened: those
    are skipped too, and they are evidence as well.)
    """
    port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, do_not_open=True)
    original = port.reset_input_buffer
    port.reset_input_buffer = lambda: None  # type: ignore[method-assign]
    try:
        port.open()
    finally:
        port.reset_input_buffer = original  # type: ignore[method-assign]
    return port
