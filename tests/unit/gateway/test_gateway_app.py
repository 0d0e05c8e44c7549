"""The gateway over real sockets, in front of stub replicas that fail on command.

What a client sees: routing by `model`, the OpenAI error envelope, SSE
passed through event by event, retries before the first byte, ejection,
holding for a model with no ready replica, auth, rate limits, cancellation
on disconnect, metrics and trace context. (See conftest.py for why the
replicas are stubs here; tests/integration/gateway puts real model servers
behind the gateway.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.app import FrontSettings
from modelplane.gateway.routing.resilience import RetryBudget
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute, Track
from modelplane.http.tracing import RequestTracer
from tests.unit.gateway.conftest import GatewayFactory, StubFactory, eventually, route

CHAT = "/v1/chat/completions"
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
JSON_TYPE = {"Content-Type": "application/json"}


def chat(model: str = "m", stream: bool = False, **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        **extra,
    }


async def test_a_request_reaches_a_replica_of_its_model_with_the_context_headers(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    (b,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url), "other": route("other", b.url)})
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(
            CHAT,
            json=chat(),
            headers={"Authorization": "Bearer sk-1", "traceparent": traceparent},
        )
    assert r.status_code == 200 and r.json()["served_by"] == a.name
    assert not b.seen
    headers = a.seen[0]["headers"]
    assert "authorization" not in headers  # the client's key stays with the gateway
    assert headers["traceparent"] == traceparent  # passed on when the gateway does not trace
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert len(headers["x-request-id"]) == 32
    assert gw.metric("modelplane_gateway_requests_total", model="m", code="200", upstream=a.url)
    assert gw.metric("modelplane_gateway_added_latency_seconds_count", model="m") == 1


async def test_unknown_model_is_404_listing_what_exists_and_bad_requests_are_400(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url), "n": route("n", a.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        missing = await client.post(CHAT, json=chat("gpt-5"))
        no_model = await client.post(CHAT, json={"messages": []})
        not_json = await client.post(CHAT, content=b"{oops")
        wrong_verb = await client.get(CHAT)
        models = await client.get("/v1/models")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["message"] == "the model 'gpt-5' does not exist; available: m, n"
    assert error["type"] == "not_found_error" and error["param"] == "model"
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert not_json.status_code == 400 and wrong_verb.status_code == 405
    assert [m["id"] for m in models.json()["data"]] == ["m", "n"]


async def test_models_say_which_are_ready_and_what_each_serves(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    chat = replace(route("chat", a.url), endpoints=frozenset({CHAT, "/v1/completions"}))
    embed = replace(route("embed", a.url), endpoints=frozenset({"/v1/embeddings"}))
    cold = ModelRoute("cold", (Track("stable", 100, ()),))
    gw = await serve_gateway({"embed": embed, "chat": chat, "cold": cold})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        models = (await client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["ready"], m.get("endpoints")) for m in models] == [
        ("chat", True, [CHAT, "/v1/completions"]),
        ("cold", False, None),  # no replica has said yet
        ("embed", True, ["/v1/embeddings"]),
    ]
    assert {m["object"] for m in models} == {"model"}


async def test_request_body_over_the_limit_is_413(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)}, settings=FrontSettings(max_request_bytes=2048)
    )
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat(padding="x" * 4096))
    assert r.status_code == 413 and not a.seen


async def test_the_replicas_errors_reach_the_client_in_the_one_envelope(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """Whatever server a replica runs, its error keeps its message and param and gets the
    gateway's type and code for its status."""
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat(max_tokens=-1))
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "max_tokens must be positive",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": 400,
        }
    }
    assert r.headers["content-length"] == str(len(r.content))


async def test_a_stream_arrives_event_by_event_not_buffered(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "gated"  # sends one event, then waits until the test has seen it
    gw = await serve_gateway({"m": route("m", a.url)})
    events = []
    async with (
        httpx.AsyncClient(base_url=gw.url) as client,
        client.stream("POST", CHAT, json=chat(stream=True, max_tokens=3)) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line)
                if len(events) == 1:
                    a.release.set()  # only now may the replica go on
    assert len(events) == 4 and events[-1] == "data: [DONE]"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:3]] == [
        "t0 ",
        "t1 ",
        "t2 ",
    ]


