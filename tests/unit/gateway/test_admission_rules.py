"""Admission rules as pure state: token reservation and settlement, the bounded identity
table, concurrency caps, and finding `usage` in a response however it is chunked."""

from __future__ import annotations

import json

import pytest

from modelplane.gateway.admission.concurrency import ConcurrencyCaps, ConcurrencyGate
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.admission.tokens import (
    DEFAULT_COMPLETION_TOKENS,
    TokenTally,
    reservation,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reservations_are_taken_while_the_balance_is_positive_then_settled() -> None:
    limiter = KeyRateLimiter(tokens_per_minute=100, clock=Clock())
    assert limiter.reserve_tokens("k", 60).allowed  # 40 left
    assert limiter.reserve_tokens("k", 60).allowed  # -20: one reservation may overdraw
    refused = limiter.reserve_tokens("k", 60)
    assert not refused.allowed and refused.reason == "tokens per minute"
    assert refused.retry_after_s == 13  # (20 + 1) tokens at 100 per minute, rounded up
    limiter.settle_tokens("k", 60, 10)  # the first used 10: 50 back
    limiter.settle_tokens("k", 60, 10)
    assert limiter.reserve_tokens("k", 60).allowed  # 80 - 60


def test_a_request_larger_than_the_whole_budget_passes_on_a_full_bucket() -> None:
    """Refusing it would make it impossible forever; it overdraws instead, and the
    identity's next requests wait the debt out."""
    limiter = KeyRateLimiter(tokens_per_minute=100, clock=Clock())
    assert limiter.reserve_tokens("k", 5000).allowed
    assert not limiter.admit("k").allowed


def test_the_identity_table_is_bounded_least_recently_used_first() -> None:
    limiter = KeyRateLimiter(requests_per_minute=1, clock=Clock(), max_identities=3)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert limiter.admit(address).allowed
    assert not limiter.admit("10.0.0.1").allowed  # used again: now the most recent
    assert limiter.admit("10.0.0.4").allowed  # evicts 10.0.0.2, the least recent
    assert limiter.identities == 3
    assert not limiter.admit("10.0.0.1").allowed  # kept, with its empty bucket
    assert limiter.admit("10.0.0.2").allowed  # evicted: starts again with a full bucket


@pytest.mark.parametrize(
    "path,payload,expected",
    [
        ("/v1/chat/completions", {"max_tokens": 40}, 25 + 40),
        ("/v1/chat/completions", {"max_completion_tokens": 30, "max_tokens": 99}, 25 + 30),
        ("/v1/completions", {"max_tokens": 10, "n": 3}, 25 + 30),
        ("/v1/completions", {}, 25 + DEFAULT_COMPLETION_TOKENS),
        ("/v1/completions", {"max_tokens": "lots"}, 25 + DEFAULT_COMPLETION_TOKENS),
        ("/v1/embeddings", {"max_tokens": 40}, 25),
    ],
)
def test_reservation_is_the_prompt_estimate_plus_what_may_be_generated(
    path: str, payload: dict[str, object], expected: int
) -> None:
    assert reservation(path, payload, body_bytes=100) == expected


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 20])
def test_usage_after_megabytes_of_answer_is_found_however_the_body_is_chunked(
    size: int,
) -> None:
    body = json.dumps(
        {
            "choices": [{"message": {"content": 'say "usage": {"total_tokens": 1} ' * 40_000}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 499_990, "total_tokens": 500_000},
        }
    ).encode()
    assert len(body) > 1 << 20
    tally = TokenTally(request_bytes=100, streaming=False)
    for chunk in chunked(body, size if size > 1 else 997):  # 1-byte chunks: too slow
        tally.feed(chunk)
    assert tally.total() == 500_000


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


@pytest.mark.parametrize("size", [1, 5, 16, 4096])
def test_the_usage_event_of_a_stream_is_found_across_chunk_boundaries(size: int) -> None:
    events = [{"choices": [{"delta": {"content": "x"}}], "usage": None}] * 5
    stream = sse(*events, {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 5}})
    tally = TokenTally(request_bytes=400, streaming=True)
    for chunk in chunked(stream, size):
        tally.feed(chunk)
    assert tally.total() == 9  # prompt + completion when total_tokens is absent


def test_cumulative_usage_in_every_event_counts_the_last() -> None:
    events = [{"choices": [], "usage": {"total_tokens": n}} for n in (3, 4, 5)]
    tally = TokenTally(request_bytes=400, streaming=True)
    tally.feed(sse(*events))
    assert tally.total() == 5


def test_a_stream_without_usage_is_estimated() -> None:
    tally = TokenTally(request_bytes=400, streaming=True)
    tally.feed(sse(*[{"choices": [{"delta": {"content": "x"}}]}] * 12))
    assert tally.usage() is None
    assert tally.total() == 100 + 12


def test_in_flight_places_are_per_identity_and_per_model_and_given_back() -> None:
    gate = ConcurrencyGate(ConcurrencyCaps(in_flight=3, in_flight_per_identity=2))
    assert gate.enter("a") is None and gate.enter("a") is None
    refused = gate.enter("a")
    assert refused is not None and (refused.status, refused.limit) == (429, "in flight per key")
    assert gate.enter("b") is None
    full = gate.enter("c")
    assert full is not None and full.status == 503
    for who in ("a", "a", "b"):
        gate.leave(who)
    assert gate.in_flight == 0 and not gate._per_identity  # nothing left behind


def test_held_places_are_capped_overall_and_per_model() -> None:
    gate = ConcurrencyGate(ConcurrencyCaps(held=3, held_per_model=2))
    assert gate.hold("m") is None and gate.hold("m") is None
    per_model = gate.hold("m")
    assert per_model is not None and per_model.limit == "held per model"
    assert per_model.retry_after_s == 5
    assert gate.hold("n") is None
    overall = gate.hold("o")
    assert overall is not None and overall.limit == "held"
    gate.release("m")
    assert gate.hold("m") is None
