"""Autoscaling for LLMDeployments: a pure policy over replica metrics.

`decide(observations, current_replicas, spec, state, now, demand_at)` is the
whole policy (see `policy`); `observations` turns a replica's Prometheus text
into what it reads; `collector` scrapes ready pods concurrently; `state`
holds what survives between decisions (and operator restarts). The operator
wires these into a timer; the simulator in `bench/` runs the same code.
"""

from modelplane.operator.autoscaler.collector import Collection, ScrapeTarget, collect
from modelplane.operator.autoscaler.observations import (
    Histogram,
    MetricsSnapshot,
    ReplicaObservation,
    observe,
    parse_metrics,
)
from modelplane.operator.autoscaler.policy import Decision, decide
from modelplane.operator.autoscaler.spec import AutoscalingSpec, Targets
from modelplane.operator.autoscaler.state import (
    PolicyState,
    demand_time,
    held_count,
    held_for_wake_up,
)

__all__ = [
    "AutoscalingSpec",
    "Collection",
    "Decision",
    "Histogram",
    "MetricsSnapshot",
    "PolicyState",
    "ReplicaObservation",
    "ScrapeTarget",
    "Targets",
    "collect",
    "decide",
    "demand_time",
    "held_count",
    "held_for_wake_up",
    "observe",
    "parse_metrics",
]
