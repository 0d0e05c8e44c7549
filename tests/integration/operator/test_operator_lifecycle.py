"""The operator end to end against the Kubernetes emulator: what a user would see.

Create, status from (simulated) Deployment status, idle resync without
writes, engine and revision changes rolled out, invalid specs failing and
recovering, deletion leaving nothing behind, a restart writing nothing, and
the metrics the dashboards read. The emulator has no controllers: the tests
play the Deployment controller by patching Deployment status, as the cluster
would.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from modelplane.api import contract
from modelplane.operator.kube.client import FIELD_MANAGER
from modelplane.operator.kube.resources import LLMDEPLOYMENTS
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for

SMOLLM2 = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "engine": {"maxModelLen": 4096},
    "resources": {"gpus": 0},
}
CHILDREN = {
    "configmaps": "chat-server-config",
    "services": "chat",
    "deployments": "chat",
    "poddisruptionbudgets": "chat",
    "networkpolicies": "chat",
}


def children_of(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {
        plural: cluster.objects(plural)[name]
        for plural, name in CHILDREN.items()
        if name in cluster.objects(plural)
    }


def phase(cluster: Cluster, name: str = "chat") -> str | None:
    return cluster.status(name).get("phase")


def test_create_then_ready_then_idle_resync_writes_nothing(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(resyncSeconds=0.5) as op:
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("phase Loading", lambda: phase(cluster) == "Loading")
        children = children_of(cluster)
        assert set(children) == set(CHILDREN)
        llmd = cluster.llmd("chat")
        for child in children.values():
            (owner,) = child["metadata"]["ownerReferences"]
            assert owner["uid"] == llmd["metadata"]["uid"] and owner["controller"] is True
            assert child["metadata"]["labels"][contract.LABEL_LLMDEPLOYMENT] == "chat"
            assert child["metadata"]["labels"][contract.LABEL_TRACK] == contract.TRACK_STABLE
        annotations = children["services"]["metadata"]["annotations"]
        assert annotations[contract.ANNOTATION_SERVED_MODEL] == "smollm2"
        assert annotations[contract.ANNOTATION_TRAFFIC_WEIGHT] == "100"
        assert annotations[contract.ANNOTATION_ROUTING] == "prefix"
        assert children["deployments"]["spec"]["replicas"] == 1
        status = cluster.status("chat")
        assert status["endpoint"] == "http://chat.default.svc:8000/v1"
        assert status["observedGeneration"] == 1 and status["ready"] == "0/1"

        cluster.report_deployment("chat", replicas=1, readyReplicas=1, updatedReplicas=1)
        wait_for("phase Ready", lambda: phase(cluster) == "Ready")
        status = cluster.status("chat")
        assert status["servedRevision"] == "main" and status["ready"] == "1/1"
        assert cluster.condition("chat", "Ready")["status"] == "True"
        assert cluster.condition("chat", "Progressing")["status"] == "False"

        # Idle: periodic resyncs (every 0.5 s here) reconcile again and write nothing.
        seen, reconciles = len(cluster.operator_requests()), op.reconciles()
        wait_for("two idle resyncs", lambda: op.reconciles() >= reconciles + 2)
        assert cluster.operator_writes(since=seen) == []
        # Standalone, the loops never ask about peers.
        assert not [r for r in cluster.operator_requests() if "kopf.dev" in r.url.path]

        assert op.metric("modelplane_llmdeployment_phase", namespace="default",
                         llmdeployment="chat", model="smollm2", phase="Ready") == 1  # fmt: skip
        assert op.metric("modelplane_llmdeployment_replicas", namespace="default",
                         llmdeployment="chat", model="smollm2", kind="ready") == 1  # fmt: skip
        assert op.metric("modelplane_operator_llmdeployments", phase="Ready") == 1


def test_revision_and_engine_changes_roll_out(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator():
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("phase Loading", lambda: phase(cluster) == "Loading")
        cluster.report_deployment("chat", replicas=1, readyReplicas=1, updatedReplicas=1)
        wait_for("phase Ready", lambda: phase(cluster) == "Ready")
        template = cluster.objects("deployments")["chat"]["spec"]["template"]

        cluster.patch_llmd("chat", {"model": {"revision": "v2"}, "engine": {"maxModelLen": 2048}})
        wait_for("phase Progressing", lambda: phase(cluster) == "Progressing")
        deployment = cluster.objects("deployments")["chat"]
        new_template = deployment["spec"]["template"]
        hash_key = contract.ANNOTATION_TEMPLATE_HASH
        old_hash = template["metadata"]["annotations"][hash_key]
        assert new_template["metadata"]["annotations"][hash_key] != old_hash
        args = new_template["spec"]["containers"][0]["args"]
        assert args[args.index("--max-model-len") + 1] == "2048"
        assert "--engine-arg=--revision=v2" in args
        assert cluster.status("chat")["servedRevision"] == "main"  # not yet
        service = cluster.objects("services")["chat"]
        assert service["metadata"]["annotations"][contract.ANNOTATION_REVISION] == "v2"

        # maxSurge 1: a new replica starts beside the old one; still rolling.
        cluster.report_deployment("chat", replicas=2, readyReplicas=1, updatedReplicas=1)
        wait_for(
            "the rollout message",
            lambda: "1/1 replicas updated" in cluster.condition("chat", "Progressing")["message"],
        )
        assert phase(cluster) == "Progressing"
        assert cluster.status("chat")["servedRevision"] == "main"

        cluster.report_deployment("chat", replicas=1, readyReplicas=1, updatedReplicas=1)
        wait_for("servedRevision v2", lambda: cluster.status("chat").get("servedRevision") == "v2")
        assert phase(cluster) == "Ready"
        assert cluster.status("chat")["observedGeneration"] == 2


def test_invalid_spec_fails_with_a_reason_and_recovers(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator() as op:
        # Both slip past this emulator's (absent) schema, as past an outdated CRD.
        cluster.create_llmd("chat", {**SMOLLM2, "rollout": {"maxSurge": 0, "maxUnavailable": 0}})
        cluster.create_llmd(
            "big",
            {**SMOLLM2, "engine": {"quantization": "fp8"},
             "resources": {"gpus": 1, "accelerator": "nvidia-a100"}},
        )  # fmt: skip
        wait_for("phase Failed", lambda: phase(cluster) == "Failed")
        ready = cluster.condition("chat", "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert "set maxUnavailable to 1" in ready["message"]
        wait_for("big Failed", lambda: phase(cluster, "big") == "Failed")
        fit = cluster.condition("big", "FitCheck")
        assert fit["status"] == "False" and fit["reason"] == "DoesNotFit"
        assert "fp8 is not supported on nvidia-a100" in fit["message"]
        assert "nvidia-h100" in fit["message"]  # says what would work
        assert children_of(cluster) == {}
        wait_for(
            "Warning events for both",
            lambda: (
                {
                    (e["involvedObject"]["name"], e["reason"])
                    for e in cluster.objects("events").values()
                    if e["type"] == "Warning"
                }
                >= {("chat", "InvalidSpec"), ("big", "DoesNotFit")}
            ),
        )
        assert (op.metric("modelplane_operator_reconcile_total", result="invalid") or 0) >= 2

        cluster.patch_llmd("chat", {"rollout": {"maxUnavailable": 1}})
        wait_for("recovery to Loading", lambda: phase(cluster) == "Loading")
        assert set(children_of(cluster)) == set(CHILDREN)
        deployment = cluster.objects("deployments")["chat"]
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {
            "maxSurge": 0,
            "maxUnavailable": 1,
        }
        assert cluster.condition("chat", "FitCheck")["status"] == "True"


def test_an_invalid_spec_found_by_the_resync_loop_gets_one_warning(
    cluster: Cluster, run_operator: OperatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The first two status writes fail (the emulator answers 500): those of the reconciles
    kopf's events start (the initial listing and the watch may both deliver the new
    object), whose retries wait a second or more. So the periodic resync, which runs
    outside any kopf handler, is the one that moves the resource into Failed: exactly one
    Warning, posted by the operator's client, and nothing raised."""
    caplog.set_level(logging.WARNING)
    status = LLMDEPLOYMENTS.object_path("default", "chat", "status")
    cluster.emulator.emulator.failures[("PATCH", status)] = 2
    with run_operator(resyncSeconds=0.1) as op:
        cluster.create_llmd("chat", {**SMOLLM2, "rollout": {"maxSurge": 0, "maxUnavailable": 0}})
        (warning,) = wait_for("a Warning event", lambda: cluster.events("chat", "InvalidSpec"))
        assert warning["type"] == "Warning" and warning["source"]["component"] == FIELD_MANAGER
        assert "set maxUnavailable to 1" in warning["message"]
        assert warning["message"] == cluster.condition("chat", "Ready")["message"]
        reconciles = op.reconciles()
        wait_for("more resyncs", lambda: op.reconciles() >= reconciles + 5)
        assert len(cluster.events("chat", "InvalidSpec")) == 1
    assert any("HTTP 500" in m for m in caplog.messages), "the injected failure did not happen"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_delete_leaves_nothing_and_a_deleted_child_comes_back(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator() as op:
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("children", lambda: set(children_of(cluster)) == set(CHILDREN))
        cluster.kubectl.delete("v1", "services", "default", "chat")
        wait_for("the Service back", lambda: "chat" in cluster.objects("services"))
        assert "finalizers" not in cluster.llmd("chat")["metadata"]

        cluster.kubectl.delete(contract.API_VERSION, contract.PLURAL, "default", "chat")
        wait_for("the children collected", lambda: children_of(cluster) == {})
        seen = len(cluster.operator_requests())
        # Another resource's reconcile proves the operator is past the deletion events.
        cluster.create_llmd("other", SMOLLM2)
        wait_for("other reconciled", lambda: phase(cluster, "other") == "Loading")
        assert all("/chat" not in write for write in cluster.operator_writes(since=seen))
        assert children_of(cluster) == {}
        assert op.metric("modelplane_llmdeployment_max_replicas", namespace="default",
                         llmdeployment="chat", model="smollm2") is None  # fmt: skip


def test_a_restarted_operator_writes_nothing(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator():
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("phase Loading", lambda: phase(cluster) == "Loading")
    seen = len(cluster.operator_requests())
    # A slow API server: one child kind is listed long after the resync period has passed.
    cluster.emulator.emulator.list_delays["networkpolicies"] = 1.5
    with run_operator(resyncSeconds=0.2) as op:
        wait_for("reconciles after restart", lambda: op.reconciles() >= 3)
        assert cluster.operator_writes(since=seen) == []


def scale_llmd(cluster: Cluster, name: str, replicas: int) -> dict[str, Any]:
    """`kubectl scale llmd NAME --replicas N`: a patch of the scale subresource."""
    return cluster.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", name,
                                 {"spec": {"replicas": replicas}}, subresource="scale")  # fmt: skip


def test_kubectl_scale_and_an_hpa_move_the_deployment_through_the_scale_subresource(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    """With autoscaling off, whatever writes the LLMDeployment's scale subresource
    (`kubectl scale llmd`, an HPA, KEDA) sets the count the Deployment runs."""
    with run_operator():
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        wait_for("the selector in status", lambda: cluster.status("chat").get("selector"))
        scale = scale_llmd(cluster, "chat", 3)
        assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
        wait_for(
            "3 replicas", lambda: cluster.objects("deployments")["chat"]["spec"]["replicas"] == 3
        )
        wait_for("desired 3", lambda: cluster.status("chat").get("desiredReplicas") == 3)
        cluster.report_deployment("chat", replicas=3, readyReplicas=3, updatedReplicas=3)
        wait_for("3 ready", lambda: cluster.status("chat").get("readyReplicas") == 3)
        # What an HPA reads back: the count, and the pods to average metrics over.
        seen = cluster.kubectl.get(contract.API_VERSION, contract.PLURAL, "default", "chat/scale")
        assert seen["spec"]["replicas"] == 3 and seen["status"]["replicas"] == 3
        deployment = cluster.objects("deployments")["chat"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = dict(term.split("=") for term in seen["status"]["selector"].split(","))
        assert selector.items() <= labels.items()
        scale_llmd(cluster, "chat", 0)
        wait_for("zero", lambda: cluster.objects("deployments")["chat"]["spec"]["replicas"] == 0)


def test_autoscaling_owns_replicas_and_a_canary_needs_something_served(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    autoscaled = {**SMOLLM2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5,
                                               "targets": {"ttftP95Seconds": 1.5}}}  # fmt: skip
    with run_operator() as op:
        cluster.create_llmd("chat", autoscaled)
        idle = {**autoscaled, "replicas": 0, "autoscaling": {"enabled": True, "minReplicas": 0}}
        cluster.create_llmd("idle", idle)
        wait_for("chat created", lambda: "chat" in cluster.objects("deployments"))
        # spec.replicas (1 unless set) within the bounds: minReplicas 2.
        assert cluster.objects("deployments")["chat"]["spec"]["replicas"] == 2
        wait_for("idle scaled to zero", lambda: phase(cluster, "idle") == "Ready")
        assert cluster.objects("deployments")["idle"]["spec"]["replicas"] == 0
        assert cluster.condition("idle", "Ready")["reason"] == "ScaledToZero"

        # The autoscaler scales through the LLMDeployment's scale subresource; the
        # reconciler, the Deployment's one writer, follows.
        scale_llmd(cluster, "chat", 4)
        wait_for(
            "4 replicas", lambda: cluster.objects("deployments")["chat"]["spec"]["replicas"] == 4
        )
        # A hand edit of the Deployment is no second writer: it goes back to spec.replicas.
        cluster.kubectl.patch("apps/v1", "deployments", "default", "chat",
                              {"spec": {"replicas": 7}})  # fmt: skip
        wait_for("4 again", lambda: cluster.objects("deployments")["chat"]["spec"]["replicas"] == 4)
        cluster.patch_llmd("chat", {"engine": {"maxModelLen": 1024},
                                    "rollout": {"strategy": "Canary"}})  # fmt: skip

        # Nothing was served yet, so there is nothing for a canary to protect: it rolls.
        def rolled() -> bool:
            pod = cluster.objects("deployments")["chat"]["spec"]["template"]["spec"]
            args: list[str] = pod["containers"][0]["args"]
            return args[args.index("--max-model-len") + 1] == "1024"

        wait_for("the new template", rolled)
        deployment = cluster.objects("deployments")["chat"]
        assert "chat-canary" not in cluster.objects("deployments")
        assert "canary" not in cluster.status("chat")
        assert deployment["spec"]["replicas"] == 4
        assert op.metric("modelplane_llmdeployment_max_replicas", namespace="default",
                         llmdeployment="chat", model="smollm2") == 5  # fmt: skip
        assert op.metric("modelplane_llmdeployment_target_ttft_p95_seconds", namespace="default",
                         llmdeployment="chat", model="smollm2") == 1.5  # fmt: skip
