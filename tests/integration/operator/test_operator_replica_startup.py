"""A replica's start-up (its pod's scheduling to readiness) in status and metrics, against
the emulator (KMock's, tests/support/kube_emulator.py).

The test plays the kubelet: it reports the pods' `PodScheduled` and `Ready`
conditions with the times a kubelet would write. The operator reports the
most recently ready pod's figure in `status.lastReplicaStartupSeconds` and
observes each pod once in `modelplane_llmdeployment_replica_startup_seconds`,
however many reconciles see it ready afterwards.
"""

from __future__ import annotations

from typing import Any

from modelplane.operator.timestamps import rfc3339
from tests.integration.operator.conftest import Cluster, Operator, OperatorFactory, wait_for
from tests.integration.operator.fake_pods import FakePods

SPEC: dict[str, Any] = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "resources": {"gpus": 0},
    "replicas": 2,
}
HISTOGRAM = "modelplane_llmdeployment_replica_startup_seconds"
T0 = 1_800_000_000.0


def report_started(cluster: Cluster, pod: str, scheduled: float, ready: float) -> None:
    """What the kubelet writes once the pod passed its readiness probe."""
    status = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(scheduled)},
            {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(ready)},
        ],
    }
    cluster.kubectl.patch("v1", "pods", "default", pod, {"status": status}, subresource="status")


def startups(operator: Operator) -> tuple[float | None, float | None]:
    labels = {"namespace": "default", "llmdeployment": "chat", "model": "smollm2"}
    return (
        operator.metric(f"{HISTOGRAM}_count", **labels),
        operator.metric(f"{HISTOGRAM}_sum", **labels),
    )


def test_each_replica_start_up_is_reported_once_and_the_latest_is_in_status(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(resyncSeconds=0.2) as operator:
        cluster.create_llmd("chat", SPEC)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        first = fake_pods.start("chat", "chat-a", ready=False)
        second = fake_pods.start("chat", "chat-b", ready=False)
        assert "lastReplicaStartupSeconds" not in cluster.status("chat")
        wait_for("the histogram, empty", lambda: startups(operator) == (0, 0))

        report_started(cluster, first.name, scheduled=T0, ready=T0 + 47)
        cluster.report_deployment("chat", replicas=2, readyReplicas=1, updatedReplicas=2)
        wait_for(
            "the first start-up in status",
            lambda: cluster.status("chat").get("lastReplicaStartupSeconds") == 47,
        )
        assert startups(operator) == (1, 47)

        # The second replica turned ready later, after a warm start: it is the latest.
        report_started(cluster, second.name, scheduled=T0 + 60, ready=T0 + 72)
        cluster.report_deployment("chat", replicas=2, readyReplicas=2, updatedReplicas=2)
        wait_for(
            "the second start-up in status",
            lambda: cluster.status("chat").get("lastReplicaStartupSeconds") == 12,
        )
        assert startups(operator) == (2, 59)

        # Reconciles that see the same ready pods count nothing again.
        seen = operator.reconciles()
        wait_for("five more reconciles", lambda: operator.reconciles() >= seen + 5)
        assert startups(operator) == (2, 59)
        assert cluster.status("chat")["lastReplicaStartupSeconds"] == 12
