"""Token accounting for the Responses API and the scoring routes: what a request reserves
at admission and what the tally reads from an answer, as pure state.

The stream below has the shape vLLM sends (`event:` lines, `usage: null` in the first
events, the `usage` in `response.completed` after the whole answer's text);
tests/integration/test_server_responses.py checks the tally against a real one.
"""

from __future__ import annotations

import json

import pytest

from modelplane.gateway.admission.tokens import (
    DEFAULT_COMPLETION_TOKENS,
    TokenTally,
    reservation,
)


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/v1/responses", {"max_output_tokens": 40}, 25 + 40),
        ("/v1/responses", {}, 25 + DEFAULT_COMPLETION_TOKENS),
        ("/v1/responses", {"max_output_tokens": None}, 25 + DEFAULT_COMPLETION_TOKENS),
        ("/v1/chat/completions", {"max_completion_tokens": None, "max_tokens": 9}, 25 + 9),
        ("/v1/score", {"max_tokens": 40}, 25),
        ("/v1/rerank", {}, 25),
        ("/rerank", {}, 25),
        ("/v2/rerank", {}, 25),
        ("/score", {}, 25),
    ],
)
def test_a_reservation_reads_each_apis_bound_and_scoring_generates_nothing(
    path: str, payload: dict[str, object], expected: int
) -> None:
    assert reservation(path, payload, body_bytes=100) == expected


def responses_stream(text: str, usage: dict[str, int]) -> bytes:
    def event(kind: str, data: object) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    created = {"type": "response.created", "response": {"output": [], "usage": None}}
    deltas = [{"type": "response.output_text.delta", "delta": word} for word in text.split()]
    completed = {
        "type": "response.completed",
        "response": {"output": [{"content": [{"text": text}]}], "usage": usage},
    }
    return b"".join(
        [
            event("response.created", created),
            *(event("response.output_text.delta", d) for d in deltas),
            event("response.completed", completed),
        ]
    )


@pytest.mark.parametrize("size", [1, 5, 16, 4096])
def test_the_completed_event_of_a_responses_stream_is_counted(size: int) -> None:
    usage = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    stream = responses_stream('the answer quotes "usage": {"total_tokens": 1} ' * 3, usage)
    tally = TokenTally(request_bytes=400, streaming=True)
    for at in range(0, len(stream), size):
        tally.feed(stream[at : at + size])
    assert tally.total() == 42


def test_a_usage_with_input_and_output_tokens_only_is_their_sum() -> None:
    body = json.dumps({"output": [], "usage": {"input_tokens": 7, "output_tokens": 5}}).encode()
    tally = TokenTally(request_bytes=400, streaming=False)
    tally.feed(body)
    assert tally.usage() == 12
