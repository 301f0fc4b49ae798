"""A minimal QEMU Machine Protocol client (JSON lines over a Unix socket).

Only what the simulated-board runner needs: the capabilities handshake,
commands with their replies, and asynchronous events (SHUTDOWN, STOP,
RESET) queued in arrival order.  Reference: QEMU docs, "QEMU Machine
Protocol Specification" (docs/interop/qmp-spec.rst).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

from crashcart.errors import TargetError

LOG = logging.getLogger(__name__)


class QmpClient:
    def __init__(self, path: Path, *, connect_timeout_s: float = 10.0) -> None:
        self.path = path
        self.events: deque[dict[str, Any]] = deque()
        self._buf = b""
        deadline = time.monotonic() + connect_timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise TargetError(f"QEMU's QMP socket did not appear at {path}") from None
                time.sleep(0.01)
        self.sock = sock
        greeting = self._read_message(timeout_s=connect_timeout_s)
        if greeting is None or "QMP" not in greeting:
            raise TargetError(f"unexpected QMP greeting: {greeting!r}")
        self.command("qmp_capabilities")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def command(self, name: str, timeout_s: float = 10.0, **arguments: Any) -> Any:
        """Run a QMP command and return its ``return`` value."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise TargetError(f"QMP command {name} failed: {exc}") from None
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(timeout_s=max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise TargetError(f"QEMU did not answer QMP command {name}")
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise TargetError(f"QMP command {name} failed: {reply['error'].get('desc')}")
            return reply.get("return")

    def wait_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout_s`` (or when QEMU is gone)."""
        if self.events:
            return self.events.popleft()
        message = self._read_message(timeout_s=timeout_s)
        if message is not None and "event" in message:
            return message
        return None

    def _read_message(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return None
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            LOG.warning("ignoring malformed QMP line %r", line[:200])
            return self._read_message(timeout_s=max(0.0, deadline - time.monotonic()))
        return message if isinstance(message, dict) else None
