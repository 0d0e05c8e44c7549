"""Autoscaling for LLMDeployments: a pure policy over replica metrics, and its controller.

The pure policy, which the simulator in `bench/` runs too:
`decide(observations, current_replicas, spec, state, now, demand_at)` is the
whole policy (see `policy`, with `bursts`); `observations` turns a replica's
Prometheus text into what it reads; `state` holds what survives between
decisions (and operator restarts). The bounds and targets are the resource's own
`AutoscalingSpec` (`modelplane.api.llmdeployment`), re-exported here.

The operator's side: `collector` (the pods' /metrics) and `prometheus` (a
range query) measure; `controller` runs the loop and writes only the
LLMDeployment (`spec.replicas` through its scale subresource, its status
fields, its state annotation); `plan` turns a decision into those writes;
`persistence` decides when the state annotation is worth rewriting.
Importing this package imports the policy only, never the controller.
"""

from modelplane.api.llmdeployment import AutoscalingSpec, AutoscalingTargets
from modelplane.operator.autoscaler.collector import Collection, ScrapeTarget, collect
from modelplane.operator.autoscaler.demand import held_for_wake_up
from modelplane.operator.autoscaler.observations import (
    Histogram,
    MetricsSnapshot,
    ReplicaObservation,
    observe,
    parse_metrics,
)
from modelplane.operator.autoscaler.policy import Decision, decide
from modelplane.operator.autoscaler.state import PolicyState

__all__ = [
    "AutoscalingSpec",
    "AutoscalingTargets",
    "Collection",
    "Decision",
    "Histogram",
    "MetricsSnapshot",
    "PolicyState",
    "ReplicaObservation",
    "ScrapeTarget",
    "collect",
    "decide",
    "held_for_wake_up",
    "observe",
    "parse_metrics",
]
