"""Per-API-key request and token rate limits, answered with 429 and `Retry-After`.

Each key has two token buckets refilled continuously: requests per minute
and model tokens per minute (prompt plus completion). A request is admitted
while the request bucket holds a whole token and the token bucket is not in
debt. Token use is only known when the response ends, so it is charged
afterwards and may push the bucket into debt; the key's next requests wait
until it is paid back. This is how hosted APIs behave, and it keeps the
streaming path free of any up-front token estimate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
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
    _keys: dict[str, _Buckets] = field(default_factory=dict)

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_minute is not None

    @property
    def active(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def _buckets(self, key: str) -> _Buckets:
        now = self.clock()
        b = self._keys.get(key)
        if b is None:
            b = self._keys[key] = _Buckets(
                float(self.requests_per_minute or 0), float(self.tokens_per_minute or 0), now
            )
            return b
        elapsed = now - b.at
        b.at = now
        if self.requests_per_minute is not None:
            rate = self.requests_per_minute / 60.0
            b.requests = min(float(self.requests_per_minute), b.requests + elapsed * rate)
        if self.tokens_per_minute is not None:
            rate = self.tokens_per_minute / 60.0
            b.tokens = min(float(self.tokens_per_minute), b.tokens + elapsed * rate)
        return b

    def admit(self, key: str) -> Decision:
        if not self.active:
            return Decision(True)
        b = self._buckets(key)
        waits: list[tuple[float, str]] = []
        if self.requests_per_minute is not None and b.requests < 1.0:
            waits.append(
                ((1.0 - b.requests) * 60.0 / self.requests_per_minute, "requests per minute")
            )
        if self.tokens_per_minute is not None and b.tokens <= 0.0:
            # Back to a positive balance: the debt plus one token.
            waits.append(((1.0 - b.tokens) * 60.0 / self.tokens_per_minute, "tokens per minute"))
        if waits:
            wait, reason = max(waits)
            return Decision(False, max(1, math.ceil(wait)), reason)
        if self.requests_per_minute is not None:
            b.requests -= 1.0
        return Decision(True)

    def charge_tokens(self, key: str, tokens: int) -> None:
        if self.tokens_per_minute is not None and tokens > 0:
            self._buckets(key).tokens -= tokens
