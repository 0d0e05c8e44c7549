"""Kubernetes discovery: from the operator's Services and EndpointSlices to routes.

The pure join is tested on plain objects. The watch itself runs the
official `kubernetes` client against KMock's KubernetesEmulator, an
in-memory emulator of the Kubernetes API (list, watch, create, patch,
delete) served over real HTTP: no cluster runs here, and the emulator is
the closest stand-in. The objects are the ones the operator creates, by
the names in `modelplane.api.contract`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import pytest
from kubernetes import client

from modelplane.api import contract
from modelplane.gateway.discovery.kubernetes import (
    KubernetesDiscovery,
    model_service,
    routes_from_cluster,
    slice_endpoints,
)
from modelplane.gateway.discovery.ownership import Owner, owner_of
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute, Routing, RoutingTable

NS = "llm"


def service(
    name: str,
    model: str,
    *,
    track: str = contract.TRACK_STABLE,
    weight: str | None = None,
    routing: str | None = None,
    llmd: str = "chat",
    namespace: str = NS,
    uid: str | None = None,
) -> dict[str, Any]:
    """A model Service as the operator writes it: its labels, annotations and owner
    reference to LLMDeployment `llmd` (whose uid is `uid`, or `uid-<llmd>`)."""
    annotations = {contract.ANNOTATION_SERVED_MODEL: model, contract.ANNOTATION_REVISION: "r1"}
    if weight is not None:
        annotations[contract.ANNOTATION_TRAFFIC_WEIGHT] = weight
    if routing is not None:
        annotations[contract.ANNOTATION_ROUTING] = routing
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                contract.LABEL_PART_OF: contract.PART_OF,
                contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
                contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                contract.LABEL_LLMDEPLOYMENT: llmd,
                contract.LABEL_TRACK: track,
            },
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": contract.API_VERSION,
                    "kind": contract.KIND,
                    "name": llmd,
                    "uid": uid or f"uid-{llmd}",
                    "controller": True,
                }
            ],
        },
        "spec": {"ports": [{"name": contract.SERVER_PORT_NAME, "port": contract.SERVER_PORT}]},
    }


def llmdeployment(
    name: str = "chat",
    namespace: str = NS,
    *,
    uid: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    key_secret: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"source": "hf://x"}}
    if key_secret is not None:
        spec["auth"] = {"apiKeySecretRef": {"name": key_secret}}
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": created,
        },
        "spec": spec,
    }


def owners(*objects: dict[str, Any]) -> dict[tuple[str, str], Owner]:
    found = {}
    for obj in objects:
        owner = owner_of(obj)
        assert owner is not None
        found[owner.key] = owner
    return found


def endpoint_slice(
    name: str, service_name: str, endpoints: list[tuple[str, bool | None, bool | None]]
) -> dict[str, Any]:
    """endpoints: (address, ready, terminating); None leaves the condition out."""
    items = []
    for address, ready, terminating in endpoints:
        conditions: dict[str, bool] = {}
        if ready is not None:
            conditions["ready"] = ready
        if terminating is not None:
            conditions["terminating"] = terminating
        items.append({"addresses": [address], "conditions": conditions})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "metrics", "port": 9400}, {"name": "http", "port": 8000}],
        "endpoints": items,
    }


def test_only_ready_not_terminating_endpoints_count() -> None:
    parsed = slice_endpoints(
        endpoint_slice(
            "s",
            "svc",
            [
                ("10.0.0.1", True, None),
                ("10.0.0.2", None, None),  # unknown: the API says take it as ready
                ("10.0.0.3", False, None),
                ("10.0.0.4", True, True),
            ],
        )
    )
    assert parsed == ((NS, "svc"), ("http://10.0.0.1:8000", "http://10.0.0.2:8000"))


def test_ipv6_addresses_are_bracketed() -> None:
    obj = endpoint_slice("s", "svc", [("fd00::7", True, None)])
    obj["addressType"] = "IPv6"
    assert slice_endpoints(obj) == ((NS, "svc"), ("http://[fd00::7]:8000",))


def test_services_and_slices_join_into_weighted_tracks() -> None:
    services = {
        (NS, s["metadata"]["name"]): parsed
        for s in (
            service("chat-stable", "llama", weight="90", routing="prefix"),
            service("chat-canary", "llama", track=contract.TRACK_CANARY, weight="10"),
            service("embed", "minilm", llmd="embed"),
        )
        if (parsed := model_service(s)) is not None
    }
    slices = {
        (NS, "a"): slice_endpoints(endpoint_slice("a", "chat-stable", [("10.0.0.1", True, None)])),
        (NS, "b"): slice_endpoints(endpoint_slice("b", "chat-stable", [("10.0.0.2", True, None)])),
        (NS, "c"): slice_endpoints(endpoint_slice("c", "chat-canary", [("10.0.1.1", True, None)])),
    }
    routes = routes_from_cluster(
        services,
        {k: v for k, v in slices.items() if v is not None},
        owners(llmdeployment("chat"), llmdeployment("embed")),
    ).routes
    llama = routes["llama"]
    assert llama.routing is Routing.PREFIX
    assert [(t.name, t.weight, t.upstreams) for t in llama.tracks] == [
        ("stable", 90, ("http://10.0.0.1:8000", "http://10.0.0.2:8000")),
        ("canary", 10, ("http://10.0.1.1:8000",)),
    ]
    assert llama.demand == (DemandTarget(NS, "chat"),)
    # A model with Services but no ready endpoint is known (scaled to zero), not ready.
    assert not routes["minilm"].ready and routes["minilm"].demand == (DemandTarget(NS, "embed"),)


def test_a_service_without_the_model_annotation_is_ignored() -> None:
    obj = service("x", "m")
    del obj["metadata"]["annotations"][contract.ANNOTATION_SERVED_MODEL]
    assert model_service(obj) is None


def test_missing_weights_default_to_all_traffic_on_stable() -> None:
    stable = model_service(service("s", "m"))
    canary = model_service(service("c", "m", track=contract.TRACK_CANARY))
    assert stable is not None and stable.weight == 100
    assert canary is not None and canary.weight == 0


# ---- against the emulator --------------------------------------------------


@pytest.fixture
def emulator(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    kmock.resources["v1/services"] = kmock.ResourceInfo(kind="Service", namespaced=True)
    kmock.resources["discovery.k8s.io/v1/endpointslices"] = kmock.ResourceInfo(
        kind="EndpointSlice", namespaced=True
    )
    kmock.resources[f"{contract.API_VERSION}/{contract.PLURAL}"] = kmock.ResourceInfo(
        kind=contract.KIND, namespaced=True
    )
    kmock.resources["v1/secrets"] = kmock.ResourceInfo(kind="Secret", namespaced=True)
    return kmock


@pytest.fixture
def api_client(emulator: kmock.KubernetesEmulator) -> Iterator[Callable[[], client.ApiClient]]:
    configuration = client.Configuration()
    configuration.host = str(emulator.url).rstrip("/")
    clients: list[client.ApiClient] = []

    def factory() -> client.ApiClient:
        clients.append(client.ApiClient(configuration))
        return clients[-1]

    yield factory
    for c in clients:
        c.close()  # type: ignore[no-untyped-call]


async def until(table: RoutingTable, check: Callable[[dict[str, ModelRoute]], bool]) -> None:
    async with asyncio.timeout(10):
        while not (table.synced and check(dict(table.routes))):
            await table.wait_changed()


async def create(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Create `obj` as the client's typed model, which serializes back to the same JSON."""
    if obj["kind"] == contract.KIND:  # a custom object: no model in the client, the JSON
        namespace = obj["metadata"]["namespace"]
        await asyncio.to_thread(
            client.CustomObjectsApi(api).create_namespaced_custom_object,
            contract.GROUP, contract.VERSION, namespace, contract.PLURAL, obj,
        )  # fmt: skip
    elif obj["kind"] == "Service":
        svc = client.V1Service.model_validate(obj)
        await asyncio.to_thread(client.CoreV1Api(api).create_namespaced_service, NS, svc)
    else:
        eps = client.V1EndpointSlice.model_validate(obj)
        await asyncio.to_thread(
            client.DiscoveryV1Api(api).create_namespaced_endpoint_slice, NS, eps
        )


