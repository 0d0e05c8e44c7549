"""An HPA or KEDA in charge of an LLMDeployment's replicas, against the emulator.

The cluster is KMock's emulator (no Kubernetes API server can run here);
the test plays the outside autoscaler (an HPA, or the HPA KEDA manages:
both write the LLMDeployment's scale subresource), the kubelet (pods with
real vLLM-style /metrics, fake_pods.py) and the gateway (its demand Lease).
With `autoscaling.enabled: false` the operator's reconciler follows every
write of the subresource, and its autoscaler stands aside: it neither
measures the pods nor writes the count, its state or its status, even with
a long queue on every replica and requests held at the gateway. An
autoscaled model beside it serves as the clock: its pod is scraped once per
autoscaler tick.
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.integration.operator.fake_pods import FakePod, FakePods

TICK = 0.2  # autoscalerIntervalSeconds in these tests
SMOLLM2: dict[str, Any] = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "resources": {"gpus": 0},
}
# Bounds and a target the autoscaler would act on at once, were it enabled.
LEFT_TO_KEDA = {
    **SMOLLM2,
    "autoscaling": {
        "enabled": False,
        "minReplicas": 1,
        "maxReplicas": 8,
        "targets": {"queueDepthPerReplica": 2},
    },
}
CLOCK = {
    **SMOLLM2,
    "model": {**SMOLLM2["model"], "servedName": "clock"},
    "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1},
}


def keda_scales(cluster: Cluster, name: str, replicas: int) -> dict[str, Any]:
    """What the HPA behind a ScaledObject does: write spec.replicas of the scale subresource."""
    return cluster.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", name,
                                 {"spec": {"replicas": replicas}}, subresource="scale")  # fmt: skip


def deployment_replicas(cluster: Cluster, name: str = "chat") -> int:
    value: int = cluster.objects("deployments")[name]["spec"]["replicas"]
    return value


def writes_about(cluster: Cluster, name: str, since: int) -> list[str]:
    """The operator's writes to the LLMDeployment `name` (spec, scale, status, annotations)."""
    path = f"/{contract.PLURAL}/{name}"
    return [w for w in cluster.operator_writes(since=since) if w.endswith(path) or f"{path}/" in w]


def ticks(clock: FakePod, count: int) -> None:
    scrapes = clock.scrapes
    wait_for(f"{count} autoscaler ticks", lambda: clock.scrapes >= scrapes + count)


def settle(cluster: Cluster, clock: FakePod) -> int:
    """Wait for three ticks without a write; the count of the operator's requests then."""
    last = {"writes": -1, "scrapes": 0}

    def settled() -> bool:
        writes = len(cluster.operator_writes())
        if writes != last["writes"]:
            last.update(writes=writes, scrapes=clock.scrapes)
            return False
        return clock.scrapes >= last["scrapes"] + 3

    wait_for("three ticks without a write", settled)
    return len(cluster.operator_requests())


def autoscaler_traces(cluster: Cluster, name: str = "chat") -> dict[str, Any]:
    """What the autoscaler would have left on the resource had it acted."""
    llmd = cluster.llmd(name)
    status = llmd.get("status", {})
    return {
        "state": (llmd["metadata"].get("annotations") or {}).get(
            contract.ANNOTATION_AUTOSCALER_STATE
        ),
        "status": {k: status[k] for k in ("scaleReason", "lastScaleTime") if k in status},
        "conditions": [
            c["type"] for c in status.get("conditions", []) if c["type"] == "ScalingLimited"
        ],
        "events": [e["reason"] for e in cluster.events(name) if e["reason"].startswith("Scaled")],
    }


NO_TRACES: dict[str, Any] = {"state": None, "status": {}, "conditions": [], "events": []}


def test_with_autoscaling_off_the_scale_subresource_writer_owns_replicas(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(autoscalerIntervalSeconds=TICK, resyncSeconds=TICK):
        cluster.create_llmd("clock", CLOCK)
        cluster.create_llmd("chat", LEFT_TO_KEDA)
        wait_for(
            "the Deployments", lambda: {"chat", "clock"} <= set(cluster.objects("deployments"))
        )
        clock = fake_pods.start("clock", "clock-a")
        clock.metrics.load(waiting=0, running=0)
        wait_for("the selector in status", lambda: cluster.status("chat").get("selector"))

        # KEDA scales it to 2; the reconciler gives the Deployment 2.
        keda_scales(cluster, "chat", 2)
        wait_for("2 replicas", lambda: deployment_replicas(cluster) == 2)
        pods = [fake_pods.start("chat", f"chat-{x}") for x in "ab"]
        for pod in pods:
            pod.metrics.load(waiting=20, running=8)  # 10 times the target it names
        cluster.report_deployment("chat", replicas=2, readyReplicas=2, updatedReplicas=2)
        wait_for("2 ready", lambda: cluster.status("chat").get("readyReplicas") == 2)
        wait_for("desired 2", lambda: cluster.status("chat").get("desiredReplicas") == 2)

        seen = settle(cluster, clock)
        ticks(clock, 10)
        assert writes_about(cluster, "chat", since=seen) == []
        assert cluster.llmd("chat")["spec"]["replicas"] == 2
        assert deployment_replicas(cluster) == 2
        assert [pod.scrapes for pod in pods] == [0, 0]  # not even measured
        assert autoscaler_traces(cluster) == NO_TRACES

        # KEDA scales it to zero; the gateway holds requests for it. Waking it is KEDA's
        # call too (an activation on the gateway's held requests), not the autoscaler's.
        keda_scales(cluster, "chat", 0)
        wait_for("0 replicas", lambda: deployment_replicas(cluster) == 0)
        for pod in pods:
            fake_pods.stop(pod)
        cluster.report_deployment("chat", replicas=0, readyReplicas=0, updatedReplicas=0)
        cluster.hold_requests("chat", 5)
        seen = settle(cluster, clock)
        ticks(clock, 10)
        assert writes_about(cluster, "chat", since=seen) == []
        assert cluster.llmd("chat")["spec"]["replicas"] == 0
        assert deployment_replicas(cluster) == 0
        assert autoscaler_traces(cluster) == NO_TRACES

        keda_scales(cluster, "chat", 1)
        wait_for("1 replica", lambda: deployment_replicas(cluster) == 1)
