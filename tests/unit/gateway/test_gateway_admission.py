"""What the gateway takes in, over real sockets: memory a request keeps while it streams,
caps on requests in flight and held, the memory budget for bodies, and token limits
that reserve at admission and settle on the real `usage`.

The replicas are the stubs of conftest.py (a gated stream keeps requests in
flight for as long as a test needs; a long answer puts its `usage` after
1.5 MiB).
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prometheus_client import CollectorRegistry

from modelplane.gateway.admission.concurrency import ConcurrencyCaps
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.app import FrontSettings
from modelplane.gateway.discovery.static import StaticConfig
from modelplane.gateway.options import GatewayOptions
from modelplane.gateway.routing.routes import ModelRoute, Track
from modelplane.gateway.runner import build_gateway, http_server
from modelplane.http.connections import ConnectionLimits
from tests.unit.gateway.conftest import GatewayFactory, StubFactory, eventually, route

CHAT = "/v1/chat/completions"


def chat(content: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


@asynccontextmanager
async def streaming(
    client: httpx.AsyncClient, body: dict[str, object], headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.Response]:
    """A streamed request whose first event has arrived (or which was refused).

    The line iterator is kept open here: an iterator dropped half way is closed when
    collected, and closing it closes the connection, which would end the request.
    """
    async with client.stream("POST", CHAT, json=body, headers=headers or {}) as response:
        lines = response.aiter_lines()
        if response.status_code == 200:
            while not (await anext(lines)).startswith("data: "):
                pass
        else:
            await response.aread()
        response.extensions["lines"] = lines
        yield response


def not_ready(name: str) -> ModelRoute:
    return ModelRoute(name, (Track("stable", 100, ()),))


# --- memory: nothing of the request is kept while its answer streams -------------------------


def bytes_held_by_the_gateway() -> int:
    """Bytes still allocated from a frame of the gateway's code (or the shared HTTP code)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(True, "*/modelplane/gateway/*", all_frames=True),
            tracemalloc.Filter(True, "*/modelplane/http/*", all_frames=True),
        ]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_a_long_stream_keeps_neither_its_request_body_nor_its_parsed_json(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "gated"  # the first event, then nothing until released: a long stream
    gw = await serve_gateway(
        {"m": route("m", a.url)}, settings=FrontSettings(max_request_bytes=16 << 20)
    )
    prompt = "x" * (2 << 20)  # 2 MiB: the body and its parsed copy would be 4 MiB and more
    tracemalloc.start(16)
    try:
        async with (
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
            streaming(client, chat(prompt, stream=True, max_tokens=3)) as response,
        ):
            assert response.status_code == 200
            held = bytes_held_by_the_gateway()
            a.release.set()
            lines = response.extensions["lines"]
            rest = [line async for line in lines if line.startswith("data: ")]
    finally:
        tracemalloc.stop()
    assert rest[-1] == "data: [DONE]"
    assert held < 1 << 20, f"the gateway keeps {held} bytes of the request while it streams"


# --- caps on what is in flight and held ------------------------------------------------------


async def test_requests_held_for_a_starting_model_are_capped_with_503_and_retry_after(
    serve_gateway: GatewayFactory,
) -> None:
    caps = ConcurrencyCaps(held_per_model=2)
    gw = await serve_gateway(
        {"cold": not_ready("cold")}, settings=FrontSettings(hold_timeout_s=10, caps=caps)
    )
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        held = [
            asyncio.create_task(client.post(CHAT, json={**chat(), "model": "cold"}))
            for _ in range(2)
        ]
        await eventually(lambda: gw.metric("modelplane_gateway_held_requests", model="cold") == 2)
        third = await client.post(CHAT, json={**chat(), "model": "cold"})
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    assert third.status_code == 503 and third.headers["retry-after"] == "5"
    error = third.json()["error"]
    assert error["type"] == "service_unavailable"
    assert "holds 2 requests for model 'cold'" in error["message"]
    assert gw.metric("modelplane_gateway_overload_refusals_total", limit="held per model") == 1


async def test_in_flight_caps_per_key_429_and_per_model_503(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "gated"
    caps = ConcurrencyCaps(in_flight_per_identity=2, in_flight_per_model=3)
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a", "sk-b"), caps=caps),
    )
    key_a, key_b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
    body = chat(stream=True, max_tokens=3)
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        streaming(client, body, key_a) as first,
        streaming(client, body, key_a) as second,
        streaming(client, body, key_a) as over_key,
        streaming(client, body, key_b) as third_for_model,
        streaming(client, body, key_b) as over_model,
    ):
        statuses = [r.status_code for r in (first, second, over_key, third_for_model, over_model)]
        a.release.set()
    assert statuses == [200, 200, 429, 200, 503]
    assert over_key.headers["retry-after"] == "1"
    assert over_key.json()["error"]["type"] == "rate_limit_error"
    assert (
        "this API key (or client address) has 2 requests in flight"
        in (over_key.json()["error"]["message"])
    )
    assert over_model.headers["retry-after"] == "1"
    assert "model 'm' has 3 requests in flight" in over_model.json()["error"]["message"]


async def test_the_gateway_wide_in_flight_cap_answers_503(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "gated"
    gw = await serve_gateway(
        {"m": route("m", a.url)}, settings=FrontSettings(caps=ConcurrencyCaps(in_flight=1))
    )
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        streaming(client, chat(stream=True, max_tokens=3)) as first,
    ):
        second = await client.post(CHAT, json=chat())
        a.release.set()
        assert first.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "1 requests in flight, its limit" in second.json()["error"]["message"]
    # The place is given back when the stream ends.
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        assert (await client.post(CHAT, json=chat())).status_code == 200


