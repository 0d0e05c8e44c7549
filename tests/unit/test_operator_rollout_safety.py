"""Rollouts that keep clients served: the pod's stop sequence, the operator's rollout slots,
and manual edits of children, as the pure decisions behind them.

The same behaviours run end to end in tests/integration/operator/test_operator_rollouts.py
(the emulator) and tests/integration/test_server_lifecycle.py (the real server).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders import BuildOptions, build_children
from modelplane.operator.builders.deployment import CONTAINER
from modelplane.operator.builders.server_config import CONFIG_FILE
from modelplane.operator.config import (
    SHUTDOWN_MARGIN_SECONDS,
    ConfigError,
    OperatorConfig,
    load_config,
)
from modelplane.operator.reconcile.children_plan import plan_children
from modelplane.operator.reconcile.drift import drifted_fields, owned_digest
from modelplane.operator.reconcile.observed import (
    DeploymentCondition,
    ObservedDeployment,
    observe_child,
)
from modelplane.operator.reconcile.rollout_limit import (
    TemplateChange,
    gate_rollout,
    model_spec_hash,
    rolling_out,
    template_change,
)
from modelplane.server.runner import CLOSE_TIMEOUT_S

SPEC = LLMDeploymentSpec.model_validate({"model": {"source": "hf://org/model"}})


def rendered(config: OperatorConfig) -> dict[str, dict[str, Any]]:
    built = build_children("chat", "llm", SPEC, config, BuildOptions(replicas=2))
    return {m["kind"]: m for m in built}


# --- the stop sequence: pre-stop sleep, drain, exit, all within the grace period


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the defaults
        {"preStopSeconds": 0},  # no hook
        {"drainTimeoutSeconds": 0},
        {"preStopSeconds": 30, "drainTimeoutSeconds": 900},
    ],
)
def test_the_grace_period_covers_pre_stop_drain_and_close(settings: dict[str, Any]) -> None:
    """Read from the rendered objects, as the kubelet and the server would read them."""
    children = rendered(OperatorConfig.model_validate(settings))
    pod = children["Deployment"]["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == CONTAINER)
    hook = container.get("lifecycle", {}).get("preStop")
    pre_stop = hook["sleep"]["seconds"] if hook else 0
    drain = yaml.safe_load(children["ConfigMap"]["data"][CONFIG_FILE])["drainTimeout"]
    assert pre_stop == settings.get("preStopSeconds", 10)
    assert hook is None or set(hook) == {"sleep"}  # native: nothing runs in the image
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + SHUTDOWN_MARGIN_SECONDS
    assert SHUTDOWN_MARGIN_SECONDS > CLOSE_TIMEOUT_S  # uvicorn's close, then the engine's


def test_the_default_drain_lets_long_streams_finish() -> None:
    config = OperatorConfig()
    assert config.drain_timeout_seconds >= 120 and config.pre_stop_seconds > 0


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("preStopSeconds: -1", "preStopSeconds"),
        ("preStopSeconds: 3600", "preStopSeconds"),
        ("maxConcurrentOperatorRollouts: 0", "maxConcurrentOperatorRollouts"),
        ("drainTimeoutSeconds: soon", "drainTimeoutSeconds"),
    ],
)
def test_bad_stop_settings_are_refused_by_name(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        load_config(path)


# --- operator-caused rollouts: which change, who is rolling, who waits


def deployment(
    *,
    template: str = "t1",
    spec_hash: str | None = "s1",
    generation: int = 2,
    observed_generation: int | None = 2,
    want: int = 2,
    replicas: int = 2,
    ready: int = 2,
    updated: int = 2,
    progressing: str | None = None,
) -> ObservedDeployment:
    conditions = (DeploymentCondition("Progressing", "True", progressing),) if progressing else ()
    return ObservedDeployment(
        generation=generation, observed_generation=observed_generation, spec_replicas=want,
        replicas=replicas, ready_replicas=ready, updated_replicas=updated,
        available_replicas=ready, template_hash=template, revision="main",
        conditions=conditions, model_spec_hash=spec_hash,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "target", "spec_hash", "change"),
    [
        (None, "t2", "s1", TemplateChange.NONE),  # being created
        (deployment(), "t1", "s1", TemplateChange.NONE),  # runs the desired template
        (deployment(), "t2", "s2", TemplateChange.OWN_SPEC),  # the owner changed the spec
        (deployment(), "t2", "s1", TemplateChange.OPERATOR),  # same spec, new template
        (deployment(spec_hash=None), "t2", "s2", TemplateChange.OPERATOR),  # older operator
    ],
)
def test_template_change_cause(
    observed: ObservedDeployment | None, target: str, spec_hash: str, change: TemplateChange
) -> None:
    assert template_change(observed, target_template_hash=target, spec_hash=spec_hash) is change


def test_the_model_spec_hash_ignores_replicas_only() -> None:
    """The autoscaler writes spec.replicas (bumping the generation): not the owner's change."""
    spec = {"model": {"source": "hf://org/m"}, "replicas": 1}
    assert model_spec_hash(spec) == model_spec_hash({**spec, "replicas": 7})
    assert model_spec_hash(spec) != model_spec_hash({**spec, "engine": {"maxModelLen": 2048}})


