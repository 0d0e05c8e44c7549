"""The canary planner: where a Canary rollout stands and what the children must look like.

Under `rollout.strategy: Canary`, a change of the pod template (a new model
revision, engine setting or image) does not replace the running replicas.
The stable Deployment keeps its template ("pinned") and a second Deployment
and Service on the `canary` track run the new one. The Services' traffic
weight annotations split the model's traffic (the gateway reads them); the
canary takes each share of `canary_shares` in turn:

1. its replicas for the share start (the stable's count times the share,
   at least one) while the previous share stays in force;
2. once they are ready the share takes effect and the step's analysis
   begins: the canary's error ratio (5xx answers) and TTFT p95 since the
   step began, measured on its pods (`CanaryMetrics`);
3. a breach of `maxErrorRate` or `maxTtftP95Seconds` aborts at once: the
   canary's weight goes back to 0 and its Deployment and Service are
   deleted, the stable stays pinned and the resource is Degraded with the
   numbers, until the spec changes again;
4. after `stepSeconds` within bounds (and at least `min_requests` answered,
   so there is evidence) the next share follows; after the last one (100%)
   the canary is promoted: the stable Deployment takes the new template in
   an ordinary rolling update while the canary still serves all traffic, so
   no request lands on a replica being replaced; when every stable replica
   runs it and is ready, all traffic moves back to the stable Service and
   the canary is deleted (its pods drain; the gateway retries their 503s).

Pure: what the operator observed, the spec, the canary's metrics and the
time in; a `CanaryPlan` out. Its progress lives in `status.canary`, so an
operator restart resumes a step where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from modelplane.api.llmdeployment import (
    CanaryPhase,
    CanarySpec,
    CanaryStatus,
    RolloutSpec,
    RolloutStrategy,
)
from modelplane.operator.reconcile.observed import ObservedDeployment
from modelplane.operator.reconcile.rollout import PROGRESS_DEADLINE_EXCEEDED
from modelplane.operator.timestamps import epoch_of, rfc3339

DEFAULT_MIN_REQUESTS: Final = 10
CANARY_ABORTED: Final = "CanaryAborted"
CANARY_PROMOTED: Final = "CanaryPromoted"
CANARY_STEP: Final = "CanaryStep"


def canary_shares(canary: CanarySpec) -> list[int]:
    """The traffic shares in order: `weight` first, then the larger `steps` (ending at 100)."""
    return [canary.weight, *(s for s in canary.steps if s > canary.weight)]


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Replicas the canary needs to carry `weight` percent of what the stable carries."""
    return max(1, math.ceil(stable_replicas * weight / 100))


@dataclass(frozen=True)
class CanaryMetrics:
    """The canary's answers since its current step began (all its pods together)."""

    requests: float
    errors: float  # answered with a 5xx status
    ttft_p95_s: float | None = None  # None: too few first tokens to say
    first_tokens: float = 0

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class CanaryObserved:
    """What the reconciler saw, for the planner."""

    target_revision: str
    target_hash: str  # the spec's pod template, as the stable track would run it
    stable: ObservedDeployment | None
    stable_rollout_complete: bool  # every stable replica runs target_hash and is ready
    served_revision: str | None
    canary: ObservedDeployment | None
    canary_on_target: bool  # the canary Deployment runs the spec's canary template
    previous: CanaryStatus | None  # status.canary as last written


@dataclass(frozen=True)
class CanaryPlan:
    active: bool = False  # a canary Deployment and Service exist
    replicas: int = 0  # of the canary Deployment
    weight: int = 0  # on the canary Service; the stable Service gets 100 - weight
    pin_stable: bool = False  # keep the stable Deployment (and its ConfigMap) as they run
    status: CanaryStatus | None = None  # status.canary
    message: str = ""  # the Progressing condition's message while a canary runs
    event: tuple[str, str, str] | None = None  # (type, reason, message) when something happened

    @property
    def aborted(self) -> bool:
        return self.status is not None and self.status.phase is CanaryPhase.ABORTED


NO_CANARY: Final = CanaryPlan()


def _ready_canary(observed: CanaryObserved) -> int:
    """Canary replicas on the spec's template that are ready."""
    c = observed.canary
    if c is None or not observed.canary_on_target:
        return 0
    caught_up = c.generation is None or (
        c.observed_generation is not None and c.observed_generation >= c.generation
    )
    return min(c.ready_replicas, c.updated_replicas) if caught_up else 0


def _breach(metrics: CanaryMetrics | None, canary: CanarySpec, min_requests: int) -> str | None:
    """What exceeded its bound, with the numbers; None while within bounds."""
    if metrics is None:
        return None
    ratio = metrics.error_ratio
    if ratio is not None and metrics.requests >= min_requests and ratio > canary.max_error_rate:
        return (
            f"error ratio {ratio:.3f} ({metrics.errors:g} of {metrics.requests:g} requests "
            f"answered 5xx) exceeds maxErrorRate {canary.max_error_rate:g}"
        )
    limit = canary.max_ttft_p95_seconds
    if limit is not None and metrics.ttft_p95_s is not None and metrics.ttft_p95_s > limit:
        return (
            f"TTFT p95 {metrics.ttft_p95_s:.2f}s over {metrics.first_tokens:g} first tokens "
            f"exceeds maxTtftP95Seconds {limit:g}"
        )
    return None


