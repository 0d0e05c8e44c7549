"""Forwarding one request to a replica: pick, attempt, retry, then stream through.

The streaming path is kept bare on purpose: the upstream's bytes go to the
client as they arrive (`iter_any`, no line splitting, no JSON parsing), so
an SSE stream keeps its chunking and the gateway adds no per-token cost.
Only a tokens-per-minute limit makes it look at the bytes, and then only
with a substring count.

An attempt that fails before the upstream's first byte -- connection
refused or reset, a keep-alive connection the replica closed, or a 503
from a replica that is loading or draining -- is retried on another
replica, within the per-request attempt limit and the global retry budget.
Once a byte has reached the client nothing is retried: an SSE stream that
breaks gets an error event and `data: [DONE]`, a plain response is cut.

Each request carries the model's own key upstream (`ModelRoute.upstream_key`),
never the client's (the front strips it). What goes wrong upstream reaches
the client without any replica's address: those are in the log and the
metrics port, for the people who run the gateway.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from modelplane.gateway.admission.tokens import TokenTally
from modelplane.gateway.metrics import GatewayMetrics
from modelplane.gateway.routing.balancing import DEFAULT_LOAD_FACTOR, pick_upstream
from modelplane.gateway.routing.resilience import OutlierDetector, RetryBudget
from modelplane.gateway.routing.routes import ModelRoute, Track
from modelplane.http.asgi import Send
from modelplane.http.errors import error_body, rewrite_error_body, send_error
from modelplane.http.request_body import BufferedBody

log = logging.getLogger("modelplane.gateway")

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the client library
# or server sets itself; never copied between the two connections.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_RESPONSE_DROP = HOP_BY_HOP - {b"content-length"}
_SSE = b"text/event-stream"
_SSE_END = b"data: [DONE]\n\n"  # the last event of an OpenAI stream
# A Responses API stream has no `[DONE]`: it ends with its `response.completed` event.
_RESPONSES_PATH = "/v1/responses"
_MAX_ERROR_BODY_BYTES = 1 << 20  # read of a replica's error body, to rewrite it

# Errors before the first byte that mean "this replica did not take the
# request": safe to send it elsewhere. A read timeout is not one of them
# (the replica may be working on it), nor a malformed response.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)


def _connect_failure(err: BaseException) -> str:
    """What a client may know of a failed connection: its kind, not whom it was to."""
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return "connecting timed out"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the replica closed the connection"
    if isinstance(err, aiohttp.ClientConnectorError):
        return "connection refused or unreachable"
    return "connection failed"


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 600.0
    max_attempts: int = 3
    prefix_load_factor: float = DEFAULT_LOAD_FACTOR
    # Connections to replicas, all together; as many as the gateway takes requests
    # in flight, so a request never waits for one while under the in-flight cap.
    max_connections: int = 1024


@dataclass
class Outcome:
    """What happened, for metrics and the access log."""

    status: int = 0
    upstream: str = "none"
    attempts: int = 0
    upstream_ttfb_s: float = 0.0
    first_byte_at: float | None = None
    tokens: int = 0


@dataclass
class UpstreamPool:
    """The HTTP client, and the per-replica state balancing decisions read."""

    session: aiohttp.ClientSession
    settings: ProxySettings
    metrics: GatewayMetrics
    outliers: OutlierDetector = field(default_factory=OutlierDetector)
    budget: RetryBudget = field(default_factory=RetryBudget)
    loads: dict[str, int] = field(default_factory=dict)
    rand: Callable[[], float] = random.random
    _previous: dict[str, str] = field(default_factory=dict)
    _turns: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def open(settings: ProxySettings, metrics: GatewayMetrics) -> UpstreamPool:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.max_connections, ttl_dns_cache=30, enable_cleanup_closed=True
            ),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.connect_timeout_s,
                sock_read=settings.read_timeout_s,
            ),
            # Pass bytes through as the replica encoded them, and add no
            # header the client did not send.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        return UpstreamPool(session, settings, metrics)

    async def close(self) -> None:
        await self.session.close()

    def _candidates(self, route: ModelRoute, tried: set[str]) -> tuple[Track, ...]:
        """Ready replicas not yet tried; ejected ones only if nothing else is left."""
        if not tried and not self.outliers.any_ejected():
            return route.tracks  # the common case, without copying
        fresh = tuple(
            Track(t.name, t.weight, tuple(u for u in t.upstreams if u not in tried), t.revision)
            for t in route.tracks
        )
        healthy = tuple(
            Track(
                t.name,
                t.weight,
                tuple(u for u in t.upstreams if not self.outliers.is_ejected(u)),
                t.revision,
            )
            for t in fresh
        )
        return healthy if any(t.upstreams for t in healthy) else fresh

    def _acquire(self, model: str, upstream: str) -> Any:
        """Count a request in; returns the gauge child to decrement when it is done (the
        same one, even if the replica's series were removed while it ran)."""
        self.loads[upstream] = self.loads.get(upstream, 0) + 1
        gauge = self.metrics.in_flight_gauge(model, upstream)
        gauge.inc()
        return gauge

    def _release(self, upstream: str, gauge: Any) -> None:
        self.loads[upstream] -= 1
        if self.loads[upstream] == 0:
            del self.loads[upstream]  # replicas come and go: keep only the busy ones
        gauge.dec()

    def _failed(self, model: str, upstream: str, reason: str) -> None:
        if self.outliers.record_failure(upstream):
            self.metrics.ejection_counter(model, upstream).inc()
            log.warning(
                "replica %s of %s ejected after repeated failures (last: %s)",
                upstream, model, reason,
                extra={"model": model, "upstream": upstream, "reason": reason},
            )  # fmt: skip

    async def forward(
        self,
        route: ModelRoute,
        path: str,
        body: BufferedBody,
        headers: Mapping[str, str],
        key_hash: int | None,
        send: Send,
        tally: TokenTally | None,
        outcome: Outcome,
    ) -> None:
        """Answer the request, filling `outcome` as it goes (so it survives a cancel)."""
        model = route.name
        if route.upstream_key_problem is not None:
            # The replicas would refuse a request without the model's key: say so, not 401.
            # (Discovery logged why when it found out.)
            await send_error(
                send,
                503,
                f"the gateway cannot read the API key of model {model!r}'s replicas; "
                "its log says why",
                retry_after=30,
            )
            outcome.status = 503
            return
        if route.upstream_key is not None:
            headers = {**headers, "authorization": f"Bearer {route.upstream_key}"}
        tried: set[str] = set()
        self.budget.record_request()
        # What the client is told went wrong last: never a replica's address (the log has it).
        last_error = "no ready replica"
        while True:
            turn = self._turns.get(model, 0)
            self._turns[model] = turn + 1
            pick = pick_upstream(
                route.routing,
                self._candidates(route, tried),
                self.loads,
                key_hash=key_hash,
                rand=self.rand(),
                turn=turn,
                previous=self._previous.get(model),
                load_factor=self.settings.prefix_load_factor,
            )
            if pick is None:
                await send_error(
                    send, 502, f"no replica of model {model!r} could take the request: {last_error}"
                )
                outcome.status = 502
                return
            upstream = pick.upstream
            self._previous[model] = upstream
            tried.add(upstream)
            outcome.attempts += 1
            outcome.upstream = upstream
            may_retry = outcome.attempts < self.settings.max_attempts
            in_flight = self._acquire(model, upstream)
            try:
                started = time.perf_counter()
                try:
                    # Never follow a redirect: it would send the request (and its
                    # headers) wherever a replica, or whatever discovery took for one, says.
                    response = await self.session.request(
                        "POST",
                        upstream + path,
                        data=body.data,
                        headers=headers,
                        allow_redirects=False,
                    )
                except RETRYABLE_ERRORS as err:
                    last_error = _connect_failure(err)
                    self._failed(model, upstream, f"{upstream}: {err.__class__.__name__}: {err}")
                    if may_retry and self._can_retry_elsewhere(route, tried) and self._retry(model):
                        continue
                    await send_error(
                        send, 502, f"could not reach a replica of model {model!r}: {last_error}"
                    )
                    outcome.status = 502
                    return
                except aiohttp.SocketTimeoutError:
                    log.warning(
                        "replica %s of %s did not answer in time", upstream, model,
                        extra={"model": model, "upstream": upstream},
                    )  # fmt: skip
                    await send_error(
                        send,
                        504,
                        f"a replica of model {model!r} did not answer within "
                        f"{self.settings.read_timeout_s:g}s",
                    )
                    outcome.status = 504
                    return
                except aiohttp.ClientError as err:
                    # aiohttp's messages name the URL it called: they stay in the log.
                    log.warning(
                        "bad response from replica %s of %s: %s", upstream, model, err,
                        extra={"model": model, "upstream": upstream},
                    )  # fmt: skip
                    self._failed(model, upstream, f"{upstream}: {err.__class__.__name__}")
                    await send_error(
                        send,
                        502,
                        f"a replica of model {model!r} sent a response that is not valid HTTP "
                        f"({err.__class__.__name__})",
                    )
                    outcome.status = 502
                    return
                outcome.upstream_ttfb_s = time.perf_counter() - started
                if 300 <= response.status < 400:
                    response.release()
                    self._failed(model, upstream, f"{upstream}: redirect {response.status}")
                    await send_error(
                        send,
                        502,
                        f"a replica of model {model!r} answered with a redirect "
                        f"({response.status}); the gateway follows none",
                    )
                    outcome.status = 502
                    return
                if (
                    response.status == 503
                    and may_retry
                    and self._can_retry_elsewhere(route, tried)
                    and self._retry(model)
                ):
                    # Loading or draining: it refused the work, which says
                    # nothing against the replica's health.
                    await response.read()
                    response.release()
                    last_error = "every replica tried answered 503 (loading or draining)"
                    continue
                if response.status < 500:
                    self.outliers.record_success(upstream)
                elif response.status != 503:
                    self._failed(model, upstream, f"{upstream}: {response.status}")
                outcome.status = response.status
                body.release()  # no retry can need it now: not kept for the whole stream
                await self._stream(
                    model, response, send, outcome, tally, done=path != _RESPONSES_PATH
                )
                return
            finally:
                self._release(upstream, in_flight)

    def _can_retry_elsewhere(self, route: ModelRoute, tried: set[str]) -> bool:
        return any(t.upstreams for t in self._candidates(route, tried))

    def _retry(self, model: str) -> bool:
        if not self.budget.try_spend():
            return False
        self.metrics.retries.labels(model).inc()
        return True

    async def _send_error_response(
        self,
        response: aiohttp.ClientResponse,
        headers: list[tuple[bytes, bytes]],
        send: Send,
        outcome: Outcome,
        tally: TokenTally | None,
    ) -> None:
        """A replica's error in the one envelope (`http.errors.rewrite_error_body`): its
        message and `param` kept, `type` and `code` from the status, whatever server the
        replica runs. Error bodies are small; one past the limit is cut, not held."""
        try:
            body = await response.content.read(_MAX_ERROR_BODY_BYTES)
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        finally:
            response.release()
        if tally is not None:
            tally.feed(body)
        rewritten = rewrite_error_body(response.status, body)
        kept = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length")]
        kept += [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(rewritten)),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": kept})
        outcome.first_byte_at = time.perf_counter()
        await send({"type": "http.response.body", "body": rewritten})

    async def _stream(
        self,
        model: str,
        response: aiohttp.ClientResponse,
        send: Send,
        outcome: Outcome,
        tally: TokenTally | None,
        *,
        done: bool = True,
    ) -> None:
        """Pass the replica's answer through; a stream that breaks ends with an error event
        (and, when `done`, the `data: [DONE]` of a chat or completions stream)."""
        headers = [
            (k.lower(), v) for k, v in response.raw_headers if k.lower() not in _RESPONSE_DROP
        ]
        sse = any(k == b"content-type" and v.startswith(_SSE) for k, v in headers)
        if response.status >= 400 and not sse:
            await self._send_error_response(response, headers, send, outcome, tally)
            return
        try:
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            outcome.first_byte_at = time.perf_counter()
            ended = False  # the client has its whole response (an SSE stream's [DONE])
            try:
                async for chunk in response.content.iter_any():
                    if tally is not None:
                        tally.feed(chunk)
                    if ended:
                        continue  # read to the end, so the connection can be reused
                    # The stream's last event ends the client's response at once: a client
                    # that hangs up after [DONE] has been served, not walked away.
                    ended = sse and chunk.endswith(_SSE_END)
                    body = {"type": "http.response.body", "body": chunk, "more_body": not ended}
                    await send(body)
            except (TimeoutError, aiohttp.ClientError) as err:
                if ended:
                    return  # the client has everything; the replica closed early
                log.warning(
                    "replica %s broke off a response: %s",
                    outcome.upstream, err.__class__.__name__,
                    extra={"upstream": outcome.upstream, "error": err.__class__.__name__},
                )  # fmt: skip
                self._failed(model, outcome.upstream, f"stream broke: {err.__class__.__name__}")
                if not sse:
                    raise  # the server closes the connection: a cut body, not a wrong one
                message = f"the replica's stream broke: {err.__class__.__name__}"
                event = b"data: " + error_body(502, message) + b"\n\n"
                if done:
                    event += _SSE_END
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()
