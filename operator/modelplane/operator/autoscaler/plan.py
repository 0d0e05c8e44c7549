"""What the operator writes for one autoscaling decision: pure, from the decision and status.

The policy (`autoscaler.policy.decide`) says how many replicas to run and
why. This module turns that into a small plan for one LLMDeployment: the
replica count to write to `spec.replicas` through the LLMDeployment's
scale subresource (only when it differs from the count decided from), the
direction for the decisions counter, the Event (ScaledUp/ScaledDown,
message = the decision's reason), and a merge patch of the status fields
the autoscaler owns (`desiredReplicas` is the reconciler's: the count the
Deployment was given):

- `scaleReason` and `lastScaleTime` change with the replica count;
  `scaleReason` also follows a change of what drives the decision (another
  target, no metrics, loading, idle), but not the numbers inside it, so a
  steady resource keeps its status untouched instead of rewriting a
  countdown or a rate every tick;
- the `ScalingLimited` condition (Kubernetes' HPA names its reasons the same
  way: TooManyReplicas, TooFewReplicas, DesiredWithinRange) is rewritten
  when its status or reason changes, at each scale, or when the spec's
  generation moved on.

With autoscaling switched off, `plan_autoscaling_off` removes those fields:
the count follows `spec.replicas` again and nothing should claim otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api.llmdeployment import (
    AutoscalingSpec,
    Condition,
    ConditionType,
)
from modelplane.operator.autoscaler import Decision
from modelplane.operator.status_model import (
    condition,
    dump_conditions,
    parse_status,
    with_condition,
)

SCALED_UP: Final = "ScaledUp"
SCALED_DOWN: Final = "ScaledDown"
TOO_MANY: Final = "TooManyReplicas"  # the policy wanted more than maxReplicas
TOO_FEW: Final = "TooFewReplicas"  # the policy wanted fewer than minReplicas
WITHIN_RANGE: Final = "DesiredWithinRange"
AUTOSCALER_FIELDS: Final = ("scaleReason", "lastScaleTime")


@dataclass(frozen=True)
class ScalingPlan:
    replicas: int | None = None  # write this spec.replicas (scale subresource); None: unchanged
    direction: str | None = None  # "up" or "down" when replicas change
    event: tuple[str, str] | None = None  # (reason, message) of the Normal Event
    status: dict[str, Any] = field(default_factory=dict)  # merge patch; empty: no write


def limited_condition(
    decision: Decision,
    bounds: AutoscalingSpec,
    generation: int | None,
    now: str,
    before: Condition | None,
) -> Condition:
    """The ScalingLimited condition for this decision (keeps its transition time if unchanged)."""
    if decision.limited:
        at_max = decision.desired_replicas >= bounds.max_replicas
        limited, reason = True, TOO_MANY if at_max else TOO_FEW
        message = decision.reason
    else:
        limited, reason = False, WITHIN_RANGE
        message = (
            f"{decision.desired_replicas} replica(s) wanted, within minReplicas "
            f"{bounds.min_replicas} and maxReplicas {bounds.max_replicas}"
        )
    return condition(
        ConditionType.SCALING_LIMITED,
        limited,
        reason,
        message,
        previous=[before] if before is not None else [],
        now=now,
        generation=generation,
    )


def plan_scaling(
    decision: Decision,
    *,
    current_replicas: int,
    status: Mapping[str, Any],
    bounds: AutoscalingSpec,
    generation: int | None,
    now: str,
    driver_changed: bool = False,
) -> ScalingPlan:
    """The writes for `decision` on a resource whose count is `current_replicas` now.

    `status` is the LLMDeployment's status as the operator last saw or wrote it;
    `driver_changed`: the previous decision had another driver.
    """
    previous = parse_status(status)
    before = next((c for c in previous.conditions if c.type == ConditionType.SCALING_LIMITED), None)
    desired = decision.desired_replicas
    changed = desired != current_replicas
    if changed and generation is not None:
        # Writing spec.replicas moves the generation on by one: the condition describes
        # the spec that holds the count it reports.
        generation += 1
    wanted = limited_condition(decision, bounds, generation, now, before)
    condition_stale = (
        before is None
        or changed
        or (before.status, before.reason, before.observed_generation)
        != (wanted.status, wanted.reason, wanted.observed_generation)
    )
    patch: dict[str, Any] = {}
    if changed:
        patch["lastScaleTime"] = now
    if changed or driver_changed or previous.scale_reason is None:
        patch["scaleReason"] = decision.reason
    if condition_stale:
        patch["conditions"] = dump_conditions(with_condition(previous.conditions, wanted))
    patch = {key: value for key, value in patch.items() if status.get(key) != value}
    if not changed:
        return ScalingPlan(status=patch)
    up = desired > current_replicas
    return ScalingPlan(
        replicas=desired,
        direction="up" if up else "down",
        event=(SCALED_UP if up else SCALED_DOWN, decision.reason),
        status=patch,
    )


def plan_autoscaling_off(status: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch removing what the autoscaler wrote; empty when there is nothing."""
    patch: dict[str, Any] = {key: None for key in AUTOSCALER_FIELDS if key in status}
    previous = parse_status(status)
    kept = [c for c in previous.conditions if c.type != ConditionType.SCALING_LIMITED]
    if len(kept) != len(previous.conditions):
        patch["conditions"] = dump_conditions(kept)
    return patch
