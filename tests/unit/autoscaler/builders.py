"""Observations built the way the collector builds them, for the policy's tables."""

from __future__ import annotations

from modelplane.operator.autoscaler import Histogram, ReplicaObservation

# vLLM's TTFT buckets (vllm/v1/metrics/buckets.py).
TTFT_BOUNDS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, float("inf"),
)  # fmt: skip


def ttft_window(*seconds: float) -> Histogram:
    """A window's TTFT histogram holding these first-token latencies."""
    return Histogram(TTFT_BOUNDS, tuple(float(sum(s <= b for s in seconds)) for b in TTFT_BOUNDS))


def replica(
    name: str = "r0",
    *,
    waiting: float = 0,
    running: float = 0,
    kv: float | None = 0.1,
    ttft: Histogram | None = None,
    finished: float | None = None,
    arrived: float | None = None,
    gpu: float | None = None,
) -> ReplicaObservation:
    return ReplicaObservation(
        name=name,
        waiting=waiting,
        running=running,
        kv_cache_usage=kv,
        gpu_utilization=gpu,
        ttft=ttft,
        finished_per_s=finished,
        arrived_per_s=arrived if arrived is not None else finished,
    )