@pytest.mark.parametrize(
    ("observed", "rolling"),
    [
        (None, False),
        (deployment(), False),  # settled
        (deployment(observed_generation=1), True),  # the controller has not seen the change
        (deployment(replicas=3, updated=1), True),  # surge replica beside the old ones
        (deployment(ready=1, updated=2), True),  # maxSurge 0: a replaced replica loading
        (deployment(ready=1, progressing="NewReplicaSetAvailable"), False),  # degraded later
        (deployment(ready=1, updated=1, progressing="ProgressDeadlineExceeded"), False),
        (deployment(want=0, replicas=0, ready=0, updated=0), False),  # scaled to zero
    ],
)
def test_rolling_out(observed: ObservedDeployment | None, rolling: bool) -> None:
    assert rolling_out(observed) is rolling


@pytest.mark.parametrize(
    ("change", "here", "elsewhere", "hold"),
    [
        (TemplateChange.OPERATOR, False, 1, False),
        (TemplateChange.OPERATOR, False, 2, True),  # two roll: wait
        (TemplateChange.OPERATOR, True, 5, False),  # already rolling: take the new template
        (TemplateChange.OWN_SPEC, False, 9, False),  # the owner's change never waits
        (TemplateChange.NONE, False, 9, False),
    ],
)
def test_rollout_gate(change: TemplateChange, here: bool, elsewhere: int, hold: bool) -> None:
    gate = gate_rollout(change, rolling_here=here, rolling_elsewhere=elsewhere, limit=2)
    assert gate.hold is hold
    assert ("maxConcurrentOperatorRollouts is 2" in gate.message) is hold


# --- manual edits: the fields the operator sets, compared by value


def applied(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a real API server returns for `manifest`: defaults added, empties dropped,
    quantities in canonical form, other controllers' annotations."""
    body = copy.deepcopy(manifest)
    body["metadata"].update(uid="u1", resourceVersion="7", generation=1, managedFields=[{}])
    body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    body["status"] = {"replicas": 2}
    pod = body["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default")
    for container in pod["containers"]:
        container.update(terminationMessagePath="/dev/termination-log")
        if not container.get("env"):
            container.pop("env", None)
        container["readinessProbe"]["successThreshold"] = 1
        requests = container["resources"]["requests"]
        requests["cpu"] = {"0.5": "500m", "2": "2"}.get(requests["cpu"], requests["cpu"])
    for volume in pod["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["defaultMode"] = 420
    return body


def desired_deployment(**resources: str) -> dict[str, Any]:
    deployment = rendered(OperatorConfig())["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["resources"]["requests"].update(resources)
    return deployment


def test_what_the_api_server_adds_is_no_edit() -> None:
    want = desired_deployment(cpu="0.5")
    assert drifted_fields(want, observe_child("Deployment", applied(want)).content or {}) == []


def edit(body: dict[str, Any], how: str) -> None:
    pod = body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if how == "image":
        container["image"] = "attacker.example.com/miner:latest"
    elif how == "args":
        container["args"].append("--max-num-seqs=1")
    elif how == "resources":
        container["resources"]["limits"]["memory"] = "1Gi"
    elif how == "env":
        container["env"] = [{"name": "HF_HUB_OFFLINE", "value": "0"}]
    elif how == "sidecar":
        pod["containers"].append({"name": "proxy", "image": "proxy:1"})
    elif how == "grace":
        pod["terminationGracePeriodSeconds"] = 1
    elif how == "pre-stop":
        del container["lifecycle"]
    elif how == "label":
        body["spec"]["template"]["metadata"]["labels"][contract.LABEL_TRACK] = "canary"


@pytest.mark.parametrize(
    ("how", "path"),
    [
        ("image", "spec.template.spec.containers[0].image"),
        ("args", "spec.template.spec.containers[0].args"),
        ("resources", "spec.template.spec.containers[0].resources.limits.memory"),
        ("env", "spec.template.spec.containers[0].env"),
        ("sidecar", "spec.template.spec.containers"),
        ("grace", "spec.template.spec.terminationGracePeriodSeconds"),
        ("pre-stop", "spec.template.spec.containers[0].lifecycle"),
        ("label", f"spec.template.metadata.labels.{contract.LABEL_TRACK}"),
    ],
)
def test_an_edit_of_what_the_operator_sets_is_found(how: str, path: str) -> None:
    want = desired_deployment()
    body = applied(want)
    edit(body, how)
    assert drifted_fields(want, observe_child("Deployment", body).content or {}) == [path]


def test_the_plan_sets_an_edit_back_even_with_the_hash_kept() -> None:
    want = desired_deployment()
    body = applied(want)
    edit(body, "image")
    seen = observe_child("Deployment", body)
    assert seen.spec_hash == want["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]
    plan = plan_children([want], {("Deployment", "chat"): seen})
    assert plan.apply == [want]
    assert plan.reverted == {("Deployment", "chat"): ["spec.template.spec.containers[0].image"]}
    # A kept (pinned) Deployment keeps what it runs.
    kept = plan_children([want], {("Deployment", "chat"): seen}, keep={("Deployment", "chat")})
    assert kept.empty


def test_what_a_webhook_changes_on_every_write_is_not_written_again_and_again() -> None:
    """The operator's own write came back changed (a mutating webhook): the same
    difference is tolerated; a further edit by hand is not."""
    want = desired_deployment()
    mutated = applied(want)
    mutated["spec"]["template"]["spec"]["containers"][0]["image"] = "mirror.example.com/server"
    seen = observe_child("Deployment", mutated)
    key = ("Deployment", "chat")
    tolerated = {key: owned_digest(want, seen.content or {})}
    assert plan_children([want], {key: seen}, tolerated=tolerated).empty
    edit(mutated, "args")
    again = observe_child("Deployment", mutated)
    assert plan_children([want], {key: again}, tolerated=tolerated).apply == [want]
