"""Canary rollouts in the running operator: a full promotion, and an abort on errors.

The emulator has no controllers, so the test plays the Deployment controller
(reporting replica counts) and the kubelet (the canary's pod, with a real
/metrics endpoint whose numbers the test moves: fake_pods.py). The gateway
is not running; what it would read is asserted instead: the Services'
traffic-weight and revision annotations.
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.integration.operator.fake_pods import FakePod, FakePods

SPEC = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "resources": {"gpus": 0},
    "replicas": 2,
    "rollout": {
        "strategy": "Canary",
        "canary": {"weight": 10, "steps": [10, 50, 100], "stepSeconds": 1,
                   "maxErrorRate": 0.05, "maxTtftP95Seconds": 2},
    },
}  # fmt: skip
SETTINGS = {"autoscalerIntervalSeconds": 0.2, "canaryMinRequests": 5}


def weights(cluster: Cluster) -> dict[str, str]:
    """Each Service's share of the model's traffic, as the gateway reads it."""
    return {
        name: svc["metadata"]["annotations"][contract.ANNOTATION_TRAFFIC_WEIGHT]
        for name, svc in cluster.objects("services").items()
    }


def budgets(cluster: Cluster) -> set[str]:
    return set(cluster.objects("poddisruptionbudgets"))


def revision_of(cluster: Cluster, deployment: str) -> str:
    value: str = cluster.objects("deployments")[deployment]["spec"]["template"]["metadata"][
        "annotations"
    ][contract.ANNOTATION_REVISION]
    return value


def progressing(cluster: Cluster) -> dict[str, Any]:
    return cluster.condition("chat", "Progressing")


def serving(cluster: Cluster) -> None:
    """The model served at revision main by 2 ready replicas."""
    cluster.create_llmd("chat", SPEC)
    wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
    cluster.report_deployment("chat", replicas=2, readyReplicas=2, updatedReplicas=2)
    wait_for("revision main served", lambda: cluster.status("chat").get("servedRevision"))


def canary_started(cluster: Cluster, fake_pods: FakePods) -> FakePod:
    """Revision v2 asked for: the canary track appears; its replica becomes ready."""
    cluster.patch_llmd("chat", {"model": {"revision": "v2"}})
    wait_for(
        "a canary starting", lambda: "starting 1 canary replica" in progressing(cluster)["message"]
    )
    canary = cluster.objects("deployments")["chat-canary"]
    assert canary["spec"]["replicas"] == 1  # 10% of 2 replicas, at least one
    assert revision_of(cluster, "chat-canary") == "v2"
    assert revision_of(cluster, "chat") == "main"  # the stable track is left as it runs
    assert weights(cluster) == {"chat": "100", "chat-canary": "0"}  # not ready: no traffic
    assert cluster.objects("configmaps").keys() == {
        "chat-server-config",
        "chat-canary-server-config",
    }
    # Its pods have a disruption budget of their own, owned like every child.
    budget = cluster.objects("poddisruptionbudgets")["chat-canary"]
    assert budget["spec"]["selector"]["matchLabels"][contract.LABEL_TRACK] == "canary"
    (owner,) = budget["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == (contract.KIND, cluster.llmd("chat")["metadata"]["uid"])
    pod = fake_pods.start("chat", "chat-canary-7f9-a", track=contract.TRACK_CANARY)
    cluster.report_deployment("chat-canary", replicas=1, readyReplicas=1, updatedReplicas=1)
    # The weights are written before the status that reports them.
    step_1 = "canary step 1/3: 10% of traffic to revision v2"
    wait_for("step 1", lambda: progressing(cluster)["message"] == step_1)
    assert weights(cluster) == {"chat": "90", "chat-canary": "10"}
    assert cluster.status("chat")["phase"] == "Progressing"
    service = cluster.objects("services")["chat"]["metadata"]["annotations"]
    assert service[contract.ANNOTATION_REVISION] == "main"
    return pod


def test_a_healthy_canary_is_promoted_step_by_step(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(**SETTINGS):
        serving(cluster)
        pod = canary_started(cluster, fake_pods)

        def answering(check: Any) -> Any:
            pod.metrics.serve(1, ttft=0.2)  # the canary answers its share of traffic well
            return check()

        step_2 = "canary step 2/3: 50% of traffic to revision v2"
        wait_for("step 2", lambda: answering(lambda: progressing(cluster)["message"] == step_2))
        assert weights(cluster) == {"chat": "50", "chat-canary": "50"}
        assert progressing(cluster)["reason"] == "CanaryProgressing"
        assert cluster.status("chat")["canary"]["step"] == 2

        # Step 3 (100%) needs as many canary replicas as the stable has.
        def canary_replicas() -> int:
            count: int = cluster.objects("deployments")["chat-canary"]["spec"]["replicas"]
            return count

        wait_for("2 canary replicas", lambda: answering(lambda: canary_replicas() == 2))
        assert weights(cluster)["chat-canary"] == "50"  # until they are ready
        cluster.report_deployment("chat-canary", replicas=2, readyReplicas=2, updatedReplicas=2)
        all_on_canary = {"chat": "0", "chat-canary": "100"}
        wait_for(
            "all traffic on the canary",
            lambda: answering(lambda: weights(cluster) == all_on_canary),
        )

        # Promotion: the stable Deployment takes v2 while the canary serves everything.
        wait_for(
            "promoting",
            lambda: answering(lambda: progressing(cluster)["reason"] == "CanaryPromoting"),
        )
        assert revision_of(cluster, "chat") == "v2"
        assert weights(cluster) == all_on_canary
        assert cluster.status("chat")["servedRevision"] == "main"

        cluster.report_deployment("chat", replicas=2, readyReplicas=2, updatedReplicas=2)
        wait_for(
            "the canary gone",
            lambda: "chat-canary-server-config" not in cluster.objects("configmaps"),
        )
        wait_for("revision v2 served", lambda: cluster.status("chat")["servedRevision"] == "v2")
        wait_for("its budget gone", lambda: budgets(cluster) == {"chat"})
        assert weights(cluster) == {"chat": "100"}
        assert "chat-canary" not in cluster.objects("deployments")
        status = cluster.status("chat")
        assert status["phase"] == "Ready" and "canary" not in status
        assert cluster.condition("chat", "Progressing")["status"] == "False"
        steps = [e["message"] for e in cluster.events("chat", "CanaryStep")]
        assert steps[:3] == [f"canary step {i}/3: {w}% of traffic to revision v2"
                             for i, w in ((1, 10), (2, 50), (3, 100))]  # fmt: skip
        assert steps[3].startswith("promoting revision v2 (step 3/3 passed: error ratio 0.000")
        (promoted,) = wait_for("a CanaryPromoted event",
                               lambda: cluster.events("chat", "CanaryPromoted"))  # fmt: skip
        assert promoted["message"] == "revision v2 promoted: every stable replica runs it"


def test_a_failing_canary_is_aborted_and_stays_so(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(**SETTINGS, resyncSeconds=0.3) as operator:
        serving(cluster)
        pod = canary_started(cluster, fake_pods)

        def failing(check: Any) -> Any:
            pod.metrics.serve(3, ttft=0.2)
            pod.metrics.serve(1, code=500)  # a quarter of its answers are server errors
            return check()

        gone = lambda: "chat-canary" not in cluster.objects("deployments")  # noqa: E731
        wait_for("the canary aborted", lambda: failing(gone))
        wait_for(
            "its settings gone",
            lambda: "chat-canary-server-config" not in cluster.objects("configmaps"),
        )
        wait_for("its budget gone", lambda: budgets(cluster) == {"chat"})
        assert weights(cluster) == {"chat": "100"}
        wait_for("phase Degraded", lambda: cluster.status("chat")["phase"] == "Degraded")
        degraded = cluster.condition("chat", "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "CanaryAborted")
        message = degraded["message"]
        assert message.startswith("canary of revision v2 aborted at step 1/3 (10% of traffic): "
                                  "error ratio 0.2")  # fmt: skip
        assert "answered 5xx) exceeds maxErrorRate 0.05" in message
        assert message.endswith("all traffic is back on revision main")
        assert progressing(cluster)["reason"] == "CanaryAborted"
        status = cluster.status("chat")
        assert status["servedRevision"] == "main" and status["canary"]["phase"] == "Aborted"
        assert revision_of(cluster, "chat") == "main"
        (aborted,) = wait_for("a Warning event", lambda: cluster.events("chat", "CanaryAborted"))
        assert aborted["type"] == "Warning" and aborted["message"] == message

        # It is not tried again for the same template: resyncs come and go, nothing is written.
        seen, reconciles = len(cluster.operator_requests()), operator.reconciles()
        wait_for("more reconciles", lambda: operator.reconciles() >= reconciles + 5)
        assert cluster.operator_writes(since=seen) == []
        assert "chat-canary" not in cluster.objects("deployments")

        # Going back to the revision that runs ends the episode.
        cluster.patch_llmd("chat", {"model": {"revision": "main"}})
        wait_for("phase Ready", lambda: cluster.status("chat")["phase"] == "Ready")
        assert "canary" not in cluster.status("chat")
        assert cluster.condition("chat", "Degraded")["status"] == "False"


def test_the_pinned_stable_track_follows_a_new_replica_count(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    """While a canary runs, the stable Deployment keeps its template but not its count:
    `kubectl scale llmd` (or the autoscaler, or an HPA) moves it, and the canary's size
    follows the stable's."""
    with run_operator(**SETTINGS):
        serving(cluster)
        canary_started(cluster, fake_pods)
        seen = len(cluster.operator_requests())
        cluster.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", "chat",
                              {"spec": {"replicas": 20}}, subresource="scale")  # fmt: skip

        def stable_replicas() -> int:
            count: int = cluster.objects("deployments")["chat"]["spec"]["replicas"]
            return count

        wait_for("20 stable replicas", lambda: stable_replicas() == 20)
        assert revision_of(cluster, "chat") == "main"  # still pinned
        # 10% of 20 stable replicas: the canary's step 1 now needs 2.
        wait_for(
            "2 canary replicas",
            lambda: cluster.objects("deployments")["chat-canary"]["spec"]["replicas"] == 2,
        )
        writes = cluster.operator_writes(since=seen)
        assert "PATCH /apis/apps/v1/namespaces/default/deployments/chat/scale" in writes
        assert not any(w.startswith("PATCH /apis/apps/v1/namespaces/default/deployments/chat?")
                       or w == "PATCH /apis/apps/v1/namespaces/default/deployments/chat"
                       for w in writes)  # fmt: skip
