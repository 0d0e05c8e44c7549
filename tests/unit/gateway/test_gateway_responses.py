"""The gateway on the Responses API's routes, with stub replicas (conftest.py): routed by
`model` like chat, a broken stream ended the way a Responses stream can be, and the
stored-response routes answered at the gateway, since no replica keeps responses.
The real server behind a gateway: tests/integration/test_server_responses.py."""

from __future__ import annotations

import json

import httpx

from tests.unit.gateway.conftest import GatewayFactory, StubFactory, route

RESPONSES = "/v1/responses"


async def test_a_responses_request_goes_to_a_replica_of_its_model(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    a, b = await stub_replicas(2)
    gw = await serve_gateway({"m": route("m", a.url), "n": route("n", b.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        answered = await client.post(RESPONSES, json={"model": "n", "input": "hi"})
        unknown = await client.post(RESPONSES, json={"model": "x", "input": "hi"})
    assert answered.status_code == 200
    assert ([s["path"] for s in a.seen], [s["path"] for s in b.seen]) == ([], [RESPONSES])
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


async def test_a_replica_dying_mid_stream_ends_a_responses_stream_with_an_error_event_only(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    a.mode = "broken-stream"
    gw = await serve_gateway({"m": route("m", a.url)})
    body = {"model": "m", "input": "hi", "stream": True}
    async with (
        httpx.AsyncClient(base_url=gw.url) as client,
        client.stream("POST", RESPONSES, json=body) as r,
    ):
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert "stream broke" in json.loads(lines[-1][6:])["error"]["message"]
    assert "data: [DONE]" not in lines  # a Responses stream has none


async def test_stored_response_routes_are_answered_at_the_gateway(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    async with httpx.AsyncClient(base_url=gw.url) as client:
        answers = [
            await client.get(f"{RESPONSES}/resp_1"),
            await client.delete(f"{RESPONSES}/resp_1"),
            await client.post(f"{RESPONSES}/resp_1/cancel"),
        ]
    for answer in answers:
        assert answer.status_code == 404
        error = answer.json()["error"]
        assert (error["type"], error["param"]) == ("not_found_error", "response_id")
        assert "Modelplane does not keep responses" in error["message"]
    assert a.seen == []
