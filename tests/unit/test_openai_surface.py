"""The server's front on the routes beyond chat: the Responses API (what Modelplane
refuses before the engine: stored responses, unknown roles), scoring's route names, a
stream the engine breaks off, and the checks themselves as pure functions.

A recording fake engine stands in for vLLM's ASGI app (it records the path and body
it was handed), so these run in milliseconds; the same routes are driven against the
real engine in tests/integration/test_server_responses.py.
"""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from modelplane.http.asgi import Receive, Scope, Send
from modelplane.server.app import (
    CHAT_PATH,
    MODELS_PATH,
    RERANK_PATH,
    SCORE_PATH,
    SCORING_PATHS,
    FrontSettings,
    ModelServerApp,
)
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.metrics import ServerMetrics
from modelplane.server.request_checks import (
    RESPONSES_PATH,
    request_problem,
    stored_response_route_problem,
)
from modelplane.server.request_errors import describe_validation_errors

NOT_KEPT = "Modelplane does not keep responses"


class RecordingEngine:
    """Answers 200 with the body it got; `break_stream` sends one event and raises;
    `events` are streamed as they are."""

    def __init__(self, *, break_stream: bool = False, events: tuple[bytes, ...] = ()) -> None:
        self.break_stream = break_stream
        self.events = events
        self.seen: list[tuple[str, bytes]] = []

    @property
    def asgi(self) -> RecordingEngine:
        return self

    @property
    def paths(self) -> frozenset[str]:
        return frozenset({MODELS_PATH, CHAT_PATH, RESPONSES_PATH}) | SCORING_PATHS

    async def healthy(self) -> bool:
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive()).get("body", b"")
        self.seen.append((scope["path"], body))
        if self.break_stream:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            first = b'event: response.created\ndata: {"type": "response.created"}\n\n'
            await send({"type": "http.response.body", "body": first, "more_body": True})
            raise RuntimeError("the engine broke mid-stream")
        if self.events:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body or b"{}"})


async def call(
    engine: RecordingEngine,
    method: str,
    path: str,
    body: object = None,
    registry: CollectorRegistry | None = None,
) -> httpx.Response:
    registry = registry or CollectorRegistry()
    front = ModelServerApp(
        FrontSettings(served_model_name="m"), Lifecycle(), ServerMetrics(registry), registry
    )
    front.attach_engine(engine)
    front.lifecycle.mark_ready()
    transport = httpx.ASGITransport(front)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, json=body)


def error(response: httpx.Response) -> dict[str, object]:
    payload = response.json()
    assert set(payload) == {"error"}, payload
    found: dict[str, object] = payload["error"]
    assert found["code"] == response.status_code
    return found


async def test_a_follow_up_by_previous_response_id_is_refused_before_the_engine() -> None:
    engine = RecordingEngine()
    body = {"model": "m", "input": "and then?", "previous_response_id": "resp_1"}
    response = await call(engine, "POST", RESPONSES_PATH, body)
    assert response.status_code == 400
    found = error(response)
    assert found["param"] == "previous_response_id"
    assert NOT_KEPT in str(found["message"]) and "`input`" in str(found["message"])
    assert engine.seen == []


async def test_background_mode_is_refused_since_nothing_could_fetch_the_result() -> None:
    engine = RecordingEngine()
    response = await call(
        engine, "POST", RESPONSES_PATH, {"model": "m", "input": "hi", "background": True}
    )
    assert (response.status_code, error(response)["param"]) == (400, "background")
    assert engine.seen == []


async def test_store_true_the_sdk_default_is_served() -> None:
    engine = RecordingEngine()
    body = {"model": "m", "input": "hi", "store": True, "previous_response_id": None}
    response = await call(engine, "POST", RESPONSES_PATH, body)
    assert response.status_code == 200
    assert [path for path, _ in engine.seen] == [RESPONSES_PATH]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("POST", "/v1/responses/resp_1/cancel"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ],
)
async def test_a_stored_response_is_not_found_and_the_answer_says_why(
    method: str, path: str
) -> None:
    engine = RecordingEngine()
    response = await call(engine, method, path)
    assert response.status_code == 404
    found = error(response)
    assert (found["type"], found["param"]) == ("not_found_error", "response_id")
    assert str(found["message"]).startswith(f"no stored response at {method} {path}: {NOT_KEPT}")
    assert engine.seen == []


async def test_responses_takes_only_post() -> None:
    response = await call(RecordingEngine(), "GET", RESPONSES_PATH)
    assert (response.status_code, error(response)["message"]) == (405, "use POST for /v1/responses")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            CHAT_PATH,
            {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]},
            "messages[0].role",
        ),
        (
            RESPONSES_PATH,
            {
                "model": "m",
                "input": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}],
            },
            "input[1].role",
        ),
    ],
)
async def test_an_unknown_role_is_a_400_naming_the_message(
    path: str, body: dict[str, object], param: str
) -> None:
    engine = RecordingEngine()
    response = await call(engine, "POST", path, body)
    assert response.status_code == 400
    found = error(response)
    assert found["param"] == param
    assert str(found["message"]).startswith(f"{param} must be one of 'system', 'developer'")
    assert engine.seen == []


async def test_every_openai_role_reaches_the_engine() -> None:
    engine = RecordingEngine()
    roles = ["system", "developer", "user", "assistant", "tool", "function"]
    messages = [{"role": role, "content": "x"} for role in roles]
    response = await call(engine, "POST", CHAT_PATH, {"model": "m", "messages": messages})
    assert response.status_code == 200 and len(engine.seen) == 1


