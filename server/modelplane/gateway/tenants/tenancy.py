"""The gateway's tenants in one place: whose key it is, what the team may do, its turn on a
saturated model, and what it used.

`GatewayApp` asks this object at each step of a request; the decisions are
in `admission` (limits and budget), `fair_queue` (turns) and `budgets`; the
counts in `stores` (memory or Redis); the series in `metrics`.

Without a tenants file every request is its own identity's (the API key, or
the client's address): no tenant limits, and a saturated model serves the
identities in turn, all with weight 1, labelled `default` in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.gateway.routing.routes import ModelRoute
from modelplane.gateway.tenants.admission import TenantLimits
from modelplane.gateway.tenants.config import Tenant, Tenants, TenantsFileWatch
from modelplane.gateway.tenants.fair_queue import FairQueue
from modelplane.gateway.tenants.metrics import TenantMetrics

log = logging.getLogger("modelplane.gateway.tenants")

DEFAULT_TENANT: Final = "default"  # the metric label of requests without a tenants file

# Called with the route and how many requests this gateway replica queues for it now.
QueueHook = Callable[[ModelRoute, int], Coroutine[Any, Any, None]]


async def _no_queue_hook(route: ModelRoute, queued: int) -> None:
    return None


@dataclass
class Tenancy:
    limits: TenantLimits
    metrics: TenantMetrics
    watch: TenantsFileWatch | None = None  # None: no tenants file
    default_concurrency: int | None = None  # per replica, for routes that do not say
    max_queued_per_tenant: int = 256
    anticipation_s: float = 0.0  # a freed slot kept for its tenant (fair_queue says why)
    on_queued: QueueHook = _no_queue_hook
    queue_signal_interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    queues: dict[str, FairQueue] = field(default_factory=dict)
    _prepared: tuple[bytes, frozenset[str]] | None = None  # what `prepare` last covered
    _signalled: dict[str, tuple[int, float]] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def tenants(self) -> Tenants | None:
        return self.watch.tenants if self.watch is not None else None

    def tenant_for(self, key: str | None) -> Tenant | None:
        tenants = self.tenants
        return tenants.for_key(key) if tenants is not None and key else None

    def prepare(self, models: list[str]) -> None:
        """Every tenant's counters at zero for these models (a table listener)."""
        tenants = self.tenants
        if tenants is None:
            return
        # Discovery calls this on every change of replicas; the series depend only on the
        # tenants and the model names.
        covered = (tenants.digest, frozenset(models))
        if covered == self._prepared:
            return
        self._prepared = covered
        self.metrics.keep_only(tenants.by_name)
        for name in tenants.by_name:
            self.metrics.prepare(name, models)

    # ---- turns on a saturated model -------------------------------------------------

    def capacity(self, route: ModelRoute) -> int | None:
        """Requests the model's ready replicas run at once; None: no queue at the gateway."""
        per_replica = route.concurrency or self.default_concurrency
        return None if per_replica is None else per_replica * len(route.upstreams)

    def update_capacities(self, routes: Mapping[str, ModelRoute]) -> None:
        """Replicas came or went (a table listener): each queue's capacity follows."""
        for model, queue in list(self.queues.items()):
            route = routes.get(model)
            capacity = self.capacity(route) if route is not None else None
            if capacity is None:
                # No longer queued here: whatever waits goes on at once.
                queue.set_capacity(queue.running + queue.waiting)
                if not queue.running and not queue.waiting:
                    del self.queues[model]
            else:
                queue.set_capacity(capacity)

    def queue_for(self, route: ModelRoute) -> FairQueue | None:
        capacity = self.capacity(route)
        if capacity is None:
            return None
        queue = self.queues.get(route.name)
        if queue is None:
            queue = self.queues[route.name] = FairQueue(
                capacity,
                max_waiting_per_tenant=self.max_queued_per_tenant,
                clock=self.clock,
                anticipation_s=self.anticipation_s,
            )
        return queue

    async def wait_turn(
        self,
        queue: FairQueue,
        route: ModelRoute,
        key: str,
        weight: float,
        label: str,
        cost: float = 1.0,
    ) -> float:
        """Wait for a slot (QueueFullError when the tenant's queue is full); seconds waited."""
        if queue.running < queue.capacity and not queue.waiting:
            waited = await queue.acquire(key, weight, cost)  # a free slot: no task, no wait
            self.metrics.queued(route.name, label, waited)
            return waited
        waiting = asyncio.ensure_future(queue.acquire(key, weight, cost))
        await asyncio.sleep(0)  # acquire enqueues (or refuses), so the counts include it
        self._signal(route, queue)
        self.metrics.waiting_now(route.name, label, queue.waiting_for(key))
        try:
            waited = await waiting
        finally:
            self.metrics.waiting_now(route.name, label, queue.waiting_for(key))
            self._signal(route, queue)
        self.metrics.queued(route.name, label, waited)
        return waited

    def _signal(self, route: ModelRoute, queue: FairQueue) -> None:
        """Tell the autoscaler what waits here: at most every few seconds while it changes,
        and at once when the queue empties."""
        if not route.demand:
            return
        now = self.clock()
        last = self._signalled.get(route.name)
        count = queue.waiting
        if last is not None and (
            last[0] == count or (count and now - last[1] < self.queue_signal_interval_s)
        ):
            return
        if last is None and not count:
            return
        self._signalled[route.name] = (count, now)
        task = asyncio.create_task(self.on_queued(route, count), name=f"queued-{route.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
