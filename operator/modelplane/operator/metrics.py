"""The operator's Prometheus metrics, served on the metrics port.

The chart's dashboards and alerts use exactly these names. Per-resource
series (`modelplane_llmdeployment_*`) are removed when their LLMDeployment
goes away or its served model name changes, so no stale series linger. The
metrics live in their own registry (with the process collectors), one per
operator run. The autoscaler counts its decisions in `scaling_decisions`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from modelplane.api.llmdeployment import LLMDeploymentSpec, Phase

RESULT_OK: Final = "ok"
RESULT_ERROR: Final = "error"
RESULT_INVALID: Final = "invalid"
REPLICA_KINDS: Final = ("desired", "ready", "updated")
SCALING_DIRECTIONS: Final = ("up", "down")
# Replica start-ups run from seconds (a warm CPU replica) to tens of minutes (a large
# model downloaded at start).
STARTUP_BUCKETS: Final = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)


@dataclass(frozen=True)
class ResourceSample:
    """One LLMDeployment's values, as the last reconcile saw them."""

    namespace: str
    name: str
    model: str
    phase: Phase
    desired: int | None = None
    ready: int | None = None
    updated: int | None = None
    max_replicas: int | None = None
    target_ttft_p95_seconds: float | None = None


def sample_of(
    namespace: str,
    name: str,
    model: str,
    phase: Phase,
    spec: LLMDeploymentSpec | None,
    **counts: Any,
) -> ResourceSample:
    max_replicas = target = None
    if spec is not None:
        max_replicas = spec.autoscaling.max_replicas if spec.autoscaling.enabled else spec.replicas
        target = spec.autoscaling.targets.ttft_p95_seconds
    return ResourceSample(
        namespace, name, model, phase, max_replicas=max_replicas, target_ttft_p95_seconds=target,
        **counts,
    )  # fmt: skip


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.reconcile_total = Counter(
            "modelplane_operator_reconcile_total",
            "Reconciles of LLMDeployments by result (ok, error, invalid).",
            ["result"],
            registry=r,
        )
        for result in (RESULT_OK, RESULT_ERROR, RESULT_INVALID):
            self.reconcile_total.labels(result)
        self.reconcile_duration = Histogram(
            "modelplane_operator_reconcile_duration_seconds",
            "Time one reconcile of an LLMDeployment takes.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.llmdeployments = Gauge(
            "modelplane_operator_llmdeployments",
            "LLMDeployments by phase.",
            ["phase"],
            registry=r,
        )
        self.scaling_decisions = Counter(
            "modelplane_operator_scaling_decisions_total",
            "Replica count changes the autoscaler made (direction up or down).",
            ["namespace", "llmdeployment", "direction"],
            registry=r,
        )
        labels = ["namespace", "llmdeployment", "model"]
        self.replicas = Gauge(
            "modelplane_llmdeployment_replicas",
            "Replicas of an LLMDeployment (kind: desired, ready, updated).",
            [*labels, "kind"],
            registry=r,
        )
        self.max_replicas = Gauge(
            "modelplane_llmdeployment_max_replicas",
            "Most replicas the LLMDeployment may have (autoscaling.maxReplicas, or replicas).",
            labels,
            registry=r,
        )
        self.target_ttft = Gauge(
            "modelplane_llmdeployment_target_ttft_p95_seconds",
            "The autoscaling time-to-first-token p95 target, where one is set.",
            labels,
            registry=r,
        )
        self.phase = Gauge(
            "modelplane_llmdeployment_phase",
            "1 for the LLMDeployment's current phase.",
            [*labels, "phase"],
            registry=r,
        )
        self.replica_startup = Histogram(
            "modelplane_llmdeployment_replica_startup_seconds",
            "Time from a replica pod's scheduling to its readiness (PodScheduled -> Ready), "
            "observed once per pod.",
            labels,
            buckets=STARTUP_BUCKETS,
            registry=r,
        )
        self._samples: dict[tuple[str, str], ResourceSample] = {}
        self._server: Any = None
        self._count_phases()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def count_scaling_of(self, namespace: str, name: str) -> None:
        """Start both directions' decision counters at 0, before any decision.

        rate() and increase() see a counter from its first sample on: one that
        appeared at 1 would hide the first decision from the dashboards.
        """
        for direction in SCALING_DIRECTIONS:
            self.scaling_decisions.labels(namespace, name, direction)

    def record(self, sample: ResourceSample) -> None:
        key = (sample.namespace, sample.name)
        before = self._samples.get(key)
        if before == sample:
            return
        if before is not None and before.model != sample.model:
            self._remove_series(before)
        base = (sample.namespace, sample.name, sample.model)
        for kind, value in zip(
            REPLICA_KINDS, (sample.desired, sample.ready, sample.updated), strict=True
        ):
            if value is None:
                self._remove(self.replicas, (*base, kind))
            else:
                self.replicas.labels(*base, kind).set(value)
        if sample.max_replicas is None:
            self._remove(self.max_replicas, base)
        else:
            self.max_replicas.labels(*base).set(sample.max_replicas)
        if sample.target_ttft_p95_seconds is None:
            self._remove(self.target_ttft, base)
        else:
            self.target_ttft.labels(*base).set(sample.target_ttft_p95_seconds)
        for phase in Phase:
            self.phase.labels(*base, phase.value).set(1 if phase is sample.phase else 0)
        # From 0 on, so increase() sees the first replica's start-up.
        self.replica_startup.labels(*base)
        self._samples[key] = sample
        self._count_phases()

    def observe_startup(self, sample: ResourceSample, seconds: float) -> None:
        """One replica's scheduled -> ready time (`record` the sample first)."""
        self.replica_startup.labels(sample.namespace, sample.name, sample.model).observe(seconds)

    def forget(self, namespace: str, name: str) -> None:
        before = self._samples.pop((namespace, name), None)
        if before is not None:
            self._remove_series(before)
            self._count_phases()

    def _count_phases(self) -> None:
        for phase in Phase:
            count = sum(1 for s in self._samples.values() if s.phase is phase)
            self.llmdeployments.labels(phase.value).set(count)

    def _remove_series(self, sample: ResourceSample) -> None:
        base = (sample.namespace, sample.name, sample.model)
        for kind in REPLICA_KINDS:
            self._remove(self.replicas, (*base, kind))
        self._remove(self.max_replicas, base)
        self._remove(self.target_ttft, base)
        for phase in Phase:
            self._remove(self.phase, (*base, phase.value))
        with contextlib.suppress(KeyError):
            self.replica_startup.remove(*base)

    @staticmethod
    def _remove(metric: Gauge, labels: tuple[str, ...]) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
