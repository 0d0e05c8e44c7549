"""Reading a request body within a size limit, a deadline and (optionally) a shared
memory budget: one rule for the model server and the gateway.

The deadline is for the whole body, counted from the end of the head, not for
the gap between two chunks: a client that sends one byte every few seconds
never leaves a gap long enough to trip a per-read timeout, yet holds a
connection and a buffer for as long as it likes. 30 s (the default) moves the
largest accepted body (8 MiB) at about 2.2 Mbit/s; an OpenAI request is
usually a few kilobytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from modelplane.http.asgi import Receive, Scope, header


class BodyTooLargeError(Exception):
    """The body is over the size limit (declared or sent)."""


class BodyTimeoutError(Exception):
    """The body did not arrive before the deadline."""


class BodyBudgetError(Exception):
    """Taking this body into memory would exceed the process's budget for bodies."""


class ClientGoneError(Exception):
    """The client disconnected before its body was complete."""


@dataclass
class BodyBudget:
    """Bytes of request bodies a process holds at once, across all requests.

    A body is counted from its first chunk until its owner gives it back (the
    gateway: once the replica has the request), so memory for bodies stays
    under `max_bytes` however many requests are being read, held or sent.
    """

    max_bytes: int
    used: int = field(default=0)

    def take(self, size: int) -> bool:
        if self.used + size > self.max_bytes:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


async def read_request_body(
    scope: Scope,
    receive: Receive,
    *,
    max_bytes: int,
    timeout_s: float,
    budget: BodyBudget | None = None,
) -> bytes:
    """The whole body. With a `budget`, its size is taken from it; the caller gives
    it back (on an error here, it is given back before raising)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGoneError
                chunk: bytes = message.get("body", b"")
                if size + len(chunk) > max_bytes:
                    raise BodyTooLargeError
                if budget is not None and not budget.take(len(chunk)):
                    raise BodyBudgetError
                size += len(chunk)
                chunks.append(chunk)
                more = bool(message.get("more_body", False))
    except TimeoutError:
        if budget is not None:
            budget.give(size)
        raise BodyTimeoutError from None
    except BaseException:
        if budget is not None:
            budget.give(size)
        raise
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BufferedBody:
    """A request body in memory, counted in its budget until `release` (idempotent).

    The gateway releases it once a replica has answered (no retry can need it
    again), so a long stream does not keep its request's bytes alive.
    """

    def __init__(self, data: bytes, budget: BodyBudget | None = None) -> None:
        self._data = data
        self.size = len(data)
        self._budget = budget

    @property
    def data(self) -> bytes:
        return self._data

    def release(self) -> None:
        if self._budget is not None:
            self._budget.give(self.size)
            self._budget = None
        self._data = b""
