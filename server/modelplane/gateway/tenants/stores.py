"""Where tenants' limits and budgets are counted: this process, or Redis shared by every replica.

`MemoryLimitStore` is the default for one gateway replica. `RedisLimitStore`
makes a tenant's limits and budget hold across all replicas and survive
their restarts: the request and token buckets and the concurrency slots are
Lua scripts (one round trip, atomic, timed by Redis's own clock so replicas
with drifting clocks agree), budgets plain counters with an expiry.

Concurrency slots are leases in a sorted set: a replica that dies holding
some cannot leak them forever, they expire after `lease_s` (longer than any
request may run).

`FailoverLimitStore` decides what happens when Redis cannot be reached. Fail
open (the default) counts in this replica's memory until Redis answers again:
inference keeps working through an outage of the limiter, at the cost of
limits that hold per replica meanwhile (Envoy's rate-limit filter makes the
same choice by default, for the same reason: the limiter must not be a
single point of failure for the traffic it protects). Fail closed answers
503 instead (`StoreUnavailableError`), for a platform where a spent budget
must never be overrun. After a failure Redis is tried again after a short pause,
not on every request, so an outage costs no connection timeout per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from modelplane.gateway.admission.limits import KeyRateLimiter

log = logging.getLogger("modelplane.gateway.tenants")

DEFAULT_LEASE_S: Final = 900.0
RETRY_REDIS_AFTER_S: Final = 5.0


class StoreUnavailableError(Exception):
    """The shared store cannot be reached and the gateway is set to fail closed."""


class LimitStore(Protocol):
    """What `TenantLimits` counts in. Waits are seconds; None means allowed."""

    async def take_request(self, tenant: str, per_minute: int) -> float | None: ...

    async def reserve_tokens(self, tenant: str, per_minute: int, tokens: int) -> float | None: ...

    async def adjust_tokens(self, tenant: str, per_minute: int, tokens: int) -> None:
        """Give back `tokens` (negative: charge more) to the tenant's token bucket."""
        ...

    async def enter(self, tenant: str, limit: int, ticket: str) -> bool: ...

    async def leave(self, tenant: str, ticket: str) -> None: ...

    async def spent(self, tenant: str, key: str) -> int: ...

    async def add(self, tenant: str, key: str, tokens: int, ttl_s: int) -> int: ...


@dataclass
class MemoryLimitStore:
    clock: Callable[[], float] = time.monotonic
    _requests: dict[tuple[str, int], KeyRateLimiter] = field(default_factory=dict)
    _tokens: dict[tuple[str, int], KeyRateLimiter] = field(default_factory=dict)
    _slots: dict[str, set[str]] = field(default_factory=dict)
    _spent: dict[tuple[str, str], int] = field(default_factory=dict)

    def _limiter(
        self,
        table: dict[tuple[str, int], KeyRateLimiter],
        tenant: str,
        per_minute: int,
        tokens: bool,
    ) -> KeyRateLimiter:
        # Keyed by the limit too: a reload that changes it starts a full bucket of the new size.
        limiter = table.get((tenant, per_minute))
        if limiter is None:
            for stale in [k for k in table if k[0] == tenant]:
                del table[stale]
            limiter = table[(tenant, per_minute)] = KeyRateLimiter(
                None if tokens else per_minute, per_minute if tokens else None, clock=self.clock
            )
        return limiter

    async def take_request(self, tenant: str, per_minute: int) -> float | None:
        decision = self._limiter(self._requests, tenant, per_minute, False).admit(tenant)
        return None if decision.allowed else float(decision.retry_after_s)

    async def reserve_tokens(self, tenant: str, per_minute: int, tokens: int) -> float | None:
        limiter = self._limiter(self._tokens, tenant, per_minute, True)
        decision = limiter.reserve_tokens(tenant, tokens)
        return None if decision.allowed else float(decision.retry_after_s)

    async def adjust_tokens(self, tenant: str, per_minute: int, tokens: int) -> None:
        self._limiter(self._tokens, tenant, per_minute, True).settle_tokens(tenant, tokens, 0)

    async def enter(self, tenant: str, limit: int, ticket: str) -> bool:
        held = self._slots.setdefault(tenant, set())
        if len(held) >= limit:
            return False
        held.add(ticket)
        return True

    async def leave(self, tenant: str, ticket: str) -> None:
        held = self._slots.get(tenant)
        if held is not None:
            held.discard(ticket)
            if not held:
                del self._slots[tenant]

    async def spent(self, tenant: str, key: str) -> int:
        return self._spent.get((tenant, key), 0)

    async def add(self, tenant: str, key: str, tokens: int, ttl_s: int) -> int:
        # Only a tenant's current period is kept: an older one is never read again.
        for old in [k for k in self._spent if k[0] == tenant and k[1] != key]:
            del self._spent[old]
        total = self._spent.get((tenant, key), 0) + max(0, tokens)
        self._spent[(tenant, key)] = total
        return total


# A token bucket: refilled at ARGV[2] per second up to ARGV[1], timed by Redis's clock.
# Mode `take`: needs ARGV[3] whole tokens. `reserve`: needs a positive balance, then takes
# ARGV[3] (may go into debt). `adjust`: adds ARGV[3] (negative charges). Returns the wait.
_BUCKET: Final = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'l', 't')
local level = tonumber(s[1]) or cap
local at = tonumber(s[2]) or now
level = math.min(cap, level + math.max(0, now - at) * rate)
local wait = 0
if mode == 'take' then
  if level >= cost then level = level - cost else wait = (cost - level) / rate end
