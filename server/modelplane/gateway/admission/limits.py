"""Per-identity request and token rate limits, answered with 429 and `Retry-After`.

An identity is the API key, or the client's address when the gateway has no
keys (so a client cannot escape its limit by sending a different made-up key
each time). Each identity has two token buckets refilled continuously:
requests per minute and model tokens per minute (prompt plus completion).

A request is admitted while its identity's request bucket holds a whole token
and its token bucket is positive. On admission it reserves the tokens it may
use (`admission.tokens.reservation`: the prompt's estimate plus `max_tokens`,
or a stated default when absent), so requests arriving together see each
other's cost instead of all passing a bucket that none has paid yet. When
the response ends the reservation is settled against the real `usage`: the
difference is refunded, or charged and may leave the bucket in debt, which
the identity's next requests wait out. At most one request's reservation can
overdraw the bucket, whatever the concurrency.

The per-identity state is bounded: `max_identities` buckets (default 10,000,
about 3 MiB with IPv6 addresses as names), least recently used evicted first.
An evicted identity starts again with full buckets, so a client cycling
through more addresses than that can outrun the limits; keys are the defence
against that.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

Clock = Callable[[], float]

DEFAULT_MAX_IDENTITIES: Final = 10_000


@dataclass(slots=True)
class _Buckets:
    requests: float
    tokens: float
    at: float


@dataclass
class Decision:
    allowed: bool
    retry_after_s: int = 0
    reason: str = ""


@dataclass
class KeyRateLimiter:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    clock: Clock = time.monotonic
    max_identities: int = DEFAULT_MAX_IDENTITIES
    _keys: OrderedDict[str, _Buckets] = field(default_factory=OrderedDict)

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_minute is not None

    @property
    def active(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    @property
    def identities(self) -> int:
        return len(self._keys)

    def _buckets(self, key: str) -> _Buckets:
        now = self.clock()
        b = self._keys.get(key)
        if b is None:
            b = self._keys[key] = _Buckets(
                float(self.requests_per_minute or 0), float(self.tokens_per_minute or 0), now
            )
            while len(self._keys) > self.max_identities:
                self._keys.popitem(last=False)
            return b
        self._keys.move_to_end(key)
        elapsed = now - b.at
        b.at = now
        if self.requests_per_minute is not None:
            rate = self.requests_per_minute / 60.0
            b.requests = min(float(self.requests_per_minute), b.requests + elapsed * rate)
        if self.tokens_per_minute is not None:
            rate = self.tokens_per_minute / 60.0
            b.tokens = min(float(self.tokens_per_minute), b.tokens + elapsed * rate)
        return b

    def _token_wait(self, b: _Buckets) -> tuple[float, str] | None:
        if self.tokens_per_minute is None or b.tokens > 0.0:
            return None
        # Back to a positive balance: the debt plus one token.
        return (1.0 - b.tokens) * 60.0 / self.tokens_per_minute, "tokens per minute"

    def admit(self, key: str) -> Decision:
        """Before the body is read: the request bucket is charged, the token one checked."""
        if not self.active:
            return Decision(True)
        b = self._buckets(key)
        waits: list[tuple[float, str]] = []
        if self.requests_per_minute is not None and b.requests < 1.0:
            waits.append(
                ((1.0 - b.requests) * 60.0 / self.requests_per_minute, "requests per minute")
            )
        token_wait = self._token_wait(b)
        if token_wait is not None:
            waits.append(token_wait)
        if waits:
            wait, reason = max(waits)
            return Decision(False, max(1, math.ceil(wait)), reason)
        if self.requests_per_minute is not None:
            b.requests -= 1.0
        return Decision(True)

    def reserve_tokens(self, key: str, tokens: int) -> Decision:
        """Once the request's size is known: take `tokens` while the balance is positive.

        Checked again here, with no wait between check and take, because other
        requests of the identity may have reserved since `admit`.
        """
        if self.tokens_per_minute is None:
            return Decision(True)
        b = self._buckets(key)
        wait = self._token_wait(b)
        if wait is not None:
            return Decision(False, max(1, math.ceil(wait[0])), wait[1])
        b.tokens -= max(0, tokens)
        return Decision(True)

    def settle_tokens(self, key: str, reserved: int, used: int) -> None:
        """The response is over: refund what the reservation overestimated, or charge more."""
        if self.tokens_per_minute is not None and reserved != used:
            self._buckets(key).tokens += reserved - used

    def charge_tokens(self, key: str, tokens: int) -> None:
        if tokens > 0:
            self.settle_tokens(key, 0, tokens)
