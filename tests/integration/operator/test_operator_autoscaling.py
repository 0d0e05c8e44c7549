"""The autoscaler in the running operator, against the emulator and pods with real /metrics.

The cluster is KMock's emulator (no Kubernetes API server can run here) and
the test plays the kubelet and the Deployment controller: it creates the
pods a Deployment would run, each backed by a real HTTP server serving
vLLM-style metrics the test changes over time (fake_pods.py). What is
asserted is what a user sees: the Deployment's replicas, the
LLMDeployment's `spec.replicas` (the autoscaler's one write of the count),
status and conditions, its Events, the operator's metrics, and the requests
the operator made (no writes while nothing changes, no scale of a child by
the autoscaler).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelplane.api import contract
from modelplane.api.demand import COMPONENT_DEMAND
from modelplane.operator.autoscaler import PolicyState
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.integration.operator.fake_pods import FakePods
from tests.monitoring.prometheus import PrometheusServer
from tests.support.kube_emulator import reads_of

SMOLLM2 = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "resources": {"gpus": 0},
}
TICK = 0.2  # autoscalerIntervalSeconds in these tests


def autoscaled(**autoscaling: Any) -> dict[str, Any]:
    settings = {"enabled": True, "targets": {"queueDepthPerReplica": 2}, **autoscaling}
    return {**SMOLLM2, "autoscaling": settings}


def replicas(cluster: Cluster, name: str = "chat") -> int:
    value: int = cluster.objects("deployments")[name]["spec"]["replicas"]
    return value


def spec_replicas(cluster: Cluster, name: str = "chat") -> int:
    value: int = cluster.llmd(name)["spec"]["replicas"]
    return value


def scale_writes(cluster: Cluster) -> list[str]:
    """The operator's writes through a scale subresource, with their field manager."""
    return [
        f"{r.url.path} {r.params.get('fieldManager')}"
        for r in cluster.operator_requests()
        if r.method.value == "PATCH" and r.url.path.endswith("/scale")
    ]


def stored_state(cluster: Cluster, name: str = "chat") -> dict[str, Any] | None:
    text = (
        cluster.llmd(name)["metadata"]
        .get("annotations", {})
        .get(contract.ANNOTATION_AUTOSCALER_STATE)
    )
    return json.loads(text) if text else None


def decisions(op: Any, direction: str, name: str = "chat") -> float:
    value = op.metric(
        "modelplane_operator_scaling_decisions_total",
        namespace="default", llmdeployment=name, direction=direction,
    )  # fmt: skip
    return value or 0.0


