"""How the gateway learns LoRA adapters: which a model has configured (the static file's
`adapters`, the model Service's `modelplane.io/adapters` annotation) and which each replica
has loaded (its `/ready` answer, polled). Replicas are stub HTTP servers; the Kubernetes
API is KMock's emulator (an in-memory Kubernetes API over real HTTP; no cluster runs here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from kubernetes import client

from modelplane.api import contract
from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.discovery.adapter_probe import AdapterProbe
from modelplane.gateway.discovery.kubernetes import (
    KubernetesDiscovery,
    model_service,
    routes_from_cluster,
    slice_endpoints,
)
from modelplane.gateway.discovery.static import StaticDiscovery, load_static_config
from modelplane.gateway.routing.routes import RoutingTable
from tests.unit.gateway.conftest import StubFactory
from tests.unit.gateway.test_kubernetes_discovery import (  # noqa: F401 - fixtures too
    NS,
    api_client,
    create,
    emulator,
    endpoint_slice,
    llmdeployment,
    owners,
    service,
    until,
)

SQL = frozenset({"sql"})


def test_a_static_model_lists_its_adapters_and_bad_names_are_a_config_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  llama:\n    upstreams: [http://a:1]\n    adapters: [sql, chat]\n")
    assert load_static_config(path).models["llama"].adapters == ["sql", "chat"]
    for bad in ("[sql, sql]", "['a b']", "[sql, 3]"):
        path.write_text(f"models:\n  llama:\n    upstreams: [http://a:1]\n    adapters: {bad}\n")
        with pytest.raises(ConfigError, match="adapter"):
            load_static_config(path)


async def test_static_discovery_follows_what_each_replica_has_loaded(
    stub_replicas: StubFactory, tmp_path: Path
) -> None:
    a, b = await stub_replicas(2)
    path = tmp_path / "models.yaml"
    path.write_text(
        f"models:\n  llama:\n    upstreams: [{a.url}, {b.url}]\n    adapters: [sql, chat]\n"
    )
    table = RoutingTable()
    discovery = StaticDiscovery(table, path=path)
    # `other` is loaded but not configured: not routed to (and never a label).
    a.adapters, b.adapters = ["sql", "other"], ["chat"]
    async with aiohttp.ClientSession() as session:
        await discovery.poll_once(session)
        route = table.routes["llama"]
        assert route.adapters == {"sql", "chat"}
        assert route.loaded == {a.url: SQL, b.url: {"chat"}}
        assert table.resolve("chat") == (route, "chat") and table.resolve("other") is None
        b.adapters = []  # unloaded
        await discovery.poll_once(session)
        assert table.routes["llama"].loaded == {a.url: SQL}
        a.mode = "draining"  # not ready: what it holds does not count
        a.adapters = []
        await discovery.poll_once(session)
        assert not table.routes["llama"].ready_for("sql")


def test_the_services_annotation_names_the_models_adapters_hostile_values_bounded() -> None:
    obj = service("chat-stable", "llama")
    obj["metadata"]["annotations"][contract.ANNOTATION_ADAPTERS] = "sql, chat,sql,bad name"
    parsed = model_service(obj)
    assert parsed is not None and parsed.adapters == {"sql", "chat"}
    assert len(parsed.adapter_problems) == 2
    obj["metadata"]["annotations"][contract.ANNOTATION_ADAPTERS] = "x" * 300_000
    parsed = model_service(obj)
    assert parsed is not None and parsed.adapters == frozenset()
    assert "over 128 characters" in parsed.adapter_problems[0]
    del obj["metadata"]["annotations"][contract.ANNOTATION_ADAPTERS]
    parsed = model_service(obj)
    assert parsed is not None and parsed.adapters == frozenset() and not parsed.adapter_problems


def test_cluster_routes_keep_only_configured_adapters_of_ready_replicas() -> None:
    obj = service("chat-stable", "llama")
    obj["metadata"]["annotations"][contract.ANNOTATION_ADAPTERS] = "sql"
    parsed = model_service(obj)
    assert parsed is not None
    ready = slice_endpoints(endpoint_slice("s", "chat-stable", [("10.0.0.1", True, None)]))
    assert ready is not None
    a, gone = "http://10.0.0.1:8000", "http://10.0.0.9:8000"
    routes = routes_from_cluster(
        {(NS, "chat-stable"): parsed},
        {(NS, "s"): ready},
        owners(llmdeployment("chat")),
        loaded={a: frozenset({"sql", "not-configured"}), gone: SQL},
    ).routes
    assert routes["llama"].adapters == SQL and routes["llama"].loaded == {a: SQL}


async def test_the_probe_keeps_what_a_replica_said_when_it_does_not_answer(
    stub_replicas: StubFactory,
) -> None:
    (a,) = await stub_replicas(1)
    seen: list[dict[str, frozenset[str]]] = []
    probe = AdapterProbe(seen.append)
    probe.watch([a.url])
    a.adapters = ["sql"]
    async with aiohttp.ClientSession() as session:
        await probe.poll_once(session)
        a.mode, a.adapters = "draining", []  # busy or draining: it still holds the adapter
        await probe.poll_once(session)
        probe.watch([])  # it left the EndpointSlice
    assert seen == [{a.url: SQL}, {}]


async def test_kubernetes_discovery_routes_an_adapter_once_a_replica_reports_it(
    api_client: Callable[[], client.ApiClient],  # noqa: F811 - the imported fixture
    stub_replicas: StubFactory,
) -> None:
    (replica,) = await stub_replicas(1)
    port = int(replica.url.rsplit(":", 1)[1])
    table = RoutingTable()
    discovery = KubernetesDiscovery(table, api_client, retry_delay_s=0.1, adapter_probe_s=0.05)
    task = asyncio.create_task(discovery.run())
    api = api_client()
    try:
        await create(api, llmdeployment("chat"))
        svc = service("chat-stable", "llama")
        svc["metadata"]["annotations"][contract.ANNOTATION_ADAPTERS] = "sql,chat"
        await create(api, svc)
        pods = endpoint_slice("chat-stable-x", "chat-stable", [("127.0.0.1", True, None)])
        pods["ports"] = [{"name": contract.SERVER_PORT_NAME, "port": port}]
        await create(api, pods)
        await until(table, lambda r: "llama" in r and r["llama"].ready)
        assert table.resolve("sql") == (table.routes["llama"], "sql")
        assert not table.routes["llama"].ready_for("sql")  # loaded nowhere yet
        replica.adapters = ["sql"]  # the operator loads it
        await until(table, lambda r: r["llama"].ready_for("sql"))
        assert table.routes["llama"].loaded == {replica.url: SQL}
        replica.adapters = ["chat"]  # and swaps it for another
        await until(table, lambda r: not r["llama"].ready_for("sql"))
        assert table.routes["llama"].ready_for("chat")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
