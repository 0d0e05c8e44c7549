"""The gateway's Prometheus metrics (`modelplane_gateway_*`).

The names are a contract with the dashboards and alerts. "Added latency"
is the time the gateway itself adds before the client sees the upstream's
first byte: everything from the request's arrival to its first byte out,
minus the successful upstream's own time to first byte and minus any time
spent holding for a model to start (that has its own histogram). Failed
attempts before a retry count as added latency: the client waited for them.

The series are served on a port of their own (`MetricsApp`), never on the
public one: they name replicas by address. A replica's series (labelled
`upstream`) live as long as discovery lists it; `forget_upstreams` removes
those of replicas that are gone, so pod churn does not grow the scrape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelplane.http.asgi import Receive, Scope, Send
from modelplane.http.errors import send_error

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
        self.overload_refusals = Counter(
            "modelplane_gateway_overload_refusals",
            "Requests refused because a concurrency cap was reached (429 for a key's own "
            "in-flight cap, 503 otherwise), by the cap.",
            ("limit",),
            registry=registry,
        )
        self.model_name_conflicts = Gauge(
            "modelplane_gateway_model_name_conflicts",
            "LLMDeployments refused because another one, created earlier, already serves "
            "their model name (Kubernetes discovery).",
            ("model",),
            registry=registry,
        )
        self.shared_store_up = Gauge(
            "modelplane_gateway_shared_store_up",
            "1 while the Redis that tenants' limits are shared in answers, 0 while it does "
            "not (the gateway then counts in its own memory, or answers 503: "
            "--redis-failure); absent without Redis.",
            ("store",),
            registry=registry,
        )
        # LoRA adapters: `adapter` is only ever a configured adapter's name (a request's
        # `model` that discovery did not list as an adapter is never a label value).
        self.adapter_requests = Counter(
            "modelplane_gateway_adapter_requests",
            "Requests for a LoRA adapter answered, by base model, adapter and HTTP status "
            "code (these requests are in modelplane_gateway_requests_total too, by base model).",
            ("model", "adapter", "code"),
            registry=registry,
        )
        self.adapter_tokens = Counter(
            "modelplane_gateway_adapter_tokens",
            "Tokens of successful requests for a LoRA adapter, by base model, adapter and "
            "kind (prompt or completion): the response's usage, else the gateway's estimate.",
            ("model", "adapter", "kind"),
            registry=registry,
        )
        self.adapter_replicas = Gauge(
            "modelplane_gateway_adapter_replicas",
            "Ready replicas that have the LoRA adapter loaded, per base model and adapter "
            "(0: its requests are held).",
            ("model", "adapter"),
            registry=registry,
        )
        self.adapter_name_conflicts = Gauge(
            "modelplane_gateway_adapter_name_conflicts",
            "Models whose adapter of this name is refused: a model has that name, or a model "
            "first by name configures it too.",
            ("adapter",),
            registry=registry,
        )
        # Children with an `upstream` label, by upstream, so a gone replica's go with it.
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._in_flight: dict[tuple[str, str], Any] = {}
        self._by_upstream: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}

    def _track(self, metric: Any, labels: tuple[str, ...], upstream: str) -> None:
        self._by_upstream.setdefault(upstream, set()).add((metric, labels))

    def request_counter(self, model: str, code: str, upstream: str) -> Any:
        """The requests counter of these labels (cached: `labels()` costs a lock and a hash)."""
        labels = (model, code, upstream)
        counter = self._requests.get(labels)
        if counter is None:
            counter = self._requests[labels] = self.requests.labels(*labels)
            self._track(self.requests, labels, upstream)
        return counter

    def in_flight_gauge(self, model: str, upstream: str) -> Any:
        gauge = self._in_flight.get((model, upstream))
        if gauge is None:
            gauge = self._in_flight[(model, upstream)] = self.in_flight.labels(model, upstream)
            self._track(self.in_flight, (model, upstream), upstream)
        return gauge

    def ejection_counter(self, model: str, upstream: str) -> Any:
        self._track(self.ejections, (model, upstream), upstream)
        return self.ejections.labels(model, upstream)

    def forget_upstreams(self, current: Iterable[str]) -> None:
        """Remove every series of a replica not in `current` ("none" always stays).

        A request still in flight on a removed replica decrements the gauge
        child it incremented, which is no longer exported: nothing goes negative.
        """
        keep = {*current, "none"}
        for upstream in [u for u in self._by_upstream if u not in keep]:
            for metric, labels in self._by_upstream.pop(upstream):
                with contextlib.suppress(KeyError):  # removed already
                    metric.remove(*labels)
            self._requests = {k: v for k, v in self._requests.items() if k[2] != upstream}
            self._in_flight = {k: v for k, v in self._in_flight.items() if k[1] != upstream}


class MetricsApp:
    """`GET /metrics` and nothing else: the ASGI app of the gateway's metrics port."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await send_error(send, 404, "this port serves GET /metrics only")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, "use GET for /metrics")
            return
        body = generate_latest(self.registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
