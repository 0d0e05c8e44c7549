"""Every error the model server sends speaks one language: OpenAI's envelope, our `type`
for its status, a sentence a person reads, and `param` where there is one.

Requests vLLM's own request models refuse are sent through the front to
vLLM's real app, built without an engine (validation answers before any
engine is asked): what a client sees for them is what it sees from a running
server. The errors a running engine writes (a bound exceeded, the context too
long, an error inside a stream) come from a stub that answers with the
bodies vLLM 0.32 sends, as seen from a real server; tests/integration holds
them against the real engine through the official client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from modelplane.http.asgi import ASGIApp, Receive, Scope, Send
from modelplane.server.app import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    FrontSettings,
    ModelServerApp,
)
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.metrics import ServerMetrics

JSON = {"Content-Type": "application/json"}
HI = [{"role": "user", "content": "hi"}]


class Engine:
    """An engine for the front: an ASGI app and the paths it serves."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self._paths = paths

    @property
    def asgi(self) -> ASGIApp:
        return self.app

    @property
    def paths(self) -> frozenset[str]:
        return self._paths

    async def healthy(self) -> bool:
        return True


def front_for(engine: Engine) -> ModelServerApp:
    registry = CollectorRegistry()
    front = ModelServerApp(
        FrontSettings(served_model_name="smollm2"), Lifecycle(), ServerMetrics(registry), registry
    )
    front.attach_engine(engine)
    front.lifecycle.mark_ready()
    return front


@pytest.fixture(scope="module")
def vllm_app() -> Any:
    """vLLM's OpenAI app for a generating model, with no engine behind it."""
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from modelplane.server.vllm_engine import install_error_handlers

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm"))  # type: ignore[no-untyped-call]
    app = build_app(parser.parse_args(["--model", "smollm2"]), ("generate",), None)
    install_error_handlers(app)
    return app


@pytest.fixture
async def server(vllm_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    paths = frozenset({CHAT_PATH, COMPLETIONS_PATH, "/v1/models"})
    front = front_for(Engine(vllm_app, paths))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(front), base_url="http://t") as c:
        yield c


def envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == response.status_code
    assert response.headers["content-length"] == str(len(response.content))
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("path", "body", "message", "param"),
    [
        (CHAT_PATH, {"model": "smollm2"}, "messages is required", "messages"),
        (CHAT_PATH, {"model": "smollm2", "messages": "hi"},
         'messages must be an array (got "hi")', "messages"),
        (CHAT_PATH, {"model": 5, "messages": HI}, "model must be a string (got 5)", "model"),
        (CHAT_PATH, {"model": "smollm2", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content must be a string or an array (got 5)", "messages[0].content"),
        (CHAT_PATH, {"model": "smollm2", "messages": HI, "max_tokens": "ten", "temperature": "hot"},
         'max_tokens must be an integer (got "ten"); temperature must be a number (got "hot")',
         "max_tokens"),
        (COMPLETIONS_PATH, {"model": "smollm2", "prompt": "hi", "stop": 5},
         "stop must be a string or an array (got 5)", "stop"),
    ],
)  # fmt: skip
async def test_a_refused_request_is_told_what_to_fix_in_a_sentence(
    server: httpx.AsyncClient, path: str, body: object, message: str, param: str
) -> None:
    response = await server.post(path, json=body)
    assert response.status_code == 400
    assert envelope(response) == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": 400,
    }


async def test_a_role_that_does_not_exist_names_the_roles_that_do(
    server: httpx.AsyncClient,
) -> None:
    response = await server.post(
        CHAT_PATH, json={"model": "smollm2", "messages": [{"role": 5, "content": "x"}]}
    )
    error = envelope(response)
    assert error["param"] == "messages[0].role"
    assert error["message"].startswith("messages[0].role must be 'developer', 'system', 'user'")
    assert error["message"].endswith("(got 5)") and ";" not in error["message"]


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"model": "smollm2", "messages": [}', JSON,
         "the request body is not valid JSON at line 1 column 35: expecting value"),
        (b"[1, 2]", JSON, "the request body must be a JSON object (got an array)"),
        (b"null", JSON, "the request body must be a JSON object (got null)"),
        (b"", JSON, "the request body is empty; send a JSON object"),
        (b'{"model": "smollm2"}', {"Content-Type": "text/plain"},
         "send the request body as JSON, with 'Content-Type: application/json'"),
    ],
)  # fmt: skip
async def test_a_body_that_is_not_a_json_object_is_named_as_such(
    server: httpx.AsyncClient, body: bytes, headers: dict[str, str], message: str
) -> None:
    response = await server.post(CHAT_PATH, content=body, headers=headers)
    assert response.status_code == 400
    error = envelope(response)
    assert (error["message"], error["type"], error["param"]) == (
        message,
        "invalid_request_error",
        None,
    )


