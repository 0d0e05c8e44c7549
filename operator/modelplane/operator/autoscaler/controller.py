"""The autoscaler in the operator: measure, decide, write, for every autoscaled LLMDeployment.

Every `autoscalerIntervalSeconds` the operator's measuring loop calls
`Autoscaler.tick`. For each LLMDeployment with `autoscaling.enabled` and a
servable spec it takes the model's pods from the watch-fed pod index (ready
ones are measured and count as capacity; loading ones are neither; while a
canary runs, its pods too: the load is the model's, and the stable's count
sizes the canary), reads their metrics (straight from each pod's
`/metrics`, or from Prometheus when the operator config names one), asks
the pure policy (`autoscaler.decide`) and applies the pure plan
(`autoscaler.plan`). It writes only the LLMDeployment, never a child:

- `spec.replicas` through the LLMDeployment's scale subresource (field
  manager `modelplane-autoscaler`), only when the decision changes it; the
  reconciler, the one writer of the Deployment, follows (`replicas`);
- a Normal Event ScaledUp/ScaledDown whose message is the decision's reason,
  and `modelplane_operator_scaling_decisions_total{direction}` (both
  directions' counters start at 0 when the autoscaler first sees the resource);
- its own status fields (`scaleReason`, `lastScaleTime`) and the
  `ScalingLimited` condition;
- the policy's state in the `modelplane.io/autoscaler-state` annotation, when
  its durable part changed (see `autoscaler.persistence`).

The count the policy starts from is `spec.replicas` within the bounds, or
the autoscaler's own last write until the watch shows it. A count someone
else wrote while the autoscaler measured wins: it decides again next tick.

The gateway's demand Lease (one per LLMDeployment, watched by label, in
`view.demand`) says when it last held a request and how many it held then:
the time is passed to the policy while the count is zero and when it is
newer than the last scale; the count while that wake-up is under way, to
size the start (the rules: `autoscaler.demand`; the Lease's format:
`modelplane.api.demand`). Those writes are also decided at once, not on
the next tick, while no replica of the model is ready (see
`answers_demand_now`): every second there is a second of requests that
wait a model load and more. One lock per LLMDeployment keeps the tick and such a
decision from running side by side.

Status writes happen under the reconciler's per-resource lock and are
recorded in its expectations (the conditions list has two writers' entries),
so a reconcile running between a write and its watch event does not drop
the condition. Measuring (network I/O, up to the scrape timeout) happens
outside the lock. With autoscaling switched off the autoscaler removes what
it wrote, once, and `spec.replicas` is the user's (or an HPA's) again. A
failing scrape of one pod is an observation like any other; a failing API
call is logged and retried on the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import httpx

from modelplane.api import contract
from modelplane.api.demand import DemandSignal, queued_count
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    Collection,
    Decision,
    MetricsSnapshot,
    PolicyState,
    ScrapeTarget,
    collect,
    decide,
)
from modelplane.operator.autoscaler.collector import DEFAULT_TIMEOUT_S
from modelplane.operator.autoscaler.demand import (
    answers_demand_now,
    held_demand,
    held_requests,
    with_gateway_queue,
)
from modelplane.operator.autoscaler.persistence import needs_storing, resume
from modelplane.operator.autoscaler.plan import plan_autoscaling_off, plan_scaling
from modelplane.operator.autoscaler.prometheus import collect_from_prometheus
from modelplane.operator.config import OperatorConfig
from modelplane.operator.kube.client import KubeError
from modelplane.operator.kube.resources import LLMDEPLOYMENTS
from modelplane.operator.reconcile.expectations import OwnerKey
from modelplane.operator.reconcile.parsing import parse_spec
from modelplane.operator.reconcile.pods import ObservedPod
from modelplane.operator.reconcile.reconciler import ClusterView, Reconciler
from modelplane.operator.reconcile.replicas import deployment_replicas
from modelplane.operator.timestamps import epoch_of, rfc3339

log = logging.getLogger(__name__)

STATE: Final = contract.ANNOTATION_AUTOSCALER_STATE
# Who owns spec.replicas in managedFields while autoscaling is on (GitOps tools are told).
FIELD_MANAGER: Final = "modelplane-autoscaler"
WRITE_TTL_S: Final = 30.0  # how long an unconfirmed write of spec.replicas is trusted
CONCURRENCY: Final = 16  # LLMDeployments measured at once


class MetricsSource(Protocol):
    """Where replica metrics come from: the pods themselves, or Prometheus."""

    async def collect(
        self,
        namespace: str,
        targets: Sequence[ScrapeTarget],
        previous: Mapping[str, MetricsSnapshot],
        window_s: float | None = None,
    ) -> Collection:
        """Observations over the window since `previous` (pods) or the last `window_s`
        seconds (Prometheus, which keeps the history itself)."""
        ...

    async def close(self) -> None: ...


class PodScraper:
    """GET each ready pod's /metrics (one client, kept open across ticks)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def collect(
        self,
        namespace: str,
        targets: Sequence[ScrapeTarget],
        previous: Mapping[str, MetricsSnapshot],
        window_s: float | None = None,
    ) -> Collection:
        return await collect(targets, previous, client=self._client, timeout_s=self._timeout_s)

    async def close(self) -> None:
        await self._client.aclose()


