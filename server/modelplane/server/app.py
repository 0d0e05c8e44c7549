"""The model server's HTTP front: Modelplane's production layer around vLLM.

A pure-ASGI application. It answers `/health`, `/ready` and `/metrics`
itself and, for the OpenAI endpoints, applies in order: API-key auth (keys
re-read from their file by the runner), the lifecycle gate (503 while
loading), the request-size limit and body deadline, and then hands
the request to the engine's own ASGI app (vLLM's OpenAI serving code),
measuring what the client experiences on the way out. The engine app is
attached once the weights are loaded, so the port answers probes from the
first second of a long model load.

While the server drains (after SIGTERM) `/ready` answers 503 but requests
are still served: one that arrives was routed here before the endpoint was
removed, and a 503 would fail a client that calls the Service directly.
Every response then says `Connection: close`, so a client's pooled
keep-alive connection to this replica is dropped and its next request
opens a new one, which the Service routes to a replica that stays.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelplane.http.asgi import ASGIApp, Message, Receive, Scope, Send, header
from modelplane.http.errors import (
    error_body,
    rewrite_error_body,
    rewrite_error_event,
    send_error,
    send_json,
)
from modelplane.http.json_body import BodyProblem, not_an_object, parse_json_body
from modelplane.http.key_store import ApiKeys
from modelplane.http.request_body import (
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
    read_request_body,
)
from modelplane.http.tracing import RequestTracer
from modelplane.server.lifecycle import Lifecycle, Phase
from modelplane.server.media_urls import media_url_problem
from modelplane.server.metrics import ServerMetrics
from modelplane.server.request_checks import (
    RESPONSES_PATH,
    RequestProblem,
    request_problem,
    stored_response_route_problem,
)

log = logging.getLogger("modelplane.server.access")

# OpenAI-style paths handed to the engine. Anything else is a 404 here, so
# vLLM's development and admin routes are never reachable from outside.
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
# Scoring (pooling models): vLLM's names, and the /v1 ones it still answers (with a
# deprecation warning in its log per request, so they reach it by their new names).
SCORE_PATH = "/v1/score"
RERANK_PATH = "/v1/rerank"
SCORING_PATHS = frozenset({SCORE_PATH, RERANK_PATH, "/score", "/rerank", "/v2/rerank"})
_ENGINE_ALIASES = {SCORE_PATH: "/score", RERANK_PATH: "/rerank"}
ENGINE_PATHS = frozenset(
    {MODELS_PATH, CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH, EMBEDDINGS_PATH,
     "/tokenize", "/detokenize"}
) | SCORING_PATHS  # fmt: skip
# The OpenAI inference paths: what `/ready` says a loaded model serves (the gateway
# learns it there, and its chat page offers only models that serve chat).
INFERENCE_PATHS = (
    CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH, EMBEDDINGS_PATH, SCORE_PATH, RERANK_PATH
)  # fmt: skip
_POST_ONLY = frozenset(INFERENCE_PATHS) | SCORING_PATHS
# The engine names the request's input `input_tokens` when it is too long for the
# context; the client knows it by the field it wrote.
_INPUT_PARAM = {
    CHAT_PATH: {"input_tokens": "messages"},
    COMPLETIONS_PATH: {"input_tokens": "prompt"},
    EMBEDDINGS_PATH: {"input_tokens": "input"},
    RESPONSES_PATH: {"input_tokens": "input"},
}
# An engine error body held to be rewritten into the envelope; a larger one (never
# seen: vLLM bounds its messages) goes out as it is.
_MAX_REWRITTEN_ERROR_BYTES = 1 << 20
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
    # The whole body, from the end of the head (http.request_body says why a total).
    body_timeout_s: float = 30.0
    # engine.allowedMediaDomains: hosts whose media URLs the engine may fetch (server.media_urls).
    allowed_media_hosts: frozenset[str] = frozenset()


@dataclass
class _Exchange:
    """What one request produced, for metrics, logs and traces."""

    request_id: str
    start: float
    status: int = 0
    first_chunk_at: float | None = None
    last_chunk_at: float | None = None
    streaming: bool = False
    ended: bool = False  # the response's last body message has gone out
    chunk_gaps: list[float] = field(default_factory=list)


class ModelServerApp:
    def __init__(
        self,
        settings: FrontSettings,
        lifecycle: Lifecycle,
        metrics: ServerMetrics,
        registry: CollectorRegistry,
        tracer: RequestTracer | None = None,
        keys: ApiKeys | None = None,
        adapters: Callable[[], list[str]] | None = None,
    ) -> None:
        self.settings = settings
        # The LoRA adapters loaded now, for `/ready` (the gateway routes adapters by it).
        self.adapters = adapters or list
        # Re-read from their file by the runner; fixed when given as settings.api_keys.
        self.keys = keys or ApiKeys.fixed(settings.api_keys)
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
        send = _closing_while_draining(_with_request_id(send, request_id), self.lifecycle)
        path: str = scope["path"]
        with self.tracer.span(scope, request_id) as span:
            if path in PROBE_PATHS:
                await self._probe(path, send)
            elif path in ENGINE_PATHS:
                observed = _observe(send, exchange, path == RESPONSES_PATH)
                await self._engine_request(scope, receive, observed, exchange)
            elif (stored := stored_response_route_problem(scope["method"], path)) is not None:
                await send_error(send, stored.status, stored.message, param=stored.param)
                exchange.status = stored.status
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
        state: dict[str, object] = {"status": lc.phase.value, "detail": lc.detail}
        if self.engine is not None:
            state["endpoints"] = [p for p in INFERENCE_PATHS if p in self.engine.paths]
            state["adapters"] = self.adapters()
        await send_json(send, status, json.dumps(state).encode())

    async def _engine_request(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        model, endpoint = self.settings.served_model_name, scope["path"]
        self.metrics.in_flight.labels(model).inc()
        # Counted from arrival (body upload included), so a drain never ends under a request.
        self.lifecycle.request_started()
        try:
            await self._gate_and_forward(scope, receive, send)
        except Exception:
            # vLLM maps its own errors to responses; anything reaching here is
            # a bug. The client gets an envelope and the id, never a trace.
            log.exception("unhandled error", extra={"request_id": exchange.request_id})
            message = f"internal error; request id {exchange.request_id}"
            if exchange.status == 0:
                await send_error(send, 500, message)
            elif exchange.streaming and not exchange.ended:
                # A stream the engine broke off: the client reads an error event, not a
                # connection cut mid-stream (a chat stream's `[DONE]` after it).
                await send(_stream_error_event(scope["path"], message))
        finally:
            self.lifecycle.request_finished()
            self.metrics.in_flight.labels(model).dec()
            self._record(model, endpoint, exchange)

    async def _gate_and_forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings, lc = self.settings, self.lifecycle
        if not self.keys.allows(scope):
            await send_error(
                send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'"
            )
            return
        if lc.phase is Phase.LOADING:
            await send_error(
                send, 503, "the model is still loading", retry_after=settings.retry_after_loading_s
            )
            return
        engine = self.engine
        if lc.phase is Phase.FAILED or engine is None:
            await send_error(send, 503, f"the engine is not available: {lc.detail}")
            return
        if scope["path"] in _POST_ONLY and scope["method"] != "POST":
            await send_error(send, 405, f"use POST for {scope['path']}")
            return
        if scope["path"] not in engine.paths:
            served = [p for p in INFERENCE_PATHS if p in engine.paths]
            serves = " and ".join([", ".join(served[:-1]), *served[-1:]] if served[:-1] else served)
            serves = serves or "nothing"
            await send_error(
                send,
                404,
                f"model {settings.served_model_name!r} does not serve {scope['path']}; "
                f"it serves {serves}",
                param="model",
            )
            return
        try:
            body = await read_request_body(
                scope,
                receive,
                max_bytes=settings.max_request_bytes,
                timeout_s=settings.body_timeout_s,
            )
        except BodyTooLargeError:
            await send_error(
                send,
                413,
                f"request body exceeds the limit of {settings.max_request_bytes} bytes",
            )
            return
        except BodyTimeoutError:
            await send_error(
                send,
                408,
                f"the request body did not arrive within {settings.body_timeout_s:g}s",
                close=True,
            )
            return
        except ClientGoneError:
            return
        # Hostile JSON (too deep, not UTF-8, lone surrogates) gets a 400 here, not a
        # RecursionError inside the engine's parser.
        problem = _json_problem(body, scope["path"], settings.allowed_media_hosts)
        if problem is not None:
            await send_error(send, problem.status, problem.message, param=problem.param)
            return
        await engine.asgi(
            _engine_scope(scope),
            _replaying(body, receive),
            _in_the_envelope(send, _INPUT_PARAM.get(scope["path"])),
        )

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


def _closing_while_draining(send: Send, lifecycle: Lifecycle) -> Send:
    """Once draining, ask the client to close its connection after this response."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and lifecycle.phase is Phase.DRAINING:
            message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
        await send(message)

    return wrapped


