"""The LLMDeployment's status as the typed model: one parser, one condition helper.

Status has two writers (the reconciler, and the autoscaler for its own
fields and the `ScalingLimited` condition), and the canary analysis reads
it; all of them read it with `parse_status` and build conditions with
`condition`, so a condition keeps its `lastTransitionTime` the same way
whoever writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from modelplane.api.llmdeployment import (
    Condition,
    ConditionStatus,
    ConditionType,
    LLMDeploymentStatus,
)


def parse_status(status: Mapping[str, Any] | None) -> LLMDeploymentStatus:
    """The status as written; an unreadable one (hand-edited, an older schema) as empty,
    so the next write replaces it instead of failing every reconcile."""
    try:
        return LLMDeploymentStatus.model_validate(dict(status or {}))
    except ValidationError:
        return LLMDeploymentStatus()


def condition(
    type_: ConditionType,
    status: bool,
    reason: str,
    message: str,
    *,
    previous: Sequence[Condition],
    now: str,
    generation: int | None,
) -> Condition:
    """A condition of `type_`; it keeps the previous `lastTransitionTime` while its
    status stays the same (the Kubernetes convention)."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    before = next((c for c in previous if c.type == type_), None)
    since = before.last_transition_time if before and before.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def with_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """`conditions` with the one of `new`'s type replaced in place, or `new` appended."""
    replaced = [new if c.type == new.type else c for c in conditions]
    return replaced if any(c.type == new.type for c in conditions) else [*conditions, new]


def dump_conditions(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    """Conditions in the resource's JSON form."""
    return [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in conditions]
