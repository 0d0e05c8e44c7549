"""The real model server: vLLM (CPU build) serving SmolLM2-135M-Instruct.

One server process with API keys on (tests/integration/conftest.py, shared with
test_server_responses) is driven with the official `openai` client, the way users
talk to it; a gateway in front of it (its own keys, the same limits) shows that every
error class reaches a client in the same envelope through either front door.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionFunctionToolParam

from tests.conftest import ServerProcess
from tests.integration.conftest import DEADLINE_S, GATEWAY_KEY, KEY, MODEL, OLD_KEY
from tests.integration.gateway.conftest import GatewayProcess
from tests.support.raw_http import open_connection, trickle_until_answered, wait_closed
from tests.support.secret_volume import SecretVolume

pytestmark = pytest.mark.engine

MARGIN_S = 3.0  # a 2-core machine running the engine answers late, never early


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def error_of(exc: openai.APIStatusError) -> dict[str, object]:
    body = exc.response.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_capital_of_france_is_paris(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_stream_arrives_in_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        stream=True,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    assert "".join(pieces).strip()


def test_completion_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert plain.choices[0].text.strip()
    streamed = client.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True
    )
    text = "".join(c.choices[0].text for c in streamed)
    assert text == plain.choices[0].text


def test_raw_stream_ends_with_done(server: ServerProcess) -> None:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "text_completion" for e in events[:-1])


def test_structured_output_matches_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "is_capital": {"type": "boolean"},
        },
        "required": ["city", "is_capital"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"city", "is_capital"}
    assert isinstance(data["city"], str) and isinstance(data["is_capital"], bool)


def test_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    tool: ChatCompletionFunctionToolParam = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=100,
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls
    # A function call (not a custom tool's): only that kind has `.function`.
    assert calls and calls[0].type == "function" and calls[0].function.name == "get_weather"
    # The arguments follow the tool's `parameters` (vLLM's default left them free: '"Paris"').
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str), arguments


def test_wrong_key_is_401(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        client.models.list()
    assert error_of(exc.value)["code"] == 401


def test_missing_key_is_401(server: ServerProcess) -> None:
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_key_from_environment_also_works(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test-beta", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]


def test_probes_and_metrics_need_no_key(server: ServerProcess) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{server.url}{path}").status_code == 200


def test_max_tokens_out_of_range_is_400_with_param(client: openai.OpenAI) -> None:
    for bad in (100_000, -1):
        with pytest.raises(openai.BadRequestError) as exc:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=bad)
        assert error_of(exc.value)["param"] == "max_tokens"


def test_no_input_yields_a_500_or_a_traceback(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bodies = [
        b"", b"[]", b"null", b'{"model": 5}', b'{"messages": "x"}', b"\xff\xfe",
        b'{"model": "smollm2", "messages": [{"role": 5}]}',
        b'{"model": "smollm2", "messages": [], "max_tokens": 2}',
    ]  # fmt: skip
    for path in ("/v1/chat/completions", "/v1/completions"):
        for body in bodies:
            r = httpx.post(f"{server.url}{path}", content=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
            assert "Traceback" not in r.text
            assert r.json()["error"]["code"] == r.status_code


def test_request_id_is_echoed(server: ServerProcess) -> None:
    r = httpx.get(
        f"{server.url}/v1/models",
        headers={"Authorization": f"Bearer {KEY}", "X-Request-Id": "trace-me-42"},
    )
    assert r.headers["x-request-id"] == "trace-me-42"
    assert httpx.get(f"{server.url}/health").headers["x-request-id"]


def test_metrics_count_the_requests_made(server: ServerProcess, client: openai.OpenAI) -> None:
    def chat_200s() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        prefix = (
            'modelplane_requests_total{code="200",endpoint="/v1/chat/completions",model="smollm2"}'
        )
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = chat_200s()
    for _ in range(3):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert chat_200s() == before + 3
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "vllm:num_requests_waiting",
        "modelplane_time_to_first_token_seconds_bucket",
        "modelplane_inter_token_latency_seconds_bucket",
        "modelplane_request_duration_seconds_bucket",
        "modelplane_requests_in_flight",
        "modelplane_draining 0.0",
    ):
        assert name in text
    assert 'le="2.0"' in text


def test_startup_probes_reported_alive_before_ready(server: ServerProcess) -> None:
    """While the weights loaded, /health said alive (200) and /ready said not yet (503)."""
    assert (200, 503) in server.probes
    assert server.probes[-1] == (200, 200)


def test_hostile_json_is_a_400_in_the_envelope_and_the_server_keeps_serving(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    """Nested 20,000 deep (a RecursionError in any recursive parser), a lone surrogate,
    bytes that are not UTF-8: each a 400 saying what is wrong, never a 500."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    prefix = b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "x": '
    hostile = {
        "nests JSON deeper than 64 levels": prefix + b"[" * 20_000 + b"]" * 20_000 + b"}",
        "lone UTF-16 surrogate": b'{"model": "smollm2", "messages": [{"role": "user", '
        b'"content": "\\ud800"}]}',
        "not valid UTF-8": b'{"model": "smollm2\xe9", "messages": []}',
    }
    for says, body in hostile.items():
        r = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers)
        assert r.status_code == 400, (says, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert says in error["message"] and error["code"] == 400
        assert error["type"] == "invalid_request_error"
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content


def test_a_half_sent_request_head_gets_408_and_is_closed_within_the_deadline(
    server: ServerProcess,
) -> None:
    sock = open_connection(server.url)
    started = time.monotonic()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: server\r\nAuthoriza")
    closed = wait_closed(sock, started, timeout_s=60)
    sock.close()
    assert closed.after_s < DEADLINE_S + MARGIN_S, "the half-sent head was never closed"
    assert closed.status == 408 and closed.headers["connection"] == "close"
    assert closed.json()["error"]["type"] == "timeout_error"


def test_a_body_sent_a_byte_at_a_time_gets_408_within_the_deadline(
    server: ServerProcess,
) -> None:
    sock = open_connection(server.url)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: server\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"model": "smollm2", "messages": [')
    started = time.monotonic()
    trickle_until_answered(sock, b" ", every_s=0.2, timeout_s=60)
    closed = wait_closed(sock, started, timeout_s=60)
    sock.close()
    assert closed.after_s < DEADLINE_S + MARGIN_S
    assert closed.status == 408 and closed.headers["connection"] == "close"
    assert closed.json()["error"]["message"] == (
        f"the request body did not arrive within {DEADLINE_S:g}s"
    )


def test_answers_keep_coming_while_many_connections_hang(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    with ExitStack() as stack:
        hanging = []
        for _ in range(32):
            sock = stack.enter_context(open_connection(server.url))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
            hanging.append(sock)
        started = time.monotonic()
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
        )
        assert answer.choices[0].message.content
        closed = [wait_closed(sock, started, timeout_s=60) for sock in hanging]
    assert all(c.status == 408 for c in closed)
    assert max(c.after_s for c in closed) < DEADLINE_S + MARGIN_S


def test_a_key_removed_from_the_mounted_secret_is_refused_without_a_restart(
    server: ServerProcess, server_keys: SecretVolume
) -> None:
    """The key file is swapped the kubelet's way; the server, at its default reload
    interval, refuses the removed key and takes the added one within seconds."""
    new_key = "sk-test-new"

    def status(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.get(f"{server.url}/v1/models", headers=headers, timeout=10).status_code

    assert (status(OLD_KEY), status(new_key)) == (200, 401)
    server_keys.update({"keys": f"{KEY}\n{new_key}\n"})
    rotated = time.monotonic()
    while (status(OLD_KEY), status(new_key)) != (401, 200):
        if time.monotonic() - rotated > 60:
            pytest.fail(f"the server still takes the old key after 60 s:\n{server.log_tail()}")
        time.sleep(0.2)
    assert status(KEY) == 200  # the key the file kept stays valid throughout


# --- every error class, through both front doors, as the official client sees it ------

HI: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Door:
    """A front door (the server, or the gateway in front of it) and its key."""

    name: str
    url: str
    key: str

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0)


@pytest.fixture(params=["server", "gateway"])
def door(request: pytest.FixtureRequest, server: ServerProcess) -> Door:
    if request.param == "server":
        return Door("server", server.url, KEY)
    gateway: GatewayProcess = request.getfixturevalue("gateway")
    return Door("gateway", gateway.url, GATEWAY_KEY)


def refusal(exc: openai.APIStatusError) -> dict[str, object]:
    """The error as the client library parsed it: the envelope's fields, `code` the status
    (which the library hands over as a string, as OpenAI's codes are)."""
    assert isinstance(exc.body, dict) and set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["code"] == exc.status_code and exc.code == str(exc.status_code)
    assert (exc.type, exc.param) == (exc.body["type"], exc.body["param"])
    return exc.body


def test_broken_json_names_line_and_column(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().post(
            "/chat/completions",
            cast_to=ChatCompletion,
            content=b'{"model": "smollm2", "messages": [}',
            options={"headers": JSON_TYPE},
        )
    assert refusal(exc.value) == {
        "message": "the request body is not valid JSON at line 1 column 35: expecting value",
        "type": "invalid_request_error",
        "param": None,
        "code": 400,
    }


def test_a_missing_field_is_named(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().post("/chat/completions", cast_to=ChatCompletion, body={"model": MODEL})
    assert refusal(exc.value) == {
        "message": "messages is required",
        "type": "invalid_request_error",
        "param": "messages",
        "code": 400,
    }


def test_a_field_of_the_wrong_type_says_what_it_must_be(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().chat.completions.create(model=MODEL, messages="hi")  # type: ignore[arg-type]
    assert refusal(exc.value) == {
        "message": 'messages must be an array (got "hi")',
        "type": "invalid_request_error",
        "param": "messages",
        "code": 400,
    }


def test_an_unknown_model_is_not_found_and_the_served_one_named(door: Door) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        door.client().chat.completions.create(model="gpt-9", messages=HI, max_tokens=2)  # type: ignore[arg-type]
    error = refusal(exc.value)
    assert (error["type"], error["param"], error["code"]) == ("not_found_error", "model", 404)
    assert (
        error["message"]
        == {
            "server": "The model `gpt-9` does not exist. Valid aliases: smollm2.",
            "gateway": "the model 'gpt-9' does not exist; available: smollm2",
        }[door.name]
    )


def test_a_prompt_longer_than_the_context_names_the_field_it_came_in(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello " * 3000}], max_tokens=4
        )
    error = refusal(exc.value)
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")
    assert str(error["message"]).startswith("This model's maximum context length is 2048 tokens.")
    assert "(parameter=" not in str(error["message"])


def test_a_route_the_model_does_not_serve_says_which_it_does(door: Door) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        door.client().embeddings.create(model=MODEL, input="hello")
    assert refusal(exc.value) == {
        "message": "model 'smollm2' does not serve /v1/embeddings; "
        "it serves /v1/chat/completions, /v1/completions and /v1/responses",
        "type": "not_found_error",
        "param": "model",
        "code": 404,
    }


def test_an_unknown_message_role_is_named(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[list-item, misc]
            max_tokens=2,
        )
    assert refusal(exc.value) == {
        "message": "messages[0].role must be one of 'system', 'developer', 'user', "
        """'assistant', 'tool', 'function' (got "wizard")""",
        "type": "invalid_request_error",
        "param": "messages[0].role",
        "code": 400,
    }


def test_a_wrong_key_is_an_authentication_error(door: Door) -> None:
    with pytest.raises(openai.AuthenticationError) as exc:
        door.client("sk-wrong").chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    assert refusal(exc.value) == {
        "message": "missing or invalid API key; send 'Authorization: Bearer <key>'",
        "type": "authentication_error",
        "param": None,
        "code": 401,
    }
    assert exc.value.response.headers["www-authenticate"] == "Bearer"


def test_a_body_over_the_limit_is_413(door: Door) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        door.client().completions.create(model=MODEL, prompt="x" * 70_000, max_tokens=2)
    assert refusal(exc.value) == {
        "message": "request body exceeds the limit of 65536 bytes",
        "type": "invalid_request_error",
        "param": None,
        "code": 413,
    }


def test_a_body_that_stalls_past_the_deadline_is_408(door: Door) -> None:
    def stalled() -> Iterator[bytes]:
        yield b'{"model": "smollm2", "messages": ['
        time.sleep(DEADLINE_S + 1.5)
        yield b"]}"

    with pytest.raises(openai.APIStatusError) as exc:
        door.client().post(
            "/chat/completions",
            cast_to=ChatCompletion,
            content=stalled(),
            options={"headers": JSON_TYPE},
        )
    assert refusal(exc.value) == {
        "message": f"the request body did not arrive within {DEADLINE_S:g}s",
        "type": "timeout_error",
        "param": None,
        "code": 408,
    }


def test_a_key_over_its_rate_is_429(server: ServerProcess, tmp_path: Path) -> None:
    """The gateway's limit (the server has none): two requests a minute, the third refused."""
    gateway = GatewayProcess.static(
        tmp_path, "rate", [server.url], "--requests-per-minute", "2"
    ).start()
    try:
        client = Door("gateway", gateway.wait_synced().url, "none").client()
        for _ in range(2):  # answered without the engine: the model does not exist
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
    finally:
        gateway.stop()
    error = refusal(exc.value)
    assert (error["type"], error["param"], error["code"]) == ("rate_limit_error", None, 429)
    assert error["message"] == ("rate limit reached: requests per minute for this client address")
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60


def test_a_full_gateway_is_503_with_retry_after(server: ServerProcess, tmp_path: Path) -> None:
    """One request in flight at most: a body still arriving holds the place, the next
    request is refused at once."""
    gateway = GatewayProcess.static(tmp_path, "busy", [server.url], "--max-in-flight", "1").start()
    try:
        client = Door("gateway", gateway.wait_synced().url, "none").client()
        with open_connection(gateway.url) as held:
            held.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            deadline = time.monotonic() + 30
            while True:  # until the held request has its place (a cheap 404 before that)
                try:
                    client.chat.completions.create(model="gpt-9", messages=HI)  # type: ignore[arg-type]
                except openai.NotFoundError:
                    assert time.monotonic() < deadline, "the held request never took its place"
                    time.sleep(0.05)
                except openai.InternalServerError as err:
                    exc = err
                    break
    finally:
        gateway.stop()
    assert refusal(exc) == {
        "message": "the gateway has 1 requests in flight, its limit; retry shortly",
        "type": "service_unavailable",
        "param": None,
        "code": 503,
    }
    assert exc.response.headers["retry-after"] == "1"
