"""Measuring a canary step: its pods' answers since the step began, then a reconcile.

Every tick of the operator's measuring loop, for each LLMDeployment whose
`status.canary` is analysing a step (its share is in force), the canary
track's pods are read with the autoscaler's own collector and parser: from
the pods, against the first scrape of each pod in this step (kept in
memory; after an operator restart the window restarts at the first scrape,
while the step's dwell goes on from `stepStartedAt`), or from Prometheus
over the range since the step began. The sum over the pods, 5xx answers of
`modelplane_requests_total` against all answers, and the TTFT histogram's
growth (vLLM's, else the server's), becomes `CanaryMetrics`, recorded in the
`CanaryMeasurements` store the reconciler reads; then the resource is
reconciled, and the pure planner (`canary.plan_canary`) decides whether the
step holds, passes, or aborts. Nothing is written to the cluster here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modelplane.api import contract
from modelplane.api.llmdeployment import CanaryPhase
from modelplane.operator.autoscaler import Histogram, MetricsSnapshot, ReplicaObservation
from modelplane.operator.autoscaler.controller import (
    MetricsSource,
    for_each_llmdeployment,
    scrape_targets,
)
from modelplane.operator.canary.plan import CanaryMetrics
from modelplane.operator.canary.store import CanaryMeasurements, Step, canary_step
from modelplane.operator.reconcile.expectations import OwnerKey
from modelplane.operator.reconcile.reconciler import ClusterView, Reconciler
from modelplane.operator.status_model import parse_status
from modelplane.operator.timestamps import epoch_of


def canary_metrics(
    observations: Sequence[ReplicaObservation], min_first_tokens: int
) -> CanaryMetrics:
    """The canary pods' answers together (pods with no window yet add nothing)."""
    measured = [o for o in observations if o.measured]
    ttft = Histogram.merge(o.ttft for o in measured if o.ttft is not None)
    first_tokens = ttft.total if ttft is not None else 0.0
    p95 = (
        ttft.quantile(0.95)
        if ttft is not None and first_tokens >= max(min_first_tokens, 1)
        else None
    )
    return CanaryMetrics(
        requests=sum(o.requests or 0.0 for o in measured),
        errors=sum(o.errors or 0.0 for o in measured),
        ttft_p95_s=p95,
        first_tokens=first_tokens,
    )


@dataclass
class _Baseline:
    step: Step
    snapshots: dict[str, MetricsSnapshot] = field(default_factory=dict)  # first scrape per pod


class CanaryAnalysis:
    def __init__(
        self,
        reconciler: Reconciler,
        source: MetricsSource,
        measurements: CanaryMeasurements,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler = reconciler
        self._source = source
        self._measurements = measurements
        self._clock = clock
        self._baselines: dict[OwnerKey, _Baseline] = {}

    def forget(self, key: OwnerKey) -> None:
        self._baselines.pop(key, None)
        self._measurements.forget(key)

    def forget_all(self) -> None:
        self._baselines.clear()
        self._measurements.clear()

    async def tick(self, view: ClusterView) -> None:
        await for_each_llmdeployment(view, self.analyse, "canary analysis of")

    async def analyse(self, key: OwnerKey, view: ClusterView) -> None:
        body = view.llmdeployment(key)
        if body is None:
            self.forget(key)
            return
        status = parse_status(self._reconciler.observed_status(key, body))
        canary = status.canary
        if canary is None or canary.phase is CanaryPhase.ABORTED:
            self.forget(key)
            return
        if canary.phase is CanaryPhase.PROGRESSING and canary.step_started_at is not None:
            await self._measure(key, view, canary_step(canary), canary.step_started_at)
        # Time moves steps on: reconcile (it writes only what changed).
        await self._reconciler.reconcile(key, view)

    async def _measure(
        self, key: OwnerKey, view: ClusterView, step: Step | None, since: str
    ) -> None:
        if step is None:
            return
        baseline = self._baselines.get(key)
        if baseline is None or baseline.step != step:
            baseline = self._baselines[key] = _Baseline(step)
        started = epoch_of(since) or self._clock()
        targets = scrape_targets(view.pods(key), contract.TRACK_CANARY)
        collection = await self._source.collect(
            key[0], targets, baseline.snapshots, window_s=max(self._clock() - started, 1.0)
        )
        for pod, snapshot in collection.snapshots.items():
            baseline.snapshots.setdefault(pod, snapshot)
        metrics = canary_metrics(
            collection.observations, self._reconciler.config.canary_min_requests
        )
        self._measurements.record(key, step, metrics)