async def test_watch_follows_services_and_endpoints_as_the_operator_changes_them(
    api_client: Callable[[], client.ApiClient],
) -> None:
    table = RoutingTable()
    discovery = KubernetesDiscovery(table, api_client, retry_delay_s=0.1)
    task = asyncio.create_task(discovery.run())
    api = api_client()
    try:
        await until(table, lambda r: r == {})  # synced, empty cluster
        await create(api, llmdeployment("chat"))
        await create(api, service("chat-stable", "llama"))
        await until(table, lambda r: "llama" in r and not r["llama"].ready)

        stable_pod = ("10.0.0.1", True, None)
        await create(api, endpoint_slice("chat-stable-x", "chat-stable", [stable_pod]))
        await until(table, lambda r: r["llama"].upstreams == ("http://10.0.0.1:8000",))

        # A canary track appears with its share of traffic.
        await create(api, service("chat-canary", "llama", track="canary", weight="20"))
        canary_pod = ("10.0.1.1", True, None)
        await create(api, endpoint_slice("chat-canary-y", "chat-canary", [canary_pod]))
        await until(
            table, lambda r: len(r["llama"].tracks) == 2 and bool(r["llama"].tracks[1].upstreams)
        )
        assert [(t.name, t.weight) for t in table.routes["llama"].tracks] == [
            ("stable", 100),
            ("canary", 20),
        ]

        # The stable pod goes unready (or terminating): it leaves the route.
        await asyncio.to_thread(
            client.DiscoveryV1Api(api).patch_namespaced_endpoint_slice,
            "chat-stable-x",
            NS,
            {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": False}}]},
        )
        await until(table, lambda r: r["llama"].tracks[0].upstreams == ())

        # The canary is promoted: its Service goes away, the model stays.
        await asyncio.to_thread(client.CoreV1Api(api).delete_namespaced_service, "chat-canary", NS)
        await until(table, lambda r: [t.name for t in r["llama"].tracks] == ["stable"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
