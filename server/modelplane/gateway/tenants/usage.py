"""Usage per tenant over a calendar period, from the gateways' counters in Prometheus.

Each counter series (one per gateway replica, tenant, model and kind) is read
as its samples over the period, at a step, and its increase counted exactly
from them: the sum of the rises between samples, a drop being a restart of
that gateway replica (the value after it counts whole). This is the
arithmetic of PromQL's `increase()` without its extrapolation to the
window's edges, so a tenant is charged what the counters recorded, not an
estimate; a series that starts inside the period is counted from zero
(the gateway creates each tenant's series at zero before it counts).
Series of all replicas are then summed.

Pure functions here; `usage_command` does the HTTP.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REQUESTS = "modelplane_gateway_tenant_requests_total"
TOKENS = "modelplane_gateway_tenant_tokens_total"
BUDGET = "modelplane_gateway_tenant_budget_tokens"
BUDGET_SPENT = "modelplane_gateway_tenant_budget_spent_tokens"


def counted_increase(values: Sequence[float], *, starts_in_window: bool) -> float:
    """What a counter's samples say it counted: rises summed, a drop counted as a restart."""
    if not values:
        return 0.0
    total = values[0] if starts_in_window else 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


@dataclass
class ModelUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class TenantUsage:
    tenant: str
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    budget: int | None = None
    budget_spent: int | None = None

    def model(self, name: str) -> ModelUsage:
        return self.by_model.setdefault(name, ModelUsage())

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.by_model.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.by_model.values())

    @property
    def completion_tokens(self) -> int:
        return sum(m.completion_tokens for m in self.by_model.values())


def _series_increase(result: Mapping[str, Any], window_start: float, step_s: float) -> float:
    samples = result.get("values") or []
    values = [float(v) for _, v in samples]
    # A series whose first sample comes later than the period's first step began inside
    # the period (a new gateway replica or tenant): it counted from zero.
    first_at = float(samples[0][0]) if samples else window_start
    return counted_increase(values, starts_in_window=first_at > window_start + 1.5 * step_s)


def usage_rows(
    requests: Iterable[Mapping[str, Any]],
    tokens: Iterable[Mapping[str, Any]],
    budgets: Iterable[Mapping[str, Any]],
    spent: Iterable[Mapping[str, Any]],
    window_start: float,
    step_s: float,
) -> list[TenantUsage]:
    """Rows per tenant from Prometheus results (matrix results of the two counters, vector
    results of the budget gauges), sorted by tokens used, most first."""
    rows: dict[str, TenantUsage] = {}

    def row(tenant: str) -> TenantUsage:
        return rows.setdefault(tenant, TenantUsage(tenant))

    for result in requests:
        labels = result["metric"]
        usage = row(labels["tenant"]).model(labels.get("model", ""))
        usage.requests += round(_series_increase(result, window_start, step_s))
    for result in tokens:
        labels = result["metric"]
        usage = row(labels["tenant"]).model(labels.get("model", ""))
        n = round(_series_increase(result, window_start, step_s))
        if labels.get("kind") == "prompt":
            usage.prompt_tokens += n
        else:
            usage.completion_tokens += n
    for result in budgets:
        r = row(result["metric"]["tenant"])
        r.budget = max(r.budget or 0, int(float(result["value"][1])))
    for result in spent:
        # Every replica reads the shared count (Redis), or each its own: the largest is
        # the shared count, or a lower bound of the total.
        r = row(result["metric"]["tenant"])
        r.budget_spent = max(r.budget_spent or 0, int(float(result["value"][1])))
    return sorted(rows.values(), key=lambda u: (-(u.prompt_tokens + u.completion_tokens), u.tenant))


def model_shares(rows: Sequence[TenantUsage]) -> dict[tuple[str, str], float]:
    """(tenant, model) -> that tenant's share of all tokens the model served."""
    totals: dict[str, int] = {}
    for r in rows:
        for model, usage in r.by_model.items():
            totals[model] = totals.get(model, 0) + usage.tokens
    return {
        (r.tenant, model): usage.tokens / totals[model]
        for r in rows
        for model, usage in r.by_model.items()
        if totals[model]
    }


def _share_text(rows: Sequence[TenantUsage], tenant: str, row: TenantUsage) -> str:
    shares = model_shares(rows)
    parts = [
        f"{model} {shares[(tenant, model)]:.0%}"
        for model in sorted(row.by_model)
        if (tenant, model) in shares
    ]
    return ", ".join(parts) or "-"


def _budget_text(row: TenantUsage) -> str:
    if row.budget is None:
        return "-"
    spent = row.budget_spent or 0
    return f"{spent:,} of {row.budget:,} ({spent / row.budget:.0%})" if row.budget else "-"


def render_table(rows: Sequence[TenantUsage], title: str) -> str:
    header = ("TENANT", "REQUESTS", "TOKENS IN", "TOKENS OUT", "BUDGET USED", "SHARE OF MODEL")
    lines = [
        (
            r.tenant,
            f"{r.requests:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            _budget_text(r),
            _share_text(rows, r.tenant, r),
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=False)]
    right = {1, 2, 3}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    body = [fmt(header), *(fmt(line) for line in lines)]
    if not lines:
        body.append("(no tenant used the gateway in this period)")
    return "\n".join([title, *body])


def render_csv(rows: Sequence[TenantUsage]) -> str:
    """One line per tenant and model, for a chargeback spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["tenant", "model", "requests", "prompt_tokens", "completion_tokens",
                     "share_of_model", "budget", "budget_spent"])  # fmt: skip
    shares = model_shares(rows)
    for r in rows:
        for model in sorted(r.by_model):
            usage = r.by_model[model]
            writer.writerow([
                r.tenant, model, usage.requests, usage.prompt_tokens, usage.completion_tokens,
                f"{shares.get((r.tenant, model), 0.0):.4f}",
                "" if r.budget is None else r.budget,
                "" if r.budget_spent is None else r.budget_spent,
            ])  # fmt: skip
    return out.getvalue()
