"""Raw-socket clients for hostile-traffic tests: what no HTTP library will send on purpose
(half a request head, a body one byte at a time), and what the peer answers.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def open_connection(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


@dataclass
class Closed:
    """What a connection received until the peer closed it, and when it closed."""

    data: bytes
    after_s: float

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}

    def json(self) -> Any:
        return json.loads(self.data.split(b"\r\n\r\n", 1)[1])


def wait_closed(sock: socket.socket, started: float, timeout_s: float) -> Closed:
    """Read until the peer closes (or `timeout_s` passes: then `after_s` is infinite)."""
    chunks: list[bytes] = []
    deadline = started + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return Closed(b"".join(chunks), time.monotonic() - started)
        chunks.append(chunk)
    return Closed(b"".join(chunks), float("inf"))


def trickle_until_answered(
    sock: socket.socket, byte: bytes, every_s: float, timeout_s: float
) -> None:
    """Send one byte every `every_s` until the peer has something to say (or closes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], every_s)
        if ready:
            return
        try:
            sock.sendall(byte)
        except OSError:
            return  # closed under us: the caller reads what came
