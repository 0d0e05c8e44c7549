"""Requests queued at the gateway (tenants' fair share) count as demand for the autoscaler."""

from __future__ import annotations

import datetime as dt

import pytest

from modelplane.api.demand import demand_signal, queued_count, queued_renewal
from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    AutoscalingTargets,
    PolicyState,
    ReplicaObservation,
    decide,
)
from modelplane.operator.autoscaler.demand import with_gateway_queue

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)


def test_the_count_the_gateway_writes_reads_back_while_fresh() -> None:
    patch = queued_renewal(12, NOW)
    signal = demand_signal({"metadata": patch["metadata"], "spec": {}})
    assert queued_count(signal.queued, NOW.timestamp() + 5) == 12
    assert queued_count(signal.queued, NOW.timestamp() + 60) == 0  # stale: no demand


@pytest.mark.parametrize(
    "annotation",
    [None, "", "twelve@2026-12-06T12:00:00Z", "-3@2026-12-06T12:00:00.000000Z", "12",
     "12@yesterday", "12@2026-12-06T12:00:00", "9" * 80 + "@2026-12-06T12:00:00Z"],
)  # fmt: skip
def test_anything_unreadable_is_no_demand(annotation: str | None) -> None:
    assert queued_count(annotation, NOW.timestamp()) == 0


def test_queued_requests_are_spread_over_the_measured_replicas_only() -> None:
    observations = [
        ReplicaObservation("a", waiting=1.0),
        ReplicaObservation("b"),
        ReplicaObservation("c", loading=True),
        ReplicaObservation("d", error="timeout"),
    ]
    spread = with_gateway_queue(observations, 8)
    assert [o.waiting for o in spread] == [5.0, 4.0, 0.0, 0.0]
    assert with_gateway_queue(observations, 0) == observations


def test_a_queue_at_the_gateway_scales_a_model_whose_engines_show_none() -> None:
    """Two replicas, each running what the gateway lets through (its concurrency), no
    engine queue: only the gateway's queue says more replicas are needed."""
    spec = AutoscalingSpec(
        min_replicas=1, max_replicas=8, targets=AutoscalingTargets(queue_depth_per_replica=4)
    )
    busy = [ReplicaObservation(n, running=8.0, kv_cache_usage=0.5) for n in ("a", "b")]
    at = NOW.timestamp()
    alone = decide(busy, 2, spec, PolicyState(), at)
    queued = decide(with_gateway_queue(busy, 40), 2, spec, PolicyState(), at)
    assert queued.desired_replicas > alone.desired_replicas, (alone.reason, queued.reason)
