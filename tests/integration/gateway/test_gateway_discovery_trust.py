"""A running gateway routes only to Services the operator owns, and one LLMDeployment per name.

`modelplane gateway --discovery kubernetes` runs as a process against KMock's
Kubernetes emulator (see cluster_objects.py). Beside a model the operator
deployed, someone who may create Services plants look-alikes: the model-server
labels and the served-model annotation without the operator's managed-by
label, with it but no owner reference, or with an owner reference whose uid is
not the LLMDeployment's. A second team deploys the same model name later, in
a namespace that sorts first; a third serves a model in a namespace the
gateway does not watch. What clients see: every request reaches the replica
the first LLMDeployment owns, the conflict is logged and counted, and the
later LLMDeployment takes over the name only once the first is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from modelplane.api import contract
from tests.integration.gateway.cluster_objects import Cluster
from tests.integration.gateway.conftest import GatewayProcess, metric_sum
from tests.unit.gateway.conftest import StubFactory

CHAT = "/v1/chat/completions"
FIRST, LATER, OUTSIDE = "team-a", "team-0", "elsewhere"


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def look_alike(name: str, *, managed: bool, owner_uid: str | None) -> dict[str, Any]:
    """A Service that claims to serve model `chat` in FIRST, as labels and annotations go."""
    labels = {
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
        contract.LABEL_LLMDEPLOYMENT: "chat",
    }
    if managed:
        labels[contract.LABEL_MANAGED_BY] = contract.MANAGED_BY
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": FIRST,
        "labels": labels,
        "annotations": {contract.ANNOTATION_SERVED_MODEL: "chat"},
    }
    if owner_uid is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "name": "chat",
             "uid": owner_uid, "controller": True}
        ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"ports": [{"name": contract.SERVER_PORT_NAME, "port": 8000}]},
    }


@contextlib.asynccontextmanager
async def running(gateway: GatewayProcess) -> AsyncIterator[GatewayProcess]:
    gateway.start()
    try:
        yield await gateway.wait_synced_async()
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_only_the_operators_services_and_the_first_claim_to_a_name_take_traffic(
    tmp_path: Path, stub_replicas: StubFactory, cluster: Cluster
) -> None:
    owned, later_team, harvester = await stub_replicas(3)
    first = cluster.llmdeployment(FIRST, "chat", "chat", created="2026-01-01T00:00:00Z")
    cluster.model_service(first, port_of(owned.url))
    for name, managed, uid in (
        ("chat-unmanaged", False, None),
        ("chat-orphan", True, None),
        ("chat-forged", True, "not-" + first["metadata"]["uid"]),
    ):
        cluster.kubectl.create("services", look_alike(name, managed=managed, owner_uid=uid))
        cluster.endpoints(FIRST, name, port_of(harvester.url))
    later = cluster.llmdeployment(LATER, "chat", "chat", created="2026-02-01T00:00:00Z")
    cluster.model_service(later, port_of(later_team.url))
    unwatched = cluster.llmdeployment(OUTSIDE, "other", "other")
    cluster.model_service(unwatched, port_of(harvester.url))

    gateway = cluster.gateway(tmp_path, "gateway", "--namespace", FIRST, "--namespace", LATER)
    async with running(gateway), httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        answers = [await client.post(CHAT, json=chat("chat")) for _ in range(6)]
        other = await client.post(CHAT, json=chat("other"))
        models = (await client.get("/v1/models")).json()["data"]
        scrape = (await client.get(gateway.metrics_url)).text

        assert [a.status_code for a in answers] == [200] * 6
        assert len(owned.seen) == 6 and later_team.seen == [] and harvester.seen == []
        assert other.status_code == 404  # served only where the gateway does not look
        assert [m["id"] for m in models] == ["chat"]
        conflicts = "modelplane_gateway_model_name_conflicts"
        assert metric_sum(scrape, conflicts, model="chat") == 1
        log = gateway.log()
        assert f"model name 'chat' is served by {FIRST}/chat (created first)" in log
        assert f"refused: {LATER}/chat" in log
        assert f"Service {FIRST}/chat-orphan takes no traffic" in log
        assert f"Service {FIRST}/chat-forged takes no traffic" in log

        # The first LLMDeployment is deleted (its Service goes with it): the name passes
        # to the other team's, and the conflict is over.
        cluster.kubectl.delete(contract.API_VERSION, contract.PLURAL, FIRST, "chat")
        async with asyncio.timeout(20):
            while not later_team.seen:
                assert (await client.post(CHAT, json=chat("chat"))).status_code in (200, 503)
                await asyncio.sleep(0.1)
        scrape = (await client.get(gateway.metrics_url)).text
        assert metric_sum(scrape, conflicts, model="chat") == 0
        assert harvester.seen == []