class PrometheusSource:
    """One range query to Prometheus per LLMDeployment (see autoscaler.prometheus)."""

    def __init__(self, url: str, window_s: float, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._url = url
        self._window_s = window_s
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def collect(
        self,
        namespace: str,
        targets: Sequence[ScrapeTarget],
        previous: Mapping[str, MetricsSnapshot],
        window_s: float | None = None,
    ) -> Collection:
        return await collect_from_prometheus(
            self._url,
            namespace,
            targets,
            window_s=window_s or self._window_s,
            client=self._client,
            timeout_s=self._timeout_s,
        )

    async def close(self) -> None:
        await self._client.aclose()


class AutoscalerView(ClusterView, Protocol):
    """The indexes, and the gateway's demand Leases the operator watches."""

    def demand(self, key: OwnerKey) -> DemandSignal | None: ...


View = TypeVar("View", bound=ClusterView)


async def for_each_llmdeployment(
    view: View,
    action: Callable[[OwnerKey, View], Awaitable[None]],
    what: str,
) -> None:
    """`action` on every LLMDeployment, CONCURRENCY at a time; one failing stops no other
    (the next tick tries again)."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(key: OwnerKey) -> None:
        async with slots:
            try:
                await action(key, view)
            except (KubeError, OSError) as err:
                log.warning("%s %s/%s failed (next tick retries): %s", what, *key, err)
            except Exception:
                log.exception("%s %s/%s failed (next tick retries)", what, *key)

    await asyncio.gather(*(one(key) for key in view.llmdeployment_keys()))


def metrics_source(config: OperatorConfig) -> MetricsSource:
    if config.prometheus_url:
        return PrometheusSource(config.prometheus_url, config.prometheus_window_seconds)
    return PodScraper()


def scrape_targets(pods: Sequence[ObservedPod], track: str | None = None) -> list[ScrapeTarget]:
    """The pods (of one track, or all) that exist for good: serving ones to measure, the
    others loading."""
    return [
        ScrapeTarget(p.name, p.metrics_url or "", ready=p.serving)
        for p in pods
        if (track is None or p.track == track) and not p.terminating
    ]


@dataclass
class _Memory:
    """What the autoscaler keeps about one LLMDeployment between ticks."""

    state: PolicyState
    stored: PolicyState | None  # what the annotation holds (None: nothing yet)
    snapshots: dict[str, MetricsSnapshot] = field(default_factory=dict)
    driver: str | None = None  # of the last decision (None: none since the operator started)
    written: tuple[int, float] | None = None  # spec.replicas written, until when (monotonic)

    def replicas(self, spec: LLMDeploymentSpec, now: float) -> int:
        """The count to decide from: the spec's within its bounds, or this autoscaler's
        own write until the watch-fed index shows it (or it is too old to trust)."""
        seen = deployment_replicas(spec)
        if self.written is not None:
            count, until = self.written
            if seen != count and now < until:
                return count
            self.written = None
        return seen


class Autoscaler:
    def __init__(
        self,
        reconciler: Reconciler,
        source: MetricsSource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler = reconciler
        self._source = source
        self._clock = clock
        self._memory: dict[OwnerKey, _Memory] = {}
        self._state_removed: set[OwnerKey] = set()
        self._deciding: dict[OwnerKey, asyncio.Lock] = {}
        self._answered_demand: dict[OwnerKey, str] = {}

    async def tick(self, view: AutoscalerView) -> None:
        """Decide for every LLMDeployment once."""
        await for_each_llmdeployment(view, self.autoscale, "autoscaling")

    async def on_demand(self, key: OwnerKey, view: AutoscalerView) -> None:
        """The gateway wrote the model's demand Lease: decide now if it is new demand (see
        `answers_demand_now`), else leave it to the next tick."""
        if view.llmdeployment(key) is None:
            return
        signal = view.demand(key)
        if not answers_demand_now(signal, self._answered_demand.get(key), view.pods(key)):
            return
        assert signal is not None and signal.requested_at is not None
        self._answered_demand[key] = signal.requested_at
        try:
            await self.autoscale(key, view)
        except (KubeError, OSError) as err:
            log.warning("autoscaling %s/%s on demand failed (next tick retries): %s", *key, err)

    def forget(self, key: OwnerKey) -> None:
        self._memory.pop(key, None)
        self._state_removed.discard(key)
        self._answered_demand.pop(key, None)
        lock = self._deciding.get(key)
        if lock is not None and not lock.locked():
            del self._deciding[key]

    def forget_all(self) -> None:
        """Start again from what the resources say (after another replica was active)."""
        self._memory.clear()
        self._state_removed.clear()
        self._answered_demand.clear()

    async def autoscale(self, key: OwnerKey, view: AutoscalerView) -> None:
        """Measure, decide and write for one LLMDeployment; one at a time per resource."""
        async with self._deciding.setdefault(key, asyncio.Lock()):
            await self._autoscale(key, view)

    async def _autoscale(self, key: OwnerKey, view: AutoscalerView) -> None:
        body = view.llmdeployment(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.forget(key)
            return
        namespace, name = key
        parsed = parse_spec(name, body.get("spec"), self._reconciler.config)
        if parsed.spec is None or not parsed.servable:
            return  # the reconciler reports the spec's problems; nothing runs to scale
        spec = parsed.spec
        annotations: Mapping[str, str] = body["metadata"].get("annotations") or {}
        if not spec.autoscaling.enabled:
            self._memory.pop(key, None)
            await self._switch_off(key, body, annotations)
            return
        self._state_removed.discard(key)
        if ("Deployment", name) not in self._reconciler.observed_children(key, view):
            return  # the reconciler creates it first: nothing runs to measure yet
        memory = self._memory.get(key)
        if memory is None:
            memory = self._memory[key] = self._recall(annotations)
            self._reconciler.metrics.count_scaling_of(namespace, name)
        # Every track: while a canary takes a share of the traffic, the model's load is the
        # load of both, and the canary's replicas follow the stable's count.
        targets = scrape_targets(view.pods(key))
        collection = await self._source.collect(namespace, targets, memory.snapshots)
        memory.snapshots = dict(collection.snapshots)
        now = self._clock()
        autoscaling = spec.autoscaling
        current = memory.replicas(spec, time.monotonic())
        scaled_at = (self._reconciler.observed_status(key, body) or {}).get("lastScaleTime")
        signal = view.demand(key)
        demand_at = held_demand(signal, current, epoch_of(scaled_at), now)
        held = held_requests(signal, demand_at is not None, memory.state.woke_at)
        queued = queued_count(signal.queued, now) if signal is not None else 0
        decision = decide(
            with_gateway_queue(collection.observations, queued),
            current,
            autoscaling,
            memory.state,
            now,
            demand_at=demand_at,
            held_requests=held[0] if held else None,
            held_at=held[1] if held else None,
        )
        memory.state = decision.state
        async with self._reconciler.lock(key):
            await self._apply(key, view, body, current, decision, autoscaling, memory, now)

    def _recall(self, annotations: Mapping[str, str]) -> _Memory:
        """After a start: the state the annotation holds, continued to now."""
        text = annotations.get(STATE)
        if text is None:
            return _Memory(PolicyState(), None)
        stored = PolicyState.from_json(text)
        return _Memory(resume(stored, self._clock()), stored)

    async def _apply(
        self,
        key: OwnerKey,
        view: ClusterView,
        decided_body: Mapping[str, Any],
        decided_on: int,
        decision: Decision,
        bounds: AutoscalingSpec,
        memory: _Memory,
        now: float,
    ) -> None:
        namespace, name = key
        body = view.llmdeployment(key)
        if body is None:
            return
        if body is not decided_body:  # the index holds a new object per change
            parsed = parse_spec(name, body.get("spec"), self._reconciler.config)
            if parsed.spec is None or memory.replicas(parsed.spec, time.monotonic()) != decided_on:
                return  # scaled by someone else while measuring: decide again next tick
        api, expect = self._reconciler.api, self._reconciler.expectations
        generation = body["metadata"].get("generation")
        plan = plan_scaling(
            decision,
            current_replicas=decided_on,
            status=self._reconciler.observed_status(key, body),
            bounds=bounds,
            generation=int(generation) if generation is not None else None,
            now=rfc3339(now),
            # Unknown after a start: the status says what it said, until the next change.
            driver_changed=memory.driver is not None and memory.driver != decision.driver,
        )
        memory.driver = decision.driver
        if plan.replicas is not None and plan.direction is not None:
            await asyncio.to_thread(
                api.scale, LLMDEPLOYMENTS, namespace, name, plan.replicas,
                field_manager=FIELD_MANAGER,
            )  # fmt: skip
            memory.written = (plan.replicas, time.monotonic() + WRITE_TTL_S)
            self._reconciler.metrics.scaling_decisions.labels(namespace, name, plan.direction).inc()
            log.info("%s/%s: %s", namespace, name, decision.reason)
        if plan.status:
            await asyncio.to_thread(api.patch_status, namespace, name, plan.status)
            expect.expect_status(key, plan.status)
        if needs_storing(decision.state, memory.stored):
            await asyncio.to_thread(
                api.patch_annotations, LLMDEPLOYMENTS, namespace, name,
                {STATE: decision.state.to_json()},
            )  # fmt: skip
            memory.stored = decision.state
        if plan.event is not None:  # last: whoever sees it finds status and state written
            try:
                await asyncio.to_thread(api.post_event, body, "Normal", *plan.event)
            except KubeError as err:  # the scale happened; status says why
                log.warning("%s/%s: no %s event: %s", namespace, name, plan.event[0], err)

    async def _switch_off(
        self, key: OwnerKey, body: Mapping[str, Any], annotations: Mapping[str, str]
    ) -> None:
        """Autoscaling is off: remove the autoscaler's status fields and state, once."""
        namespace, name = key
        if STATE not in annotations:
            self._state_removed.discard(key)
        remove_state = STATE in annotations and key not in self._state_removed
        async with self._reconciler.lock(key):
            patch = plan_autoscaling_off(self._reconciler.observed_status(key, body))
            if patch:
                await asyncio.to_thread(self._reconciler.api.patch_status, namespace, name, patch)
                self._reconciler.expectations.expect_status(key, patch)
            if remove_state:
                await asyncio.to_thread(
                    self._reconciler.api.patch_annotations, LLMDEPLOYMENTS, namespace, name,
                    {STATE: None},
                )  # fmt: skip
                self._state_removed.add(key)
