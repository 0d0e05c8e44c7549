"""Rollouts the operator causes itself, and children edited by hand, against the emulator.

The cluster is KMock's Kubernetes emulator (tests/support/kube_emulator.py);
it has no controllers, so the tests play the Deployment controller by
patching Deployment status, as the cluster would. An operator restart with
a changed config file is what an operator upgrade or a config change does
to every model at once: the pod template changes under an unchanged spec.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for

SMOLLM2 = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "engine": {"maxModelLen": 4096},
    "resources": {"gpus": 0},
}
NEW_IMAGE = "registry.example.com/modelplane/server:cpu-2"
MODELS = ("m1", "m2", "m3", "m4")


def server(cluster: Cluster, name: str) -> dict[str, Any]:
    deployment = cluster.objects("deployments")[name]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def on_new_image(cluster: Cluster) -> set[str]:
    return {m for m in MODELS if server(cluster, m)["image"] == NEW_IMAGE}


def queued(cluster: Cluster) -> set[str]:
    return {
        m
        for m in MODELS
        if cluster.condition(m, "Progressing")["reason"] == "RolloutQueued"
        and cluster.condition(m, "Progressing")["status"] == "True"
    }


def has_deployment(cluster: Cluster, name: str) -> bool:
    return name in cluster.objects("deployments")


def finish_rollout(cluster: Cluster, name: str) -> None:
    cluster.report_deployment(name, replicas=1, readyReplicas=1, updatedReplicas=1)


def test_an_operator_change_rolls_two_models_at_a_time_and_never_holds_a_spec_change(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(maxConcurrentOperatorRollouts=2):
        for name in MODELS:
            cluster.create_llmd(name, SMOLLM2)
        for name in MODELS:
            wait_for(f"{name}'s Deployment", partial(has_deployment, cluster, name))
            finish_rollout(cluster, name)
        wait_for("every model Ready", lambda: all(
            cluster.status(m).get("phase") == "Ready" for m in MODELS))  # fmt: skip

    # A new operator config (as an upgrade would) changes every model's template.
    with run_operator(maxConcurrentOperatorRollouts=2, images={"cpu": NEW_IMAGE}):
        wait_for("two models re-templated", lambda: len(on_new_image(cluster)) == 2)
        wait_for("the other two queued", lambda: len(queued(cluster)) == 2)
        rolling = on_new_image(cluster)
        waiting = set(MODELS) - rolling
        assert queued(cluster) == waiting and len(on_new_image(cluster)) == 2
        for name in waiting:
            status = cluster.status(name)
            assert status["phase"] == "Ready"  # still serving with the template it runs
            assert "maxConcurrentOperatorRollouts is 2" in cluster.condition(
                name, "Progressing")["message"]  # fmt: skip
            assert server(cluster, name)["image"] != NEW_IMAGE

        # A waiting model whose own spec changes rolls at once, whatever is rolling.
        own, still_waiting = sorted(waiting)
        cluster.patch_llmd(own, {"engine": {"maxModelLen": 2048}})
        wait_for(f"{own} rolled out its own change", lambda: own in on_new_image(cluster))
        args = server(cluster, own)["args"]
        assert args[args.index("--max-model-len") + 1] == "2048"
        assert on_new_image(cluster) == rolling | {own}

        # Three roll now (two operator changes, one spec change): one finishing is not
        # enough for the last one, two are.
        first, second = sorted(rolling)
        finish_rollout(cluster, first)
        wait_for(f"{first} Ready", lambda: cluster.status(first).get("phase") == "Ready")
        assert still_waiting in queued(cluster)
        assert still_waiting not in on_new_image(cluster)
        finish_rollout(cluster, second)
        wait_for(f"{still_waiting} re-templated", lambda: on_new_image(cluster) == set(MODELS))

        for name in (own, still_waiting):
            finish_rollout(cluster, name)
        wait_for("every model Ready on the new template", lambda: all(
            cluster.status(m).get("phase") == "Ready"
            and cluster.condition(m, "Progressing")["reason"] == "RolloutComplete"
            for m in MODELS))  # fmt: skip


def test_a_manual_edit_of_the_deployment_is_set_back(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    """`kubectl edit deploy chat` changing image, args, resources and replicas, the
    annotations left as they were: the operator sees it and writes its own back."""
    with run_operator(resyncSeconds=0.5) as op:
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        finish_rollout(cluster, "chat")
        wait_for("phase Ready", lambda: cluster.status("chat").get("phase") == "Ready")
        before = cluster.objects("deployments")["chat"]
        wanted = server(cluster, "chat")

        edited = dict(wanted)
        edited["image"] = "attacker.example.com/miner:latest"
        edited["args"] = [*wanted["args"], "--max-num-seqs=1"]
        edited["resources"] = {"requests": {"cpu": "100m"}, "limits": {}}
        edit_mark = len(cluster.operator_requests())
        cluster.kubectl.patch("apps/v1", "deployments", "default", "chat", {"spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [edited]}},
        }})  # fmt: skip
        after_edit = cluster.objects("deployments")["chat"]
        hash_key = contract.ANNOTATION_SPEC_HASH
        kept = before["metadata"]["annotations"][hash_key]
        assert after_edit["metadata"]["annotations"][hash_key] == kept  # the hash says nothing

        wait_for("the edit set back", lambda: server(cluster, "chat") == wanted)
        assert cluster.objects("deployments")["chat"]["spec"]["replicas"] == 1
        (event,) = cluster.events("chat", "ManualChangeReverted")
        assert event["type"] == "Warning"
        assert "spec.template.spec.containers[0].image" in event["message"]

        # Set back, not fought over: the operator settles, writing nothing more. (The
        # test plays the Deployment controller, so status may still move once or twice
        # while the edit's and the set-back's generations are reported.)
        def settled() -> bool:
            finish_rollout(cluster, "chat")
            seen, reconciles = len(cluster.operator_requests()), op.reconciles()
            wait_for("two resyncs", lambda: op.reconciles() >= reconciles + 2)
            return cluster.operator_writes(since=seen) == []

        wait_for("two idle resyncs in a row", settled, timeout=60)
        deployment_writes = [
            w for w in cluster.operator_writes(since=edit_mark) if "/deployments/chat" in w
        ]
        assert len(deployment_writes) == 1, deployment_writes  # set back exactly once
        assert cluster.status("chat").get("phase") == "Ready"


def test_a_manual_edit_of_the_server_settings_is_set_back(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(resyncSeconds=0.5):
        cluster.create_llmd("chat", SMOLLM2)
        wait_for("the ConfigMap", lambda: "chat-server-config" in cluster.objects("configmaps"))
        wanted = cluster.objects("configmaps")["chat-server-config"]["data"]
        cluster.kubectl.patch("v1", "configmaps", "default", "chat-server-config",
                              {"data": {"serve.yaml": "model: /elsewhere\n"}})  # fmt: skip
        wait_for("the settings set back", lambda: (
            cluster.objects("configmaps")["chat-server-config"]["data"] == wanted))  # fmt: skip
