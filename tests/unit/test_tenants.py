"""Tenants: the file's validation, weighted fair queuing and budget periods (pure logic)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.tenants.admission import TenantLimits, TenantRefusal
from modelplane.gateway.tenants.budgets import (
    Budgets,
    period_bounds,
    period_key,
)
from modelplane.gateway.tenants.config import (
    Period,
    Tenant,
    Tenants,
    TenantsFileWatch,
    parse_tenants,
    read_tenants,
)
from modelplane.gateway.tenants.fair_queue import FairQueue, QueueFullError
from modelplane.gateway.tenants.metrics import TenantMetrics
from modelplane.gateway.tenants.stores import MemoryLimitStore
from modelplane.gateway.tenants.usage import (
    counted_increase,
    model_shares,
    render_table,
    usage_rows,
)

FULL = """
tenants:
  team-a:
    keys: [sk-team-a-0001, sk-team-a-0002]
    weight: 2
    requestsPerMinute: 600
    tokensPerMinute: 200000
    maxConcurrent: 32
    budget: {tokens: 50000000, period: month}
    models: [llama-8b]
  team-b:
    keyFile: team-b.keys
"""


def test_a_full_file_is_read_with_keys_from_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "team-b.keys").write_text("# team b\nsk-team-b-0001\n\nsk-team-b-0002\n")
    (tmp_path / "tenants.yaml").write_text(FULL)
    tenants = read_tenants(tmp_path / "tenants.yaml")
    a = tenants.for_key("sk-team-a-0002")
    assert a is not None and a.name == "team-a"
    assert (a.weight, a.requests_per_minute, a.tokens_per_minute, a.max_concurrent) == (
        2, 600, 200000, 32,
    )  # fmt: skip
    assert (a.budget_tokens, a.budget_period) == (50_000_000, Period.MONTH)
    assert a.may_use("llama-8b") and not a.may_use("other")
    b = tenants.for_key("sk-team-b-0002")
    assert b is not None and b.name == "team-b" and b.weight == 1 and b.may_use("anything")
    assert tenants.for_key("sk-unknown-0001") is None
    assert tenants.key_count == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenants:\n  team-a: {keys: [sk-team-a-0001], weight: 0}\n", "tenants.team-a.weight"),
        ("tenants:\n  team-a: {keys: [sk-team-a-0001], budget: {tokens: 5, period: year}}\n",
         "tenants.team-a.budget.period"),
        ("tenants:\n  team-a: {keys: [sk-team-a-0001], requestsPerMinut: 5}\n",
         "tenants.team-a.requestsPerMinut"),
        ("tenants:\n  team-a: {weight: 2}\n", "give either 'keys'"),
        ("tenants:\n  team-a: {keys: [short]}\n", "keys[0] is not a usable key"),
        ("tenants:\n  Team A: {keys: [sk-team-a-0001]}\n", "tenant name 'Team A'"),
        ("tenants: {}\n", "tenants"),
        ("tenants:\n  team-a: {keys: [sk-team-a-0001], models: []}\n", "tenants.team-a.models"),
        ("- not a mapping\n", "file"),
        ("tenants: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_tenant_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tenants(text, tmp_path)
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once_and_a_shared_key_names_both_tenants(
    tmp_path: Path,
) -> None:
    text = (
        "tenants:\n"
        "  team-a: {keys: [sk-shared-0001], weight: -1}\n"
        "  team-b: {keys: [sk-shared-0001], tokensPerMinute: 0}\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_tenants(text, tmp_path)
    assert "tenants.team-a.weight" in str(err.value)
    assert "tenants.team-b.tokensPerMinute" in str(err.value)
    shared = "tenants:\n  team-a: {keys: [sk-shared-0001]}\n  team-b: {keys: [sk-shared-0001]}\n"
    with pytest.raises(ConfigError) as err:
        parse_tenants(shared, tmp_path)
    message = str(err.value)
    assert "team-b" in message and "team-a" in message and "sk-shared" not in message


def test_key_file_problems_name_the_tenant(tmp_path: Path) -> None:
    text = "tenants:\n  team-b: {keyFile: missing.keys}\n"
    with pytest.raises(ConfigError, match=r"tenants\.team-b\.keyFile: cannot read"):
        parse_tenants(text, tmp_path)
    (tmp_path / "empty.keys").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"tenants\.team-b\.keyFile: .* holds no key"):
        parse_tenants("tenants:\n  team-b: {keyFile: empty.keys}\n", tmp_path)
    (tmp_path / "binary.keys").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_tenants("tenants:\n  team-b: {keyFile: binary.keys}\n", tmp_path)


def test_huge_and_hostile_files_are_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        read_tenants(huge)
    not_utf8 = tmp_path / "bad.yaml"
    not_utf8.write_bytes(b"tenants:\n  team-a: {keys: [\xff\xfe]}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_tenants(not_utf8)
    with pytest.raises(ConfigError, match="cannot read"):
        read_tenants(tmp_path / "absent.yaml")


# ---- fair queuing -----------------------------------------------------------------------


async def _served_order(queue: FairQueue, arrivals: list[tuple[str, float]]) -> list[str]:
    """Queue `arrivals` behind a full queue, then free one slot at a time: who is served."""
    served: asyncio.Queue[str] = asyncio.Queue()

    async def one(tenant: str, weight: float) -> None:
        await queue.acquire(tenant, weight)
        served.put_nowait(tenant)

    tasks = []
    for tenant, weight in arrivals:
        tasks.append(asyncio.create_task(one(tenant, weight)))
        await asyncio.sleep(0)  # arrive in this order
    order: list[str] = []
    for _ in arrivals:
        queue.release()
        order.append(await asyncio.wait_for(served.get(), 5))
    await asyncio.gather(*tasks)
    return order


def test_waiting_requests_are_served_by_weight_and_fifo_within_a_tenant() -> None:
    async def scenario() -> list[str]:
        queue = FairQueue(capacity=1)
        await queue.acquire("busy", 1)  # the one slot is taken
        heavy = [("heavy", 2.0)] * 12
        light = [("light", 1.0)] * 6
        return await _served_order(queue, heavy + light)

    order = asyncio.run(scenario())
    first_nine = order[:9]
    # While both wait, heavy (weight 2) gets two turns for each of light's.
    assert first_nine.count("heavy") == 6 and first_nine.count("light") == 3
    assert order.count("heavy") == 12 and order.count("light") == 6


def test_a_flooding_tenant_does_not_delay_a_newcomer_behind_its_backlog() -> None:
    async def scenario() -> list[str]:
        queue = FairQueue(capacity=1)
        await queue.acquire("flood", 1)
        return await _served_order(queue, [("flood", 1.0)] * 20 + [("light", 1.0)])

    order = asyncio.run(scenario())
    assert order.index("light") <= 1  # served next or one after, not 21st


def test_a_tenant_may_not_queue_more_than_its_bound() -> None:
    async def scenario() -> None:
        queue = FairQueue(capacity=1, max_waiting_per_tenant=2)
        await queue.acquire("a", 1)
        waiting = [asyncio.create_task(queue.acquire("a", 1)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await queue.acquire("a", 1)
        other = asyncio.create_task(queue.acquire("b", 1))  # another tenant still may
        await asyncio.sleep(0)
        assert queue.waiting == 3
        for _ in range(3):
            queue.release()
        await asyncio.gather(*waiting, other)
        assert queue.waiting == 0

    asyncio.run(scenario())


def test_a_client_that_leaves_while_waiting_frees_its_place_and_more_capacity_serves_at_once() -> (
    None
):
    async def scenario() -> None:
        queue = FairQueue(capacity=1)
        await queue.acquire("a", 1)
        leaving = asyncio.create_task(queue.acquire("a", 1))
        staying = asyncio.create_task(queue.acquire("b", 1))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        assert queue.waiting_for("a") == 0 and queue.waiting == 1
        queue.set_capacity(2)  # a replica became ready
        assert await asyncio.wait_for(staying, 1) >= 0.0
        assert queue.running == 2

    asyncio.run(scenario())


# ---- budgets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "start", "end", "key"),
    [
        (Period.DAY, datetime(2026, 12, 6, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC),
         "2026-12-06"),
        (Period.WEEK, datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC),
         "2026-W49"),
        (Period.MONTH, datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
         "2026-12"),
    ],
)  # fmt: skip
def test_periods_are_calendar_periods_in_utc(
    period: Period, start: datetime, end: datetime, key: str
) -> None:
    now = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)
    assert period_bounds(now, period) == (start, end)
    assert period_key(now, period) == key


def test_a_budget_is_spent_within_its_period_and_renews_with_the_next() -> None:
    text = "tenants:\n  team-a: {keys: [sk-team-a-0001], budget: {tokens: 100, period: day}}\n"
    team = parse_tenants(text, Path(".")).by_name["team-a"]
    now = [datetime(2026, 12, 6, 23, 59, 30, tzinfo=UTC)]
    budgets = Budgets(MemoryLimitStore(), clock=lambda: now[0])

    async def scenario() -> None:
        state = await budgets.state(team)
        assert state is not None and not state.exhausted and state.remaining == 100
        await budgets.charge(team, 60)
        charged = await budgets.charge(team, 45)
        assert charged is not None and charged.exhausted and charged.remaining == 0
        assert charged.resets_in_s == 30
        now[0] = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC)
        renewed = await budgets.state(team)
        assert renewed is not None and renewed.spent == 0 and not renewed.exhausted

    asyncio.run(scenario())


# ---- a tenant's limits together -----------------------------------------------------------


def _limits(text: str) -> tuple[TenantLimits, dict[str, Tenant], list[float]]:
    now = [0.0]
    store = MemoryLimitStore(clock=lambda: now[0])
    limits = TenantLimits(
        store, Budgets(store, clock=lambda: datetime(2026, 12, 6, 12, tzinfo=UTC))
    )
    return limits, dict(parse_tenants(text, Path(".")).by_name), now


def test_the_allow_list_answers_like_an_unknown_model() -> None:
    limits, team, _ = _limits("tenants:\n  a: {keys: [sk-a-000001], models: [llama-8b]}\n")
    refusal = asyncio.run(limits.admit(team["a"], "secret-model", "r1"))
    assert refusal is not None and (refusal.status, refusal.code) == (404, "model_not_found")
    assert asyncio.run(limits.admit(team["a"], "llama-8b", "r2")) is None


def test_rate_and_concurrency_limits_say_when_to_retry() -> None:
    text = "tenants:\n  a: {keys: [sk-a-000001], requestsPerMinute: 2, maxConcurrent: 3}\n"
    limits, team, now = _limits(text)
    a = team["a"]

    async def scenario() -> None:
        assert await limits.admit(a, "m", "r1") is None
        assert await limits.admit(a, "m", "r2") is None
        refusal = await limits.admit(a, "m", "r3")
        assert refusal is not None
        assert (refusal.status, refusal.code) == (429, "rate_limit_exceeded")
        assert refusal.retry_after_s == 30 and refusal.reason == "requests_per_minute"
        now[0] = 60.0
        assert await limits.admit(a, "m", "r4") is None  # three running now
        refusal = await limits.admit(a, "m", "r5")
        assert refusal is not None and refusal.reason == "max_concurrent"
        assert refusal.retry_after_s
        await limits.finished(a, "r1")
        now[0] = 120.0
        assert await limits.admit(a, "m", "r6") is None  # r1's slot is free again

    asyncio.run(scenario())


def test_tokens_per_minute_are_reserved_then_settled_against_usage() -> None:
    text = "tenants:\n  a: {keys: [sk-a-000001], tokensPerMinute: 100}\n"
    limits, team, _ = _limits(text)
    a = team["a"]

    async def scenario() -> None:
        assert await limits.reserve_tokens(a, 90) is None
        await limits.settle(a, reserved=90, used=10)  # 80 come back: 90 left
        assert await limits.reserve_tokens(a, 95) is None  # into debt by 5
        refusal = await limits.reserve_tokens(a, 1)
        assert refusal is not None and refusal.reason == "tokens_per_minute"
        assert refusal.retry_after_s == 4  # 6 tokens at 100 a minute

    asyncio.run(scenario())


def test_a_spent_budget_answers_insufficient_quota_until_the_period_ends() -> None:
    text = "tenants:\n  a: {keys: [sk-a-000001], budget: {tokens: 100, period: day}}\n"
    limits, team, _ = _limits(text)
    a = team["a"]

    async def scenario() -> TenantRefusal | None:
        assert await limits.admit(a, "m", "r1") is None
        await limits.settle(a, reserved=50, used=120)
        await limits.finished(a, "r1")
        return await limits.admit(a, "m", "r2")

    refusal = asyncio.run(scenario())
    assert refusal is not None
    assert (refusal.status, refusal.type, refusal.code) == (
        429, "insufficient_quota", "insufficient_quota",
    )  # fmt: skip
    assert refusal.retry_after_s == 12 * 3600  # noon: the day renews at midnight UTC
    assert "120 used" in refusal.message and "budget of 100 tokens this day" in refusal.message


@contextlib.contextmanager
def _log_lines(name: str) -> Iterator[list[str]]:
    """What the logger `name` writes meanwhile, whatever the process's logging set-up: an
    earlier test's dictConfig may have disabled it or cut it off from pytest's capture."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(name)
    handler, disabled, level = Keep(logging.WARNING), logger.disabled, logger.level
    logger.addHandler(handler)
    logger.disabled = False
    logger.setLevel(logging.WARNING)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.disabled, logger.level = disabled, level