# A Responses stream's events that carry generated text or arguments; its others (created,
# in progress, item added, done...) are not tokens, and the first comes before any is made.
_RESPONSES_TOKEN_EVENT = b'.delta"'


def _observe(send: Send, ex: _Exchange, responses: bool = False) -> Send:
    """Note status, first-chunk time and chunk gaps as the response goes out (of a
    Responses stream, only its delta events count as chunks of tokens)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            ex.status = int(message["status"])
            for key, value in message.get("headers", ()):
                if key.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                    ex.streaming = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            ex.ended = True
        if message["type"] == "http.response.body" and message.get("body"):
            now = time.perf_counter()
            if responses and ex.streaming and _RESPONSES_TOKEN_EVENT not in message["body"]:
                ex.last_chunk_at = now
            elif ex.first_chunk_at is None:
                ex.first_chunk_at = now
            elif ex.last_chunk_at is not None:
                ex.chunk_gaps.append(now - ex.last_chunk_at)
            ex.last_chunk_at = now
        await send(message)

    return wrapped


def _in_the_envelope(send: Send, params: Mapping[str, str] | None = None) -> Send:
    """The engine's errors in the one envelope (`http.errors`): an error response is held
    until its body is complete and rewritten, an error event in a stream is rewritten on
    its way; everything else passes untouched."""
    held: list[Message] = []  # the error response's start, then its body chunks
    size = 0
    streaming = False

    async def wrapped(message: Message) -> None:
        nonlocal size, streaming
        kind = message["type"]
        if kind == "http.response.start":
            if int(message["status"]) >= 400:
                held.append(message)
                return
            streaming = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in message.get("headers", ())
            )
        elif kind == "http.response.body" and held:
            held.append(message)
            size += len(message.get("body", b""))
            if message.get("more_body", False) and size <= _MAX_REWRITTEN_ERROR_BYTES:
                return
            start, chunks = held[0], held[1:]
            held.clear()
            if message.get("more_body", False):  # too large to hold: as it came
                for part in (start, *chunks):
                    await send(part)
                return
            status = int(start["status"])
            body = rewrite_error_body(status, b"".join(c.get("body", b"") for c in chunks), params)
            headers = [
                (k, v)
                for k, v in start.get("headers", ())
                if k.lower() not in (b"content-type", b"content-length")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        elif kind == "http.response.body" and streaming:
            chunk = message.get("body", b"")
            rewritten = rewrite_error_event(chunk, params)
            if rewritten is not chunk:
                message = {**message, "body": rewritten}
        await send(message)

    return wrapped


def _json_problem(
    body: bytes, path: str, allowed_media_hosts: frozenset[str] = frozenset()
) -> RequestProblem | None:
    """What is wrong with the body's JSON, if anything: a media URL the engine may not
    fetch and what `request_checks` refuses included. The parsed value is dropped on
    return: the engine parses the body itself, and a copy kept here would stay alive
    (several times the body's size) for the whole response."""
    if not body:
        return None
    parsed = parse_json_body(body)
    if isinstance(parsed, BodyProblem):
        return RequestProblem(parsed.message)
    if (problem := not_an_object(parsed)) is not None:
        return RequestProblem(problem.message)
    if (media := media_url_problem(parsed, allowed_media_hosts)) is not None:
        return RequestProblem(media)
    return request_problem(path, parsed)


def _engine_scope(scope: Scope) -> Scope:
    """The request as the engine routes it: an old name of a route by its new one."""
    alias = _ENGINE_ALIASES.get(scope["path"])
    if alias is None:
        return scope
    return {**scope, "path": alias, "raw_path": alias.encode()}


def _stream_error_event(path: str, message: str) -> Message:
    """The last chunk of a stream that broke: an error event in the envelope (which the
    official SDK raises as an APIError), then a chat or completions stream's `[DONE]`."""
    event = b"data: " + error_body(500, message) + b"\n\n"
    if path != RESPONSES_PATH:
        event += b"data: [DONE]\n\n"
    return {"type": "http.response.body", "body": event, "more_body": False}


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the engine the body read up front, then passes through.

    Bodies are read up front so an oversized or slow one is refused before any
    work starts. After the replay, `receive` passes through, so a client
    disconnect still reaches the engine and cancels generation; the body is
    not referenced from here on, so only the engine decides how long it lives.
    """
    pending = [body]
    del body

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


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
