"""Reconcile one LLMDeployment: parse, check, build, plan, apply, observe, report.

Level-triggered: every call compares the whole desired state with what the
indexes show (plus the writes they have not shown yet) and writes only the
difference, so any trigger (the resource, one of its children, a periodic
resync, a retry) runs the same code, and a resync with nothing changed makes
no API call at all. One reconcile per resource at a time; a failed API call
is retried with backoff. A spec the operator cannot serve ends as phase
Failed with a condition saying what to change, and the children it already
runs are left alone until the spec is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from modelplane.api import contract
from modelplane.api.llmdeployment import (
    LLMDeploymentSpec,
    LLMDeploymentStatus,
    Phase,
    RolloutStrategy,
    served_model_name,
)
from modelplane.operator.builders import BuildOptions, CanaryTrack, build_children
from modelplane.operator.builders.deployment import template_hash_of
from modelplane.operator.builders.naming import config_map_name
from modelplane.operator.canary.plan import (
    NO_CANARY,
    CanaryObserved,
    CanaryPlan,
    plan_canary,
)
from modelplane.operator.canary.store import CanaryMeasurements, canary_step
from modelplane.operator.config import OperatorConfig
from modelplane.operator.kube.client import KubeApi, KubeError
from modelplane.operator.kube.resources import CHILD_TYPES, DEPLOYMENTS
from modelplane.operator.metrics import (
    RESULT_ERROR,
    RESULT_INVALID,
    RESULT_OK,
    OperatorMetrics,
    sample_of,
)
from modelplane.operator.reconcile.children_plan import ChildKey, child_key, plan_children
from modelplane.operator.reconcile.expectations import Expectations, OwnerKey
from modelplane.operator.reconcile.observed import ObservedChild, ObservedDeployment, observe_child
from modelplane.operator.reconcile.parsing import INVALID_SPEC, parse_spec
from modelplane.operator.reconcile.pods import ObservedPod
from modelplane.operator.reconcile.replicas import deployment_replicas
from modelplane.operator.reconcile.rollout import RolloutPlan, RolloutState, plan_rollout
from modelplane.operator.reconcile.status import Observation, compute_status, status_patch
from modelplane.operator.status_model import parse_status
from modelplane.operator.timestamps import rfc3339

log = logging.getLogger(__name__)

MAX_RETRY_DELAY: Final = 60.0


class ClusterView(Protocol):
    """What the watch-fed indexes show."""

    def llmdeployment(self, key: OwnerKey) -> Mapping[str, Any] | None: ...

    def children(self, key: OwnerKey) -> dict[ChildKey, ObservedChild]: ...

    def llmdeployment_keys(self) -> list[OwnerKey]: ...

    def pods(self, key: OwnerKey) -> list[ObservedPod]: ...


@dataclass(frozen=True)
class Converged:
    desired_deployment: dict[str, Any]  # the stable track's
    written_deployment: ObservedDeployment | None  # the stable's, as the API returned it
    canary: CanaryPlan = NO_CANARY


def utc_now() -> str:
    return rfc3339(time.time())


def owner_key(body: Mapping[str, Any]) -> OwnerKey:
    meta = body.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        metrics: OperatorMetrics,
        *,
        service_monitor_api: bool = False,
        canary_measurements: CanaryMeasurements | None = None,
        expectations: Expectations | None = None,
        now: Callable[[], str] = utc_now,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.config = config
        self.metrics = metrics
        self.service_monitor_api = service_monitor_api
        self._expect = expectations or Expectations()
        self._now = now
        self._clock = clock
        # Read only: the canary analysis records its measurements there.
        self._measurements = canary_measurements or CanaryMeasurements()
        self._locks: dict[OwnerKey, asyncio.Lock] = {}
        self._retries: dict[OwnerKey, asyncio.TimerHandle] = {}
        self._backoff: dict[OwnerKey, float] = {}
        self._tasks: set[asyncio.Task[str]] = set()

    def lock(self, key: OwnerKey) -> asyncio.Lock:
        """One status writer per LLMDeployment at a time: reconciles and the autoscaler's
        status writes share it."""
        return self._locks.setdefault(key, asyncio.Lock())

    @property
    def expectations(self) -> Expectations:
        """Writes not yet seen in the indexes (the autoscaler's status patches join them)."""
        return self._expect

    def observed_children(self, key: OwnerKey, view: ClusterView) -> dict[ChildKey, ObservedChild]:
        """The children as the indexes show them, with this operator's unseen writes."""
        return self._expect.children(key, view.children(key))

    def observed_status(self, key: OwnerKey, body: Mapping[str, Any]) -> dict[str, Any]:
        """The status as the index shows it, with this operator's unseen status patches."""
        return self._expect.status(key, body.get("status") or {})

    async def reconcile(self, key: OwnerKey, view: ClusterView) -> str:
        """Bring one LLMDeployment's children and status in line; returns the metrics result."""
        async with self.lock(key):
            started = time.perf_counter()
            try:
                result = await self._reconcile(key, view)
            except (KubeError, OSError) as err:
                result = RESULT_ERROR
                delay = self._schedule_retry(key, view)
                log.warning("reconcile of %s/%s failed (retry in %.0fs): %s", *key, delay, err)
            except Exception:
                # A bug must not stop this resource for good, nor the operator: log, retry.
                result = RESULT_ERROR
                delay = self._schedule_retry(key, view)
                log.exception("reconcile of %s/%s failed (retry in %.0fs)", *key, delay)
            else:
                self._backoff.pop(key, None)
            finally:
                self.metrics.reconcile_duration.observe(time.perf_counter() - started)
            if result:
                self.metrics.reconcile_total.labels(result).inc()
            return result

    async def resync(self, view: ClusterView) -> None:
        """Reconcile every known LLMDeployment (a periodic safety net; no writes when in sync)."""
        for key in view.llmdeployment_keys():
            await self.reconcile(key, view)

    def forget(self, key: OwnerKey) -> None:
        """The LLMDeployment is gone: drop what is kept about it."""
        self._expect.forget(key)
        self.metrics.forget(*key)
        self._backoff.pop(key, None)
        handle = self._retries.pop(key, None)
        if handle is not None:
            handle.cancel()
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    def close(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    def _schedule_retry(self, key: OwnerKey, view: ClusterView) -> float:
        delay = min(self._backoff.get(key, 0.5) * 2, MAX_RETRY_DELAY)
        self._backoff[key] = delay
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._retries.pop(key, None)
            task = loop.create_task(self.reconcile(key, view))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._retries[key] = loop.call_later(delay, fire)
        return delay

    async def _reconcile(self, key: OwnerKey, view: ClusterView) -> str:
        body = view.llmdeployment(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.forget(key)
            return ""
        namespace, name = key
        meta = body["metadata"]
        generation = meta.get("generation")
        current = self.observed_status(key, body)
        previous = parse_status(current)
        observed = self.observed_children(key, view)

        parsed = parse_spec(name, body.get("spec"), self.config)
        spec, problems, reason = parsed.spec, parsed.problems, parsed.reason or INVALID_SPEC

        seen = observed.get(("Deployment", name))
        deployment = seen.deployment if seen else None
        rollout: RolloutPlan | None = None
        canary = NO_CANARY
        if spec is not None and not problems:
            converged = await self._converge_children(key, body, spec, observed, previous)
            deployment = converged.written_deployment or deployment
            canary = converged.canary
            rollout = plan_rollout(
                target_revision=spec.model.revision,
                target_template_hash=template_hash_of(converged.desired_deployment) or "",
                deployment=deployment,
                served_revision=previous.served_revision,
            )
        served = served_model_name(name, spec) if spec is not None else name
        obs = Observation(
            name=name,
            namespace=namespace,
            generation=int(generation) if generation is not None else None,
            now=self._now(),
            served_name=served,
            problems=tuple(problems),
            problem_reason=reason,
            deployment=deployment,
            rollout=rollout,
            canary=canary if spec is not None and not problems else None,
            previous=previous,
        )
        wanted = compute_status(obs)
        patch = status_patch(current, wanted)
        if patch:
            await asyncio.to_thread(self.api.patch_status, namespace, name, patch)
            self._expect.expect_status(key, patch)
            if problems and previous.phase is not Phase.FAILED:
                # Posted by this client, not kopf.warn(): reconciles also run from the
                # operator's own loops, outside any kopf handler's context.
                await self._post_event(body, "Warning", reason, "; ".join(problems))
            if canary.event is not None and "canary" in patch:
                await self._post_event(body, *canary.event)
        phase = Phase(wanted["phase"])
        self.metrics.record(
            sample_of(
                namespace,
                name,
                served,
                phase,
                spec,
                desired=deployment.spec_replicas if deployment else None,
                ready=deployment.ready_replicas if deployment else None,
                updated=deployment.updated_replicas if deployment else None,
            )
        )
        return RESULT_INVALID if problems else RESULT_OK

    async def _post_event(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        try:
            await asyncio.to_thread(self.api.post_event, body, type_, reason, message)
        except KubeError as err:  # the status already says it
            log.warning("%s/%s: no %s event: %s", *owner_key(body), reason, err)

    def _plan_canary(
        self,
        key: OwnerKey,
        spec: LLMDeploymentSpec,
        observed: dict[ChildKey, ObservedChild],
        previous: LLMDeploymentStatus,
        replicas: int,
    ) -> CanaryPlan:
        """Where a canary stands, from the children, status.canary and the latest metrics."""
        namespace, name = key
        canary_key = ("Deployment", f"{name}-{contract.TRACK_CANARY}")
        if (
            spec.rollout.strategy is not RolloutStrategy.CANARY
            and previous.canary is None
            and canary_key not in observed
        ):
            return NO_CANARY
        probe = build_children(
            name, namespace, spec, self.config,
            BuildOptions(replicas=replicas, canary=CanaryTrack(replicas=1, weight=0)),
        )  # fmt: skip
        hashes = {
            m["metadata"]["name"]: template_hash_of(m) or ""
            for m in probe
            if m["kind"] == "Deployment"
        }
        stable_seen = observed.get(("Deployment", name))
        canary_seen = observed.get(canary_key)
        stable = stable_seen.deployment if stable_seen else None
        canary = canary_seen.deployment if canary_seen else None
        target = hashes[name]
        complete = plan_rollout(
            target_revision=spec.model.revision,
            target_template_hash=target,
            deployment=stable,
            served_revision=previous.served_revision,
        )
        metrics = self._measurements.for_step(key, canary_step(previous.canary))
        return plan_canary(
            CanaryObserved(
                target_revision=spec.model.revision,
                target_hash=target,
                stable=stable,
                stable_rollout_complete=complete.state is RolloutState.COMPLETE,
                served_revision=previous.served_revision,
                canary=canary,
                canary_on_target=canary is not None
                and canary.template_hash == hashes[canary_key[1]],
                previous=previous.canary,
            ),
            spec.rollout,
            metrics,
            self._clock(),
            min_requests=self.config.canary_min_requests,
        )

    async def _converge_children(
        self,
        key: OwnerKey,
        body: Mapping[str, Any],
        spec: LLMDeploymentSpec,
        observed: dict[ChildKey, ObservedChild],
        previous: LLMDeploymentStatus,
    ) -> Converged:
        """Apply/delete what differs."""
        namespace, name = key
        seen = observed.get(("Deployment", name))
        replicas = deployment_replicas(spec)
        canary = self._plan_canary(key, spec, observed, previous, replicas)
        stable = seen.deployment if seen else None
        desired = build_children(
            name,
            namespace,
            spec,
            self.config,
            BuildOptions(
                replicas=replicas,
                service_monitor_api=self.service_monitor_api,
                canary=CanaryTrack(canary.replicas, canary.weight) if canary.active else None,
                stable_revision=stable.revision if canary.pin_stable and stable else None,
            ),
        )
        owner = owner_reference(body)
        desired_deployment: dict[str, Any] = {}
        for manifest in desired:
            manifest["metadata"]["ownerReferences"] = [owner]
            if child_key(manifest) == ("Deployment", name):
                desired_deployment = manifest
        # While a canary runs, the stable track keeps the template (and settings) it runs.
        pinned = {("Deployment", name), ("ConfigMap", config_map_name(name))}
        plan = plan_children(desired, observed, keep=pinned if canary.pin_stable else ())
        written: ObservedDeployment | None = None
        for manifest in plan.apply:
            rtype = CHILD_TYPES[manifest["kind"]]
            response = await asyncio.to_thread(self.api.apply, rtype, manifest)
            ckey = child_key(manifest)
            child = observe_child(rtype.kind, response)
            self._expect.expect_child(key, ckey, child)
            if ckey == ("Deployment", name):
                written = child.deployment
        for ckey, count in plan.rescale.items():
            await asyncio.to_thread(self.api.scale, DEPLOYMENTS, namespace, ckey[1], count)
            kept = observed[ckey]
            if kept.deployment is not None:
                rescaled = replace(kept.deployment, spec_replicas=count)
                self._expect.expect_child(key, ckey, replace(kept, deployment=rescaled))
                if ckey == ("Deployment", name):
                    written = rescaled
        for kind, child_name in plan.delete:
            await asyncio.to_thread(self.api.delete, CHILD_TYPES[kind], namespace, child_name)
            self._expect.expect_child(key, (kind, child_name), None)
        if not plan.empty:
            log.info(
                "%s/%s: applied %s, rescaled %s, deleted %s",
                namespace,
                name,
                [child_key(m) for m in plan.apply],
                plan.rescale,
                plan.delete,
            )
        return Converged(desired_deployment, written, canary)
