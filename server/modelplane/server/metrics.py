"""The server's own Prometheus metrics (`modelplane_*`).

vLLM exports the engine's view (`vllm:*`); these add the HTTP view the SLOs
are written against: request counts by status code, end-to-end latency,
time to first token and inter-token latency as the client sees them, the
requests in flight and whether the server is draining, and where the
replica's start-up went (`startup_phases`). Latency buckets
include 0.1, 0.25, 0.5, 1, 2 and 5 s so common SLO thresholds are exact
(vLLM's own TTFT histogram has no 2 s bound).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "endpoint")
        self.requests = Counter(
            "modelplane_requests",
            "Requests answered, by model, endpoint and HTTP status code.",
            (*labels, "code"),
            registry=registry,
        )
        self.e2e_latency = Histogram(
            "modelplane_request_duration_seconds",
            "Time from request arrival to the last byte of the response.",
            labels,
            buckets=E2E_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "modelplane_time_to_first_token_seconds",
            "Time from request arrival to the first streamed token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.itl = Histogram(
            "modelplane_inter_token_latency_seconds",
            "Time between consecutive streamed chunks of one response.",
            labels,
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "modelplane_requests_in_flight",
            "Requests currently being served.",
            ("model",),
            registry=registry,
        )
        self.draining = Gauge(
            "modelplane_draining",
            "1 while the server drains before exit, else 0.",
            registry=registry,
        )
        self.adapter_loaded = Gauge(
            "modelplane_server_adapter_loaded",
            "1 for each LoRA adapter this replica serves (only those: no series otherwise).",
            ("adapter",),
            registry=registry,
        )
        self.ready = Gauge(
            "modelplane_ready",
            "1 once weights are loaded and a warm-up request was served.",
            registry=registry,
        )
        self.startup = Gauge(
            "modelplane_server_startup_seconds",
            "Seconds this replica's start-up spent in each phase (set once, at ready; "
            "a phase that could not be measured has no series).",
            ("model", "phase"),
            registry=registry,
        )
        self.startup_total = Gauge(
            "modelplane_server_startup_total_seconds",
            "Seconds from this replica's process start to ready (set once, at ready).",
            ("model",),
            registry=registry,
        )

    def record_startup(self, model: str, phases: Mapping[str, float], total: float | None) -> None:
        for phase, seconds in phases.items():
            self.startup.labels(model, phase).set(seconds)
        if total is not None:
            self.startup_total.labels(model).set(total)
