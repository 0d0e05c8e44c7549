"""The gateway's Prometheus metrics (`modelplane_gateway_*`).

The names are a contract with the dashboards and alerts. "Added latency"
is the time the gateway itself adds before the client sees the upstream's
first byte: everything from the request's arrival to its first byte out,
minus the successful upstream's own time to first byte and minus any time
spent holding for a model to start (that has its own histogram). Failed
attempts before a retry count as added latency: the client waited for them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ADDED_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
HOLD_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "modelplane_gateway_requests",
            "Requests answered, by model, HTTP status code and the upstream that answered "
            "('none' when the gateway answered itself).",
            ("model", "code", "upstream"),
            registry=registry,
        )
        self.added_latency = Histogram(
            "modelplane_gateway_added_latency_seconds",
            "Time the gateway adds before the client gets the upstream's first byte.",
            ("model",),
            buckets=ADDED_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "modelplane_gateway_retries",
            "Attempts retried on another replica (connect errors, 503s before the first byte).",
            ("model",),
            registry=registry,
        )
        self.ejections = Counter(
            "modelplane_gateway_ejections",
            "Replicas taken out of balancing for a cool-down after failing repeatedly.",
            ("model", "upstream"),
            registry=registry,
        )
        self.held = Gauge(
            "modelplane_gateway_held_requests",
            "Requests waiting for a model with no ready replica (scaled to zero or starting).",
            ("model",),
            registry=registry,
        )
        self.hold_duration = Histogram(
            "modelplane_gateway_hold_seconds",
            "How long requests were held waiting for a ready replica.",
            ("model",),
            buckets=HOLD_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "modelplane_gateway_upstream_in_flight",
            "Requests in flight per replica, as counted by this gateway for balancing.",
            ("model", "upstream"),
            registry=registry,
        )
        self.ready_replicas = Gauge(
            "modelplane_gateway_ready_replicas",
            "Ready replicas per model and serving track, as discovered.",
            ("model", "track"),
            registry=registry,
        )
        self.demand_signals = Counter(
            "modelplane_gateway_scale_from_zero_signals",
            "Times the gateway asked for a model scaled to zero to start.",
            ("model",),
            registry=registry,
        )
        self.rate_limited = Counter(
            "modelplane_gateway_rate_limited",
            "Requests refused with 429, by the limit that was hit.",
            ("limit",),
            registry=registry,
        )
