"""The operator's pure decisions, as tables: fit check, replicas, children plan, rollout."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.children_plan import plan_children
from modelplane.operator.reconcile.fit import fit_problems
from modelplane.operator.reconcile.observed import (
    DeploymentCondition,
    ObservedChild,
    ObservedDeployment,
)
from modelplane.operator.reconcile.replicas import deployment_replicas
from modelplane.operator.reconcile.rollout import RolloutState, plan_rollout

CONFIG = OperatorConfig()
SOURCE = {"source": "hf://org/model"}


def spec(**fields: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({"model": SOURCE, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, []),
        ({"resources": {"gpus": 1}}, []),  # the generic NVIDIA profile
        ({"resources": {"gpus": 1, "accelerator": "nvidia-h100"},
          "engine": {"quantization": "fp8"}}, []),
        ({"resources": {"gpus": 1, "accelerator": "nvidia-l4"},
          "engine": {"quantization": "fp8"}}, []),
        ({"resources": {"gpus": 1, "accelerator": "nvidia-a100"},
          "engine": {"quantization": "fp8"}},
         ["quantization fp8 is not supported on nvidia-a100; use an accelerator that supports "
          "it (nvidia-gpu, nvidia-h100, nvidia-h200, nvidia-l4, nvidia-l40s) or a checkpoint "
          "with another quantization"]),
        ({"resources": {"gpus": 1, "accelerator": "nvidia-t4"},
          "engine": {"quantization": "awq"}}, []),
        ({"engine": {"quantization": "fp8"}},
         ["quantization fp8 needs an NVIDIA GPU; use none (or awq/gptq) on CPU"]),
        ({"engine": {"kvCacheDtype": "fp8"}}, ["kvCacheDtype fp8 needs a GPU; use auto on CPU"]),
        ({"resources": {"gpus": 2, "accelerator": "cpu"}},
         ["accelerator cpu has no GPUs but resources.gpus is 2; set resources.gpus to 0 or "
          "pick a GPU accelerator"]),
        ({"resources": {"accelerator": "nvidia-l4"}},
         ["accelerator nvidia-l4 is a GPU profile but resources.gpus is 0; set resources.gpus "
          "to at least 1, or remove resources.accelerator to serve on CPU"]),
        ({"resources": {"gpus": 1, "accelerator": "tpu-v5"}},
         ["resources.accelerator tpu-v5 is not an accelerator profile of this operator (known: "
          "cpu, nvidia-a100, nvidia-a100-40gb, nvidia-a10g, nvidia-gpu, nvidia-h100, nvidia-h200, "
          "nvidia-l4, nvidia-l40s, nvidia-t4); use one of them or add it to the operator config"]),
    ],
)  # fmt: skip
def test_fit_check_says_what_to_change(fields: dict[str, Any], expected: list[str]) -> None:
    assert fit_problems("chat", spec(**fields), CONFIG) == expected


def test_fit_check_refuses_names_that_cannot_name_a_service() -> None:
    (problem,) = fit_problems("Chat_1", spec(), CONFIG)
    assert "DNS label" in problem


@pytest.mark.parametrize(
    ("autoscaling", "replicas", "expected"),
    [
        ({"enabled": False}, 3, 3),
        ({"enabled": False}, 0, 0),
        # spec.replicas is the one count; with autoscaling on, within its bounds.
        ({"enabled": True, "minReplicas": 1, "maxReplicas": 8}, 4, 4),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 8}, 1, 2),
        ({"enabled": True, "minReplicas": 1, "maxReplicas": 3}, 9, 3),
        ({"enabled": True, "minReplicas": 0}, 0, 0),  # scale to zero from the start
        ({"enabled": True, "minReplicas": 0}, 1, 1),
    ],
)
def test_deployment_replicas(autoscaling: dict[str, Any], replicas: int, expected: int) -> None:
    assert deployment_replicas(spec(autoscaling=autoscaling, replicas=replicas)) == expected


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "chat", "annotations": {"modelplane.io/spec-hash": "h1"}},
        "spec": {"replicas": replicas},
    }


def _observed(hash_: str, replicas: int) -> ObservedChild:
    deployment = ObservedDeployment(1, 1, replicas, 0, 0, 0, 0, "t", "main")
    return ObservedChild("Deployment", "chat", hash_, deployment=deployment)


@pytest.mark.parametrize(
    ("observed", "applies"),
    [
        ({}, True),  # missing: create
        ({("Deployment", "chat"): _observed("h1", 2)}, False),  # in sync
        ({("Deployment", "chat"): _observed("h0", 2)}, True),  # drifted
        ({("Deployment", "chat"): _observed("h1", 3)}, True),  # rescaled by someone: back
    ],
)
def test_children_plan(observed: dict[Any, ObservedChild], applies: bool) -> None:
    plan = plan_children([_deployment(2)], observed)
    assert bool(plan.apply) is applies and plan.delete == []
    assert plan.empty is not applies


def test_children_plan_deletes_what_is_no_longer_wanted() -> None:
    observed = {
        ("Deployment", "chat"): _observed("h1", 2),
        ("ServiceMonitor", "chat"): ObservedChild("ServiceMonitor", "chat", "x"),
    }
    plan = plan_children([_deployment(2)], observed)
    assert plan.apply == [] and plan.delete == [("ServiceMonitor", "chat")]


def test_a_kept_deployment_keeps_its_template_and_follows_the_count() -> None:
    """A stable track pinned while a canary runs: never re-applied, only rescaled."""
    kept = {("Deployment", "chat")}
    drifted_and_rescaled = {("Deployment", "chat"): _observed("h0", 3)}
    plan = plan_children([_deployment(2)], drifted_and_rescaled, keep=kept)
    assert plan.apply == [] and plan.rescale == {("Deployment", "chat"): 2}
    same_count = {("Deployment", "chat"): _observed("h0", 2)}
    assert plan_children([_deployment(2)], same_count, keep=kept).empty


def _status(
    want: int,
    replicas: int,
    ready: int,
    updated: int,
    *,
    template: str = "new",
    generation: int = 2,
    observed_generation: int | None = 2,
    conditions: tuple[DeploymentCondition, ...] = (),
) -> ObservedDeployment:
    return ObservedDeployment(
        generation=generation, observed_generation=observed_generation, spec_replicas=want,
        replicas=replicas, ready_replicas=ready, updated_replicas=updated,
        available_replicas=ready, template_hash=template, revision="v2", conditions=conditions,
    )  # fmt: skip


STALLED = DeploymentCondition("Progressing", "False", "ProgressDeadlineExceeded", "too slow")
AVAILABLE = DeploymentCondition("Progressing", "True", "NewReplicaSetAvailable")


@pytest.mark.parametrize(
    ("deployment", "state", "served"),
    [
        (None, RolloutState.NOT_STARTED, "v1"),
        (_status(2, 2, 2, 2), RolloutState.COMPLETE, "v2"),
        (_status(2, 2, 2, 2, template="old"), RolloutState.IN_PROGRESS, "v1"),  # not yet patched
        (_status(2, 2, 2, 2, observed_generation=1), RolloutState.IN_PROGRESS, "v1"),
        (_status(2, 3, 2, 1), RolloutState.IN_PROGRESS, "v1"),  # maxSurge 1: one new, old left
        (_status(2, 2, 1, 2), RolloutState.IN_PROGRESS, "v1"),  # updated, one still loading
        (_status(2, 3, 2, 2), RolloutState.IN_PROGRESS, "v1"),  # an old replica terminating
        (_status(2, 2, 1, 1), RolloutState.IN_PROGRESS, "v1"),  # maxSurge 0: one replaced
        (_status(2, 2, 1, 1, conditions=(STALLED,)), RolloutState.STALLED, "v1"),
        (_status(2, 2, 1, 2, conditions=(AVAILABLE,)), RolloutState.COMPLETE, "v2"),
        (_status(2, 3, 1, 2, conditions=(AVAILABLE,)), RolloutState.IN_PROGRESS, "v1"),
        (_status(0, 0, 0, 0), RolloutState.COMPLETE, "v2"),  # scaled to zero
    ],
)
def test_rollout_plan(
    deployment: ObservedDeployment | None, state: RolloutState, served: str
) -> None:
    plan = plan_rollout(
        target_revision="v2", target_template_hash="new", deployment=deployment,
        served_revision="v1",
    )  # fmt: skip
    assert plan.state is state
    assert plan.served_revision == served
    assert plan.target_revision == "v2" and plan.message
