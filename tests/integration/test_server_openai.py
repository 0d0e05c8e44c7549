"""The real model server: vLLM (CPU build) serving SmolLM2-135M-Instruct.

One server process with API keys on is started for the module and driven
with the official `openai` client, the way users talk to it. Its key file is
a Secret volume as the kubelet lays it out, so a test can rotate a key the
way a cluster does; its head and body deadlines are short (2 s), so tests of
half-sent requests see them pass quickly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.conftest import ServerProcess
from tests.support.raw_http import open_connection, trickle_until_answered, wait_closed
from tests.support.secret_volume import SecretVolume

pytestmark = pytest.mark.engine

KEY = "sk-test-alpha"
OLD_KEY = "sk-test-old"  # rotated out by a test
MODEL = "smollm2"
DEADLINE_S = 2.0  # --header-timeout and --body-timeout
MARGIN_S = 3.0  # a 2-core machine running the engine answers late, never early


@pytest.fixture(scope="module")
def server_keys(tmp_path_factory: pytest.TempPathFactory) -> SecretVolume:
    """The server's key file, mounted as a Secret volume is."""
    root = tmp_path_factory.mktemp("server-keys") / "volume"
    return SecretVolume(root, {"keys": f"# rotated keys\n{KEY}\n{OLD_KEY}\n"})


@pytest.fixture(scope="module")
def server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory, server_keys: SecretVolume
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("chat-server")
    proc = ServerProcess(
        args=[
            "--model", str(smollm2_dir), "--served-model-name", MODEL,
            "--api-key-file", str(server_keys.path("keys")), "--max-model-len", "2048",
            "--enforce-eager", "--max-request-bytes", "65536",
            "--header-timeout", str(DEADLINE_S), "--body-timeout", str(DEADLINE_S),
        ],
        log_path=tmp / "server.log",
        env={"MODELPLANE_API_KEYS": "sk-test-beta"},
    )  # fmt: skip
    proc.start().wait_ready()
    yield proc
    proc.stop()


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
    json.loads(calls[0].function.arguments)


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


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert error_of(exc.value)["param"] == "model"


def test_max_tokens_out_of_range_is_400_with_param(client: openai.OpenAI) -> None:
    for bad in (100_000, -1):
        with pytest.raises(openai.BadRequestError) as exc:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=bad)
        assert error_of(exc.value)["param"] == "max_tokens"


def test_prompt_longer_than_context_is_400_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="hello " * 3000, max_tokens=4)
    error = error_of(exc.value)
    assert error["param"]
    assert "context" in str(error["message"])


def test_malformed_json_is_400(server: ServerProcess) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b'{"model": ',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400


def test_oversized_body_is_413(server: ServerProcess) -> None:
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL, "prompt": "x" * 70_000},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


def test_embeddings_not_served_by_a_chat_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=MODEL, input="hello")


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
