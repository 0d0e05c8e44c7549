"""Who used what: the gateway's per-tenant series (`modelplane_gateway_tenant_*`, queue time).

Label values are bounded: `tenant` is a name from the tenants file (never
what a client sent), `model` one the gateway serves (the caller passes its
bounded model label). A tenant removed from the file has its series removed
at the reload, so the scrape does not keep teams that are gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The `reason` of a tenant's refusal (`admission.TenantRefusal.reason`, and the gateway's
# own queue_full and store_unavailable).
REFUSAL_REASONS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "budget",
    "queue_full",
    "model",
    "store_unavailable",
)
QUEUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class TenantMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "modelplane_gateway_tenant_requests",
            "Requests admitted for a tenant, by model.",
            ("tenant", "model"),
            registry=registry,
        )
        self.tokens = Counter(
            "modelplane_gateway_tenant_tokens",
            "Tokens a tenant's requests used, from each response's usage: kind is prompt or "
            "completion.",
            ("tenant", "model", "kind"),
            registry=registry,
        )
        self.throttled = Counter(
            "modelplane_gateway_tenant_throttled",
            "Requests refused for a tenant's own limit: requests_per_minute, "
            "tokens_per_minute, max_concurrent, budget, queue_full or model.",
            ("tenant", "reason"),
            registry=registry,
        )
        self.budget_tokens = Gauge(
            "modelplane_gateway_tenant_budget_tokens",
            "A tenant's token budget for its period (absent without a budget).",
            ("tenant", "period"),
            registry=registry,
        )
        self.budget_spent = Gauge(
            "modelplane_gateway_tenant_budget_spent_tokens",
            "Tokens of the budget spent this period, as this gateway replica last read them "
            "(every replica reads the shared count when Redis is configured).",
            ("tenant", "period"),
            registry=registry,
        )
        self.queue = Histogram(
            "modelplane_gateway_queue_seconds",
            "Time a request waited at the gateway for a slot on a saturated model (part of "
            "its time to first token), by model and tenant.",
            ("model", "tenant"),
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.waiting = Gauge(
            "modelplane_gateway_queue_waiting",
            "Requests waiting at the gateway for a slot on a saturated model, by tenant: "
            "demand the model's replicas do not see yet.",
            ("model", "tenant"),
            registry=registry,
        )
        # Every label set written, by tenant, so a tenant's series can be removed.
        self._series: dict[str, set[tuple[Counter | Gauge | Histogram, tuple[str, ...]]]] = {}

    def _labels(
        self, metric: Counter | Gauge | Histogram, tenant: str, *values: str
    ) -> tuple[str, ...]:
        self._series.setdefault(tenant, set()).add((metric, values))
        return values

    def prepare(self, tenant: str, models: Iterable[str]) -> None:
        """Create the tenant's counters and queue histogram at zero for these models, before
        they count: a series whose first scrape already shows a count loses that count in
        `rate()` and `increase()` (a tenant's first refusal would never reach the alert)."""
        for reason in REFUSAL_REASONS:
            self.throttled.labels(*self._labels(self.throttled, tenant, tenant, reason))
        for model in models:
            self.requests.labels(*self._labels(self.requests, tenant, tenant, model))
            self.queue.labels(*self._labels(self.queue, tenant, model, tenant))
            for kind in ("prompt", "completion"):
                self.tokens.labels(*self._labels(self.tokens, tenant, tenant, model, kind))

    def admitted(self, tenant: str, model: str) -> None:
        self.requests.labels(*self._labels(self.requests, tenant, tenant, model)).inc()

    def used(self, tenant: str, model: str, prompt: int, completion: int) -> None:
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n > 0:
                self.tokens.labels(*self._labels(self.tokens, tenant, tenant, model, kind)).inc(n)

    def refused(self, tenant: str, reason: str) -> None:
        self.throttled.labels(*self._labels(self.throttled, tenant, tenant, reason)).inc()

    def budget(self, tenant: str, period: str, limit: int, spent: int) -> None:
        self.budget_tokens.labels(*self._labels(self.budget_tokens, tenant, tenant, period)).set(
            limit
        )
        self.budget_spent.labels(*self._labels(self.budget_spent, tenant, tenant, period)).set(
            spent
        )

    def queued(self, model: str, tenant: str, seconds: float) -> None:
        self.queue.labels(*self._labels(self.queue, tenant, model, tenant)).observe(seconds)

    def waiting_now(self, model: str, tenant: str, count: int) -> None:
        self.waiting.labels(*self._labels(self.waiting, tenant, model, tenant)).set(count)

    def keep_only(self, tenants: Iterable[str]) -> None:
        """After a reload: drop every series of tenants no longer in the file."""
        current = set(tenants)
        for gone in [t for t in self._series if t not in current]:
            for metric, values in self._series.pop(gone):
                metric.remove(*values)