def plan_canary(
    observed: CanaryObserved,
    spec: RolloutSpec,
    metrics: CanaryMetrics | None,
    now: float,
    *,
    min_requests: int = DEFAULT_MIN_REQUESTS,
) -> CanaryPlan:
    """The canary's next state; `metrics` are the canary's since its current step began."""
    prev = observed.previous
    stable = observed.stable
    target = observed.target_hash
    revision = observed.target_revision
    if spec.strategy is not RolloutStrategy.CANARY:
        return NO_CANARY  # switched away mid-canary: the stable rolls as RollingUpdate says
    if stable is None or observed.served_revision is None:
        return NO_CANARY  # nothing serves yet: there is nothing to protect
    if prev is not None and prev.phase is CanaryPhase.PROMOTING and prev.template_hash == target:
        if stable.template_hash == target and observed.stable_rollout_complete:
            message = f"revision {revision} promoted: every stable replica runs it"
            return CanaryPlan(event=("Normal", CANARY_PROMOTED, message))
        updated = stable.updated_replicas if stable.template_hash == target else 0
        message = (
            f"promoting revision {revision}: the stable Deployment rolls out "
            f"({updated}/{stable.spec_replicas} updated) while the canary serves all traffic"
        )
        return CanaryPlan(
            active=True,
            replicas=canary_replicas(stable.spec_replicas, 100),
            weight=prev.weight,
            status=prev,
            message=message,
        )
    if stable.template_hash == target:
        return NO_CANARY  # the stable runs what the spec asks (or was changed back to it)

    shares = canary_shares(spec.canary)
    steps = len(shares)
    if prev is not None and prev.template_hash == target and prev.phase is CanaryPhase.ABORTED:
        return CanaryPlan(pin_stable=True, status=prev, message=prev.message or "")
    if prev is None or prev.template_hash != target or prev.phase is not CanaryPhase.PROGRESSING:
        prev = CanaryStatus(
            phase=CanaryPhase.PROGRESSING,
            revision=revision,
            template_hash=target,
            step=1,
            steps=steps,
            weight=0,
        )
    step = min(max(prev.step, 1), steps)
    share = shares[step - 1]
    replicas = canary_replicas(stable.spec_replicas, share)
    where = f"canary step {step}/{steps}"

    def abort(why: str) -> CanaryPlan:
        message = (
            f"canary of revision {revision} aborted at step {step}/{steps} ({prev.weight}% of "
            f"traffic): {why}; all traffic is back on revision {observed.served_revision}"
        )
        aborted = prev.model_copy(
            update={"phase": CanaryPhase.ABORTED, "weight": 0, "message": message}
        )
        return CanaryPlan(
            pin_stable=True,
            status=aborted,
            message=message,
            event=("Warning", CANARY_ABORTED, message),
        )

    canary = observed.canary
    deadline = canary.condition("Progressing") if canary is not None else None
    if deadline is not None and deadline.reason == PROGRESS_DEADLINE_EXCEEDED:
        return abort(f"its replicas did not become ready: {deadline.message}")

    started = epoch_of(prev.step_started_at)
    if started is None:  # this step's replicas are starting; the previous share holds
        if _ready_canary(observed) >= replicas:
            now_share = prev.model_copy(
                update={"step": step, "weight": share, "step_started_at": rfc3339(now)}
            )
            message = f"{where}: {share}% of traffic to revision {revision}"
            return CanaryPlan(
                active=True,
                replicas=replicas,
                weight=share,
                pin_stable=True,
                status=now_share.model_copy(update={"message": message}),
                message=message,
                event=("Normal", CANARY_STEP, message),
            )
        message = (
            f"{where}: starting {replicas} canary replica(s) of revision {revision} "
            f"({_ready_canary(observed)} ready) before it takes {share}% of traffic"
        )
        waiting = prev.model_copy(update={"step": step, "message": message})
        return CanaryPlan(
            active=True,
            replicas=replicas,
            weight=prev.weight,
            pin_stable=True,
            status=waiting,
            message=message,
        )

    breach = _breach(metrics, spec.canary, min_requests)
    if breach is not None:
        return abort(breach)
    message = f"{where}: {share}% of traffic to revision {revision}"
    enough = metrics is not None and metrics.requests >= min_requests
    if now - started >= spec.canary.step_seconds and enough:
        assert metrics is not None
        ratio = metrics.error_ratio or 0.0
        passed = f"step {step}/{steps} passed: error ratio {ratio:.3f} over {metrics.requests:g}"
        passed += " requests" + (
            f", TTFT p95 {metrics.ttft_p95_s:.2f}s" if metrics.ttft_p95_s is not None else ""
        )
        if step == steps:
            promote = (
                f"promoting revision {revision} ({passed}): the stable Deployment rolls out "
                "while the canary serves all traffic"
            )
            promoting = prev.model_copy(update={"phase": CanaryPhase.PROMOTING, "message": promote})
            return CanaryPlan(
                active=True,
                replicas=replicas,
                weight=share,
                status=promoting,
                message=promote,
                event=("Normal", CANARY_STEP, promote),
            )
        following = prev.model_copy(
            update={"step": step + 1, "step_started_at": None, "message": passed}
        )
        return CanaryPlan(
            active=True,
            replicas=canary_replicas(stable.spec_replicas, shares[step]),
            weight=share,
            pin_stable=True,
            status=following,
            message=f"{where}: {share}% of traffic to revision {revision}; {passed}",
        )
    return CanaryPlan(
        active=True,
        replicas=replicas,
        weight=share,
        pin_stable=True,
        status=prev,
        message=message,
    )
