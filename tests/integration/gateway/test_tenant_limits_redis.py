"""Tenants' limits and budgets shared by gateway replicas through a real redis-server.

Each `TenantLimits` below is what one gateway replica holds, with its own
Redis connection: what one charges, the others see; a Redis restart loses
only what Redis itself held (no persistence here); with Redis gone a
fail-open replica counts in its own memory and a fail-closed one refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from modelplane.gateway.tenants.admission import TenantLimits
from modelplane.gateway.tenants.budgets import Budgets
from modelplane.gateway.tenants.config import Tenant, parse_tenants
from modelplane.gateway.tenants.stores import (
    FailoverLimitStore,
    MemoryLimitStore,
    RedisLimitStore,
    StoreUnavailableError,
    redis_client,
)
from tests.integration.gateway.conftest import GatewayProcess
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.unit.gateway.conftest import StubFactory
from tests.unit.gateway.conftest import stub_replicas as stub_replicas  # a fixture

pytestmark = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists(), reason="redis-server is installed by `make test`"
)

TENANTS = """
tenants:
  team-a:
    keys: [sk-team-a-0001]
    requestsPerMinute: 3
    tokensPerMinute: 1000
    maxConcurrent: 2
    budget: {tokens: 500, period: month}
"""
NOON = datetime(2026, 12, 6, 12, tzinfo=UTC)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def team_a() -> Tenant:
    return parse_tenants(TENANTS, Path(".")).by_name["team-a"]


def replica(url: str, *, fail_open: bool = True, clock: list[float] | None = None) -> TenantLimits:
    """One gateway replica's view: its own connection, its own memory to fall back on."""
    client = redis_client(url, 1.0)
    now = clock if clock is not None else [0.0]
    store = FailoverLimitStore(
        RedisLimitStore(client, prefix="test"),
        MemoryLimitStore(),
        fail_open=fail_open,
        clock=lambda: now[0],
    )
    return TenantLimits(store, Budgets(store, clock=lambda: NOON))


def test_two_replicas_share_one_budget_one_rate_and_one_concurrency_limit(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        one, two = replica(redis_server.url), replica(redis_server.url)
        a = team_a()
        # maxConcurrent 2 across both replicas.
        assert await one.admit(a, "m", "r1") is None
        assert await two.admit(a, "m", "r2") is None
        refusal = await one.admit(a, "m", "r3")
        assert refusal is not None and refusal.reason == "max_concurrent"
        await one.finished(a, "r1")
        # requestsPerMinute 3: r1, r2 and r4 (r3 took none); the fourth, on either replica, waits.
        assert await two.admit(a, "m", "r4") is None
        await two.finished(a, "r2")
        refusal = await one.admit(a, "m", "r5")
        assert refusal is not None and refusal.reason == "requests_per_minute"
        assert refusal.retry_after_s == 20
        # The budget: 300 charged through one and 250 through two spend the 500.
        await one.settle(a, reserved=300, used=300)
        state = await two.settle(a, reserved=300, used=250)
        assert state is not None and state.spent == 550 and state.exhausted
        refusal = await one.admit(a, "m", "r6")
        assert refusal is not None and refusal.code == "insufficient_quota"

    asyncio.run(scenario())


def test_concurrency_slots_of_a_replica_that_died_expire_with_their_lease(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_server.url)
        store = RedisLimitStore(client, prefix="lease", lease_s=0.3)
        assert await store.enter("team-a", 1, "held-by-a-dead-replica")
        assert not await store.enter("team-a", 1, "r2")
        for _ in range(100):  # the lease runs out (Redis's clock), then the slot is free
            if await store.enter("team-a", 1, "r2"):
                return
            await asyncio.sleep(0.05)
        pytest.fail("the dead replica's slot never expired")

    asyncio.run(scenario())


def test_with_redis_gone_a_fail_open_replica_counts_in_memory_and_returns_to_redis(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        clock = [0.0]
        limits = replica(redis_server.url, clock=clock)
        store = limits.store
        assert isinstance(store, FailoverLimitStore)
        a = team_a()
        await limits.settle(a, reserved=100, used=100)
        redis_server.stop()
        # Still serving: the budget and limits are this replica's own meanwhile.
        assert await limits.admit(a, "m", "r1") is None
        assert not store.up
        await limits.settle(a, reserved=100, used=100)
        redis_server.start()  # same port, empty (no persistence)
        clock[0] += 6  # past the pause before Redis is tried again
        state = await limits.settle(a, reserved=10, used=10)
        assert store.up
        assert state is not None and state.spent == 10  # Redis's count, from its restart

    asyncio.run(scenario())


def test_with_redis_gone_a_fail_closed_replica_refuses(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        limits = replica(redis_server.url, fail_open=False)
        a = team_a()
        assert await limits.admit(a, "m", "r1") is None
        redis_server.stop()
        with pytest.raises(StoreUnavailableError):
            await limits.admit(a, "m", "r2")

    asyncio.run(scenario())


# ---- two gateway processes ----------------------------------------------------------------

SHARED = """
tenants:
  team-a:
    keys: [sk-team-a-0001]
    budget: {tokens: 10, period: month}
"""


async def _ask(gateway: GatewayProcess, client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": "Bearer sk-team-a-0001"},
        json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
    )


async def test_two_gateway_processes_share_one_budget_through_redis_and_outlive_it(
    tmp_path: Path, redis_server: RedisServer, stub_replicas: StubFactory
) -> None:
    """Each stub answer uses 7 tokens; the budget is 10. One request through each gateway
    spends it for both. Redis restarts empty (no persistence here): the count starts again.
    Redis gone: the fail-open gateway serves on, counting in its own memory; the
    fail-closed one answers 503."""
    (replica,) = await stub_replicas(1)
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(SHARED)

    def gateway(name: str, failure: str) -> GatewayProcess:
        return GatewayProcess.static(
            tmp_path, name, [replica.url], "--tenants", str(tenants),
            "--redis-url", redis_server.url, "--redis-failure", failure,
        ).start()  # fmt: skip

    one, two = gateway("one", "open"), gateway("two", "closed")
    try:
        await one.wait_synced_async()
        await two.wait_synced_async()
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await _ask(one, client)).status_code == 200  # 7 of 10
            assert (await _ask(two, client)).status_code == 200  # 14: spent, for both
            spent = await _ask(one, client)
            assert spent.status_code == 429, spent.text
            assert spent.json()["error"]["code"] == "insufficient_quota"

            redis_server.stop()
            redis_server.start()  # empty: the month's count starts again
            assert (await _ask(two, client)).status_code == 200

            redis_server.stop()
            assert (await _ask(one, client)).status_code == 200  # open: its own memory
            closed = await _ask(two, client)
            assert closed.status_code == 503, closed.text
            assert closed.json()["error"]["code"] == "limits_unavailable"
            assert closed.headers["retry-after"] == "1"
        assert one.metric("modelplane_gateway_shared_store_up", store="redis") == 0
    finally:
        one.stop()
        two.stop()
