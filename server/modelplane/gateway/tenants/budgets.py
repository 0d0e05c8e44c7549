"""Token budgets per calendar period (UTC), and the in-memory ledger that counts them.

A budget is spent by the tokens a tenant's requests used (prompt plus
completion, from each response's `usage`), counted in the period the
response ended in. A tenant whose spending has reached the budget is refused
until the period ends; requests already running finish, so a period can end
slightly over budget by what was in flight when it was reached (at most the
tenant's concurrency times a request's size).

Periods are calendar periods in UTC: a day from 00:00, a week from Monday
00:00, a month from the 1st 00:00. A period's key (`2026-12`, `2026-W49`,
`2026-12-06`) names its counter in any store, so every gateway replica and a
restarted one count into the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from modelplane.gateway.tenants.config import Period, Tenant

WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def period_bounds(now: datetime, period: Period) -> tuple[datetime, datetime]:
    """[start, end) of the calendar period (UTC) that holds `now`."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day, day + timedelta(days=1)
    if period is Period.WEEK:
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def period_key(now: datetime, period: Period) -> str:
    start, _ = period_bounds(now, period)
    if period is Period.DAY:
        return start.strftime("%Y-%m-%d")
    if period is Period.WEEK:
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


class BudgetStore(Protocol):
    """Where spent tokens are counted (`tenants.stores`: this process, or Redis)."""

    async def spent(self, tenant: str, key: str) -> int: ...

    async def add(self, tenant: str, key: str, tokens: int, ttl_s: int) -> int:
        """Count `tokens` more; the new total."""
        ...


@dataclass(frozen=True)
class BudgetState:
    spent: int
    limit: int
    resets_in_s: int

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.spent)


@dataclass
class Budgets:
    store: BudgetStore
    clock: WallClock = utc_now

    def _where(self, tenant: Tenant) -> tuple[str, int, int] | None:
        if tenant.budget_tokens is None or tenant.budget_period is None:
            return None
        now = self.clock()
        _, end = period_bounds(now, tenant.budget_period)
        resets_in = max(1, int((end - now).total_seconds() + 0.999))
        # A counter outlives its period by a day, so a late reader still finds it.
        return period_key(now, tenant.budget_period), resets_in, resets_in + 86_400

    async def state(self, tenant: Tenant) -> BudgetState | None:
        """The tenant's budget this period; None when it has none."""
        where = self._where(tenant)
        if where is None or tenant.budget_tokens is None:
            return None
        key, resets_in, _ = where
        return BudgetState(
            await self.store.spent(tenant.name, key), tenant.budget_tokens, resets_in
        )

    async def charge(self, tenant: Tenant, tokens: int) -> BudgetState | None:
        where = self._where(tenant)
        if where is None or tenant.budget_tokens is None or tokens <= 0:
            return None
        key, resets_in, ttl = where
        total = await self.store.add(tenant.name, key, tokens, ttl)
        return BudgetState(total, tenant.budget_tokens, resets_in)
