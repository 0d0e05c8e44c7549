"""The operator takes over nothing it did not create, and deletes only what it owns.

Against KMock's emulator (no Kubernetes API server can run here). A forced
server-side apply would silently rewrite an object that merely has the
child's name (an administrator's NetworkPolicy named like a model), and a
delete by label would remove anything carrying the model's labels. What a
user sees instead: the LLMDeployment is Failed with a condition naming the
object, the object is untouched, and the model starts once the name is free.
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for

SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
ADMIN_POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "chat", "namespace": "default"},
    "spec": {"podSelector": {"matchLabels": {"app": "billing"}}, "policyTypes": ["Ingress"]},
}


def test_a_name_held_by_someone_elses_object_is_refused_and_left_alone(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    cluster.kubectl.create("networkpolicies", ADMIN_POLICY)
    with run_operator(resyncSeconds=0.5):
        cluster.create_llmd("chat", SPEC)
        wait_for("phase Failed", lambda: cluster.status("chat").get("phase") == "Failed")
        ready = cluster.condition("chat", "Ready")
        assert ready["reason"] == "NameTaken"
        assert "NetworkPolicy chat already exists in namespace default" in ready["message"]
        # The Event is posted right after the status it explains: poll, do not race it.
        wait_for("a NameTaken event", lambda: cluster.events("chat", "NameTaken"))
        policy = cluster.objects("networkpolicies")["chat"]
        assert (
            policy["spec"] == ADMIN_POLICY["spec"] and "ownerReferences" not in policy["metadata"]
        )
        assert not [w for w in cluster.operator_writes() if "/networkpolicies" in w]
        assert cluster.objects("deployments") == {}  # nothing half-created either

        cluster.kubectl.delete("networking.k8s.io/v1", "networkpolicies", "default", "chat")

        def owned_policy() -> bool:
            policy = cluster.objects("networkpolicies").get("chat", {})
            return "ownerReferences" in policy.get("metadata", {})

        wait_for("the model's own policy", owned_policy)
        wait_for("phase Loading", lambda: cluster.status("chat").get("phase") == "Loading")
        assert "chat" in cluster.objects("deployments")


def test_an_object_with_the_models_labels_but_not_its_owner_is_not_deleted(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    lookalike = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "chat-notes",
            "namespace": "default",
            "labels": {
                contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                contract.LABEL_LLMDEPLOYMENT: "chat",
            },
        },
        "data": {"owner": "the on-call team"},
    }
    cluster.kubectl.create("configmaps", lookalike)
    with run_operator(resyncSeconds=0.5) as op:
        cluster.create_llmd("chat", SPEC)
        wait_for("phase Loading", lambda: cluster.status("chat").get("phase") == "Loading")
        reconciles = op.reconciles()
        wait_for("two more reconciles", lambda: op.reconciles() >= reconciles + 2)
        assert cluster.objects("configmaps")["chat-notes"]["data"] == lookalike["data"]
        assert not [w for w in cluster.operator_writes() if w.startswith("DELETE")]