elseif mode == 'reserve' then
  if level > 0 then level = level - cost else wait = (1 - level) / rate end
else
  level = math.min(cap, level + cost)
end
redis.call('HSET', KEYS[1], 'l', tostring(level), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 60000)
return tostring(wait)
"""

# Concurrency leases: KEYS[1] a sorted set of tickets scored by their expiry.
_ENTER: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""


@dataclass
class RedisLimitStore:
    """Counts in Redis under `prefix`; `client` is a `redis.asyncio.Redis`."""

    client: Any
    prefix: str = "modelplane"
    lease_s: float = DEFAULT_LEASE_S
    _scripts: dict[str, Any] = field(default_factory=dict)

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(source)
        return self._scripts[name]

    async def _bucket(self, key: str, per_minute: int, cost: int, mode: str) -> float:
        wait = await self._script("bucket", _BUCKET)(
            keys=[f"{self.prefix}:{key}"], args=[per_minute, per_minute / 60.0, cost, mode]
        )
        return float(wait)

    async def take_request(self, tenant: str, per_minute: int) -> float | None:
        wait = await self._bucket(f"rpm:{tenant}:{per_minute}", per_minute, 1, "take")
        return wait or None

    async def reserve_tokens(self, tenant: str, per_minute: int, tokens: int) -> float | None:
        wait = await self._bucket(
            f"tpm:{tenant}:{per_minute}", per_minute, max(0, tokens), "reserve"
        )
        return wait or None

    async def adjust_tokens(self, tenant: str, per_minute: int, tokens: int) -> None:
        await self._bucket(f"tpm:{tenant}:{per_minute}", per_minute, tokens, "adjust")

    async def enter(self, tenant: str, limit: int, ticket: str) -> bool:
        entered = await self._script("enter", _ENTER)(
            keys=[f"{self.prefix}:slots:{tenant}"], args=[limit, ticket, self.lease_s]
        )
        return bool(int(entered))

    async def leave(self, tenant: str, ticket: str) -> None:
        await self.client.zrem(f"{self.prefix}:slots:{tenant}", ticket)

    async def spent(self, tenant: str, key: str) -> int:
        value = await self.client.get(f"{self.prefix}:budget:{tenant}:{key}")
        return int(value or 0)

    async def add(self, tenant: str, key: str, tokens: int, ttl_s: int) -> int:
        name = f"{self.prefix}:budget:{tenant}:{key}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(name, max(0, tokens))
            pipe.expire(name, ttl_s)
            total, _ = await pipe.execute()
        return int(total)


def redis_client(url: str, timeout_s: float) -> Any:
    """A `redis.asyncio.Redis` for `url`: each call bounded by `timeout_s`, and a call that
    meets a connection Redis closed (a restart) tried once more on a fresh one, so a
    restart costs no request."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass
class FailoverLimitStore:
    """Redis while it answers; when it does not, this replica's memory (open) or 503 (closed)."""

    primary: LimitStore
    fallback: MemoryLimitStore
    fail_open: bool = True
    clock: Callable[[], float] = time.monotonic
    on_state: Callable[[bool], None] = lambda up: None
    errors: tuple[type[BaseException], ...] = field(default_factory=_unreachable_errors)
    _down_until: float = 0.0
    _up: bool = True

    @property
    def up(self) -> bool:
        return self._up

    def _mark(self, up: bool, err: BaseException | None = None) -> None:
        if up != self._up:
            if up:
                log.warning("the shared limit store answers again; limits hold across replicas")
            else:
                mode = "counting in this replica's memory" if self.fail_open else "answering 503"
                log.warning("the shared limit store cannot be reached (%s); %s", err, mode)
            self._up = up
            self.on_state(up)

    async def _call(self, name: str, *args: Any) -> Any:
        if self.clock() >= self._down_until:
            try:
                result = await getattr(self.primary, name)(*args)
            except self.errors as err:
                self._down_until = self.clock() + RETRY_REDIS_AFTER_S
                self._mark(False, err)
            else:
                self._mark(True)
                return result
        if not self.fail_open:
            raise StoreUnavailableError("the shared limit store cannot be reached")
        return await getattr(self.fallback, name)(*args)

    async def take_request(self, tenant: str, per_minute: int) -> float | None:
        result: float | None = await self._call("take_request", tenant, per_minute)
        return result

    async def reserve_tokens(self, tenant: str, per_minute: int, tokens: int) -> float | None:
        result: float | None = await self._call("reserve_tokens", tenant, per_minute, tokens)
        return result

    async def adjust_tokens(self, tenant: str, per_minute: int, tokens: int) -> None:
        await self._call("adjust_tokens", tenant, per_minute, tokens)

    async def enter(self, tenant: str, limit: int, ticket: str) -> bool:
        return bool(await self._call("enter", tenant, limit, ticket))

    async def leave(self, tenant: str, ticket: str) -> None:
        # Whichever store took the ticket: leaving one that has none of it changes nothing.
        with contextlib.suppress(StoreUnavailableError):
            await self._call("leave", tenant, ticket)
        await self.fallback.leave(tenant, ticket)

    async def spent(self, tenant: str, key: str) -> int:
        return int(await self._call("spent", tenant, key))

    async def add(self, tenant: str, key: str, tokens: int, ttl_s: int) -> int:
        return int(await self._call("add", tenant, key, tokens, ttl_s))
