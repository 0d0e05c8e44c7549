"""The OpenAI Responses API on the real engine, through both front doors.

The server and the gateway in front of it are tests/integration/conftest.py's (shared
with test_server_openai: one engine start). Each test talks the way a user's client
does, with the official `openai` client's `responses` calls where it has one: plain
and streamed answers with their `usage`, a named tool choice whose arguments follow
the tool's schema, Modelplane's decision on stored responses (none are kept, and the
answer says what to do instead), and hostile bodies that must get a 4xx in the
envelope, never a 500. The gateway's token accounting is checked against the bytes a
real answer carries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam

from modelplane.gateway.admission.tokens import TokenTally
from tests.conftest import ServerProcess
from tests.integration.conftest import GATEWAY_KEY, KEY, MODEL
from tests.integration.gateway.conftest import GatewayProcess

pytestmark = pytest.mark.engine

NOT_KEPT = "Modelplane does not keep responses"
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


@dataclass(frozen=True)
class Door:
    name: str
    url: str
    key: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0)

    def post(self, path: str, content: bytes) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return httpx.post(f"{self.url}{path}", content=content, headers=headers, timeout=120)


@pytest.fixture(params=["server", "gateway"])
def door(request: pytest.FixtureRequest, server: ServerProcess) -> Door:
    if request.param == "server":
        return Door("server", server.url, KEY)
    gateway: GatewayProcess = request.getfixturevalue("gateway")
    return Door("gateway", gateway.url, GATEWAY_KEY)


def refusal(exc: openai.APIStatusError) -> dict[str, object]:
    """The error as the client library parsed it: the envelope's four fields."""
    assert isinstance(exc.body, dict) and set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["code"] == exc.status_code
    return exc.body


def test_an_answer_with_instructions_and_its_usage(door: Door) -> None:
    reply = door.client().responses.create(
        model=MODEL,
        instructions="Answer in one short sentence.",
        input="What is the capital of France?",
        max_output_tokens=20,
        temperature=0,
    )
    assert reply.status in ("completed", "incomplete")
    assert "Paris" in reply.output_text
    assert reply.usage is not None
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens


def test_a_message_list_streamed_arrives_in_events_ending_completed(door: Door) -> None:
    stream = door.client().responses.create(
        model=MODEL,
        input=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Count from one to five."},
        ],
        max_output_tokens=16,
        temperature=0,
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # the text arrives in pieces (a piece may hold several tokens)
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "".join(deltas)
    usage = final.response.usage
    assert usage is not None and 0 < usage.output_tokens <= 16 and usage.input_tokens > 0


def test_a_named_tool_choice_gives_arguments_that_follow_the_schema(door: Door) -> None:
    reply = door.client().responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,
    )
    calls = [item for item in reply.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    arguments = json.loads(calls[0].arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str), arguments


def test_a_named_tool_choice_streamed_gives_arguments_that_follow_the_schema(door: Door) -> None:
    stream = door.client().responses.create(
        model=MODEL,
        input="What is the weather in Tokyo?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,
        stream=True,
    )
    final = list(stream)[-1]
    assert final.type == "response.completed"
    calls = [item for item in final.response.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    arguments = json.loads(calls[0].arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str), arguments


def test_store_true_the_sdk_default_is_served_without_storing(door: Door) -> None:
    client = door.client()
    reply = client.responses.create(model=MODEL, input="Hi", store=True, max_output_tokens=4)
    assert reply.output_text
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.retrieve(reply.id)
    error = refusal(exc.value)
    assert (error["type"], error["param"]) == ("not_found_error", "response_id")
    assert NOT_KEPT in str(error["message"])


def test_a_follow_up_by_previous_response_id_says_to_send_the_conversation(door: Door) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        door.client().responses.create(
            model=MODEL, input="And Germany?", previous_response_id="resp_abc", max_output_tokens=4
        )
    error = refusal(exc.value)
    assert (error["type"], error["param"]) == ("invalid_request_error", "previous_response_id")
    assert NOT_KEPT in str(error["message"])
    assert "send its earlier turns in `input`" in str(error["message"])


def test_cancelling_and_deleting_are_not_found_alike(door: Door) -> None:
    client = door.client()
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_abc")
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_abc")


def _nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: dict[str, tuple[bytes, int, str | None]] = {
    "input a number": (b'{"model": "smollm2", "input": 5}', 400, "input"),
    "input missing": (b'{"model": "smollm2"}', 400, "input"),
    "input nested lists": (
        json.dumps({"model": MODEL, "input": _nested(20)}).encode(), 400, "input[0]"
    ),
    "input nested past the parser's limit": (
        json.dumps({"model": MODEL, "input": _nested(200)}).encode(), 400, None
    ),
    "an unknown role": (
        json.dumps({"model": MODEL, "input": [{"role": "wizard", "content": "hi"}]}).encode(),
        400,
        "input[0].role",
    ),
    "instructions an object": (
        b'{"model": "smollm2", "input": "hi", "instructions": {"a": 1}}', 400, "instructions"
    ),
    "max_output_tokens a string": (
        b'{"model": "smollm2", "input": "hi", "max_output_tokens": "ten"}', 400,
        "max_output_tokens",
    ),
    "not UTF-8": (b'{"model": "smollm2", "input": "\xff\xfe"}', 400, None),
    "a lone surrogate": (b'{"model": "smollm2", "input": "\\ud800"}', 400, None),
    "not an object": (b'["model", "smollm2"]', 400, None),
    "over the size limit": (
        json.dumps({"model": MODEL, "input": "x" * 70_000}).encode(), 413, None
    ),
    "longer than the context": (
        json.dumps({"model": MODEL, "input": "hello " * 3000}).encode(), 400, "input"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_get_a_4xx_in_the_envelope(door: Door, case: str) -> None:
    body, status, param = HOSTILE[case]
    response = door.post("/v1/responses", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (status, param), error
    assert "Traceback" not in error["message"]


def test_an_unknown_model_is_not_found(door: Door) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        door.client().responses.create(model="gpt-9", input="hi")
    assert refusal(exc.value)["param"] == "model"


def test_the_gateway_counts_the_tokens_responses_report(gateway: GatewayProcess) -> None:
    """What the gateway's tokens-per-minute accounting reads from a real answer, plain and
    streamed (the `response.completed` event), is the `usage` the answer reports."""
    door = Door("gateway", gateway.url, GATEWAY_KEY)
    body = {"model": MODEL, "input": "Say hi.", "max_output_tokens": 8}
    plain = door.post("/v1/responses", json.dumps(body).encode())
    tally = TokenTally(request_bytes=100, streaming=False)
    for chunk in _chunks(plain.content, 7):
        tally.feed(chunk)
    assert tally.total() == plain.json()["usage"]["total_tokens"]

    streamed = TokenTally(request_bytes=100, streaming=True)
    completed: dict[str, object] = {}
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/responses", json={**body, "stream": True}, headers=headers
    ) as response:
        raw = b"".join(response.iter_raw())
    for chunk in _chunks(raw, 64):
        streamed.feed(chunk)
    for event in raw.split(b"\n\n"):
        if event.startswith(b"event: response.completed"):
            completed = json.loads(event.partition(b"data: ")[2])
    usage = completed["response"]["usage"]  # type: ignore[index]
    assert (
        streamed.total() == usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    )
    requests = gateway.metric("modelplane_gateway_requests_total", model=MODEL, code="200")
    assert requests >= 2


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]
