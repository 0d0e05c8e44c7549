"""A model's admission queue: `capacity` requests run, the rest wait and are served by weight.

The capacity is what the model's ready replicas run at once (replicas times
each one's concurrency). Past it, requests wait here instead of piling onto
vLLM's own queue, where a flooding tenant's requests would sit ahead of
everyone else's. Waiting requests are served by start-time fair queuing:
each request is tagged on arrival with `start = max(V, last finish of its
tenant)` and `finish = start + cost / weight`, the smallest start tag is
served first (arrival order breaks ties, so a tenant's own requests stay
FIFO), and the virtual time V moves to the start tag of the request served.
A request's cost is what it may use of the model (the gateway passes its
token estimate: prompt plus `max_tokens`), so the share is of the model's
work, not of request counts: a tenant sending short requests is not held to
as many requests as one sending long ones. With equal costs, a tenant with
weight 2 gets two turns for every one of a weight-1 tenant while both wait;
a tenant that was idle starts at V: it banks no credit.

Each tenant may have at most `max_waiting_per_tenant` requests waiting; one
more is refused at once (`QueueFullError`), so a flood cannot grow the queue
without bound. Pure asyncio, no I/O: the clock is injected for tests.

Anticipation. A client that sends one request at a time releases its slot
and sends its next request a few milliseconds later: by then a waiting
request of a flooding tenant has taken the slot, and the client waits a whole
slot turnover (on a CPU engine, hundreds of milliseconds) although the queue
would have served it first. So a freed slot is kept for up to
`anticipation_s` for the tenant that freed it, when that tenant has nothing
waiting and its next request's start tag would come no later than the first
waiting one's (the order the queue would serve in anyway). The idea is the
anticipatory disk scheduler's (Iyer and Druschel, SOSP 2001); it costs a slot
at most `anticipation_s` each time the tenant does not come back.
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
    anticipation_s: float = 0.0
    _kept: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # slots kept for
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

    async def acquire(self, tenant: str, weight: float, cost: float = 1.0) -> float:
        """Wait for a slot; the seconds waited. `release()` must follow once it is done."""
        kept = self._kept.pop(tenant, None)
        if kept is not None:  # the slot it freed a moment ago, kept for it (still counted)
            kept.cancel()
            self._virtual = max(self._virtual, self._tag(tenant, weight, cost))
            return 0.0
        if self.running < self.capacity and not self._heap:
            self.running += 1
            self._virtual = self._tag(tenant, weight, cost)  # served at once: as if dispatched
            return 0.0
        if self._waiting[tenant] >= self.max_waiting_per_tenant:
            raise QueueFullError(tenant)
        begun = self.clock()
        start = self._tag(tenant, weight, cost)
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

    def release(self, tenant: str | None = None) -> None:
        """A request of `tenant` is done with its slot (None: no anticipation)."""
        self.running = max(0, self.running - 1)
        if tenant is not None and self._keeps_for(tenant):
            self.running += 1
            loop = asyncio.get_running_loop()
            self._kept[tenant] = loop.call_later(self.anticipation_s, self._give_up, tenant)
            return
        self._dispatch()

    def _keeps_for(self, tenant: str) -> bool:
        """Whether to keep the slot `tenant` freed: others wait, it has nothing waiting, and
        its next request would be served before the first of them anyway."""
        if self.anticipation_s <= 0 or not self._heap or self._waiting[tenant]:
            return False
        if tenant in self._kept or self.running >= self.capacity:
            return False
        return max(self._virtual, self._finish.get(tenant, 0.0)) <= self._heap[0].start

    def _give_up(self, tenant: str) -> None:
        """The tenant did not come back in time: the kept slot goes to the queue."""
        if self._kept.pop(tenant, None) is not None:
            self.running = max(0, self.running - 1)
            self._dispatch()

    def _tag(self, tenant: str, weight: float, cost: float) -> float:
        start = max(self._virtual, self._finish.get(tenant, 0.0))
        self._finish[tenant] = start + max(cost, 1e-9) / weight
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
