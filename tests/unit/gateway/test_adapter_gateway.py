"""LoRA adapters through the gateway over real sockets, in front of stub replicas: a
request naming an adapter reaches only replicas that hold it (with its `model` as sent),
waits while none does, is listed by `/v1/models` and counted by adapter. (Real model
servers with real adapters: tests/integration/gateway/test_gateway_adapters.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from modelplane.gateway.adapter_reports import adapter_reports
from modelplane.gateway.app import FrontSettings
from modelplane.gateway.routing.routes import ModelRoute, Routing, Track
from tests.unit.gateway.conftest import GatewayFactory, StubFactory, eventually

CHAT = "/v1/chat/completions"


def chat(model: str, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def llama(*upstreams: str, loaded: dict[str, frozenset[str]] | None = None) -> ModelRoute:
    return ModelRoute(
        "llama",
        (Track("stable", 100, upstreams),),
        adapters=frozenset({"sql", "chat"}),
        loaded=loaded or {},
    )


async def test_an_adapters_requests_reach_only_the_replica_holding_it(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    holder, other = await stub_replicas(2)
    gw = await serve_gateway(
        {"llama": llama(holder.url, other.url, loaded={holder.url: frozenset({"sql"})})}
    )
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        replies = await asyncio.gather(*(client.post(CHAT, json=chat("sql")) for _ in range(8)))
        base = [await client.post(CHAT, json=chat("llama")) for _ in range(4)]
    assert [r.status_code for r in replies] == [200] * 8
    assert {r.json()["served_by"] for r in replies} == {holder.name}
    # The replica serves the adapter under its own name: the body goes as the client sent it.
    assert [s["body"]["model"] for s in holder.seen[:8]] == ["sql"] * 8
    assert all(s["body"]["model"] == "llama" for s in other.seen)
    assert {r.json()["served_by"] for r in base} == {holder.name, other.name}  # least load
    requests = "modelplane_gateway_adapter_requests_total"
    assert gw.metric(requests, model="llama", adapter="sql", code="200") == 8
    # Counted under the base model in the model's own series too.
    assert gw.metric("modelplane_gateway_requests_total", model="llama", code="200",
                     upstream=holder.url) >= 8  # fmt: skip
    tokens = "modelplane_gateway_adapter_tokens_total"
    assert gw.metric(tokens, model="llama", adapter="sql", kind="prompt") == 8 * 5
    assert gw.metric(tokens, model="llama", adapter="sql", kind="completion") == 8 * 2


async def test_an_adapter_loaded_nowhere_is_held_until_a_replica_has_it(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    a, b = await stub_replicas(2)
    gw = await serve_gateway({"llama": llama(a.url, b.url)})
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        pending = asyncio.create_task(client.post(CHAT, json=chat("chat", stream=True)))
        held = "modelplane_gateway_held_requests"
        await eventually(lambda: gw.metric(held, model="llama") == 1)
        # The base model is served meanwhile, without waiting.
        assert (await client.post(CHAT, json=chat("llama"))).status_code == 200
        gw.table.replace({"llama": llama(a.url, b.url, loaded={b.url: frozenset({"chat"})})})
        reply = await pending
    assert reply.status_code == 200 and b.name in reply.text and a.name not in reply.text
    assert gw.metric(held, model="llama") == 0
    assert gw.metric("modelplane_gateway_hold_seconds_count", model="llama") == 1
    # Streamed without usage: the tokens are the gateway's estimate (events, body size).
    tokens = "modelplane_gateway_adapter_tokens_total"
    assert gw.metric(tokens, model="llama", adapter="chat", kind="completion") == 3


async def test_an_adapter_hold_that_times_out_is_503_naming_the_adapter(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"llama": llama(a.url)}, settings=FrontSettings(hold_timeout_s=0.2))
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        r = await client.post(CHAT, json=chat("sql"))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    message = r.json()["error"]["message"]
    assert "no replica of model 'llama' had the adapter 'sql' loaded within 0.2s" in message
    assert a.seen == []
    requests = "modelplane_gateway_adapter_requests_total"
    assert gw.metric(requests, model="llama", adapter="sql", code="503") == 1


async def test_models_lists_adapters_with_their_base_model_as_parent(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"llama": llama(a.url, loaded={a.url: frozenset({"sql"})})})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        listed = (await client.get("/v1/models")).json()["data"]
    by_id = {m["id"]: m for m in listed}
    assert [m["id"] for m in listed] == ["llama", "chat", "sql"]
    assert by_id["llama"]["parent"] is None and by_id["llama"]["root"] == "llama"
    assert by_id["sql"]["parent"] == "llama" and by_id["sql"]["root"] == "llama"
    assert by_id["sql"]["ready"] is True and by_id["chat"]["ready"] is False
    assert by_id["sql"]["object"] == "model"


async def test_unknown_names_are_404_listing_adapters_and_never_become_labels(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"llama": llama(a.url, loaded={a.url: frozenset({"sql"})})})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post(CHAT, json=chat("sql-typo"))
        scrape = (await client.get(f"{gw.metrics_url}/metrics")).text
    assert r.status_code == 404
    assert "available: chat, llama, sql" in r.json()["error"]["message"]
    assert "sql-typo" not in scrape


async def test_adapter_series_follow_discovery(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    a, b = await stub_replicas(2)
    gw = await serve_gateway({})
    gw.table.listeners.append(adapter_reports(gw.table, gw.app.metrics))
    loaded = {a.url: frozenset({"sql"}), b.url: frozenset({"sql", "chat"})}
    gw.table.replace({"llama": llama(a.url, b.url, loaded=loaded)})
    replicas = "modelplane_gateway_adapter_replicas"
    assert gw.metric(replicas, model="llama", adapter="sql") == 2
    assert gw.metric(replicas, model="llama", adapter="chat") == 1
    tokens = "modelplane_gateway_adapter_tokens_total"
    assert gw.registry.get_sample_value(tokens, {"model": "llama", "adapter": "chat",
                                                 "kind": "prompt"}) == 0  # fmt: skip
    # An adapter named like a model: the model keeps the name, the conflict is counted.
    other = ModelRoute("chat", (Track("stable", 100, (a.url,)),))
    gw.table.replace({"llama": llama(a.url, b.url, loaded=loaded), "chat": other})
    assert gw.metric("modelplane_gateway_adapter_name_conflicts", adapter="chat") == 1
    assert gw.registry.get_sample_value(replicas, {"model": "llama", "adapter": "chat"}) is None


async def test_a_prefix_routed_models_adapter_keeps_each_conversation_on_one_holder(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    a, b, bare = await stub_replicas(3)
    held = {a.url: frozenset({"sql"}), b.url: frozenset({"sql"})}
    gw = await serve_gateway(
        {"llama": replace(llama(a.url, b.url, bare.url, loaded=held), routing=Routing.PREFIX)}
    )

    def talk(topic: str) -> dict[str, object]:
        return {"model": "sql", "messages": [{"role": "user", "content": f"About {topic}"}]}

    topics = [f"topic {i}" for i in range(12)]
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        first = [(await client.post(CHAT, json=talk(t))).json()["served_by"] for t in topics]
        again = [(await client.post(CHAT, json=talk(t))).json()["served_by"] for t in topics]
    assert again == first  # each conversation where its KV cache is
    assert set(first) == {a.name, b.name}  # conversations, not the adapter, spread them
    assert bare.seen == []
