"""A model's admission queue: `capacity` requests run, the rest wait and are served by weight.

The capacity is what the model's ready replicas run at once (replicas times
each one's concurrency). Past it, requests wait here instead of piling onto
vLLM's own queue, where a flooding tenant's requests would sit ahead of
everyone else's. Waiting requests are served by start-time fair queuing:
each request is tagged on arrival with `start = max(V, last finish of its
tenant)` and `finish = start + 1 / weight`, the smallest start tag is served
first (arrival order breaks ties, so a tenant's own requests stay FIFO), and
the virtual time V moves to the start tag of the request served. A tenant
with weight 2 therefore gets two turns for every one of a weight-1 tenant
while both wait, and a tenant that was idle starts at V: it banks no credit.

Each tenant may have at most `max_waiting_per_tenant` requests waiting; one
more is refused at once (`QueueFullError`), so a flood cannot grow the queue
without bound. Pure asyncio, no I/O: the clock is injected for tests.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_REMEMBERED = 4096  # tenants' last finish tags kept before the passed ones are dropped


class QueueFullError(Exception):
    """The tenant already has as many requests waiting for this model as it may."""


@dataclass(order=True)
class _Waiter:
    start: float
    seq: int
    tenant: str = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


@dataclass
class FairQueue:
    capacity: int
    max_waiting_per_tenant: int = 256
    clock: Callable[[], float] = time.monotonic
    running: int = 0
    _virtual: float = 0.0
    _finish: dict[str, float] = field(default_factory=dict)
    _heap: list[_Waiter] = field(default_factory=list)
    _waiting: Counter[str] = field(default_factory=Counter)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    def waiting_for(self, tenant: str) -> int:
        return self._waiting[tenant]

    def set_capacity(self, capacity: int) -> None:
        """Replicas came or went: a larger capacity starts waiting requests at once."""
        self.capacity = max(0, capacity)
        self._dispatch()

    async def acquire(self, tenant: str, weight: float) -> float:
        """Wait for a slot; the seconds waited. `release()` must follow once it is done."""
        if self.running < self.capacity and not self._heap:
            self.running += 1
            self._virtual = self._tag(tenant, weight)  # served at once: as if dispatched
            return 0.0
        if self._waiting[tenant] >= self.max_waiting_per_tenant:
            raise QueueFullError(tenant)
        begun = self.clock()
        start = self._tag(tenant, weight)
        waiter = _Waiter(start, next(self._seq), tenant, asyncio.get_running_loop().create_future())
        heapq.heappush(self._heap, waiter)
        self._waiting[tenant] += 1
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # granted a slot as the client left: hand it on
            else:
                self._forget(waiter)
            raise
        return self.clock() - begun

    def release(self) -> None:
        self.running = max(0, self.running - 1)
        self._dispatch()

    def _tag(self, tenant: str, weight: float) -> float:
        start = max(self._virtual, self._finish.get(tenant, 0.0))
        self._finish[tenant] = start + 1.0 / weight
        if len(self._finish) > MAX_REMEMBERED:
            # A tenant whose last finish V has passed starts at V anyway: forgetting it
            # changes no tag, and keeps the memory bounded by the tenants still ahead.
            self._finish = {t: f for t, f in self._finish.items() if f > self._virtual}
        return start

    def _forget(self, waiter: _Waiter) -> None:
        waiter.future.cancel()
        self._heap.remove(waiter)
        heapq.heapify(self._heap)
        self._count_out(waiter.tenant)

    def _count_out(self, tenant: str) -> None:
        self._waiting[tenant] -= 1
        if self._waiting[tenant] <= 0:
            del self._waiting[tenant]

    def _dispatch(self) -> None:
        while self.running < self.capacity and self._heap:
            waiter = heapq.heappop(self._heap)
            self._count_out(waiter.tenant)
            if waiter.future.done():
                continue
            self._virtual = waiter.start
            self.running += 1
            waiter.future.set_result(None)
