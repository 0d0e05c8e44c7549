"""Tenants at the gateway: keys that belong to teams, their limits, budgets and turns.

A real `GatewayApp` over a real socket, called with the official `openai`
client (no retries, so each refusal is seen as sent), in front of stub
replicas (tests/unit/gateway/conftest.py says why stubs here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from modelplane.gateway.routing.routes import ModelRoute
from modelplane.gateway.tenants.admission import TenantLimits
from modelplane.gateway.tenants.budgets import Budgets
from modelplane.gateway.tenants.config import TenantsFileWatch
from modelplane.gateway.tenants.metrics import TenantMetrics
from modelplane.gateway.tenants.stores import MemoryLimitStore
from modelplane.gateway.tenants.tenancy import Tenancy
from tests.unit.gateway.conftest import (
    GatewayFactory,
    ServedGateway,
    StubFactory,
    eventually,
    route,
)

TENANTS = """
tenants:
  heavy:
    keys: [sk-heavy-000001]
    weight: 2
  light:
    keys: [sk-light-000001]
  limited:
    keys: [sk-limited-0001]
    requestsPerMinute: 2
    models: [smollm2]
  thrifty:
    keys: [sk-thrifty-001]
    budget: {tokens: 10, period: day}
"""


def tenancy_from(
    path: Path, *, clock: Callable[[], datetime] | None = None, max_queued: int = 256
) -> Callable[[CollectorRegistry], Tenancy]:
    def make(registry: CollectorRegistry) -> Tenancy:
        store = MemoryLimitStore()
        budgets = Budgets(store, clock=clock) if clock else Budgets(store)
        return Tenancy(
            TenantLimits(store, budgets),
            TenantMetrics(registry),
            watch=TenantsFileWatch(path),
            max_queued_per_tenant=max_queued,
        )

    return make


def client(gateway: ServedGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def with_concurrency(r: ModelRoute, n: int) -> ModelRoute:
    return ModelRoute(r.name, r.tracks, r.routing, concurrency=n)


async def ask(gateway: ServedGateway, key: str, model: str = "smollm2", **extra: Any) -> Any:
    return await client(gateway, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **extra
    )


async def test_a_tenant_key_is_served_and_counted_and_any_other_key_is_refused(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (replica,) = await stub_replicas(1)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gateway = await serve_gateway(
        {"smollm2": route("smollm2", replica.url)}, tenancy=tenancy_from(tmp_path / "tenants.yaml")
    )
    answer = await ask(gateway, "sk-light-000001")
    assert answer.choices[0].message.content == "hello"
    with pytest.raises(openai.AuthenticationError):
        await ask(gateway, "sk-made-up-00001")
    labels = {"tenant": "light", "model": "smollm2"}
    await eventually(
        lambda: (
            gateway.metric("modelplane_gateway_tenant_tokens_total", kind="completion", **labels)
            == 2
        )
    )
    assert gateway.metric("modelplane_gateway_tenant_requests_total", **labels) == 1
    assert gateway.metric("modelplane_gateway_tenant_tokens_total", kind="prompt", **labels) == 5
    # The client's key never reaches the replica.
    assert "sk-light" not in str(replica.seen[0]["headers"])


async def test_limits_and_the_allow_list_answer_in_openai_s_terms(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (replica,) = await stub_replicas(1)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    routes = {"smollm2": route("smollm2", replica.url), "llama": route("llama", replica.url)}
    gateway = await serve_gateway(routes, tenancy=tenancy_from(tmp_path / "tenants.yaml"))
    models = await client(gateway, "sk-limited-0001").models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    with pytest.raises(openai.NotFoundError) as missing:
        await ask(gateway, "sk-limited-0001", model="llama")
    assert missing.value.code == "model_not_found"
    assert "llama" not in str(missing.value.body).replace("'llama'", "")  # lists nothing else
    await ask(gateway, "sk-limited-0001")  # two a minute; the refused one took none
    await ask(gateway, "sk-limited-0001")
    with pytest.raises(openai.RateLimitError) as limited:
        await ask(gateway, "sk-limited-0001")
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "30"
    assert (
        gateway.metric(
            "modelplane_gateway_tenant_throttled_total",
            tenant="limited",
            reason="requests_per_minute",
        )
        == 1
    )


async def test_a_budget_is_spent_then_refused_as_insufficient_quota_until_the_next_day(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (replica,) = await stub_replicas(1)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    now = [datetime(2026, 12, 6, 23, 0, tzinfo=UTC)]
    gateway = await serve_gateway(
        {"smollm2": route("smollm2", replica.url)},
        tenancy=tenancy_from(tmp_path / "tenants.yaml", clock=lambda: now[0]),
    )
    await ask(gateway, "sk-thrifty-001")  # 7 tokens of 10
    await ask(gateway, "sk-thrifty-001")  # 14: over
    spent = {"tenant": "thrifty", "period": "day"}
    await eventually(
        lambda: gateway.metric("modelplane_gateway_tenant_budget_spent_tokens", **spent) == 14
    )
    with pytest.raises(openai.RateLimitError) as refused:
        await ask(gateway, "sk-thrifty-001")
    assert refused.value.code == "insufficient_quota" and refused.value.type == "insufficient_quota"
    assert refused.value.response.headers["retry-after"] == "3600"
    assert "budget of 10 tokens this day" in refused.value.message
    now[0] = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC)
    assert (await ask(gateway, "sk-thrifty-001")).choices[0].message.content == "hello"


async def test_a_saturated_model_serves_waiting_tenants_two_to_one_by_weight(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    """One replica running one request at a time; both tenants queue 12 requests behind a
    held one; then the replica lets go, and the queue decides who goes next."""
    (replica,) = await stub_replicas(1)
    replica.mode = "silent"  # answers nothing until released
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gateway = await serve_gateway(
        {"smollm2": with_concurrency(route("smollm2", replica.url), 1)},
        tenancy=tenancy_from(tmp_path / "tenants.yaml"),
    )
    first = asyncio.create_task(ask(gateway, "sk-light-000001", user="first"))
    await eventually(lambda: len(replica.seen) == 1)
    tenancy = gateway.app.tenancy
    assert tenancy is not None
    calls = []
    for _ in range(12):
        calls.append(asyncio.create_task(ask(gateway, "sk-heavy-000001", user="heavy")))
        calls.append(asyncio.create_task(ask(gateway, "sk-light-000001", user="light")))
    await eventually(lambda: tenancy.queues["smollm2"].waiting == 24)
    waiting = {"model": "smollm2", "tenant": "heavy"}
    assert gateway.metric("modelplane_gateway_queue_waiting", **waiting) == 12
    replica.release.set()
    await asyncio.gather(first, *calls)
    order = [seen["body"]["user"] for seen in replica.seen[1:]]
    # While both wait, heavy (weight 2) is served twice for each of light's turns.
    assert order[:18].count("heavy") == 12 and order[:18].count("light") == 6, order
    assert gateway.metric("modelplane_gateway_queue_seconds_count", **waiting) == 12


async def test_a_tenant_may_queue_only_so_many_and_leaving_frees_its_place(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (replica,) = await stub_replicas(1)
    replica.mode = "silent"
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gateway = await serve_gateway(
        {"smollm2": with_concurrency(route("smollm2", replica.url), 1)},
        tenancy=tenancy_from(tmp_path / "tenants.yaml", max_queued=2),
    )
    tenancy = gateway.app.tenancy
    assert tenancy is not None
    running = asyncio.create_task(ask(gateway, "sk-heavy-000001"))
    await eventually(lambda: len(replica.seen) == 1)
    queued = [asyncio.create_task(ask(gateway, "sk-heavy-000001")) for _ in range(2)]
    await eventually(lambda: tenancy.queues["smollm2"].waiting_for("heavy") == 2)
    with pytest.raises(openai.RateLimitError) as full:
        await ask(gateway, "sk-heavy-000001")
    assert "already has 2 requests waiting" in full.value.message
    # A client that gives up while waiting leaves the queue.
    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(
                f"{gateway.url}/v1/chat/completions",
                headers={"Authorization": "Bearer sk-light-000001"},
                json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
            )
    await eventually(lambda: tenancy.queues["smollm2"].waiting_for("light") == 0)
    replica.release.set()
    await asyncio.gather(running, *queued)


async def test_a_reload_changes_keys_at_once_and_a_bad_one_changes_nothing(
    tmp_path: Path, stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (replica,) = await stub_replicas(1)
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    gateway = await serve_gateway(
        {"smollm2": route("smollm2", replica.url)}, tenancy=tenancy_from(path)
    )
    tenancy = gateway.app.tenancy
    assert tenancy is not None and tenancy.watch is not None
    path.write_text(TENANTS.replace("sk-light-000001", "sk-light-000002"))
    assert tenancy.watch.reload()
    with pytest.raises(openai.AuthenticationError):
        await ask(gateway, "sk-light-000001")
    await ask(gateway, "sk-light-000002")
    path.write_text(TENANTS.replace("weight: 2", "weight: -2"))
    assert not tenancy.watch.reload()
    assert tenancy.watch.problem is not None and "tenants.heavy.weight" in tenancy.watch.problem
    await ask(gateway, "sk-light-000002")  # the tenants read before still hold
