"""Status from observation: phases and conditions a user sees, written only when they change."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.api.llmdeployment import LLMDeploymentStatus
from modelplane.operator.reconcile.observed import DeploymentCondition, ObservedDeployment
from modelplane.operator.reconcile.rollout import plan_rollout
from modelplane.operator.reconcile.status import Observation, compute_status, status_patch

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(
    want: int,
    ready: int,
    *,
    updated: int | None = None,
    replicas: int | None = None,
    template: str = "t2",
    stalled: bool = False,
    available: bool = False,
) -> ObservedDeployment:
    conditions: tuple[DeploymentCondition, ...] = ()
    if stalled:
        conditions = (DeploymentCondition("Progressing", "False", "ProgressDeadlineExceeded"),)
    if available:
        conditions = (DeploymentCondition("Progressing", "True", "NewReplicaSetAvailable"),)
    return ObservedDeployment(
        generation=3, observed_generation=3, spec_replicas=want,
        replicas=want if replicas is None else replicas, ready_replicas=ready,
        updated_replicas=want if updated is None else updated, available_replicas=ready,
        template_hash=template, revision="v2", conditions=conditions,
    )  # fmt: skip


def observe(
    d: ObservedDeployment | None,
    *,
    served: str | None = "v1",
    now: str = T1,
    previous: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    prev = LLMDeploymentStatus.model_validate(previous or {"servedRevision": served})
    plan = plan_rollout(
        target_revision="v2", target_template_hash="t2", deployment=d,
        served_revision=prev.served_revision,
    )  # fmt: skip
    return compute_status(
        Observation(
            name="chat", namespace="llm", generation=3, now=now, served_name="chat",
            deployment=d, rollout=plan, previous=prev, **extra,
        )
    )  # fmt: skip


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("d", "served", "phase", "ready", "progressing", "degraded"),
    [
        (None, None, "Pending", "False", "True", "False"),
        (deployment(1, 0), None, "Loading", "False", "True", "False"),
        (deployment(2, 1, updated=1), None, "Loading", "True", "True", "False"),
        (deployment(2, 2), None, "Ready", "True", "False", "False"),
        (deployment(2, 2), "v1", "Ready", "True", "False", "False"),
        (deployment(2, 2, template="t1"), "v1", "Progressing", "True", "True", "False"),
        (deployment(2, 1, updated=1, replicas=3), "v1", "Progressing", "True", "True", "False"),
        (deployment(2, 1, updated=1, stalled=True), "v1", "Degraded", "True", "False", "True"),
        (deployment(1, 0, stalled=True), None, "Degraded", "False", "False", "True"),
        # All replicas run the current template and it was fully available once:
        # fewer ready replicas now is degradation, not a rollout.
        (deployment(3, 2, available=True), "v2", "Degraded", "True", "False", "True"),
        (deployment(1, 0, available=True), "v2", "Degraded", "False", "False", "True"),
        # Without that word from the Deployment, the new template is still coming up.
        (deployment(3, 2), "v2", "Progressing", "True", "True", "False"),
        (deployment(0, 0), "v2", "Ready", "True", "False", "False"),
    ],
)  # fmt: skip
def test_phase_and_conditions(
    d: ObservedDeployment | None, served: str | None, phase: str, ready: str,
    progressing: str, degraded: str,
) -> None:  # fmt: skip
    status = observe(d, served=served)
    assert status["phase"] == phase
    found = conditions(status)
    assert (found["Ready"][0], found["Progressing"][0], found["Degraded"][0]) == (
        ready, progressing, degraded,
    )  # fmt: skip
    assert found["FitCheck"] == ("True", "Fits")
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_counts_endpoint_and_selector() -> None:
    status = observe(deployment(3, 2, updated=3), served="v2")
    assert status["ready"] == "2/3"
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 2, 3)
    assert status["desiredReplicas"] == 3
    assert status["endpoint"] == "http://chat.llm.svc:8000/v1"
    assert status["selector"] == "modelplane.io/llmdeployment=chat,modelplane.io/track=stable"
    assert status["observedGeneration"] == 3 and status["model"] == "chat"


def test_problems_mean_failed_with_the_reason() -> None:
    status = observe(deployment(1, 1), problems=("spec.x: bad", "spec.y: worse"),
                     problem_reason="InvalidSpec")  # fmt: skip
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and ready["message"] == "spec.x: bad; spec.y: worse"
    assert status["readyReplicas"] == 1  # what still runs is still reported


def test_the_canary_condition_of_older_operators_is_dropped() -> None:
    """Canary rollouts used to be flagged NotImplemented; now `status.canary` tells."""
    old = {"type": "Canary", "status": "False", "reason": "NotImplemented"}
    status = observe(deployment(1, 1), previous={"servedRevision": "v1", "conditions": [old]})
    assert "Canary" not in conditions(status)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = observe(deployment(1, 0), served=None, now=T0)
    later = observe(deployment(1, 0), served=None, now=T1, previous=first)
    assert later == first
    assert status_patch(first, later) == {}
    ready = observe(deployment(1, 1), served=None, now=T1, previous=first)
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times["Ready"] == T1 and times["FitCheck"] == T0
    patch = status_patch(first, ready)
    assert set(patch) == {"phase", "conditions", "readyReplicas", "ready", "servedRevision"}


def test_other_writers_conditions_and_fields_are_kept() -> None:
    previous = {
        "servedRevision": "v2",
        "conditions": [{"type": "ScalingLimited", "status": "True", "reason": "AtMax"}],
        "scaleReason": "ttft p95 1.4s > 1.0s",
    }
    status = observe(deployment(2, 2), previous=previous)
    assert conditions(status)["ScalingLimited"] == ("True", "AtMax")
    patch = status_patch(previous, status)
    assert "scaleReason" not in patch


def test_status_patch_removes_counts_of_a_deployment_that_is_gone() -> None:
    current = observe(deployment(1, 1))
    gone = observe(None)
    patch = status_patch(current, gone)
    assert patch["replicas"] is None and patch["readyReplicas"] is None
    assert patch["phase"] == "Pending"