async def test_a_media_url_in_responses_input_is_refused_like_in_chat() -> None:
    engine = RecordingEngine()
    part = {"type": "input_image", "image_url": "http://169.254.169.254/latest/meta-data"}
    body = {"model": "m", "input": [{"role": "user", "content": [part]}]}
    response = await call(engine, "POST", RESPONSES_PATH, body)
    assert response.status_code == 400
    assert "this model fetches no media URLs" in str(error(response)["message"])
    assert engine.seen == []


@pytest.mark.parametrize(
    ("path", "engine_path"),
    [
        (SCORE_PATH, "/score"),
        (RERANK_PATH, "/rerank"),
        ("/score", "/score"),
        ("/v2/rerank", "/v2/rerank"),
    ],
)
async def test_scoring_routes_reach_the_engine_by_its_current_names(
    path: str, engine_path: str
) -> None:
    engine = RecordingEngine()
    response = await call(engine, "POST", path, {"model": "m", "query": "q", "documents": ["d"]})
    assert response.status_code == 200
    assert [p for p, _ in engine.seen] == [engine_path]


@pytest.mark.parametrize(("path", "done"), [(RESPONSES_PATH, False), (CHAT_PATH, True)])
async def test_a_stream_the_engine_breaks_off_ends_with_an_error_event(
    path: str, done: bool
) -> None:
    front_engine = RecordingEngine(break_stream=True)
    body = {
        "model": "m",
        "stream": True,
        "input": "hi",
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = await call(front_engine, "POST", path, body)
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert events[0].startswith("event: response.created")
    failure = json.loads(events[1].removeprefix("data: "))
    assert failure["error"]["type"] == "server_error"
    assert failure["error"]["message"].startswith("internal error; request id ")
    assert events[2:] == (["data: [DONE]"] if done else [])


def responses_event(kind: str, **fields: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


async def test_a_responses_streams_token_timings_count_its_delta_events_only() -> None:
    """Created, in progress and item events come before any token is generated: the time
    to first token is the first delta's, and three deltas have two gaps between them."""
    events = (
        responses_event("response.created"),
        responses_event("response.in_progress"),
        responses_event("response.output_item.added"),
        *(responses_event("response.output_text.delta", delta=w) for w in ("a", "b", "c")),
        responses_event("response.output_text.done", text="abc"),
        responses_event("response.completed"),
    )
    registry = CollectorRegistry()
    body = {"model": "m", "input": "hi", "stream": True}
    response = await call(RecordingEngine(events=events), "POST", RESPONSES_PATH, body, registry)
    assert response.status_code == 200 and response.content == b"".join(events)
    labels = {"model": "m", "endpoint": RESPONSES_PATH}
    ttft = registry.get_sample_value("modelplane_time_to_first_token_seconds_count", labels)
    itl = registry.get_sample_value("modelplane_inter_token_latency_seconds_count", labels)
    assert (ttft, itl) == (1, 2)


# --- the checks as pure functions ------------------------------------------------------


def test_requests_other_routes_are_not_checked_for_roles() -> None:
    body = {"messages": [{"role": "wizard"}], "input": [{"role": "wizard"}]}
    assert request_problem("/v1/completions", body) is None


def test_a_malformed_role_is_left_to_the_engine_to_name() -> None:
    assert request_problem(CHAT_PATH, {"messages": [{"role": 5}, "x", {"content": "hi"}]}) is None
    assert request_problem(RESPONSES_PATH, {"input": "hi", "previous_response_id": None}) is None


def test_only_paths_below_responses_are_stored_response_routes() -> None:
    assert stored_response_route_problem("GET", "/v1/responses") is None
    assert stored_response_route_problem("GET", "/v1/responsesx/1") is None
    assert stored_response_route_problem("GET", "/v1/responses/r") is not None


def _union_errors(*nested: tuple[tuple[str | int, ...], str]) -> list[dict[str, object]]:
    """`input` as a Responses request's union of a string and a list of items fails it."""
    errors: list[dict[str, object]] = [
        {"type": "string_type", "loc": ("body", "input", "str"), "msg": "", "input": [[]]}
    ]
    for loc, kind in nested:
        errors.append(
            {
                "type": kind,
                "loc": ("body", "input", "list[union[A,B]]", *loc),
                "msg": "",
                "input": 5,
            }
        )
    return errors


def test_a_union_value_of_the_right_shape_is_described_by_what_is_wrong_inside() -> None:
    errors = _union_errors(
        ((0, "EasyInputMessageParam", "content", "str"), "string_type"),
        ((0, "EasyInputMessageParam", "content", "list[X]"), "list_type"),
        ((0, "Message", "content"), "list_type"),
    )
    assert describe_validation_errors(errors) == (
        "input[0].content must be a string or an array (got 5)",
        "input[0].content",
    )


def test_a_union_value_of_no_alternatives_shape_is_described_by_the_alternatives() -> None:
    errors = [
        {"type": "string_type", "loc": ("body", "input", "str"), "msg": "", "input": 5},
        {"type": "list_type", "loc": ("body", "input", "list[X]"), "msg": "", "input": 5},
    ]
    assert describe_validation_errors(errors) == (
        "input must be a string or an array (got 5)",
        "input",
    )
