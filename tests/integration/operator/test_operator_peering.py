"""Two operator replicas, one active: kopf peering as the chart runs it (operator.replicas: 2).

The operator runs with the arguments `modelplane operator --peering NAME`
gives kopf, against KMock's Kubernetes emulator (no API server runs here)
serving kopf's ClusterKopfPeering, with the peering object the chart
creates. The other replica is played by the test: its keep-alive, with a
higher priority, is written into the peering object's status the way kopf
writes its own. While it is alive this replica must stay paused; when it
goes, this one must take over. Every API call is checked against the RBAC
the chart renders for two replicas, peering rules included: the ClusterRole,
or for a namespaced operator only the Roles in its namespaces.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner

from modelplane.operator.config import CONFIG_ENV, OperatorConfig
from modelplane.operator.operator_command import kopf_args
from tests.chart.helm import find, find_all, render
from tests.conftest import free_port
from tests.integration.operator.conftest import Cluster, Operator, _metrics_up, wait_for
from tests.kube_emulator import CLUSTER_RESOURCES, HARNESS_AGENT, EmulatorThread, resource_info
from tests.rbac_check import ApiCall, allowed, api_call, disallowed_calls

PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
IDENTITY = "mp-modelplane-operator-7f9c-abcde"  # POD_ID, as the chart sets it


@pytest.fixture
def watched() -> list[str]:
    """The operator's watched namespaces (operator.watchNamespaces); empty: all of them."""
    return []


def peering_path(watched: list[str]) -> str:
    if not watched:
        return f"{PEERINGS}/modelplane"
    return f"/apis/kopf.dev/v1/namespaces/{watched[0]}/kopfpeerings/modelplane"


def refused_by_the_chart(
    calls: list[tuple[str, str, dict[str, str]]], docs: list[dict[str, Any]], watched: list[str]
) -> list[ApiCall]:
    """The calls the RBAC the chart renders for these values would refuse."""
    if not watched:
        return disallowed_calls(calls, find(docs, "ClusterRole", "-operator")["rules"])
    roles = {r["metadata"]["namespace"]: r["rules"] for r in find_all(docs, "Role", "-operator")}
    refused = []
    for method, path, query in calls:
        call = api_call(method, path, query)
        parts = path.strip("/").split("/")
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else None
        # No ClusterRole at all: anything but discovery outside a watched namespace is refused.
        if call is not None and not allowed(call, roles.get(namespace or "", [])):
            refused.append(call)
    return refused


@pytest.fixture
def cluster(watched: list[str]) -> Iterator[Cluster]:
    """A cluster with kopf's peering CRDs and the peering objects the chart creates."""
    resources = {
        **CLUSTER_RESOURCES,
        "kopf.dev/v1/clusterkopfpeerings": resource_info("ClusterKopfPeering", namespaced=False),
        "kopf.dev/v1/kopfpeerings": resource_info("KopfPeering"),
    }
    docs = render({"operator": {"replicas": 2, "watchNamespaces": watched}})
    with EmulatorThread(resources) as emulator:
        cluster = Cluster(emulator)
        with httpx.Client(base_url=emulator.url, headers={"User-Agent": HARNESS_AGENT}) as http:
            for peering in [d for d in docs if d["apiVersion"] == "kopf.dev/v1"]:
                path = peering_path([peering["metadata"].get("namespace", "")] if watched else [])
                http.post(path.rsplit("/", 1)[0], json=peering).raise_for_status()
        yield cluster
        cluster.kubectl.close()
        calls = [(r.method.value, r.url.path, dict(r.params)) for r in cluster.operator_requests()]
        refused = refused_by_the_chart(calls, docs, watched)
        assert not refused, "API calls the chart's RBAC does not allow:\n" + "\n".join(
            map(str, refused)
        )
        assert any(path == peering_path(watched) for _, path, _ in calls)


def peers(cluster: Cluster, watched: list[str]) -> dict[str, Any]:
    with httpx.Client(base_url=cluster.emulator.url, headers={"User-Agent": HARNESS_AGENT}) as http:
        status: dict[str, Any] = http.get(peering_path(watched)).json().get("status", {})
    return status


def set_peer(cluster: Cluster, identity: str, record: dict[str, Any] | None) -> None:
    """Write (or, with None, remove) a replica's keep-alive, as kopf's `touch` does."""
    with httpx.Client(base_url=cluster.emulator.url, headers={"User-Agent": HARNESS_AGENT}) as http:
        http.patch(
            peering_path([]),
            json={"status": {identity: record}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()


@pytest.fixture
def run_peered(
    cluster: Cluster, watched: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], AbstractContextManager[Operator]]:
    """`with run_peered() as op:` runs one replica, peered, with priority 100."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.emulator.write_kubeconfig(tmp_path / "kube")))
    monkeypatch.setenv("POD_ID", IDENTITY)
    values = {
        "metricsPort": free_port(),
        "healthPort": None,
        "logFormat": "plain",
        "namespaces": watched,
    }
    config_path = tmp_path / "operator.yaml"
    config_path.write_text(yaml.safe_dump(values))
    monkeypatch.setenv(CONFIG_ENV, str(config_path))
    config = OperatorConfig.model_validate(values)

    @contextmanager
    def start() -> Iterator[Operator]:
        args = kopf_args(config, verbose=True, peering="modelplane", priority=100)
        with KopfRunner(args, timeout=30) as runner:
            operator = Operator(runner, config.metrics_port)
            wait_for("the operator's metrics endpoint", lambda: _metrics_up(operator))
            yield operator
        assert runner.exception is None, runner.output[-4000:]

    return start


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in message for message in caplog.messages)


@pytest.mark.parametrize("watched", [[], ["team-a"]], ids=["all-namespaces", "namespaced"])
def test_a_lone_replica_works_and_keeps_its_record_in_the_peering_object(
    cluster: Cluster,
    watched: list[str],
    run_peered: Callable[[], AbstractContextManager[Operator]],
) -> None:
    """Namespaced, it also needs nothing cluster-wide: the chart gives it only Roles."""
    namespace = watched[0] if watched else "default"
    with run_peered():
        wait_for(
            "this replica's keep-alive",
            lambda: peers(cluster, watched)[IDENTITY]["priority"] == 100,
        )
        cluster.create_llmd("chat", SPEC, namespace=namespace)
        wait_for(
            "the model's Deployment", lambda: cluster.objects("deployments", namespace)["chat"]
        )
    # A replica that stops takes its record out, so a standby need not wait for it to expire.
    assert IDENTITY not in peers(cluster, watched)


def test_the_standby_waits_while_a_higher_priority_replica_lives_then_takes_over(
    cluster: Cluster,
    run_peered: Callable[[], AbstractContextManager[Operator]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    set_peer(cluster, "the-active-replica", {"priority": 200, "lifetime": 600, "lastseen": now})
    with run_peered():
        paused = "Pausing the watch-stream for llmdeployments"
        wait_for("the pause", lambda: logged(caplog, paused))
        cluster.create_llmd("chat", SPEC)
        # Nothing signals "seen but not handled", so absence is watched for a bounded time.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert "chat" not in cluster.objects("deployments"), "a paused replica reconciled"
            time.sleep(0.05)
        # The active replica goes away (a clean exit removes its record).
        set_peer(cluster, "the-active-replica", None)
        wait_for("the model's Deployment", lambda: cluster.objects("deployments")["chat"])
        assert logged(caplog, "Resuming the watch-stream for llmdeployments")