async def test_a_get_where_a_post_belongs_says_so(server: httpx.AsyncClient) -> None:
    response = await server.get(CHAT_PATH)
    assert response.status_code == 405
    assert envelope(response)["message"] == "use POST for /v1/chat/completions"


async def test_a_path_the_model_does_not_serve_says_what_it_serves(
    server: httpx.AsyncClient,
) -> None:
    response = await server.post(EMBEDDINGS_PATH, json={"model": "smollm2", "input": "hi"})
    assert response.status_code == 404
    assert envelope(response) == {
        "message": "model 'smollm2' does not serve /v1/embeddings; "
        "it serves /v1/chat/completions and /v1/completions",
        "type": "not_found_error",
        "param": "model",
        "code": 404,
    }


class VllmLikeErrors:
    """Answers as a running vLLM 0.32 does when it refuses a request (bodies as seen)."""

    CONTEXT = (
        "This model's maximum context length is 2048 tokens. However, your prompt contains "
        "at least 2049 input tokens, which exceeds this limit even without any output tokens. "
        "Please reduce the length of the input prompt."
    )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads((await receive())["body"])
        if body.get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            error = {"error": {"message": "Internal server error", "type": "InternalServerError",
                               "param": None, "code": 500}}  # fmt: skip
            for event in (b'data: {"choices": []}\n\n', b"data: " + json.dumps(error).encode()
                          + b"\n\n", b"data: [DONE]\n\n"):  # fmt: skip
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        status, payload = {
            "bound": (400, {"error": {
                "message": "max_tokens must be at least 1, got -1. (parameter=max_tokens, "
                "value=-1)", "type": "BadRequestError", "param": "max_tokens", "code": 400}}),
            "context": (400, {"error": {
                "message": f"{self.CONTEXT} (parameter=input_tokens, value=2049)",
                "type": "BadRequestError", "param": "input_tokens", "code": 400}}),
            "model": (404, {"error": {"message": "The model `gpt-9` does not exist.",
                                      "type": "NotFoundError", "param": "model", "code": 404}}),
            "method": (405, {"detail": "Method Not Allowed"}),
        }[body["case"]]  # fmt: skip
        data = json.dumps(payload).encode()
        # Sent in two pieces, as a large body may be: the front must hold both.
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": data[:10], "more_body": True})
        await send({"type": "http.response.body", "body": data[10:]})


@pytest.fixture
async def engine_errors() -> AsyncIterator[httpx.AsyncClient]:
    paths = frozenset({CHAT_PATH, COMPLETIONS_PATH})
    front = front_for(Engine(VllmLikeErrors(), paths))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(front), base_url="http://t") as c:
        yield c


@pytest.mark.parametrize(
    ("path", "case", "status", "message", "kind", "param"),
    [
        (COMPLETIONS_PATH, "bound", 400, "max_tokens must be at least 1, got -1.",
         "invalid_request_error", "max_tokens"),
        (CHAT_PATH, "context", 400, VllmLikeErrors.CONTEXT, "invalid_request_error", "messages"),
        (COMPLETIONS_PATH, "context", 400, VllmLikeErrors.CONTEXT, "invalid_request_error",
         "prompt"),
        (CHAT_PATH, "model", 404, "The model `gpt-9` does not exist.", "not_found_error", "model"),
        (CHAT_PATH, "method", 405, "Method Not Allowed", "invalid_request_error", None),
    ],
)  # fmt: skip
async def test_the_engine_s_errors_get_our_type_and_the_request_s_param(
    engine_errors: httpx.AsyncClient,
    path: str,
    case: str,
    status: int,
    message: str,
    kind: str,
    param: str | None,
) -> None:
    response = await engine_errors.post(path, json={"case": case})
    assert response.status_code == status
    assert envelope(response) == {"message": message, "type": kind, "param": param, "code": status}


async def test_an_error_inside_a_stream_is_in_the_envelope_and_the_stream_still_ends(
    engine_errors: httpx.AsyncClient,
) -> None:
    async with engine_errors.stream("POST", CHAT_PATH, json={"stream": True}) as response:
        events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[0] == 'data: {"choices": []}' and events[-1] == "data: [DONE]"
    assert json.loads(events[1].removeprefix("data: ")) == {
        "error": {
            "message": "Internal server error",
            "type": "server_error",
            "param": None,
            "code": 500,
        }
    }
