"""Retry budget, ejection of failing replicas, per-key rate limits, demand throttling,
token counting: small state machines driven by a hand-moved clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from modelplane.api.demand import demand_lease, demand_signal, demand_stamp
from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.admission.tokens import TokenTally
from modelplane.gateway.routing.resilience import OutlierDetector, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_budget_allows_a_share_of_traffic_and_no_more() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=0.0, cap=100, clock=clock)
    for _ in range(100):
        budget.record_request()
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 20


def test_retry_budget_floor_refills_with_time_up_to_the_cap() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, floor_per_s=2.0, cap=5, clock=clock)
    spent = sum(budget.try_spend() for _ in range(10))
    assert spent == 2  # the floor's first second
    clock.now += 1.0
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    clock.now += 3600  # a long calm spell banks no more than the cap
    assert sum(budget.try_spend() for _ in range(100)) == 5


def test_replica_is_ejected_after_consecutive_failures_and_returns_after_cooldown() -> None:
    clock = Clock()
    outliers = OutlierDetector(consecutive_failures=3, base_ejection_s=5, clock=clock)
    up = "http://a"
    assert outliers.record_failure(up) is False
    assert outliers.record_failure(up) is False
    assert outliers.record_failure(up) is True
    assert outliers.is_ejected(up) and outliers.any_ejected()
    clock.now += 5.01
    assert not outliers.is_ejected(up) and not outliers.any_ejected()


def test_a_success_resets_the_failure_count() -> None:
    outliers = OutlierDetector(consecutive_failures=2, clock=Clock())
    outliers.record_failure("u")
    outliers.record_success("u")
    assert outliers.record_failure("u") is False


def test_repeated_ejections_back_off_up_to_the_cap() -> None:
    clock = Clock()
    outliers = OutlierDetector(
        consecutive_failures=1, base_ejection_s=5, max_ejection_s=12, clock=clock
    )
    cooldowns = []
    for _ in range(4):
        assert outliers.record_failure("u")
        start = clock.now
        while outliers.is_ejected("u"):
            clock.now += 0.5
        cooldowns.append(clock.now - start)
    assert cooldowns == [5.0, 10.0, 12.0, 12.0]


def test_forgotten_replicas_lose_their_state() -> None:
    outliers = OutlierDetector(consecutive_failures=1, clock=Clock())
    outliers.record_failure("gone")
    outliers.forget(keep={"other"})
    assert not outliers.is_ejected("gone")


def test_requests_per_minute_refuses_with_retry_after_then_refills() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(requests_per_minute=2, clock=clock)
    assert limiter.admit("k1").allowed and limiter.admit("k1").allowed
    refused = limiter.admit("k1")
    assert not refused.allowed and refused.retry_after_s == 30
    assert refused.reason == "requests per minute"
    assert limiter.admit("k2").allowed  # each key has its own budget
    clock.now += 30
    assert limiter.admit("k1").allowed


def test_tokens_per_minute_are_charged_after_the_response_and_block_while_in_debt() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(tokens_per_minute=600, clock=clock)  # 10 tokens per second
    assert limiter.admit("k").allowed
    limiter.charge_tokens("k", 700)  # 100 tokens of debt
    refused = limiter.admit("k")
    assert not refused.allowed and refused.reason == "tokens per minute"
    assert refused.retry_after_s == 11  # (100 + 1) tokens at 10 per second, rounded up
    clock.now += 11
    assert limiter.admit("k").allowed


def test_no_limits_configured_admits_everything() -> None:
    limiter = KeyRateLimiter()
    assert not limiter.active and not limiter.counts_tokens
    assert all(limiter.admit("k").allowed for _ in range(1000))


def test_demand_is_signalled_once_per_interval_per_model() -> None:
    clock = Clock()
    throttle = DemandThrottle(interval_s=10, clock=clock)
    assert throttle.should_signal("a")
    assert not throttle.should_signal("a")
    assert throttle.should_signal("b")
    clock.now += 10
    assert throttle.should_signal("a")


def test_demand_timestamp_is_rfc3339_utc_to_the_microsecond() -> None:
    before = datetime.now(UTC)
    stamp = demand_stamp()
    after = datetime.now(UTC)
    assert len(stamp) == 27 and stamp[10] == "T" and stamp[19] == "." and stamp.endswith("Z")
    assert before <= datetime.fromisoformat(stamp) <= after


def test_the_demand_lease_reads_back_as_the_operator_reads_it() -> None:
    """The contract both sides use: what the gateway writes, the autoscaler reads."""
    from modelplane.api.demand import held_count

    at = datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC)
    lease = demand_lease("llm", "chat", "uid-1", 17, "gateway-0", 120, at)
    assert lease["spec"]["renewTime"] == "2026-12-06T01:02:03.456789Z"
    signal = demand_signal(lease)
    assert signal.requested_epoch() == at.timestamp()
    assert held_count(signal.held) == 17
    assert not signal.stale(at.timestamp() + 120) and signal.stale(at.timestamp() + 121)


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def test_token_tally_uses_usage_when_the_response_has_it() -> None:
    plain = TokenTally(request_bytes=400, streaming=False)
    body = json.dumps({"choices": [], "usage": {"total_tokens": 57}}).encode()
    plain.feed(body[:10])
    plain.feed(body[10:])
    assert plain.total() == 57
    stream = TokenTally(request_bytes=400, streaming=True)
    chunk = {"choices": [{"delta": {"content": "x"}}]}
    stream.feed(sse(chunk, chunk))
    stream.feed(sse({"choices": [], "usage": {"total_tokens": 31}}))
    assert stream.total() == 31


def test_token_tally_estimates_a_stream_without_usage() -> None:
    tally = TokenTally(request_bytes=400, streaming=True)
    chunk = {"choices": [{"delta": {"content": "x"}}]}
    tally.feed(sse(*[chunk] * 12))
    assert tally.total() == 100 + 12  # prompt bytes / 4, one token per event