def test_a_bad_reload_keeps_the_tenants_read_before_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  team-a: {keys: [sk-team-a-0001]}\n")
    changes: list[Tenants] = []
    watch = TenantsFileWatch(path, on_change=changes.append)
    assert not watch.reload()  # unchanged
    path.write_text("tenants:\n  team-a: {keys: [sk-team-a-0001], weight: -3}\n")
    with _log_lines("modelplane.gateway.tenants") as logged:
        assert not watch.reload()
    assert watch.problem is not None and "tenants.team-a.weight" in watch.problem
    assert any("keeping the tenants read before" in line for line in logged)
    assert watch.tenants.for_key("sk-team-a-0001") is not None
    path.write_text("tenants:\n  team-b: {keys: [sk-team-b-0001]}\n")
    assert watch.reload() and watch.problem is None
    assert watch.tenants.for_key("sk-team-a-0001") is None
    assert [list(t.by_name) for t in changes] == [["team-b"]]


def test_a_changed_key_file_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "b.keys").write_text("sk-team-b-0001\n")
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  team-b: {keyFile: b.keys}\n")
    watch = TenantsFileWatch(path)
    (tmp_path / "b.keys").write_text("sk-team-b-0002\n")  # a key rotated in the Secret
    assert watch.reload()
    assert watch.tenants.for_key("sk-team-b-0002") is not None
    assert watch.tenants.for_key("sk-team-b-0001") is None


