"""The HTTP front (auth, gate, limits, probes, metrics) around a small fake engine.

The fake engine stands in for vLLM's ASGI app so these tests run in
milliseconds; the same behaviours are checked against real vLLM in
tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from modelplane.http.asgi import Receive, Scope, Send
from modelplane.http.tracing import RequestTracer
from modelplane.server.app import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    MODELS_PATH,
    FrontSettings,
    ModelServerApp,
)
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.metrics import ServerMetrics


class FakeEngine:
    """Echoes the request body; streams three SSE events for `stream: true`."""

    def __init__(self, *, fail: bool = False, alive: bool = True) -> None:
        self.fail = fail
        self.alive = alive
        self.seen_bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    @property
    def asgi(self) -> FakeEngine:
        return self

    @property
    def paths(self) -> frozenset[str]:
        return frozenset({MODELS_PATH, CHAT_PATH, COMPLETIONS_PATH})

    async def healthy(self) -> bool:
        return self.alive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fail:
            raise RuntimeError("engine exploded")
        message = await receive()
        body = message.get("body", b"")
        self.seen_bodies.append(body)
        self.entered.set()
        await self.release.wait()
        if body and json.loads(body).get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            for chunk in (b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body or b"{}"})


def make_front(
    *, keys: tuple[str, ...] = (), engine: FakeEngine | None = None, ready: bool = True
) -> tuple[ModelServerApp, CollectorRegistry, InMemorySpanExporter]:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    front = ModelServerApp(
        FrontSettings(served_model_name="m", api_keys=keys, max_request_bytes=2048),
        Lifecycle(),
        ServerMetrics(registry),
        registry,
        RequestTracer(exporter),
    )
    if ready:
        front.attach_engine(engine or FakeEngine())
        front.lifecycle.mark_ready()
    return front, registry, exporter


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    front, _, _ = make_front(keys=("k1", "k2"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(front), base_url="http://t") as c:
        yield c


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def call(front: ModelServerApp, method: str, path: str, **kw: object) -> httpx.Response:
    transport = httpx.ASGITransport(front)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.request(method, path, **kw)  # type: ignore[arg-type]


async def test_missing_and_wrong_keys_get_401_envelope(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
        r = await client.get(MODELS_PATH, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"


async def test_every_configured_key_is_accepted(client: httpx.AsyncClient) -> None:
    for key in ("k1", "k2"):
        r = await client.get(MODELS_PATH, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert (await client.get(MODELS_PATH, headers={"api-key": "k2"})).status_code == 200


async def test_probes_and_metrics_are_open(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200


async def test_ready_lists_the_paths_the_loaded_model_serves(client: httpx.AsyncClient) -> None:
    """What static discovery reads, so the gateway (and its chat page) knows a chat model
    from an embedding model; nothing is listed while the model loads."""
    ready = (await client.get("/ready")).json()
    assert ready["endpoints"] == [CHAT_PATH, COMPLETIONS_PATH]
    front, _, _ = make_front(ready=False)
    assert "endpoints" not in (await call(front, "GET", "/ready")).json()


async def test_unknown_path_is_404_envelope(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/fine_tuning/jobs")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


async def test_path_the_model_does_not_serve_is_404() -> None:
    front, _, _ = make_front()
    r = await call(front, "POST", "/v1/embeddings", json={"input": "x"})
    assert r.status_code == 404
    assert "does not serve /v1/embeddings" in r.json()["error"]["message"]


async def test_loading_server_is_alive_but_not_ready_and_refuses_work() -> None:
    front, _, _ = make_front(ready=False)
    assert (await call(front, "GET", "/health")).status_code == 200
    ready = await call(front, "GET", "/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "loading"
    r = await call(front, "POST", CHAT_PATH, json={})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


async def test_dead_engine_fails_liveness() -> None:
    front, _, _ = make_front(engine=FakeEngine(alive=False))
    assert (await call(front, "GET", "/health")).status_code == 503


async def test_draining_is_not_ready_but_serves_what_arrives_and_closes_connections() -> None:
    """A request routed here before the endpoint went away is answered, not refused."""
    front, _, _ = make_front()
    assert "connection" not in (await call(front, "POST", CHAT_PATH, json={})).headers
    front.lifecycle.start_drain()
    ready = await call(front, "GET", "/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert (await call(front, "GET", "/health")).status_code == 200
    r = await call(front, "POST", CHAT_PATH, json={"late": True})
    assert r.status_code == 200 and r.json() == {"late": True}
    assert r.headers["connection"] == "close"  # pooled connections move to other replicas


async def test_drain_waits_for_in_flight_request() -> None:
    engine = FakeEngine()
    engine.release.clear()
    front, _, _ = make_front(engine=engine)
    request = asyncio.create_task(call(front, "POST", CHAT_PATH, json={"q": 1}))
    await asyncio.wait_for(engine.entered.wait(), 1)
    assert front.lifecycle.in_flight == 1
    front.lifecycle.start_drain()
    quiet = asyncio.create_task(front.lifecycle.wait_quiet(0.05))
    await asyncio.sleep(0.1)
    assert not quiet.done()  # the request is still in flight
    engine.release.set()
    assert (await request).status_code == 200
    await asyncio.wait_for(quiet, 1)


async def test_a_request_arriving_during_the_drain_restarts_the_quiet_wait() -> None:
    engine = FakeEngine()
    front, _, _ = make_front(engine=engine)
    front.lifecycle.start_drain()
    quiet = asyncio.create_task(front.lifecycle.wait_quiet(0.2))
    await asyncio.sleep(0.1)
    engine.release.clear()
    late = asyncio.create_task(call(front, "POST", CHAT_PATH, json={"q": 2}))
    await asyncio.wait_for(engine.entered.wait(), 1)
    await asyncio.sleep(0.3)  # past the quiet time counted from the drain's start
    assert not quiet.done()
    engine.release.set()
    assert (await late).status_code == 200
    await asyncio.wait_for(quiet, 1)


async def test_oversized_body_is_413_and_never_reaches_engine() -> None:
    engine = FakeEngine()
    front, _, _ = make_front(engine=engine)
    r = await call(front, "POST", CHAT_PATH, content=b"x" * 4096)
    assert r.status_code == 413
    assert engine.seen_bodies == []

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(5):
            yield b"y" * 1000

    r = await call(front, "POST", CHAT_PATH, content=chunks())
    assert r.status_code == 413
    assert engine.seen_bodies == []


async def test_body_within_limit_reaches_engine_intact() -> None:
    engine = FakeEngine()
    front, _, _ = make_front(engine=engine)
    payload = {"model": "m", "messages": [{"role": "user", "content": "é" * 300}]}
    r = await call(front, "POST", CHAT_PATH, json=payload)
    assert r.status_code == 200 and r.json() == payload


async def test_engine_crash_is_a_500_envelope_without_traceback() -> None:
    front, registry, _ = make_front(engine=FakeEngine(fail=True))
    r = await call(front, "POST", CHAT_PATH, json={}, headers={"X-Request-Id": "abc"})
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "internal error; request id abc"
    assert "Traceback" not in r.text
    assert (
        sample(registry, "modelplane_requests_total", model="m", endpoint=CHAT_PATH, code="500")
        == 1
    )


async def test_request_id_echoed_or_generated() -> None:
    front, _, _ = make_front()
    r = await call(front, "GET", MODELS_PATH, headers={"X-Request-Id": "req-7"})
    assert r.headers["x-request-id"] == "req-7"
    generated = (await call(front, "GET", MODELS_PATH)).headers["x-request-id"]
    assert len(generated) == 32


async def test_metrics_count_status_codes_and_stream_timings() -> None:
    front, registry, _ = make_front(keys=("k",))
    auth = {"Authorization": "Bearer k"}
    await call(front, "POST", CHAT_PATH, json={"stream": True}, headers=auth)
    await call(front, "POST", CHAT_PATH, json={}, headers=auth)
    await call(front, "POST", CHAT_PATH, json={})
    labels = {"model": "m", "endpoint": CHAT_PATH}
    assert sample(registry, "modelplane_requests_total", **labels, code="200") == 2
    assert sample(registry, "modelplane_requests_total", **labels, code="401") == 1
    assert sample(registry, "modelplane_time_to_first_token_seconds_count", **labels) == 1
    # three data chunks -> two gaps between them
    assert sample(registry, "modelplane_inter_token_latency_seconds_count", **labels) == 2
    assert sample(registry, "modelplane_request_duration_seconds_count", **labels) == 3
    assert sample(registry, "modelplane_requests_in_flight", model="m") == 0
    text = (await call(front, "GET", "/metrics")).text
    bucket = 'modelplane_time_to_first_token_seconds_bucket{endpoint="%s",le="2.0",model="m"}'
    assert f"{bucket % CHAT_PATH} 1.0" in text


async def test_stream_events_pass_through_in_order_ending_with_done() -> None:
    front, _, _ = make_front()
    transport = httpx.ASGITransport(front)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        c.stream("POST", CHAT_PATH, json={"stream": True}) as r,
    ):
        lines = [line async for line in r.aiter_lines() if line]
    assert lines == ['data: {"n": 1}', 'data: {"n": 2}', "data: [DONE]"]


async def test_request_span_continues_the_callers_trace() -> None:
    front, _, exporter = make_front()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await call(
        front, "GET", MODELS_PATH,
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-Id": "r1"},
    )  # fmt: skip
    assert front.tracer.provider is not None
    front.tracer.provider.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.name == f"GET {MODELS_PATH}"
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.attributes is not None
    assert span.attributes["modelplane.request_id"] == "r1"
    assert span.attributes["http.response.status_code"] == 200
