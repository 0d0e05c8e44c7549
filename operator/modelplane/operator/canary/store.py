"""The canary analysis' measurements, handed to the reconciler through one explicit store.

The measuring loop (`canary.analysis`) writes the canary's metrics for the
step it measured; the reconciler reads them when it plans the canary
(`canary.plan_canary`). A measurement counts only for the step it was taken
in: a step is named by its template hash, number and start time, as
`status.canary` names it, so a number measured before a step moved on is
never judged against the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.api.llmdeployment import CanaryStatus
from modelplane.operator.canary.plan import CanaryMetrics
from modelplane.operator.reconcile.expectations import OwnerKey

Step = tuple[str, int, str | None]  # (templateHash, step, stepStartedAt)


def canary_step(status: CanaryStatus | None) -> Step | None:
    """The step `status.canary` is in; None when no canary runs."""
    if status is None:
        return None
    return (status.template_hash, status.step, status.step_started_at)


@dataclass(frozen=True)
class CanaryMeasurement:
    """The canary's metrics over one step."""

    step: Step
    metrics: CanaryMetrics


class CanaryMeasurements:
    """The latest measurement per LLMDeployment (one writer: the analysis loop)."""

    def __init__(self) -> None:
        self._latest: dict[OwnerKey, CanaryMeasurement] = {}

    def record(self, key: OwnerKey, step: Step, metrics: CanaryMetrics) -> None:
        self._latest[key] = CanaryMeasurement(step, metrics)

    def for_step(self, key: OwnerKey, step: Step | None) -> CanaryMetrics | None:
        """The metrics measured in `step`; None when none were (yet)."""
        latest = self._latest.get(key)
        if latest is None or step is None or latest.step != step:
            return None
        return latest.metrics

    def forget(self, key: OwnerKey) -> None:
        self._latest.pop(key, None)

    def clear(self) -> None:
        self._latest.clear()