def test_a_bad_file_at_start_stops_the_gateway(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  team-a: {}\n")
    with pytest.raises(ConfigError, match=r"tenants\.team-a"):
        TenantsFileWatch(path)


def test_a_tenant_removed_from_the_file_leaves_no_series() -> None:
    registry = CollectorRegistry()
    metrics = TenantMetrics(registry)
    metrics.admitted("team-a", "m")
    metrics.used("team-a", "m", prompt=5, completion=7)
    metrics.refused("team-b", "budget")
    metrics.budget("team-b", "month", 100, 100)
    metrics.queued("m", "team-b", 0.2)
    text = generate_latest(registry).decode()
    assert (
        'modelplane_gateway_tenant_tokens_total{kind="completion",model="m",tenant="team-a"} 7.0'
        in text
    )
    metrics.keep_only(["team-a"])
    text = generate_latest(registry).decode()
    assert 'tenant="team-b"' not in text and 'tenant="team-a"' in text


@pytest.mark.parametrize(
    ("values", "starts_in_window", "expected"),
    [
        ([5, 5, 9, 12], False, 7),  # counted before the period: only the rise is this period's
        ([5, 5, 9, 12], True, 12),  # began inside the period: counted from zero
        ([10, 14, 2, 6], False, 10),  # a restart after 14: 4, then 2 and 4 more
        ([], False, 0),
    ],
)
def test_a_counter_is_charged_what_its_samples_counted(
    values: list[float], starts_in_window: bool, expected: float
) -> None:
    assert counted_increase(values, starts_in_window=starts_in_window) == expected


def test_usage_rows_sum_replicas_and_give_each_model_s_shares() -> None:
    def series(
        tenant: str, model: str, values: list[int], kind: str | None = None
    ) -> dict[str, Any]:
        labels = {"tenant": tenant, "model": model} | ({"kind": kind} if kind else {})
        return {"metric": labels, "values": [[100 + i, str(v)] for i, v in enumerate(values)]}

    rows = usage_rows(
        requests=[series("a", "m", [0, 2]), series("a", "m", [0, 1]), series("b", "m", [0, 1])],
        tokens=[series("a", "m", [0, 30], "prompt"), series("b", "m", [0, 10], "completion")],
        budgets=[{"metric": {"tenant": "a"}, "value": [0, "100"]}],
        spent=[{"metric": {"tenant": "a"}, "value": [0, "30"]}],
        window_start=0.0,
        step_s=1.0,
    )
    assert [(r.tenant, r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("a", 3, 30, 0), ("b", 1, 0, 10),
    ]  # fmt: skip
    assert model_shares(rows) == {("a", "m"): 0.75, ("b", "m"): 0.25}
    table = render_table(rows, "title")
    assert "30 of 100 (30%)" in table and "m 75%" in table


def test_a_tenant_s_series_exist_at_zero_before_the_first_count() -> None:
    """So the first refusal or queue wait shows in rate(), and reaches the alert."""
    registry = CollectorRegistry()
    TenantMetrics(registry).prepare("team-a", ["m"])
    value = registry.get_sample_value
    throttled = {"tenant": "team-a", "reason": "requests_per_minute"}
    assert value("modelplane_gateway_tenant_throttled_total", throttled) == 0
    assert value("modelplane_gateway_queue_seconds_count", {"model": "m", "tenant": "team-a"}) == 0
    tokens = {"tenant": "team-a", "model": "m", "kind": "prompt"}
    assert value("modelplane_gateway_tenant_tokens_total", tokens) == 0


def test_a_freed_slot_waits_briefly_for_its_tenant_when_the_queue_would_serve_it_first() -> None:
    """Anticipation: a one-at-a-time client of short requests gets its slot back instead of
    waiting a whole turnover behind a flood of long ones; if it does not come back, the
    slot goes to the queue after the short wait."""

    async def scenario() -> None:
        # Long enough that a loaded machine's scheduling cannot outlast it by accident.
        queue = FairQueue(capacity=1, anticipation_s=0.5)
        assert await queue.acquire("light", 1, cost=1) == 0.0  # tags: light 0, next 1
        flood = [asyncio.create_task(queue.acquire("heavy", 1, cost=10)) for _ in range(3)]
        await asyncio.sleep(0)  # heavy's tags: 0, 10, 20
        queue.release("light")  # heavy's first (tag 0) is due before light's next (1)
        await asyncio.wait_for(asyncio.shield(flood[0]), 1)
        light = asyncio.create_task(queue.acquire("light", 1, cost=1))  # tag 1
        await asyncio.sleep(0)
        queue.release("heavy")  # heavy still waits, so nothing is kept: light goes
        await asyncio.wait_for(light, 1)
        queue.release("light")  # light's next tag (2) comes before heavy's (10): kept
        await asyncio.sleep(0)  # anything dispatched would be done now
        assert not flood[1].done()
        assert await queue.acquire("light", 1, cost=1) == 0.0  # at once
        queue.release("light")  # kept again, but light does not come back
        assert await asyncio.wait_for(asyncio.shield(flood[1]), 5) > 0.0
        queue.release("heavy")
        await asyncio.wait_for(asyncio.shield(flood[2]), 1)
        queue.release("heavy")
        assert queue.running == 0 and queue.waiting == 0

    asyncio.run(scenario())


def test_costs_share_the_model_s_work_not_request_counts() -> None:
    """While both wait, a tenant of requests ten times shorter gets ten turns per turn."""

    async def scenario() -> list[str]:
        queue = FairQueue(capacity=1)
        await queue.acquire("busy", 1)
        order: list[str] = []

        async def one(tenant: str, cost: float) -> None:
            await queue.acquire(tenant, 1, cost)
            order.append(tenant)

        tasks = [asyncio.create_task(one("long", 10)) for _ in range(3)]
        tasks += [asyncio.create_task(one("short", 1)) for _ in range(20)]
        await asyncio.sleep(0)
        for _ in range(23):
            queue.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    assert order[:12].count("short") >= 10, order
