"""The gateway's scale-from-zero signal: the demand Lease it writes, and what it leaves alone.

The writer runs the official `kubernetes` client against KMock's Kubernetes
emulator (tests/support/kube_emulator.py: no API server can run here; the
emulator adds uids, resourceVersions and their preconditions, and the garbage
collector). What is asserted is what the operator and a cluster admin see:
the Lease, its owner, and that nothing else changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from modelplane.api import contract
from modelplane.api.demand import (
    DEMAND_HELD,
    demand_lease_name,
    demand_signal,
    held_count,
    queued_count,
)
from modelplane.gateway.discovery.demand_leases import DemandLeases
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute
from tests.support.kube_emulator import CLUSTER_RESOURCES, EmulatorThread, Kubectl

NS = "llm"
LEASES = "coordination.k8s.io/v1"
WOKE = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.fixture
def cluster() -> Iterator[tuple[EmulatorThread, Kubectl, client.ApiClient]]:
    with EmulatorThread(CLUSTER_RESOURCES) as emulator:
        kubectl = Kubectl(emulator.url)
        configuration = client.Configuration()
        configuration.host = emulator.url
        api = client.ApiClient(configuration)
        yield emulator, kubectl, api
        api.close()  # type: ignore[no-untyped-call]
        kubectl.close()


def create_llmd(kubectl: Kubectl, name: str = "chat") -> dict[str, Any]:
    return kubectl.create(
        contract.PLURAL,
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"source": "hf://x"}},
        },
    )


def writer(api: client.ApiClient, at: datetime) -> DemandLeases:
    return DemandLeases(lambda: api, hold_seconds=120, holder="gateway-7", clock=lambda: at)


def route(*llmds: str) -> ModelRoute:
    return ModelRoute("llama", tracks=(), demand=tuple(DemandTarget(NS, n) for n in llmds))


async def test_held_requests_create_then_renew_a_lease_the_llmdeployment_owns(
    cluster: tuple[EmulatorThread, Kubectl, client.ApiClient],
) -> None:
    emulator, kubectl, api = cluster
    llmd = create_llmd(kubectl)

    await writer(api, WOKE).record(route("chat"), 3)
    lease = kubectl.get(LEASES, "leases", NS, "chat-scale-from-zero")
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "name": "chat",
         "uid": llmd["metadata"]["uid"]}
    ]  # fmt: skip
    assert lease["metadata"]["labels"][contract.LABEL_LLMDEPLOYMENT] == "chat"
    assert lease["spec"] == {
        "holderIdentity": "gateway-7",
        "renewTime": "2026-03-01T12:00:00.250000Z",
        "leaseDurationSeconds": 120,
    }
    assert lease["metadata"]["annotations"][DEMAND_HELD] == "3"

    later = WOKE + timedelta(seconds=2)
    await writer(api, later).record(route("chat"), 11)
    signal = demand_signal(kubectl.get(LEASES, "leases", NS, "chat-scale-from-zero"))
    assert signal.requested_epoch() == later.timestamp() and held_count(signal.held) == 11

    # The LLMDeployment was read (for its uid), never written.
    after = kubectl.get(contract.API_VERSION, contract.PLURAL, NS, "chat")
    assert after["metadata"]["resourceVersion"] == llmd["metadata"]["resourceVersion"]
    writes = [
        r.method.value
        for r in emulator.requests()
        if contract.PLURAL in r.url.path and r.method.value != "GET"
    ]
    assert writes == ["POST"]  # the test's own create


async def test_a_lease_of_that_name_that_is_not_the_gateways_is_left_alone(
    cluster: tuple[EmulatorThread, Kubectl, client.ApiClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Another controller's Lease named like the demand Lease (a leader election, say):
    the gateway neither rewrites nor takes it over; the hold goes on."""
    _, kubectl, api = cluster
    create_llmd(kubectl)
    theirs = kubectl.create(
        "leases",
        {
            "apiVersion": LEASES,
            "kind": "Lease",
            "metadata": {"name": demand_lease_name("chat"), "namespace": NS},
            "spec": {"holderIdentity": "their-leader", "leaseDurationSeconds": 15},
        },
    )
    await writer(api, WOKE).record(route("chat"), 1)
    now = kubectl.get(LEASES, "leases", NS, demand_lease_name("chat"))
    assert now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert now["spec"]["holderIdentity"] == "their-leader"
    (logged,) = [r for r in caplog.records if r.getMessage() == "could not record demand"]
    assert "is not labelled as the demand Lease of LLMDeployment chat" in getattr(
        logged, "error", ""
    )


async def test_no_llmdeployment_no_lease(
    cluster: tuple[EmulatorThread, Kubectl, client.ApiClient],
) -> None:
    """A route whose LLMDeployment is gone: nothing is created, the hold goes on."""
    emulator, _, api = cluster
    await writer(api, WOKE).record(route("gone"), 1)
    assert not [r for r in emulator.requests() if r.method.value == "POST"]


def test_a_lease_name_stays_a_valid_name_for_any_llmdeployment_name() -> None:
    assert demand_lease_name("chat") == "chat-scale-from-zero"
    long = demand_lease_name("a" * 253)
    assert len(long) <= 253 and long.endswith("-scale-from-zero")
    assert long != demand_lease_name("a" * 252 + "b")


@pytest.mark.parametrize(
    "spec",
    [
        {"renewTime": 5, "leaseDurationSeconds": "120"},
        {"renewTime": "soon", "leaseDurationSeconds": -1},
        {},
    ],
)
def test_a_garbled_lease_reads_as_no_demand(spec: dict[str, Any]) -> None:
    lease = {"metadata": {"annotations": {DEMAND_HELD: ["3"]}}, "spec": spec}
    signal = demand_signal(lease)
    assert signal.requested_epoch() is None and held_count(signal.held) is None
    assert not signal.stale(0.0)


async def test_queued_requests_are_recorded_without_renewing_the_scale_from_zero_demand(
    cluster: tuple[EmulatorThread, Kubectl, client.ApiClient],
) -> None:
    """A saturated model's queue at the gateway: the count the autoscaler adds to its
    replicas' waiting, written beside (not as) the scale-from-zero demand."""
    _, kubectl, api = cluster
    create_llmd(kubectl)
    await writer(api, WOKE).record_queued(route("chat"), 7)  # no Lease yet: created
    lease = kubectl.get(LEASES, "leases", NS, "chat-scale-from-zero")
    assert queued_count(demand_signal(lease).queued, WOKE.timestamp()) == 7
    assert held_count(demand_signal(lease).held) == 0
    await writer(api, WOKE).record(route("chat"), 2)  # held once, at WOKE
    later = WOKE + timedelta(seconds=5)
    await writer(api, later).record_queued(route("chat"), 0)  # the queue emptied
    signal = demand_signal(kubectl.get(LEASES, "leases", NS, "chat-scale-from-zero"))
    assert queued_count(signal.queued, later.timestamp()) == 0
    assert signal.requested_epoch() == WOKE.timestamp() and held_count(signal.held) == 2
