"""Two operator replicas, one active: kopf peering as the chart runs it (operator.replicas: 2).

The operator runs with the arguments `modelplane operator --peering NAME`
gives kopf, against KMock's Kubernetes emulator (no API server runs here)
serving kopf's ClusterKopfPeering, with the peering object the chart
creates. The other replica is played by the test: its keep-alive, with a
higher priority, is written into the peering object's status the way kopf
writes its own. While it is alive this replica must stay paused (kopf's
handlers and the operator's own loops, the autoscaler's included); when it
goes, this one must take over. Every API call is checked against the RBAC
the chart renders for two replicas, peering rules included: the ClusterRole,
or for a namespaced operator only the Roles in its namespaces.
"""

from __future__ import annotations

import asyncio
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
from modelplane.operator.kube.client import FIELD_MANAGER, KubeApi
from modelplane.operator.kube.peering import ActivityGate, activity_gate
from modelplane.operator.operator_command import kopf_args
from tests.chart.helm import find, find_all, render
from tests.conftest import free_port
from tests.integration.operator.conftest import Cluster, Operator, _metrics_up, wait_for
from tests.integration.operator.fake_pods import FakePods
from tests.integration.operator.test_operator_autoscaling import TICK, autoscaled, replicas
from tests.support.kube_emulator import (
    CLUSTER_RESOURCES,
    HARNESS_AGENT,
    EmulatorThread,
    resource_info,
)
from tests.support.rbac_check import ApiCall, allowed, api_call, disallowed_calls

PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
IDENTITY = "mp-modelplane-operator-7f9c-abcde"  # POD_ID, as the chart sets it
GATE_LOGGER = "modelplane.operator.kube.peering"


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
) -> Callable[..., AbstractContextManager[Operator]]:
    """`with run_peered(**config) as op:` runs one replica, peered, with priority 100."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.emulator.write_kubeconfig(tmp_path / "kube")))
    monkeypatch.setenv("POD_ID", IDENTITY)

    @contextmanager
    def start(**settings: Any) -> Iterator[Operator]:
        values = {
            "metricsPort": free_port(),
            "healthPort": None,
            "logFormat": "plain",
            "namespaces": watched,
            **settings,
        }
        config_path = tmp_path / "operator.yaml"
        config_path.write_text(yaml.safe_dump(values))
        monkeypatch.setenv(CONFIG_ENV, str(config_path))
        config = OperatorConfig.model_validate(values)
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
    run_peered: Callable[..., AbstractContextManager[Operator]],
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
    run_peered: Callable[..., AbstractContextManager[Operator]],
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


def gate_reads(cluster: Cluster, since: int) -> int:
    """How often the operator's own loops have read the peering object (once a tick each)."""
    return sum(
        1
        for r in cluster.operator_requests()[since:]
        if r.method.value == "GET"
        and r.url.path == peering_path([])
        and r.headers.get("User-Agent", "").startswith(FIELD_MANAGER)
    )


def scale_writes(cluster: Cluster, since: int) -> list[str]:
    return [w for w in cluster.operator_writes(since=since) if w.endswith("/scale")]


