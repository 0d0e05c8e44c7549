"""The rollout planner: where a model's Deployment stands on its way to a new template.

A new model revision, engine setting or image changes the pod template; the
Deployment then replaces replicas as `rollout.maxSurge`/`maxUnavailable`
allow. The resource is `Progressing` until every replica runs the new
template and is ready; only then does `servedRevision` move to the new
revision. Pure: the observed Deployment in, a small plan out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from modelplane.operator.reconcile.observed import ObservedDeployment

NEW_REPLICA_SET_AVAILABLE: Final = "NewReplicaSetAvailable"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"


class RolloutState(StrEnum):
    NOT_STARTED = "NotStarted"  # no Deployment yet
    IN_PROGRESS = "InProgress"
    COMPLETE = "Complete"
    STALLED = "Stalled"  # the Deployment gave up (progress deadline exceeded)


@dataclass(frozen=True)
class RolloutPlan:
    state: RolloutState
    target_revision: str
    served_revision: str | None  # what status.servedRevision should say
    message: str

    @property
    def rolling(self) -> bool:
        return self.state in (RolloutState.IN_PROGRESS, RolloutState.STALLED)


def plan_rollout(
    *,
    target_revision: str,
    target_template_hash: str,
    deployment: ObservedDeployment | None,
    served_revision: str | None,
) -> RolloutPlan:
    """`served_revision` is the last one status reported; it moves only on completion."""
    if deployment is None:
        return RolloutPlan(
            RolloutState.NOT_STARTED, target_revision, served_revision, "creating the Deployment"
        )
    want = deployment.spec_replicas
    caught_up = deployment.generation is None or (
        deployment.observed_generation is not None
        and deployment.observed_generation >= deployment.generation
    )
    on_target = deployment.template_hash == target_template_hash
    progressing = deployment.condition("Progressing")
    replaced = (
        caught_up
        and on_target
        and deployment.updated_replicas >= want
        and deployment.replicas <= want  # no replica of an older template left
    )
    # The Deployment controller says "NewReplicaSetAvailable" once the new template was
    # fully available; a replica failing after that is degradation, not the rollout.
    finished = progressing is not None and progressing.reason == NEW_REPLICA_SET_AVAILABLE
    if replaced and (deployment.ready_replicas >= want or finished):
        return RolloutPlan(
            RolloutState.COMPLETE,
            target_revision,
            target_revision,
            f"all {want} replicas run revision {target_revision}",
        )
    if progressing is not None and progressing.reason == PROGRESS_DEADLINE_EXCEEDED:
        return RolloutPlan(
            RolloutState.STALLED,
            target_revision,
            served_revision,
            f"rollout of revision {target_revision} stalled: {progressing.message}",
        )
    return RolloutPlan(
        RolloutState.IN_PROGRESS,
        target_revision,
        served_revision,
        f"rolling out revision {target_revision}: {deployment.updated_replicas}/{want} "
        f"replicas updated, {deployment.ready_replicas} ready",
    )
