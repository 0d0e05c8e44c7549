"""Status from observation: phase, conditions and counts of an LLMDeployment.

Pure: what the operator saw (the spec's problems, the Deployment's counts,
the rollout plan, the previous status) in, the status fields the operator
owns out. Conditions follow the Kubernetes convention (`type`, `status`,
`reason`, `message`, `lastTransitionTime`, `observedGeneration`), and a
condition keeps its `lastTransitionTime` while its status does not change.
While a canary runs (or after one was aborted) the canary plan, not the
pinned stable track, says where the rollout stands. Conditions of types the
operator does not own (the autoscaler's `ScalingLimited`) are carried over
untouched, and `status_patch` writes only
the fields that changed, so a resync with nothing new writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api.llmdeployment import (
    CanaryPhase,
    Condition,
    ConditionType,
    LLMDeploymentStatus,
    Phase,
)
from modelplane.operator.builders.naming import endpoint, pod_selector, selector_string
from modelplane.operator.canary.plan import CANARY_ABORTED, CanaryPlan
from modelplane.operator.reconcile.download import DOWNLOAD_FAILED, DOWNLOADING, DownloadState
from modelplane.operator.reconcile.observed import ObservedDeployment
from modelplane.operator.reconcile.rollout import RolloutPlan, RolloutState
from modelplane.operator.reconcile.rollout_limit import ROLLOUT_QUEUED
from modelplane.operator.status_model import (
    condition,
)

OWNED_CONDITIONS: Final = frozenset(
    {
        ConditionType.READY,
        ConditionType.PROGRESSING,
        ConditionType.DEGRADED,
        ConditionType.FIT_CHECK,
        ConditionType.CANARY,
    }
)


@dataclass(frozen=True)
class Observation:
    """Everything status is computed from."""

    name: str
    namespace: str
    generation: int | None
    now: str  # RFC 3339, UTC
    served_name: str | None = None
    problems: tuple[str, ...] = ()  # non-empty: the spec cannot be served as written
    problem_reason: str = "InvalidSpec"
    deployment: ObservedDeployment | None = None  # the stable track's
    rollout: RolloutPlan | None = None  # the stable track's
    canary: CanaryPlan | None = None  # where a Canary rollout stands (None: spec not servable)
    download: DownloadState | None = None  # a cache profile's download, when there is one
    queued: str | None = None  # why an operator change of the template waits for a slot
    replica_startup_seconds: float | None = None  # the last ready pod's scheduled -> ready
    previous: LLMDeploymentStatus = field(default_factory=LLMDeploymentStatus)


def _condition(
    obs: Observation, type_: ConditionType, status: bool, reason: str, message: str
) -> Condition:
    return condition(
        type_,
        status,
        reason,
        message,
        previous=obs.previous.conditions,
        now=obs.now,
        generation=obs.generation,
    )


def _phase_and_conditions(obs: Observation) -> tuple[Phase, list[Condition]]:
    cond = _condition
    if obs.problems:
        message = "; ".join(obs.problems)
        return Phase.FAILED, [
            cond(obs, ConditionType.READY, False, obs.problem_reason, message),
            cond(obs, ConditionType.PROGRESSING, False, obs.problem_reason, message),
            cond(obs, ConditionType.DEGRADED, False, obs.problem_reason, message),
            cond(obs, ConditionType.FIT_CHECK, False, obs.problem_reason, message),
        ]
    extra = [cond(obs, ConditionType.FIT_CHECK, True, "Fits", "fits the accelerator profile")]
    d, plan = obs.deployment, obs.rollout
    if d is None or plan is None or plan.state is RolloutState.NOT_STARTED:
        return Phase.PENDING, [
            cond(obs, ConditionType.READY, False, "Creating", "creating the model server"),
            cond(obs, ConditionType.PROGRESSING, True, "Creating", "creating the model server"),
            cond(obs, ConditionType.DEGRADED, False, "Creating", "creating the model server"),
            *extra,
        ]
    want, ready = d.spec_replicas, d.ready_replicas
    counts = f"{ready}/{want} replicas ready"
    stalled = plan.state is RolloutState.STALLED
    if want == 0:
        phase = Phase.READY
        readiness = cond(
            obs,
            ConditionType.READY,
            True,
            "ScaledToZero",
            "scaled to zero: the gateway starts a replica on the first request",
        )
    else:
        readiness = cond(
            obs,
            ConditionType.READY,
            ready > 0,
            "ReplicasReady" if ready > 0 else "NoReplicaReady",
            counts,
        )
        if plan.served_revision is None:
            phase = Phase.DEGRADED if stalled else Phase.LOADING
        elif stalled or (not plan.rolling and ready < want):
            phase = Phase.DEGRADED
        elif plan.rolling:
            phase = Phase.PROGRESSING
        else:
            phase = Phase.READY
    if plan.rolling:
        first = plan.served_revision is None
        progressing = cond(
            obs,
            ConditionType.PROGRESSING,
            not stalled,
            "ProgressDeadlineExceeded" if stalled else ("Loading" if first else "RollingOut"),
            plan.message,
        )
    else:
        progressing = cond(obs, ConditionType.PROGRESSING, False, "RolloutComplete", plan.message)
    short = stalled or (want > 0 and not plan.rolling and ready < want)
    why = "ProgressDeadlineExceeded" if stalled else "ReplicasUnavailable"
    degraded = cond(
        obs,
        ConditionType.DEGRADED,
        short,
        why if short else "AsDesired",
        plan.message if stalled else counts,
    )
    canary = obs.canary
    if canary is not None and canary.status is not None:
        # A canary runs (or was aborted): it, not the pinned stable track, says where the
        # rollout stands; the stable's readiness still decides Ready.
        if canary.aborted:
            phase = Phase.DEGRADED
            progressing = cond(
                obs, ConditionType.PROGRESSING, False, CANARY_ABORTED, canary.message
            )
            degraded = cond(obs, ConditionType.DEGRADED, True, CANARY_ABORTED, canary.message)
        else:
            promoting = canary.status.phase is CanaryPhase.PROMOTING
            reason = "CanaryPromoting" if promoting else "CanaryProgressing"
            progressing = cond(obs, ConditionType.PROGRESSING, True, reason, canary.message)
            short = want > 0 and ready < want and not promoting
            degraded = cond(
                obs,
                ConditionType.DEGRADED,
                short,
                "ReplicasUnavailable" if short else "AsDesired",
                counts,
            )
            phase = Phase.DEGRADED if short else Phase.PROGRESSING
    return phase, [readiness, progressing, degraded, *extra]


def _while_downloading(
    obs: Observation, phase: Phase, owned: list[Condition]
) -> tuple[Phase, list[Condition]]:
    """A download in progress (or failed) is where the rollout stands; replicas still
    serving the previous revision keep Ready as it is."""
    download = obs.download
    if download is None or not download.waiting or obs.problems:
        return phase, owned
    message = download.describe()
    reason = DOWNLOAD_FAILED if download.failed else DOWNLOADING
    serving = obs.deployment is not None and obs.rollout is not None
    replaced = {
        ConditionType.PROGRESSING: _condition(
            obs, ConditionType.PROGRESSING, not download.failed, reason, message
        ),
        ConditionType.DEGRADED: _condition(
            obs, ConditionType.DEGRADED, download.failed, reason, message
        ),
    }
    if not serving:
        replaced[ConditionType.READY] = _condition(obs, ConditionType.READY, False, reason, message)
        phase = Phase.DEGRADED if download.failed else Phase.PENDING
    else:
        phase = Phase.DEGRADED if download.failed else Phase.PROGRESSING
    return phase, [replaced.get(ConditionType(c.type), c) for c in owned]


def _while_queued(obs: Observation, owned: list[Condition]) -> list[Condition]:
    """An operator change of the template waits for a rollout slot: Progressing says so,
    while the phase and the rest still describe the template the replicas run."""
    if obs.queued is None or obs.problems:
        return owned
    queued = _condition(obs, ConditionType.PROGRESSING, True, ROLLOUT_QUEUED, obs.queued)
    return [queued if c.type == ConditionType.PROGRESSING else c for c in owned]


def compute_status(obs: Observation) -> dict[str, Any]:
    """The status fields the operator owns, in the resource's camelCase JSON form."""
    phase, owned = _while_downloading(obs, *_phase_and_conditions(obs))
    owned = _while_queued(obs, owned)
    # Another writer's conditions stay; an owned one no longer reported (Canary) goes.
    foreign = [c for c in obs.previous.conditions if c.type not in OWNED_CONDITIONS]
    status = LLMDeploymentStatus(
        phase=phase,
        conditions=owned + foreign,
        observed_generation=obs.generation,
        model=obs.served_name,
        endpoint=endpoint(obs.name, obs.namespace),
        selector=selector_string(pod_selector(obs.name)),
        served_revision=(
            obs.rollout.served_revision if obs.rollout else obs.previous.served_revision
        ),
        canary=(obs.canary.status if obs.canary is not None else obs.previous.canary),
        last_replica_startup_seconds=(
            obs.replica_startup_seconds
            if obs.replica_startup_seconds is not None
            else obs.previous.last_replica_startup_seconds
        ),
    )
    d = obs.deployment
    if d is not None:
        status = status.model_copy(
            update={
                "replicas": d.replicas,
                "ready_replicas": d.ready_replicas,
                "updated_replicas": d.updated_replicas,
                "desired_replicas": d.spec_replicas,
                "ready": f"{d.ready_replicas}/{d.spec_replicas}",
            }
        )
    return status.model_dump(by_alias=True, mode="json", exclude_none=True, include=_OWNED_FIELDS)


_OWNED_FIELDS: Final = {
    "phase",
    "conditions",
    "observed_generation",
    "model",
    "replicas",
    "ready_replicas",
    "updated_replicas",
    "desired_replicas",
    "ready",
    "served_revision",
    "endpoint",
    "selector",
    "canary",
    "last_replica_startup_seconds",
}


OWNED_KEYS: Final = frozenset(
    LLMDeploymentStatus.model_fields[name].alias or name for name in _OWNED_FIELDS
)


def status_patch(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of `status` that turns `current` into `wanted` for owned fields.

    Empty when nothing changed: then nothing is written.
    """
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    for key in OWNED_KEYS:
        if key in current and key not in wanted:
            patch[key] = None  # merge patch: remove (e.g. counts of a Deployment that is gone)
    return patch
