"""What a tenant may do now: its model allow-list, rate limits, concurrency and budget.

One decision per step of a request, in the gateway's order: `admit` before
the body is read (model allowed, a request left this minute, a concurrency
slot, budget not spent), `reserve_tokens` once the request's size is known
(tokens per minute), `settle` when the response has told its `usage` (the
reservation corrected and the budget charged), `finished` always.

Refusals carry what OpenAI's clients expect: 429 with `code`
`rate_limit_exceeded` and a `Retry-After` for a rate or concurrency limit (a
wait helps), 429 with `type` and `code` `insufficient_quota` for a spent
budget (a wait helps only when the period ends: `Retry-After` says when), and
404 `model_not_found` for a model outside the tenant's allow-list (worded
like a model that does not exist, so a key cannot probe which models others use).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.tenants.budgets import Budgets, BudgetState
from modelplane.gateway.tenants.config import Tenant

CONCURRENCY_RETRY_AFTER_S: Final = 1


@dataclass(frozen=True)
class TenantRefusal:
    status: int
    type: str
    code: str
    message: str
    reason: str  # the metric label: which limit
    retry_after_s: int | None = None


def _rate_refusal(tenant: Tenant, reason: str, retry_after_s: int) -> TenantRefusal:
    return TenantRefusal(
        429,
        "requests" if reason == "requests per minute" else "tokens",
        "rate_limit_exceeded",
        f"tenant {tenant.name} is over its {reason} limit; retry after {retry_after_s} s",
        reason.replace(" ", "_"),
        retry_after_s,
    )


def budget_refusal(tenant: Tenant, state: BudgetState) -> TenantRefusal:
    period = tenant.budget_period.value if tenant.budget_period else "period"
    return TenantRefusal(
        429,
        "insufficient_quota",
        "insufficient_quota",
        f"tenant {tenant.name} has used its budget of {state.limit} tokens this {period} "
        f"({state.spent} used); it renews in {state.resets_in_s} s",
        "budget",
        state.resets_in_s,
    )


@dataclass
class TenantLimits:
    budgets: Budgets
    clock: Callable[[], float] = time.monotonic
    _limiters: dict[str, tuple[Tenant, KeyRateLimiter]] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)

    def _limiter(self, tenant: Tenant) -> KeyRateLimiter:
        held = self._limiters.get(tenant.name)
        same = held is not None and (
            held[0].requests_per_minute,
            held[0].tokens_per_minute,
        ) == (tenant.requests_per_minute, tenant.tokens_per_minute)
        if held is None or not same:
            # New, or its limits changed on reload: buckets start full at the new size.
            limiter = KeyRateLimiter(
                tenant.requests_per_minute, tenant.tokens_per_minute, clock=self.clock
            )
            self._limiters[tenant.name] = (tenant, limiter)
            return limiter
        return held[1]

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    async def admit(self, tenant: Tenant, model: str) -> TenantRefusal | None:
        """Before the body: None when the request may go on (then `finished` must follow)."""
        if not tenant.may_use(model):
            return TenantRefusal(
                404,
                "invalid_request_error",
                "model_not_found",
                f"the model {model!r} does not exist or this key may not use it",
                "model",
            )
        state = await self.budgets.state(tenant)
        if state is not None and state.exhausted:
            return budget_refusal(tenant, state)
        if tenant.max_concurrent is not None and self.running(tenant.name) >= tenant.max_concurrent:
            return TenantRefusal(
                429,
                "requests",
                "rate_limit_exceeded",
                f"tenant {tenant.name} already has {tenant.max_concurrent} requests in flight, "
                "its maxConcurrent",
                "max_concurrent",
                CONCURRENCY_RETRY_AFTER_S,
            )
        decision = self._limiter(tenant).admit(tenant.name)
        if not decision.allowed:
            return _rate_refusal(tenant, decision.reason, decision.retry_after_s)
        self._running[tenant.name] = self.running(tenant.name) + 1
        return None

    def reserve_tokens(self, tenant: Tenant, tokens: int) -> TenantRefusal | None:
        decision = self._limiter(tenant).reserve_tokens(tenant.name, tokens)
        if decision.allowed:
            return None
        return _rate_refusal(tenant, decision.reason, decision.retry_after_s)

    async def settle(self, tenant: Tenant, reserved: int, used: int) -> BudgetState | None:
        """The response's `usage` is known: correct the reservation and charge the budget."""
        self._limiter(tenant).settle_tokens(tenant.name, reserved, used)
        return await self.budgets.charge(tenant, used)

    def finished(self, tenant: Tenant) -> None:
        left = self.running(tenant.name) - 1
        if left > 0:
            self._running[tenant.name] = left
        else:
            self._running.pop(tenant.name, None)
