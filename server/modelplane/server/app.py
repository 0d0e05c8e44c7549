"""The model server's HTTP front: Modelplane's production layer around vLLM.

A pure-ASGI application. It answers `/health`, `/ready` and `/metrics`
itself and, for the OpenAI endpoints, applies in order: API-key auth, the
lifecycle gate (503 while loading or draining), the request-size limit and
then hands the request to the engine's own ASGI app (vLLM's OpenAI serving
code), measuring what the client experiences on the way out. The engine app
is attached once the weights are loaded, so the port answers probes from
the first second of a long model load.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelplane.http.asgi import ASGIApp, Message, Receive, Scope, Send, header
from modelplane.http.auth import key_is_valid, presented_key
from modelplane.http.errors import send_error, send_json
from modelplane.http.json_body import BodyProblem, parse_json_body
from modelplane.http.tracing import RequestTracer
from modelplane.server.lifecycle import Lifecycle, Phase
from modelplane.server.metrics import ServerMetrics

log = logging.getLogger("modelplane.server.access")

# OpenAI-style paths handed to the engine. Anything else is a 404 here, so
# vLLM's development and admin routes are never reachable from outside.
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
ENGINE_PATHS = frozenset(
    {MODELS_PATH, CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH, "/tokenize", "/detokenize"}
)
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})


class Engine(Protocol):
    """What the HTTP front needs from a loaded engine."""

    @property
    def asgi(self) -> ASGIApp: ...

    @property
    def paths(self) -> frozenset[str]:
        """The ENGINE_PATHS this model serves (embedding models serve no chat)."""
        ...

    async def healthy(self) -> bool: ...


@dataclass(frozen=True)
class FrontSettings:
    served_model_name: str
    api_keys: tuple[str, ...] = ()
    max_request_bytes: int = 8 * 1024 * 1024
    retry_after_loading_s: int = 5
    retry_after_draining_s: int = 1


class BodyTooLargeError(Exception):
    pass


@dataclass
class _Exchange:
    """What one request produced, for metrics, logs and traces."""

    request_id: str
    start: float
    status: int = 0
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None
    streaming: bool = False
    chunk_gaps: list[float] = field(default_factory=list)


class ModelServerApp:
    def __init__(
        self,
        settings: FrontSettings,
        lifecycle: Lifecycle,
        metrics: ServerMetrics,
        registry: CollectorRegistry,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.registry = registry
        self.tracer = tracer or RequestTracer(None)
        self.engine: Engine | None = None

    def attach_engine(self, engine: Engine) -> None:
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _accept_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_id = header(scope, b"x-request-id")
        request_id = raw_id.decode("latin-1")[:128] if raw_id else uuid.uuid4().hex
        exchange = _Exchange(request_id=request_id, start=time.perf_counter())
        send = _with_request_id(send, request_id)
        path: str = scope["path"]
        with self.tracer.span(scope, request_id) as span:
            if path in PROBE_PATHS:
                await self._probe(path, send)
            elif path in ENGINE_PATHS:
                await self._engine_request(scope, receive, _observe(send, exchange), exchange)
            else:
                await send_error(send, 404, f"no route {scope['method']} {path}")
                exchange.status = 404
            span.finish(exchange.status)
        if path not in PROBE_PATHS:
            _log_request(scope, exchange, self.settings.served_model_name)

    async def _probe(self, path: str, send: Send) -> None:
        if path == "/metrics":
            body = generate_latest(self.registry)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        lc = self.lifecycle
        if path == "/ready":
            status = 200 if lc.ready else 503
        elif lc.phase is Phase.FAILED:
            status = 503
        elif self.engine is not None:
            status = 200 if await self.engine.healthy() else 503
        else:
            status = 200  # alive and loading; startup probes watch /ready
        body = json.dumps({"status": lc.phase.value, "detail": lc.detail}).encode()
        await send_json(send, status, body)

    async def _engine_request(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        model, endpoint = self.settings.served_model_name, scope["path"]
        self.metrics.in_flight.labels(model).inc()
        try:
            await self._gate_and_forward(scope, receive, send)
        except Exception:
            # vLLM maps its own errors to responses; anything reaching here is
            # a bug. The client gets an envelope and the id, never a trace.
            log.exception("unhandled error", extra={"request_id": exchange.request_id})
            if exchange.status == 0:
                await send_error(send, 500, f"internal error; request id {exchange.request_id}")
        finally:
            self.metrics.in_flight.labels(model).dec()
            self._record(model, endpoint, exchange)

    async def _gate_and_forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings, lc = self.settings, self.lifecycle
        if settings.api_keys and not key_is_valid(presented_key(scope), settings.api_keys):
            await send_error(
                send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'"
            )
            return
        if lc.phase is Phase.LOADING:
            await send_error(
                send, 503, "the model is still loading", retry_after=settings.retry_after_loading_s
            )
            return
        if lc.phase is Phase.DRAINING:
            await send_error(
                send,
                503,
                "this replica is shutting down; retry the request",
                retry_after=settings.retry_after_draining_s,
            )
            return
        engine = self.engine
        if lc.phase is Phase.FAILED or engine is None:
            await send_error(send, 503, f"the engine is not available: {lc.detail}")
            return
        if scope["path"] not in engine.paths:
            await send_error(
                send, 404, f"model {settings.served_model_name!r} does not serve {scope['path']}"
            )
            return
        try:
            replay, body = await _buffer_body(scope, receive, settings.max_request_bytes)
        except BodyTooLargeError:
            await send_error(
                send,
                413,
                f"request body exceeds the limit of {settings.max_request_bytes} bytes",
            )
            return
        if body:
            # Hostile JSON (too deep, not UTF-8, lone surrogates) gets a 400 here, not a
            # RecursionError inside the engine's parser.
            parsed = parse_json_body(body)
            if isinstance(parsed, BodyProblem):
                await send_error(send, 400, parsed.message)
                return
        lc.request_started()
        try:
            await engine.asgi(scope, replay, send)
        finally:
            lc.request_finished()

    def _record(self, model: str, endpoint: str, ex: _Exchange) -> None:
        m = self.metrics
        m.requests.labels(model, endpoint, str(ex.status or 499)).inc()
        end = ex.last_chunk_at or time.perf_counter()
        m.e2e_latency.labels(model, endpoint).observe(end - ex.start)
        if ex.streaming and ex.first_chunk_at is not None and ex.status == 200:
            m.ttft.labels(model, endpoint).observe(ex.first_chunk_at - ex.start)
            itl = m.itl.labels(model, endpoint)
            for gap in ex.chunk_gaps:
                itl.observe(gap)


async def _accept_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _with_request_id(send: Send, request_id: str) -> Send:
    encoded = request_id.encode("latin-1")

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded)]
        await send(message)

    return wrapped


def _observe(send: Send, ex: _Exchange) -> Send:
    """Note status, first-chunk time and chunk gaps as the response goes out."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            ex.status = int(message["status"])
            for key, value in message.get("headers", ()):
                if key.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                    ex.streaming = True
        elif message["type"] == "http.response.body" and message.get("body"):
            now = time.perf_counter()
            if ex.first_chunk_at is None:
                ex.first_chunk_at = now
            elif ex.last_chunk_at is not None:
                ex.chunk_gaps.append(now - ex.last_chunk_at)
            ex.last_chunk_at = now
        await send(message)

    return wrapped


async def _buffer_body(scope: Scope, receive: Receive, limit: int) -> tuple[Receive, bytes]:
    """Read the whole request body (bounded); return a receive that replays it, and the body.

    Bodies of OpenAI requests are small; reading them up front lets an
    oversized one be refused with 413 before any work starts. After the
    replay, `receive` passes through, so a client disconnect still reaches
    the engine and cancels generation.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, body


def _log_request(scope: Scope, ex: _Exchange, model: str) -> None:
    duration = (ex.last_chunk_at or time.perf_counter()) - ex.start
    log.info(
        "%s %s %d",
        scope["method"],
        scope["path"],
        ex.status,
        extra={
            "request_id": ex.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": ex.status,
            "duration_ms": round(duration * 1000, 2),
            "model": model,
            "stream": ex.streaming,
        },
    )