async def test_held_bodies_count_against_the_memory_budget_for_bodies(
    serve_gateway: GatewayFactory,
) -> None:
    gw = await serve_gateway(
        {"cold": not_ready("cold")},
        settings=FrontSettings(hold_timeout_s=10, max_buffered_bytes=1 << 20),
    )
    big = {**chat("x" * (600 << 10)), "model": "cold"}  # 600 KiB: two do not fit in 1 MiB
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        held = asyncio.create_task(client.post(CHAT, json=big))
        await eventually(lambda: gw.metric("modelplane_gateway_held_requests", model="cold") == 1)
        second = await client.post(CHAT, json=big)
        small = asyncio.create_task(client.post(CHAT, json={**chat(), "model": "cold"}))
        await eventually(lambda: gw.metric("modelplane_gateway_held_requests", model="cold") == 2)
        for task in (held, small):
            task.cancel()
        await asyncio.gather(held, small, return_exceptions=True)
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "request bodies in memory" in second.json()["error"]["message"]
    assert second.headers["connection"] == "close"


# --- token limits: reserve at admission, settle on the real usage ----------------------------


async def test_concurrent_requests_cannot_all_pass_a_token_limit(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """Each request reserves its max_tokens plus its prompt's estimate (about 25 tokens
    here): 100 tokens per minute admit two requests of 40 at once, not five."""
    (a,) = await stub_replicas(1)
    a.mode = "gated"
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a",)),
        limiter=KeyRateLimiter(tokens_per_minute=100),
    )
    key = {"Authorization": "Bearer sk-a"}
    body = chat(stream=True, max_tokens=40)
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        streaming(client, body, key) as r1,
        streaming(client, body, key) as r2,
        streaming(client, body, key) as r3,
        streaming(client, body, key) as r4,
        streaming(client, body, key) as r5,
    ):
        statuses = [r.status_code for r in (r1, r2, r3, r4, r5)]
        a.release.set()
    assert statuses == [200, 200, 429, 429, 429]
    assert "tokens per minute" in r3.json()["error"]["message"]


async def test_the_usage_at_the_end_of_a_large_answer_is_charged(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """A 1.5 MiB answer reporting 500,000 tokens leaves the key about 499,000 tokens in
    debt at 1,000 per minute: the next request waits about 500 minutes."""
    (a,) = await stub_replicas(1)
    a.mode = "long"
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a",)),
        limiter=KeyRateLimiter(tokens_per_minute=1000),
    )
    key = {"Authorization": "Bearer sk-a"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        first = await client.post(CHAT, json=chat(), headers=key)
        second = await client.post(CHAT, json=chat(), headers=key)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] == 500_000  # the answer arrived whole
    assert second.status_code == 429
    assert 499_000 * 60 / 1000 <= int(second.headers["retry-after"]) <= 500_001 * 60 / 1000


async def test_the_usage_in_the_last_event_of_a_stream_settles_the_reservation(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """A stream's usage event settles what it reserved: a request that reserved 400 but
    used 7 gives 393 back, so the next one is admitted at once."""
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a",)),
        limiter=KeyRateLimiter(tokens_per_minute=500),
    )
    key = {"Authorization": "Bearer sk-a"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        # The stub's plain answer reports 7 tokens; 400 were reserved for it.
        first = await client.post(CHAT, json=chat(max_tokens=400), headers=key)
        second = await client.post(CHAT, json=chat(max_tokens=400), headers=key)
        third = await client.post(CHAT, json=chat(max_tokens=400), headers=key)
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]


async def test_with_no_keys_limits_apply_per_client_address_whatever_key_is_sent(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)}, limiter=KeyRateLimiter(requests_per_minute=1)
    )
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        first = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer made-up-1"})
        second = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer made-up-2"})
    assert first.status_code == 200
    assert second.status_code == 429
    assert "for this client address" in second.json()["error"]["message"]
    assert json.loads(second.text)["error"]["type"] == "rate_limit_error"


# --- the command's flags reach each limit ----------------------------------------------------


async def test_the_options_reach_the_caps_the_deadlines_and_the_upstream_pool() -> None:
    options = GatewayOptions(
        header_timeout=2, body_timeout=4, max_connections=9, max_in_flight=11,
        max_in_flight_per_model=6, max_in_flight_per_key=5, max_held=4, max_held_per_model=3,
        max_buffered_bytes=2 << 20, max_upstream_connections=7,
    )  # fmt: skip
    config = StaticConfig.model_validate({"models": {"m": {"upstreams": ["http://10.0.0.1"]}}})
    gateway = build_gateway(options, (), CollectorRegistry(), static_config=config)
    try:
        assert gateway.pool.session.connector is not None
        assert gateway.pool.session.connector.limit == 7
        assert gateway.app.gate.caps == ConcurrencyCaps(11, 6, 5, 4, 3)
        assert gateway.app.settings.body_timeout_s == 4
        assert gateway.app.bodies.max_bytes == 2 << 20
        protocol = http_server(gateway, options).config.http
        assert getattr(protocol, "limits", None) == ConnectionLimits(2, 9)
    finally:
        await gateway.pool.close()
