"""The autoscaling bounds and targets the policy works to (`spec.autoscaling`).

A small typed copy of the resource's `spec.autoscaling`, so the pure policy
depends on nothing but this package. `AutoscalingSpec.from_dict` takes the
resource's camelCase dict, which is all the operator needs to hand over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SCALE_DOWN_DELAY_S = 300.0


@dataclass(frozen=True)
class Targets:
    """Any subset; the most demanding one wins. None means "not a target"."""

    ttft_p95_s: float | None = None  # seconds, p95 of time to first token across replicas
    queue_depth_per_replica: float | None = None  # requests waiting in each engine
    kv_cache_utilization: float | None = None  # fraction of each replica's KV cache in use
    gpu_utilization: float | None = None  # fraction, from a DCGM exporter

    def __post_init__(self) -> None:
        for name, value, upper in (
            ("ttftP95Seconds", self.ttft_p95_s, None),
            ("queueDepthPerReplica", self.queue_depth_per_replica, None),
            ("kvCacheUtilization", self.kv_cache_utilization, 1.0),
            ("gpuUtilization", self.gpu_utilization, 1.0),
        ):
            if value is not None and (value <= 0 or (upper is not None and value > upper)):
                limit = f"in (0, {upper}]" if upper is not None else "above 0"
                raise ValueError(f"autoscaling.targets.{name} must be {limit}, not {value}")

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (
                self.ttft_p95_s,
                self.queue_depth_per_replica,
                self.kv_cache_utilization,
                self.gpu_utilization,
            )
        )


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int = 1
    max_replicas: int = 8
    targets: Targets = Targets(kv_cache_utilization=0.8)
    scale_down_delay_s: float = DEFAULT_SCALE_DOWN_DELAY_S

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < 1:
            raise ValueError("autoscaling needs minReplicas >= 0 and maxReplicas >= 1")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) is above "
                f"maxReplicas ({self.max_replicas})"
            )
        if self.scale_down_delay_s < 0:
            raise ValueError("autoscaling.scaleDownDelaySeconds must be >= 0")
        if not self.targets.any:
            raise ValueError("autoscaling.targets must name at least one target")

    @classmethod
    def from_dict(cls, autoscaling: Mapping[str, Any]) -> AutoscalingSpec:
        """From the resource's `spec.autoscaling` (camelCase); absent fields take defaults."""
        targets = autoscaling.get("targets") or {}

        def number(key: str) -> float | None:
            value = targets.get(key)
            return None if value is None else float(value)

        parsed = Targets(
            ttft_p95_s=number("ttftP95Seconds"),
            queue_depth_per_replica=number("queueDepthPerReplica"),
            kv_cache_utilization=number("kvCacheUtilization"),
            gpu_utilization=number("gpuUtilization"),
        )
        return cls(
            min_replicas=int(autoscaling.get("minReplicas", 1)),
            max_replicas=int(autoscaling.get("maxReplicas", 8)),
            targets=parsed if parsed.any else Targets(kv_cache_utilization=0.8),
            scale_down_delay_s=float(
                autoscaling.get("scaleDownDelaySeconds", DEFAULT_SCALE_DOWN_DELAY_S)
            ),
        )
