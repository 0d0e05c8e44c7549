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

import math
from dataclasses import dataclass
from typing import Final

from modelplane.gateway.tenants.budgets import Budgets, BudgetState
from modelplane.gateway.tenants.config import Tenant
from modelplane.gateway.tenants.stores import LimitStore

CONCURRENCY_RETRY_AFTER_S: Final = 1


@dataclass(frozen=True)
class TenantRefusal:
    status: int
    type: str
    code: str
    message: str
    reason: str  # the metric label: which limit
    retry_after_s: int | None = None


def _rate_refusal(tenant: Tenant, reason: str, wait_s: float) -> TenantRefusal:
    retry_after_s = max(1, math.ceil(wait_s))
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
    """A tenant's limits, counted in `store` (this process, or Redis for all replicas)."""

    store: LimitStore
    budgets: Budgets

    async def admit(self, tenant: Tenant, model: str, ticket: str) -> TenantRefusal | None:
        """Before the body: None when the request may go on (then `finished` must follow).

        `ticket` names the request's concurrency slot (unique per request)."""
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
        if tenant.max_concurrent is not None and not await self.store.enter(
            tenant.name, tenant.max_concurrent, ticket
        ):
            return TenantRefusal(
                429,
                "requests",
                "rate_limit_exceeded",
                f"tenant {tenant.name} already has {tenant.max_concurrent} requests in flight, "
                "its maxConcurrent",
                "max_concurrent",
                CONCURRENCY_RETRY_AFTER_S,
            )
        # After the slot, so a request refused for concurrency spends none of the minute.
        if tenant.requests_per_minute is not None:
            wait = await self.store.take_request(tenant.name, tenant.requests_per_minute)
            if wait is not None:
                await self.finished(tenant, ticket)
                return _rate_refusal(tenant, "requests per minute", wait)
        return None

    async def reserve_tokens(self, tenant: Tenant, tokens: int) -> TenantRefusal | None:
        """Once the request's size is known: its estimate and `max_tokens` are reserved."""
        if tenant.tokens_per_minute is None:
            return None
        wait = await self.store.reserve_tokens(tenant.name, tenant.tokens_per_minute, tokens)
        return None if wait is None else _rate_refusal(tenant, "tokens per minute", wait)

    async def settle(self, tenant: Tenant, reserved: int, used: int) -> BudgetState | None:
        """The response's `usage` is known: correct the reservation and charge the budget."""
        if tenant.tokens_per_minute is not None and reserved != used:
            await self.store.adjust_tokens(tenant.name, tenant.tokens_per_minute, reserved - used)
        return await self.budgets.charge(tenant, used)

    async def finished(self, tenant: Tenant, ticket: str) -> None:
        if tenant.max_concurrent is not None:
            await self.store.leave(tenant.name, ticket)
