"""Connection limits uvicorn lacks: a deadline for a request's head, and a connection cap
answered in the OpenAI envelope. Shared by the model server and the gateway.

uvicorn closes a keep-alive connection that stays idle between requests, but a
connection that sends part of a request head and then nothing (the slowloris
pattern), or that sends nothing at all, stays open for as long as the client
likes: enough of them exhaust the process's sockets and memory. The protocol
built here arms a timer when a connection opens and when the first byte of each
request arrives; if the head is not complete when it fires, a connection that
sent part of a head gets a 408 in the OpenAI error envelope and is closed, one
that sent nothing is closed silently (a client racing a new request against the
close would otherwise read a 408 meant for nobody).

uvicorn's own `limit_concurrency` answers `503 Service Unavailable` in plain
text; the same rule (open connections, or running requests, at the cap) is
applied here with the envelope, `Retry-After` and `Connection: close`.

The body has its own deadline, applied where it is read (`request_body`): the
application answers that one, since a response is possible once the head is in.

Built on uvicorn's httptools protocol (a pinned dependency), whose parser
callbacks mark where a head begins and ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from modelplane.http.asgi import Receive, Scope, Send
from modelplane.http.errors import error_body, send_error

BUSY_RETRY_AFTER_S: Final = 1


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process limits on client connections; defaults are the server's and gateway's."""

    # A request head is a few hundred bytes: 10 s is generous on any real link.
    header_timeout_s: float = 10.0
    # Open client connections, idle keep-alive ones included.
    max_connections: int = 2048


def _timeout_response() -> bytes:
    body = error_body(408, "the request head was not received in time; the connection is closed")
    head = (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return head + body


_TIMEOUT_RESPONSE: Final = _timeout_response()


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(
        send,
        503,
        "the server has as many connections open as it accepts; retry shortly",
        retry_after=BUSY_RETRY_AFTER_S,
        close=True,
    )


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline and an enveloped connection cap."""

    limits: ConnectionLimits = ConnectionLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limit_concurrency = None  # applied in on_headers_complete, with the envelope
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # a byte of the current request's head has arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_timer is None:  # after keep-alive; the first head's timer runs on
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._head_started = False
        cap = self.limits.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            app = self.app
            self.app = _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still going out on this connection (a pipelined head came
            # early): closing would cut it, so the next head gets a fresh deadline.
            self._arm_head_timer()
            return
        if self._head_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn as `http=`, bound to these limits."""
    return type("GuardedHttpProtocol", (_GuardedProtocol,), {"limits": limits})