def test_scales_up_on_load_and_down_when_it_is_gone(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    spec = autoscaled(minReplicas=1, maxReplicas=3, scaleDownDelaySeconds=2)
    with run_operator(autoscalerIntervalSeconds=TICK) as op:
        cluster.create_llmd("chat", spec)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        a = fake_pods.start("chat", "chat-a")
        a.metrics.load(waiting=0, running=1)
        reason = wait_for("a first decision", lambda: cluster.status("chat").get("scaleReason"))
        assert reason.startswith("steady at 1")
        limited = cluster.condition("chat", "ScalingLimited")
        assert (limited["status"], limited["reason"]) == ("False", "DesiredWithinRange")
        assert replicas(cluster) == 1 and cluster.events("chat", "ScaledUp") == []

        # 20 requests wait in the only engine: it needs 4 replicas; maxReplicas is 3.
        a.metrics.load(waiting=20, running=4)
        wait_for("3 replicas", lambda: replicas(cluster) == 3)
        # The autoscaler wrote the LLMDeployment's count; the reconciler moved the Deployment.
        assert spec_replicas(cluster) == 3
        assert scale_writes(cluster) == [
            "/apis/modelplane.io/v1alpha1/namespaces/default/llmdeployments/chat/scale "
            "modelplane-autoscaler"
        ]
        status = wait_for("status of the scale-up", lambda: (s := cluster.status("chat"))
                          .get("desiredReplicas") == 3 and s)  # fmt: skip
        assert "1 -> 4" in status["scaleReason"]
        assert status["scaleReason"].endswith("capped at maxReplicas 3 (wanted 4)")
        assert status["lastScaleTime"].endswith("Z")
        limited = cluster.condition("chat", "ScalingLimited")
        assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")
        assert limited["message"] == status["scaleReason"]
        assert limited["observedGeneration"] == cluster.llmd("chat")["metadata"]["generation"]
        (up,) = wait_for("a ScaledUp event", lambda: cluster.events("chat", "ScaledUp"))
        assert up["type"] == "Normal" and up["message"] == status["scaleReason"]
        assert decisions(op, "up") == 1

        # The Deployment controller starts two more; one's engine dies, its /metrics fails.
        fake_pods.start("chat", "chat-b").metrics.load(waiting=0, running=1)
        fake_pods.start("chat", "chat-c").broken = True
        a.metrics.load(waiting=0, running=1)
        wait_for("back to 1 replica", lambda: replicas(cluster) == 1, timeout=60)
        (down,) = wait_for("a ScaledDown event", lambda: cluster.events("chat", "ScaledDown"))
        assert down["message"].startswith("3 -> 1, the largest need of the last 2s")
        assert "left out chat-c" in down["message"] and "HTTP 500" in down["message"]
        # desiredReplicas is the reconciler's (the count the Deployment was given).
        status = wait_for("desired 1", lambda: (s := cluster.status("chat"))
                          .get("desiredReplicas") == 1 and s)  # fmt: skip
        assert status["scaleReason"] == down["message"]
        limited = cluster.condition("chat", "ScalingLimited")
        assert (limited["status"], limited["reason"]) == ("False", "DesiredWithinRange")
        assert decisions(op, "down") == 1 and decisions(op, "up") == 1
        assert spec_replicas(cluster) == 1
        assert all("/llmdeployments/chat/scale" in write for write in scale_writes(cluster))


def test_scale_from_zero_on_held_requests_and_back_to_zero_when_idle(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    # replicas: 0 starts it at zero (left out, it would start at 1 and scale down).
    spec = {**autoscaled(minReplicas=0, maxReplicas=2, scaleDownDelaySeconds=1), "replicas": 0}
    with run_operator(autoscalerIntervalSeconds=TICK, resyncSeconds=TICK) as op:
        cluster.create_llmd("chat", spec)
        wait_for("a first decision", lambda: cluster.status("chat").get("scaleReason"))
        assert replicas(cluster) == 0
        assert cluster.status("chat")["scaleReason"] == "no replicas and no demand"

        # The gateway holds a request for the model and records when, in the demand Lease.
        cluster.hold_requests("chat", 1)
        wait_for("1 replica", lambda: replicas(cluster) == 1)
        (up,) = wait_for("a ScaledUp event", lambda: cluster.events("chat", "ScaledUp"))
        assert up["message"] == "requests held at the gateway: scaling from zero"

        pod = fake_pods.start("chat", "chat-a", ready=False)  # loading: not capacity
        fake_pods.set_ready(pod, True)
        pod.metrics.load(waiting=0, running=1)
        pod.metrics.serve(3)
        pod.metrics.load(waiting=0, running=0)  # answered; nothing more comes
        wait_for("back to zero", lambda: replicas(cluster) == 0, timeout=60)
        (down,) = wait_for("a ScaledDown event", lambda: cluster.events("chat", "ScaledDown"))
        assert "-> 0" in down["message"] or down["message"].startswith("no requests for")
        zero = "ScaledToZero"
        wait_for(
            "Ready, scaled to zero", lambda: cluster.condition("chat", "Ready")["reason"] == zero
        )
        fake_pods.stop(pod)

        # The gateway never removes its Lease: the old request wakes nothing...
        reconciles = op.reconciles()
        wait_for("a few more ticks", lambda: op.reconciles() >= reconciles + 5)
        assert replicas(cluster) == 0 and len(cluster.events("chat", "ScaledUp")) == 1
        # ...a new one does.
        cluster.hold_requests("chat", 1)
        wait_for("1 replica again", lambda: replicas(cluster) == 1)
        # The demand went through a Lease the LLMDeployment owns; its spec was not the
        # gateway's to write (tests/integration/operator/conftest.py checks its calls too).
        lease = cluster.objects("leases")["chat-scale-from-zero"]
        assert (
            lease["metadata"]["ownerReferences"][0]["uid"]
            == cluster.llmd("chat")["metadata"]["uid"]
        )
        # The operator reads Leases only through the demand selector: no other Lease of the
        # cluster (leader elections, node heartbeats) reaches it.
        lease_reads = [r for r in reads_of(cluster.operator_requests()) if r.plural == "leases"]
        assert {r.verb for r in lease_reads} == {"list", "watch"}
        for read in lease_reads:
            wanted = read.selector.keys()[contract.LABEL_COMPONENT].values
            assert wanted == {COMPONENT_DEMAND}, read
        assert {r.method.value for r in cluster.gateway_requests()} <= {"GET", "POST", "PATCH"}
        assert not [r for r in cluster.gateway_requests() if contract.PLURAL in r.url.path
                    and r.method.value != "GET"]  # fmt: skip


def test_a_start_from_zero_is_sized_by_the_gateways_held_count(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    """The gateway writes how many requests it holds with each demand time: while the
    first replica loads, the held count over its age sizes the start."""
    spec = {**autoscaled(minReplicas=0, maxReplicas=8), "replicas": 0}
    cluster.create_llmd("chat", spec)
    # Learned before (an earlier life of this model): a replica takes 2 req/s.
    learned = PolicyState(capacity_rps=2.0).to_json()
    cluster.annotate_llmd("chat", {contract.ANNOTATION_AUTOSCALER_STATE: learned})
    with run_operator(autoscalerIntervalSeconds=TICK, resyncSeconds=TICK):
        wait_for("a first decision", lambda: cluster.status("chat").get("scaleReason"))
        assert replicas(cluster) == 0

        woke = datetime.now(UTC)
        cluster.hold_requests("chat", 1, at=woke)
        wait_for("1 replica", lambda: replicas(cluster) == 1)  # the policy wakes with one
        # The gateway's next write: 40 held 5 s after the wake-up is 8 req/s, 4 replicas.
        cluster.hold_requests("chat", 40, at=woke + timedelta(seconds=5))
        wait_for("4 replicas", lambda: replicas(cluster) == 4)
        sized = "1 -> 4: 40 requests held at the gateway, 8.0 req/s"
        # The event comes last, after the scale and the status.
        wait_for(
            "its ScaledUp event",
            lambda: cluster.events("chat", "ScaledUp")[-1]["message"].startswith(sized),
        )
        # The reconciler reports the count it gave the Deployment, after its watch sees it.
        wait_for("desired 4", lambda: cluster.status("chat").get("desiredReplicas") == 4)


def test_the_gateways_demand_is_decided_as_it_is_written_not_on_the_next_tick(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    """With an hour between ticks, only the watch on the demand Leases can answer: the
    first demand write wakes the model, the next one (more held) sizes the start."""
    spec = {**autoscaled(minReplicas=0, maxReplicas=8), "replicas": 0}
    cluster.create_llmd("chat", spec)
    learned = PolicyState(capacity_rps=2.0).to_json()
    cluster.annotate_llmd("chat", {contract.ANNOTATION_AUTOSCALER_STATE: learned})
    with run_operator(autoscalerIntervalSeconds=3600, resyncSeconds=3600):
        # The one tick came before the Deployment; the next is an hour away.
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        assert replicas(cluster) == 0

        woke = datetime.now(UTC)
        cluster.hold_requests("chat", 1, at=woke)
        wait_for("1 replica", lambda: replicas(cluster) == 1)
        # 2 s later the gateway holds 30: 30 over 5 s (the shortest window the policy
        # divides by) is 6 req/s, 3 replicas of 2 req/s.
        cluster.hold_requests("chat", 30, at=woke + timedelta(seconds=2))
        wait_for("3 replicas", lambda: replicas(cluster) == 3)
        wait_for(
            "its ScaledUp event",
            lambda: cluster.events("chat", "ScaledUp")[-1]["message"].startswith(
                "1 -> 3: 30 requests held at the gateway, 6.0 req/s"
            ),
        )


def test_a_restart_keeps_the_scale_down_timer_and_does_not_scale_down_early(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    delay = 6
    spec = autoscaled(minReplicas=1, maxReplicas=4, scaleDownDelaySeconds=delay)
    with run_operator(autoscalerIntervalSeconds=TICK):
        cluster.create_llmd("chat", spec)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        for name in ("chat-a", "chat-b", "chat-c"):
            fake_pods.start("chat", name).metrics.load(waiting=0, running=1)
        # Someone scaled it to 3 by hand (`kubectl scale llmd chat --replicas 3`); one
        # replica carries the load.
        cluster.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", "chat",
                              {"spec": {"replicas": 3}}, subresource="scale")  # fmt: skip
        wait_for("3 replicas", lambda: replicas(cluster) == 3)
        before = wait_for("a stored state", lambda: stored_state(cluster))
        wait_for("3 replicas seen", lambda: cluster.status("chat").get("desiredReplicas") == 3)
    assert replicas(cluster) == 3  # stopped well before the delay was over

    with run_operator(autoscalerIntervalSeconds=TICK) as op:
        wait_for("the scale-down", lambda: replicas(cluster) == 1, timeout=60)
        (down,) = wait_for("a ScaledDown event", lambda: cluster.events("chat", "ScaledDown"))
        after = stored_state(cluster)
        assert after is not None
        # The timer started before the restart and went on through it...
        assert after["recording_since"] == before["recording_since"]
        # ...and the scale-down came no earlier than scaleDownDelaySeconds after its start.
        scaled_at = datetime.fromisoformat(down["eventTime"]).timestamp()
        assert scaled_at >= before["recording_since"] + delay
        assert down["message"].startswith(f"3 -> 1, the largest need of the last {delay}s")
        assert decisions(op, "down") == 1


def test_a_steady_autoscaled_resource_makes_no_writes(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(autoscalerIntervalSeconds=TICK, resyncSeconds=0.5) as op:
        cluster.create_llmd("chat", autoscaled(minReplicas=1, maxReplicas=3))
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        pod = fake_pods.start("chat", "chat-a")
        pod.metrics.load(waiting=1, running=3)
        cluster.report_deployment("chat", replicas=1, readyReplicas=1, updatedReplicas=1)
        wait_for("phase Ready", lambda: cluster.status("chat").get("phase") == "Ready")
        wait_for("a stored state", lambda: stored_state(cluster))
        wait_for("a first decision", lambda: cluster.status("chat").get("scaleReason"))
        # The first ticks still write: the first rates and needs enter the stored state,
        # the reason gains its numbers. Three ticks without a write: it has settled.
        last = {"writes": -1, "scrapes": 0}

        def settled() -> bool:
            writes = len(cluster.operator_writes())
            if writes != last["writes"]:
                last.update(writes=writes, scrapes=pod.scrapes)
                return False
            return pod.scrapes >= last["scrapes"] + 3

        wait_for("three ticks without a write", settled)

        seen, scrapes, reconciles = len(cluster.operator_requests()), pod.scrapes, op.reconciles()
        wait_for("10 more autoscaler ticks", lambda: pod.scrapes >= scrapes + 10)
        wait_for("2 more resyncs", lambda: op.reconciles() >= reconciles + 2)
        assert cluster.operator_writes(since=seen) == []
        assert replicas(cluster) == 1


def test_switching_autoscaling_off_hands_replicas_back_to_the_spec(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods
) -> None:
    with run_operator(autoscalerIntervalSeconds=TICK):
        cluster.create_llmd("chat", autoscaled(minReplicas=2, maxReplicas=3))
        wait_for("a stored state", lambda: stored_state(cluster))
        wait_for("ScalingLimited", lambda: cluster.condition("chat", "ScalingLimited"))
        cluster.patch_llmd("chat", {"replicas": 1, "autoscaling": {"enabled": False}})
        wait_for("1 replica", lambda: replicas(cluster) == 1)
        wait_for("the state removed", lambda: stored_state(cluster) is None)
        wait_for(
            "the autoscaler's status removed",
            lambda: (
                "scaleReason" not in cluster.status("chat")
                and all(c["type"] != "ScalingLimited" for c in cluster.status("chat")["conditions"])
            ),
        )
        wait_for("desired 1", lambda: cluster.status("chat").get("desiredReplicas") == 1)


def test_replica_metrics_from_a_real_prometheus(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods, tmp_path: Path
) -> None:
    """Prometheus (Debian's package) scrapes the pods; the operator asks Prometheus.

    The series get the pod's `namespace` and `pod` labels from the scrape
    config, as Kubernetes discovery with the chart's PodMonitor gives them
    (there is no Kubernetes to discover: the one stand-in). Pod b is ready
    but Prometheus does not scrape it.
    """
    a = fake_pods.start("chat", "chat-a")
    a.metrics.load(waiting=0, running=1)
    b = fake_pods.start("chat", "chat-b")
    target = {"targets": [f"127.0.0.1:{a.port}"], "labels": {"namespace": "default", "pod": a.name}}
    job = {"job_name": "modelplane-model-server", "scrape_interval": "1s",
           "static_configs": [target]}  # fmt: skip
    prometheus = PrometheusServer({"scrape_configs": [job]}, tmp_path).start()
    try:
        prometheus.wait_ready()
        settings = {"prometheusUrl": prometheus.url, "prometheusWindowSeconds": 5}
        with run_operator(autoscalerIntervalSeconds=TICK, **settings) as op:
            cluster.create_llmd("chat", autoscaled(minReplicas=1, maxReplicas=4))
            wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
            cluster.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", "chat",
                                  {"spec": {"replicas": 2}}, subresource="scale")  # fmt: skip
            reason = wait_for(
                "a decision from Prometheus' numbers",
                lambda: (
                    "requests waiting" in (r := cluster.status("chat").get("scaleReason", "")) and r
                ),
            )
            assert f"left out {b.name} (Prometheus has no vLLM samples of pod {b.name}" in reason
            assert replicas(cluster) == 2

            a.metrics.load(waiting=9, running=3)  # per replica: 3 running + 9 waiting vs 2
            wait_for("4 replicas", lambda: replicas(cluster) == 4, timeout=60)
            (up,) = wait_for("a ScaledUp event", lambda: cluster.events("chat", "ScaledUp"))
            assert "9.0 requests waiting per replica vs target 2" in up["message"]
            assert decisions(op, "up") == 1
        assert b.scrapes == 0 and a.scrapes > 0  # the operator asked Prometheus, not the pods
    finally:
        prometheus.stop()
