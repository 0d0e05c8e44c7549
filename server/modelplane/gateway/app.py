"""The gateway's HTTP front: one OpenAI endpoint in front of every model.

A pure-ASGI application (no framework between uvicorn and the proxy, so
nothing buffers a stream or adds per-request overhead). For the OpenAI
endpoints it applies, in order: API-key auth, per-key rate limits, the
request-size limit, the lookup of the request's `model` (404 listing what
exists), holding while the model has no ready replica, and then hands the
request to the proxy. It answers `/v1/models` (every discovered model),
`/health`, `/ready` (discovery has synced), `/metrics`, and serves the chat
page at `/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.admission.tokens import TokenTally
from modelplane.gateway.disconnect import CancelOnDisconnect
from modelplane.gateway.metrics import GatewayMetrics
from modelplane.gateway.proxy import HOP_BY_HOP, Outcome, UpstreamPool
from modelplane.gateway.routing.affinity import affinity_key
from modelplane.gateway.routing.balancing import stable_hash
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable
from modelplane.http.asgi import Receive, Scope, Send, header
from modelplane.http.auth import key_is_valid, presented_key
from modelplane.http.errors import send_error, send_json
from modelplane.http.json_body import BodyProblem, parse_json_body
from modelplane.http.tracing import RequestTracer

log = logging.getLogger("modelplane.gateway")
access_log = logging.getLogger("modelplane.gateway.access")

FORWARDED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
MODELS_PATH = "/v1/models"
UNKNOWN_MODEL = "unknown"  # the label value of every model name the gateway does not serve
CHAT_PAGE = resources.files("modelplane.gateway").joinpath("chat.html")

_PROPAGATOR = TraceContextTextMapPropagator()

# Called with the route and how many requests this gateway holds for it, this one included.
DemandHook = Callable[[ModelRoute, int], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class FrontSettings:
    api_keys: tuple[str, ...] = ()
    hold_timeout_s: float = 120.0
    max_request_bytes: int = 8 * 1024 * 1024
    access_log: bool = False


class _BodyTooLargeError(Exception):
    pass


async def _no_demand_hook(route: ModelRoute, held: int) -> None:
    return None


class GatewayApp:
    def __init__(
        self,
        settings: FrontSettings,
        table: RoutingTable,
        pool: UpstreamPool,
        limiter: KeyRateLimiter,
        metrics: GatewayMetrics,
        registry: CollectorRegistry,
        *,
        tracer: RequestTracer | None = None,
        on_demand: DemandHook = _no_demand_hook,
        demand_throttle: DemandThrottle | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.pool = pool
        self.limiter = limiter
        self.metrics = metrics
        self.registry = registry
        self.tracer = tracer or RequestTracer(None, service_name="modelplane-gateway")
        self.on_demand = on_demand
        self.demand_throttle = demand_throttle or DemandThrottle()
        self._started = int(time.time())
        self._chat_page = CHAT_PAGE.read_bytes()
        self._request_counters: dict[tuple[str, str, str], Any] = {}
        self._latency: dict[str, Any] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._holding: dict[str, int] = {}  # requests held now, per model
        self._tracing = self.tracer.provider is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # served with lifespan off: nothing to start or stop per app
        path: str = scope["path"]
        if path in FORWARDED_PATHS:
            if scope["method"] != "POST":
                await send_error(send, 405, f"use POST for {path}")
                return
            await self._forward(scope, receive, send)
        elif path == MODELS_PATH:
            await self._models(scope, send)
        elif path == "/" or path == "/index.html":
            await _send_bytes(send, 200, self._chat_page, b"text/html; charset=utf-8")
        elif path == "/health":
            await send_json(send, 200, b'{"status": "ok"}')
        elif path == "/ready":
            synced = self.table.synced
            await send_json(send, 200 if synced else 503, json.dumps({"synced": synced}).encode())
        elif path == "/metrics":
            await _send_bytes(
                send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()
            )
        else:
            await send_error(send, 404, f"no route {scope['method']} {path}")

    def _authorized(self, scope: Scope) -> tuple[bool, str]:
        key = presented_key(scope)
        if not self.settings.api_keys:
            client = scope.get("client")
            return True, key or (client[0] if client else "anonymous")
        return key_is_valid(key, self.settings.api_keys), key or ""

    async def _models(self, scope: Scope, send: Send) -> None:
        if not self._authorized(scope)[0]:
            await _unauthorized(send)
            return
        data = [
            {"id": name, "object": "model", "created": self._started, "owned_by": "modelplane"}
            for name in sorted(self.table.routes)
        ]
        await send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        allowed, identity = self._authorized(scope)
        if not allowed:
            await _unauthorized(send)
            self._count("", 401, "none")
            return
        decision = self.limiter.admit(identity)
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.reason).inc()
            await send_error(
                send,
                429,
                f"rate limit reached: {decision.reason} for this API key",
                retry_after=decision.retry_after_s,
            )
            self._count("", 429, "none")
            return
        try:
            body = await _read_body(scope, receive, self.settings.max_request_bytes)
        except _BodyTooLargeError:
            limit = self.settings.max_request_bytes
            await send_error(send, 413, f"request body exceeds the limit of {limit} bytes")
            self._count("", 413, "none")
            return
        payload = parse_json_body(body)
        if isinstance(payload, BodyProblem):
            await send_error(send, 400, payload.message)
            self._count("", 400, "none")
            return
        if not isinstance(payload, dict):
            await send_error(send, 400, "the request body is not a JSON object")
            self._count("", 400, "none")
            return
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            await send_error(send, 400, "the request has no 'model'", param="model")
            self._count("", 400, "none")
            return
        route = self.table.routes.get(model)
        if route is None:
            known = ", ".join(sorted(self.table.routes)) or "none"
            await send_error(
                send, 404, f"the model {model!r} does not exist; available: {known}", param="model"
            )
            # Only models the gateway serves become label values: a client's names would
            # add a series each, unbounded in count and length.
            self._count(UNKNOWN_MODEL, 404, "none")
            return
        tally = (
            TokenTally(len(body), streaming=bool(payload.get("stream")))
            if self.limiter.counts_tokens
            else None
        )
        request_id = _request_id(scope)
        outcome = Outcome()
        held_s = 0.0
        async with CancelOnDisconnect(receive) as watch:
            send = watch.wrap(send)
            if not route.ready:
                held_started = time.perf_counter()
                ready_route = await self._hold(route)
                held_s = time.perf_counter() - held_started
                if ready_route is None:
                    await send_error(
                        send,
                        503,
                        f"no replica of model {model!r} became ready within "
                        f"{self.settings.hold_timeout_s:g}s; it may be scaling up from zero",
                        retry_after=5,
                    )
                    self._count(model, 503, "none")
                    return
                route = ready_route
            key_hash = _prefix_hash(route, scope["path"], payload)
            with self.tracer.span(scope, request_id) as span:
                headers = _upstream_headers(scope, request_id, self._tracing)
                await self.pool.forward(
                    route, scope["path"], body, headers, key_hash, send, tally, outcome
                )
                span.finish(outcome.status)
        if watch.client_gone:
            outcome.status = 499  # client closed the request (nginx's convention)
        if tally is not None:
            outcome.tokens = tally.total()
            self.limiter.charge_tokens(identity, outcome.tokens)
        self._record(model, outcome, arrived, held_s)
        if self.settings.access_log or outcome.status >= 500 or outcome.attempts > 1:
            _log_access(scope, model, outcome, arrived, request_id)

    async def _hold(self, route: ModelRoute) -> ModelRoute | None:
        model = route.name
        holding = self._holding[model] = self._holding.get(model, 0) + 1
        if route.demand and self.demand_throttle.should_signal(model):
            self.metrics.demand_signals.labels(model).inc()
            task = asyncio.create_task(self.on_demand(route, holding), name=f"demand-{model}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        gauge = self.metrics.held.labels(model)
        gauge.inc()
        started = time.perf_counter()
        try:
            return await self.table.wait_until_ready(model, self.settings.hold_timeout_s)
        finally:
            self._holding[model] -= 1
            gauge.dec()
            self.metrics.hold_duration.labels(model).observe(time.perf_counter() - started)

    def _count(self, model: str, status: int, upstream: str) -> None:
        labels = (model, str(status), upstream)
        counter = self._request_counters.get(labels)
        if counter is None:
            counter = self._request_counters[labels] = self.metrics.requests.labels(*labels)
        counter.inc()

    def _record(self, model: str, outcome: Outcome, arrived: float, held_s: float) -> None:
        self._count(model, outcome.status or 499, outcome.upstream)
        if outcome.first_byte_at is not None:
            added = outcome.first_byte_at - arrived - held_s - outcome.upstream_ttfb_s
            histogram = self._latency.get(model)
            if histogram is None:
                histogram = self._latency[model] = self.metrics.added_latency.labels(model)
            histogram.observe(max(0.0, added))


def _prefix_hash(route: ModelRoute, path: str, payload: dict[str, Any]) -> int | None:
    """Only prefix-affine models need the hash; the others skip its cost."""
    if route.routing is not Routing.PREFIX:
        return None
    key = affinity_key(path, payload)
    return stable_hash(key) if key is not None else None


def _request_id(scope: Scope) -> str:
    raw = header(scope, b"x-request-id")
    return raw.decode("latin-1")[:128] if raw else uuid.uuid4().hex


def _upstream_headers(scope: Scope, request_id: str, tracing: bool) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones, plus forwarding and trace context.

    `Authorization` goes through: replicas may check the same keys. The
    client's `traceparent` goes through as is unless the gateway traces
    itself; then the gateway's span becomes the replica's parent.
    """
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key not in HOP_BY_HOP:
            headers[key.decode("latin-1")] = value.decode("latin-1")
    headers["x-request-id"] = request_id
    client = scope.get("client")
    if client:
        prior = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{prior}, {client[0]}" if prior else client[0]
    if tracing:
        _PROPAGATOR.inject(headers)
    return headers


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _BodyTooLargeError
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _unauthorized(send: Send) -> None:
    await send_error(send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'")


async def _send_bytes(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log_access(
    scope: Scope, model: str, outcome: Outcome, arrived: float, request_id: str
) -> None:
    access_log.info(
        "%s %s %d model=%s upstream=%s attempts=%d",
        scope["method"],
        scope["path"],
        outcome.status,
        model,
        outcome.upstream,
        outcome.attempts,
        extra={
            "request_id": request_id,
            "model": model,
            "status": outcome.status,
            "upstream": outcome.upstream,
            "attempts": outcome.attempts,
            "duration_ms": round((time.perf_counter() - arrived) * 1000, 2),
        },
    )