def test_the_autoscaler_pauses_while_a_higher_priority_replica_lives(
    cluster: Cluster,
    run_peered: Callable[..., AbstractContextManager[Operator]],
    fake_pods: FakePods,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kopf pauses its own handlers, not the operator's loops: those check the peering
    object every tick themselves. The test's idle model would be scaled down within about
    a second by an active replica; a paused one leaves it for ten ticks (2 s), and scales
    it down once the other replica's record has expired."""
    caplog.set_level(logging.INFO)
    spec = autoscaled(minReplicas=1, maxReplicas=3, scaleDownDelaySeconds=1)
    with run_peered(autoscalerIntervalSeconds=TICK):
        cluster.create_llmd("chat", spec)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        pod = fake_pods.start("chat", "chat-a")
        pod.metrics.load(waiting=20, running=4)
        wait_for("3 replicas", lambda: replicas(cluster) == 3)

        now = datetime.datetime.now(datetime.UTC)
        set_peer(cluster, "the-other-replica",
                 {"priority": 200, "lifetime": 600, "lastseen": now.isoformat()})  # fmt: skip
        paused = "operator loops paused: the-other-replica has a higher priority (200)"
        wait_for("the loops paused", lambda: logged(caplog, paused))
        seen = len(cluster.operator_requests())
        pod.metrics.load(waiting=0, running=0)  # idle from now on
        wait_for("10 paused ticks", lambda: gate_reads(cluster, since=seen) >= 10)
        assert replicas(cluster) == 3
        assert scale_writes(cluster, since=seen) == []

        # The other replica stops renewing its record: once expired, this one takes over.
        expired = (now - datetime.timedelta(seconds=120)).isoformat()
        set_peer(cluster, "the-other-replica",
                 {"priority": 200, "lifetime": 60, "lastseen": expired})  # fmt: skip
        wait_for("back to 1 replica", lambda: replicas(cluster) == 1)
        (down,) = wait_for("a ScaledDown event", lambda: cluster.events("chat", "ScaledDown"))
        assert down["message"].startswith("3 -> ")  # held at minReplicas 1
    gate_log = [m for m in caplog.messages if m.startswith("operator loops ")]
    assert gate_log.count(paused) == 1
    assert gate_log[-1].startswith("operator loops active: this replica")


def test_the_gate_reads_each_watched_namespace_and_logs_each_change_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The gate alone, with the operator's own client against the emulator: a namespaced
    operator is active only where every watched namespace's KopfPeering says so; two
    ticks per state, one log line per change; standalone reads nothing."""
    caplog.set_level(logging.INFO, logger=GATE_LOGGER)
    resources = {**CLUSTER_RESOURCES, "kopf.dev/v1/kopfpeerings": resource_info("KopfPeering")}
    with (
        EmulatorThread(resources) as emulator,
        httpx.Client(base_url=emulator.url, headers={"User-Agent": HARNESS_AGENT}) as http,
    ):
        monkeypatch.setenv("KUBECONFIG", str(emulator.write_kubeconfig(tmp_path / "kube")))
        api = KubeApi.from_environment()
        paths = [peering_path([ns]) for ns in ("a", "b")]
        for ns, path in zip(("a", "b"), paths, strict=True):
            peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                       "metadata": {"name": "modelplane", "namespace": ns}}  # fmt: skip
            http.post(path.rsplit("/", 1)[0], json=peering).raise_for_status()

        def keepalive(path: str, identity: str, priority: int | None) -> None:
            now = datetime.datetime.now(datetime.UTC).isoformat()
            record = {"priority": priority, "lifetime": 60, "lastseen": now} if priority else None
            http.patch(
                path, json={"status": {identity: record}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()  # fmt: skip

        resumed: list[bool] = []
        gate = activity_gate(api, peering="modelplane", priority=100, namespaces=["a", "b"],
                             identity=IDENTITY, on_resume=lambda: resumed.append(True))  # fmt: skip

        def ticks() -> list[bool]:
            return asyncio.run(twice(gate))

        keepalive(paths[0], IDENTITY, 100)
        assert ticks() == [False, False]  # not yet announced in b
        keepalive(paths[1], IDENTITY, 100)
        assert ticks() == [True, True]
        keepalive(paths[1], "the-other-replica", 200)
        assert ticks() == [False, False]
        keepalive(paths[1], "the-other-replica", None)
        assert ticks() == [True, True]
        http.delete(paths[0]).raise_for_status()
        assert ticks() == [False, False]  # unreadable: not known to be active
        assert resumed == [True, True]
        messages = [r.getMessage() for r in caplog.records if r.name == GATE_LOGGER]
        assert [m.split(":")[0] for m in messages] == [
            "operator loops paused", "operator loops active", "operator loops paused",
            "operator loops active", "operator loops paused",
        ]  # fmt: skip
        assert f"this replica's record ({IDENTITY}) is missing" in messages[0]
        assert "the-other-replica has a higher priority (200)" in messages[2]
        assert "cannot read" in messages[4] and "404" in messages[4]

        served = len(emulator.requests())
        standalone = activity_gate(api, peering=None, priority=0, namespaces=[], identity=None)
        assert asyncio.run(twice(standalone)) == [True, True]
        assert len(emulator.requests()) == served
        api.close()
    with pytest.raises(ValueError, match="POD_ID"):
        activity_gate(api, peering="modelplane", priority=1, namespaces=[], identity=None)


async def twice(gate: ActivityGate) -> list[bool]:
    return [await gate.active(), await gate.active()]