async def test_draining_and_dead_replicas_are_retried_on_another(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    draining, healthy = await stub_replicas(2)
    draining.mode = "draining"
    gw = await serve_gateway(
        {"m": route("m", DEAD, draining.url, healthy.url)}, budget=RetryBudget(floor_per_s=100)
    )
    async with httpx.AsyncClient(base_url=gw.url) as client:
        replies = [await client.post(CHAT, json=chat()) for _ in range(12)]
    assert [r.status_code for r in replies] == [200] * 12
    assert {r.json()["served_by"] for r in replies} == {healthy.name}
    assert gw.metric("modelplane_gateway_retries_total", model="m") > 0
    # The dead replica failed three times in a row: ejected, no longer tried.
    assert gw.metric("modelplane_gateway_ejections_total", model="m", upstream=DEAD) == 1
    retries_before = gw.metric("modelplane_gateway_retries_total", model="m")
    gw.table.replace({"m": route("m", DEAD, healthy.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        for _ in range(5):
            assert (await client.post(CHAT, json=chat())).status_code == 200
    assert gw.metric("modelplane_gateway_retries_total", model="m") == retries_before


async def test_with_the_retry_budget_spent_the_replicas_503_goes_back_as_is(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    draining, healthy = await stub_replicas(2)
    draining.mode = "draining"
    no_retries = RetryBudget(ratio=0, floor_per_s=0)
    gw = await serve_gateway({"m": route("m", draining.url, healthy.url)}, budget=no_retries)
    async with httpx.AsyncClient(base_url=gw.url) as client:
        replies = [await client.post(CHAT, json=chat()) for _ in range(4)]
    refused = [r for r in replies if r.status_code == 503]
    assert len(refused) == 2  # least load alternates: every other request hit the draining one
    assert refused[0].headers["retry-after"] == "1"
    assert refused[0].json()["error"]["message"] == "shutting down"
    assert gw.metric("modelplane_gateway_retries_total", model="m") == 0


async def test_when_every_replica_is_down_the_client_gets_502_in_the_envelope(
    serve_gateway: GatewayFactory,
) -> None:
    gw = await serve_gateway({"m": route("m", DEAD)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 502
    assert "could not reach a replica of model 'm'" in r.json()["error"]["message"]


async def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error_event(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "broken-stream"
    gw = await serve_gateway({"m": route("m", a.url)})
    async with (
        httpx.AsyncClient(base_url=gw.url) as client,
        client.stream("POST", CHAT, json=chat(stream=True, max_tokens=5)) as r,
    ):
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert "stream broke" in json.loads(lines[-2][6:])["error"]["message"]
    assert len(lines) == 4  # two tokens, the error, [DONE]


async def test_a_client_that_leaves_cancels_the_replicas_work(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "slow"
    gw = await serve_gateway({"m": route("m", a.url)})
    async with (
        httpx.AsyncClient(base_url=gw.url) as client,
        client.stream("POST", CHAT, json=chat(stream=True, max_tokens=100)) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break  # read one event, then hang up
    async with asyncio.timeout(5):
        await a.client_left.wait()
    await eventually(
        lambda: (
            gw.metric("modelplane_gateway_requests_total", model="m", code="499", upstream=a.url)
            == 1
        )
    )


async def test_a_stream_ends_for_the_client_at_done_and_counts_as_served(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """The replica keeps its connection open after [DONE]; the client's response ends anyway,
    and a client that hangs up then was served (200), not walked away (499)."""
    (a,) = await stub_replicas(1)
    a.mode = "lingering"
    gw = await serve_gateway({"m": route("m", a.url)})
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
        client.stream("POST", CHAT, json=chat(stream=True, max_tokens=2)) as r,
    ):
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) == 3
    a.release.set()
    requests = "modelplane_gateway_requests_total"
    await eventually(lambda: gw.metric(requests, model="m", code="200", upstream=a.url) == 1)
    assert gw.metric(requests, model="m", code="499", upstream=a.url) == 0


async def test_a_request_for_a_model_at_zero_is_held_until_a_replica_is_ready(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    gw = await serve_gateway({"m": route("m")})
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        pending = asyncio.create_task(client.post(CHAT, json=chat()))
        await eventually(lambda: gw.metric("modelplane_gateway_held_requests", model="m") == 1)
        assert not pending.done()
        (a,) = await stub_replicas(1)
        gw.table.replace({"m": route("m", a.url)})
        reply = await pending
    assert reply.status_code == 200 and reply.json()["served_by"] == a.name
    assert gw.metric("modelplane_gateway_held_requests", model="m") == 0
    assert gw.metric("modelplane_gateway_hold_seconds_count", model="m") == 1


async def test_a_hold_that_times_out_is_503_with_retry_after(serve_gateway: GatewayFactory) -> None:
    gw = await serve_gateway({"m": route("m")}, settings=FrontSettings(hold_timeout_s=0.2))
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "no replica of model 'm' became ready within 0.2s" in r.json()["error"]["message"]


async def test_api_keys_guard_the_api_but_not_the_probes(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)}, settings=FrontSettings(api_keys=("sk-a", "sk-b"))
    )
    async with httpx.AsyncClient(base_url=gw.url) as client:
        none = await client.post(CHAT, json=chat())
        wrong = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-x"})
        right = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-b"})
        azure_style = await client.post(CHAT, json=chat(), headers={"api-key": "sk-a"})
        models = await client.get("/v1/models")
        probes = [(await client.get(p)).status_code for p in ("/health", "/ready", "/")]
        metrics = await client.get(f"{gw.metrics_url}/metrics")
    assert none.status_code == wrong.status_code == models.status_code == 401
    assert none.json()["error"]["type"] == "authentication_error"
    assert right.status_code == azure_style.status_code == 200
    assert len(a.seen) == 2
    assert probes == [200, 200, 200] and metrics.status_code == 200


async def test_per_key_request_limit_answers_429_with_retry_after(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a", "sk-b")),
        limiter=KeyRateLimiter(requests_per_minute=2),
    )
    async with httpx.AsyncClient(base_url=gw.url) as client:
        codes = [
            (await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-a"}))
            for _ in range(3)
        ]
        other = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-b"})
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].headers["retry-after"] == "30"
    assert codes[2].json()["error"]["type"] == "rate_limit_error"
    assert other.status_code == 200
    assert gw.metric("modelplane_gateway_rate_limited_total", limit="requests per minute") == 1


async def test_per_key_token_limit_counts_the_usage_of_answers(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway(
        {"m": route("m", a.url)},
        settings=FrontSettings(api_keys=("sk-a",)),
        limiter=KeyRateLimiter(tokens_per_minute=10),
    )
    headers = {"Authorization": "Bearer sk-a"}
    async with httpx.AsyncClient(base_url=gw.url) as client:
        first = await client.post(CHAT, json=chat(), headers=headers)  # 7 tokens: 3 left
        second = await client.post(CHAT, json=chat(), headers=headers)  # 7 more: 4 in debt
        third = await client.post(CHAT, json=chat(), headers=headers)
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert third.headers["retry-after"] == "30"  # (4 + 1) tokens at 10 per minute
    assert "tokens per minute" in third.json()["error"]["message"]


async def test_canary_weight_splits_traffic_between_tracks(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    stable, canary = await stub_replicas(2)
    tracks = (Track("stable", 75, (stable.url,)), Track("canary", 25, (canary.url,)))
    gw = await serve_gateway({"m": ModelRoute("m", tracks)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        served = [(await client.post(CHAT, json=chat())).json()["served_by"] for _ in range(200)]
    assert 30 <= served.count(canary.name) <= 70


async def test_the_gateway_span_is_the_parent_of_the_replicas_request(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    exporter = InMemorySpanExporter()
    tracer = RequestTracer(exporter, service_name="modelplane-gateway")
    gw = await serve_gateway({"m": route("m", a.url)}, tracer=tracer)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(
            CHAT, json=chat(), headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
        )
    assert r.status_code == 200
    tracer.shutdown()
    (span,) = exporter.get_finished_spans()
    sent = a.seen[0]["headers"]["traceparent"].split("-")
    assert sent[1] == trace_id  # same trace
    assert sent[2] == format(span.context.span_id, "016x")  # the gateway's span is the parent
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize("path", ["/", "/index.html"])
async def test_the_chat_page_is_served(serve_gateway: GatewayFactory, path: str) -> None:
    gw = await serve_gateway({})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in r.text and "tokens/s" in r.text


async def test_completions_and_embeddings_reach_the_replica_on_their_own_paths(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        done = await client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
        vectors = await client.post("/v1/embeddings", json={"model": "m", "input": ["a", "b"]})
    assert done.status_code == vectors.status_code == 200
    assert [s["path"] for s in a.seen] == ["/v1/completions", "/v1/embeddings"]
    assert a.seen[1]["body"]["input"] == ["a", "b"]


async def test_demand_for_a_model_at_zero_says_how_many_requests_are_held(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    signals: list[tuple[str, int]] = []

    async def on_demand(route: ModelRoute, held: int) -> None:
        signals.append((route.name, held))

    clock = [0.0]  # the throttle's clock: the test says when the interval has passed
    at_zero = ModelRoute("m", (Track("stable", 100, ()),), demand=(DemandTarget("ns", "chat"),))
    gw = await serve_gateway(
        {"m": at_zero},
        on_demand=on_demand,
        demand_throttle=DemandThrottle(interval_s=10, clock=lambda: clock[0]),
    )
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        pending = [asyncio.create_task(client.post(CHAT, json=chat()))]
        await eventually(lambda: signals == [("m", 1)])
        pending.append(asyncio.create_task(client.post(CHAT, json=chat())))
        await eventually(lambda: gw.metric("modelplane_gateway_held_requests", model="m") == 2)
        assert signals == [("m", 1)]  # within the interval: no second signal
        clock[0] = 10.0
        pending.append(asyncio.create_task(client.post(CHAT, json=chat())))
        await eventually(lambda: signals == [("m", 1), ("m", 3)])  # every held one counts
        (a,) = await stub_replicas(1)
        gw.table.replace({"m": route("m", a.url)})
        replies = await asyncio.gather(*pending)
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert gw.metric("modelplane_gateway_held_requests", model="m") == 0


async def test_hostile_model_names_and_bodies_get_400s_and_never_reach_the_metrics(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """300 random model names, a lone surrogate, JSON nested 100,000 deep, bytes that are
    not UTF-8: each is answered in the OpenAI envelope, no label value is added for a name
    the gateway does not serve, and /metrics keeps answering."""
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    nested = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with httpx.AsyncClient(base_url=gw.url) as client:
        unknown = [
            await client.post(CHAT, json=chat(f"model-{i}-" + "x" * 200)) for i in range(300)
        ]
        surrogate = await client.post(
            CHAT, content=b'{"model": "\\ud800", "messages": []}', headers=JSON_TYPE
        )
        deep = await client.post(CHAT, content=nested, headers=JSON_TYPE)
        latin1 = await client.post(
            CHAT, content='{"model": "m\xe9"}'.encode("latin-1"), headers=JSON_TYPE
        )
        broken = await client.post(CHAT, content=b'{"model": "m",\n "messages": [}')
        metrics = await client.get(f"{gw.metrics_url}/metrics")
        still_served = await client.post(CHAT, json=chat())
    assert {r.status_code for r in unknown} == {404}
    for response, says in (
        (surrogate, "lone UTF-16 surrogate"),
        (deep, "nests JSON deeper than 64 levels"),
        (latin1, "not valid UTF-8 (at byte 12)"),
        (broken, "not valid JSON at line 2 column 15: expecting value"),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert says in error["message"] and error["type"] == "invalid_request_error"
    assert metrics.status_code == 200
    models = {
        line.split('model="')[1].split('"')[0]
        for line in metrics.text.splitlines()
        if line.startswith("modelplane_gateway_requests_total{") and 'model="' in line
    }
    assert models <= {"", "m", "unknown"}
    assert gw.metric("modelplane_gateway_requests_total", model="unknown", code="404",
                     upstream="none") == 300  # fmt: skip
    assert still_served.status_code == 200 and len(a.seen) == 1


async def test_a_replica_answering_a_redirect_is_a_502_and_nothing_is_fetched_from_elsewhere(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """A 307 from a replica would make an HTTP client fetch the Location (with the request's
    headers) and return that body; the gateway follows no redirect."""
    redirecting, elsewhere = await stub_replicas(2)
    redirecting.mode, redirecting.redirect_to = "redirect", elsewhere.url
    gw = await serve_gateway({"m": route("m", redirecting.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer sk-client"})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert "redirect (307)" in error["message"] and elsewhere.url not in error["message"]
    assert len(redirecting.seen) == 1 and elsewhere.seen == []
