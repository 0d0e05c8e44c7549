"""Failure handling state: passive ejection of failing replicas and the retry budget.

Both are small state machines over an injected clock, so tests drive time
by hand. A replica that fails `consecutive_failures` times in a row (a
connect error, a dropped connection or a 5xx before the first byte) is
ejected: skipped by balancing for a cool-down that doubles with each
ejection in a row, up to a cap. A success resets it. The retry budget keeps
retries to a fraction of recent traffic (plus a small floor), so that when
every replica is failing, retries do not multiply the load on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class _ReplicaHealth:
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


@dataclass
class OutlierDetector:
    consecutive_failures: int = 3
    base_ejection_s: float = 5.0
    max_ejection_s: float = 120.0
    clock: Clock = time.monotonic
    _health: dict[str, _ReplicaHealth] = field(default_factory=dict)

    def record_success(self, upstream: str) -> None:
        health = self._health.get(upstream)
        if health is not None:
            health.failures = 0
            if health.ejected_until <= self.clock():
                health.ejections = 0

    def record_failure(self, upstream: str) -> bool:
        """Count a failure; True when this failure ejects the replica."""
        health = self._health.setdefault(upstream, _ReplicaHealth())
        health.failures += 1
        if health.failures < self.consecutive_failures:
            return False
        health.failures = 0
        cooldown = min(self.max_ejection_s, self.base_ejection_s * 2**health.ejections)
        health.ejections += 1
        health.ejected_until = self.clock() + cooldown
        return True

    def any_ejected(self) -> bool:
        if not self._health:
            return False
        now = self.clock()
        return any(h.ejected_until > now for h in self._health.values())

    def is_ejected(self, upstream: str) -> bool:
        health = self._health.get(upstream)
        return health is not None and health.ejected_until > self.clock()

    def forget(self, keep: set[str]) -> None:
        """Drop state of replicas discovery no longer lists."""
        for upstream in set(self._health) - keep:
            del self._health[upstream]


@dataclass
class RetryBudget:
    """Retries allowed: `ratio` per request seen, plus `floor_per_s` regardless.

    A token bucket: each request deposits `ratio` tokens, the floor refills
    continuously, a retry spends one token. The balance is capped so a long
    calm spell cannot bank an unbounded retry storm.
    """

    ratio: float = 0.2
    floor_per_s: float = 5.0
    cap: float = 50.0
    clock: Clock = time.monotonic
    _balance: float = -1.0
    _last: float = 0.0

    def __post_init__(self) -> None:
        self._balance = min(self.cap, self.floor_per_s)
        self._last = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._balance = min(self.cap, self._balance + (now - self._last) * self.floor_per_s)
        self._last = now

    def record_request(self) -> None:
        self._balance = min(self.cap, self._balance + self.ratio)

    def try_spend(self) -> bool:
        self._refill()
        if self._balance >= 1.0 - 1e-9:  # ten deposits of 0.1 make one retry
            self._balance -= 1.0
            return True
        return False
