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
    SourceScheme,
    served_model_name,
)
from modelplane.operator.builders import BuildOptions, CanaryTrack, build_children, with_spec_hash
from modelplane.operator.builders.deployment import template_hash_of
from modelplane.operator.builders.model_cache import build_cache_claim
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
from modelplane.operator.kube.resources import CHILD_TYPES, DEPLOYMENTS, PERSISTENT_VOLUME_CLAIMS
from modelplane.operator.metrics import (
    RESULT_ERROR,
    RESULT_INVALID,
    RESULT_OK,
    OperatorMetrics,
    sample_of,
)
from modelplane.operator.reconcile.children_plan import (
    ChildKey,
    ChildrenPlan,
    child_key,
    plan_children,
)
from modelplane.operator.reconcile.claims import source_claim_problems
from modelplane.operator.reconcile.download import (
    DownloadState,
    download_state,
    held_while_downloading,
)
from modelplane.operator.reconcile.drift import drifted_fields, owned_digest
from modelplane.operator.reconcile.expectations import Expectations, OwnerKey
from modelplane.operator.reconcile.observed import ObservedChild, ObservedDeployment, observe_child
from modelplane.operator.reconcile.ownership import NOT_OWNED, not_owned_message, owner_uids
from modelplane.operator.reconcile.parsing import INVALID_SPEC, parse_spec
from modelplane.operator.reconcile.pods import ObservedPod
from modelplane.operator.reconcile.replicas import deployment_replicas
from modelplane.operator.reconcile.rollout import RolloutPlan, RolloutState, plan_rollout
from modelplane.operator.reconcile.rollout_limit import (
    GO,
    RolloutGate,
    TemplateChange,
    gate_rollout,
    model_spec_hash,
    rolling_out,
    template_change,
)
from modelplane.operator.reconcile.startups import ReplicaStartups, latest_startup
from modelplane.operator.reconcile.status import Observation, compute_status, status_patch
from modelplane.operator.status_model import parse_status
from modelplane.operator.timestamps import rfc3339

log = logging.getLogger(__name__)

MAX_RETRY_DELAY: Final = 60.0
MANUAL_CHANGE_REVERTED: Final = "ManualChangeReverted"


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
    download: DownloadState | None = None  # a cache profile's download Job
    queued: RolloutGate = GO  # an operator change waiting for a rollout slot
    not_ours: tuple[str, ...] = ()  # children's names taken by objects this one does not own


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
        self._startups = ReplicaStartups()
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
        self._claims_made: set[tuple[str, str]] = set()  # cache claims known to exist
        self._claims_fine: dict[OwnerKey, tuple[Any, str]] = {}  # (generation, source) checked
        # Operator-caused rollouts being written now, before the index shows them rolling.
        self._rollouts_starting: set[OwnerKey] = set()
        # Per child, what the API server made of the operator's last write of it when that
        # differed from the manifest (a mutating webhook): not a manual edit to revert.
        self._tolerated: dict[OwnerKey, dict[ChildKey, str]] = {}
        # Models waiting for a rollout slot, and models seen rolling out: when one of the
        # latter finishes (or goes), the waiting ones are reconciled at once.
        self._queued: set[OwnerKey] = set()
        self._rolling: set[OwnerKey] = set()
        self._last_view: ClusterView | None = None

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
        self._claims_fine.pop(key, None)
        self._tolerated.pop(key, None)
        self._queued.discard(key)
        self._startups.forget(key)
        if key in self._rolling:
            self._rolling.discard(key)
            self._wake_queued()
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
        for task in self._tasks:  # retries and wake-ups already running
            task.cancel()

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
        self._last_view = view
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
        if spec is not None and not problems:
            problems = tuple(await self._source_claim_problems(key, generation, spec))
            if problems:
                reason = "DoesNotFit"

        seen = observed.get(("Deployment", name))
        deployment = seen.deployment if seen else None
        rollout: RolloutPlan | None = None
        canary = NO_CANARY
        queued = GO
        download: DownloadState | None = None
        if spec is not None and not problems:
            try:
                converged = await self._converge_children(key, body, spec, observed, previous, view)
            finally:
                self._rollouts_starting.discard(key)  # written (or failed): the index tells
            deployment = converged.written_deployment or deployment
            canary = converged.canary
            download = converged.download
            if converged.not_ours:
                problems, reason = converged.not_ours, NOT_OWNED
            queued = converged.queued
            self._track_rollout_slots(key, view, queued)
            target_hash = template_hash_of(converged.desired_deployment) or ""
            if queued.hold and deployment is not None:
                target_hash = deployment.template_hash or ""  # what it keeps running
            rollout = plan_rollout(
                target_revision=spec.model.revision,
                target_template_hash=target_hash,
                deployment=deployment,
                served_revision=previous.served_revision,
            )
        served = served_model_name(name, spec) if spec is not None else name
        pods = view.pods(key)
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
            download=download,
            queued=queued.message if queued.hold else None,
            replica_startup_seconds=latest_startup(pods),
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
        sample = sample_of(
            namespace,
            name,
            served,
            phase,
            spec,
            desired=deployment.spec_replicas if deployment else None,
            ready=deployment.ready_replicas if deployment else None,
            updated=deployment.updated_replicas if deployment else None,
        )
        self.metrics.record(sample)
        for seconds in self._startups.newly_ready(key, pods):
            self.metrics.observe_startup(sample, seconds)
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
        view: ClusterView,
    ) -> Converged:
        """Apply/delete what differs."""
        namespace, name = key
        seen = observed.get(("Deployment", name))
        replicas = deployment_replicas(spec)
        stable = seen.deployment if seen else None
        spec_hash = model_spec_hash(
            body.get("spec") or {},
            lora_by_adapters=bool(spec.adapters) and not spec.engine.serves_lora,
        )
        # An operator change may have to wait for a rollout slot: not while a canary runs
        # or an aborted one is on record (its own rules keep the stable track then).
        may_wait = (
            stable is not None
            and previous.canary is None
            and ("Deployment", f"{name}-{contract.TRACK_CANARY}") not in observed
        )
        gate = GO
        if may_wait and spec.rollout.strategy is RolloutStrategy.CANARY:
            # Decided before the canary planner, which would otherwise start a canary.
            probe = self._stable_template_hash(name, namespace, spec, replicas)
            gate = self._rollout_gate(key, stable, probe, spec_hash, view)
        canary = (
            NO_CANARY if gate.hold else self._plan_canary(key, spec, observed, previous, replicas)
        )
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
            if manifest["kind"] == "Deployment":
                annotations = manifest["metadata"].setdefault("annotations", {})
                annotations[contract.ANNOTATION_MODEL_SPEC_HASH] = spec_hash
                with_spec_hash(manifest)
            if child_key(manifest) == ("Deployment", name):
                desired_deployment = manifest
        if may_wait and spec.rollout.strategy is not RolloutStrategy.CANARY:
            target = template_hash_of(desired_deployment) or ""
            gate = self._rollout_gate(key, stable, target, spec_hash, view)
        # While a canary runs, the stable track keeps the template (and settings) it runs.
        held: set[ChildKey] = set()
        if canary.pin_stable:
            held |= {("Deployment", name), ("ConfigMap", config_map_name(name))}
        if gate.hold:
            # Waiting for a slot: the replicas keep their template and the settings it reads.
            held |= {k for k in (("Deployment", name), ("ConfigMap", config_map_name(name)))
                     if k in observed}  # fmt: skip
        download = download_state(desired, observed)
        if download is not None:
            await self._ensure_cache_claim(namespace, spec)
            if download.waiting:
                held |= held_while_downloading(name)
        plan = plan_children(desired, observed, keep=held, tolerated=self._tolerated.get(key))
        uid = str(body["metadata"].get("uid", ""))
        not_ours = await self._not_ours(namespace, uid, plan.apply, observed)
        if not_ours:
            # Nothing is written: applying would take the other object over.
            return Converged(desired_deployment, None, canary, download, gate, tuple(not_ours))
        plan = replace(plan, delete=self._owned_deletes(key, uid, plan.delete, observed))
        await self._report_reverted(body, plan)
        written = await self._apply_all(key, plan)
        for ckey, count in plan.rescale.items():
            await asyncio.to_thread(self.api.scale, DEPLOYMENTS, namespace, ckey[1], count)
            kept = observed[ckey]
            if kept.deployment is not None:
                rescaled = replace(kept.deployment, spec_replicas=count)
                self._expect.expect_child(key, ckey, replace(kept, deployment=rescaled))
                if ckey == ("Deployment", name):
                    written = rescaled
        for kind, child_name in plan.delete:
            uid_of = observed[(kind, child_name)].uid
            await asyncio.to_thread(
                self.api.delete, CHILD_TYPES[kind], namespace, child_name, uid=uid_of
            )
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
        return Converged(desired_deployment, written, canary, download, gate)

    async def _not_ours(
        self,
        namespace: str,
        uid: str,
        manifests: list[dict[str, Any]],
        observed: Mapping[ChildKey, ObservedChild],
    ) -> list[str]:
        """Children to write whose names an object not owned by this LLMDeployment holds.

        A forced server-side apply would take such an object over (an admin's
        NetworkPolicy, another model's canary track), so it is refused instead. The
        indexes hold only labelled objects: one the operator does not see yet is read."""
        problems: list[str] = []
        for manifest in manifests:
            kind, child_name = child_key(manifest)
            seen = observed.get((kind, child_name))
            if seen is not None:
                owners = seen.owner_uids
            else:
                found = await asyncio.to_thread(
                    self.api.get, CHILD_TYPES[kind], namespace, child_name
                )
                if found is None:
                    continue
                owners = owner_uids(found)
            if uid not in owners:
                problems.append(not_owned_message(kind, child_name, namespace))
        return problems

    def _owned_deletes(
        self,
        key: OwnerKey,
        uid: str,
        deletes: list[ChildKey],
        observed: Mapping[ChildKey, ObservedChild],
    ) -> list[ChildKey]:
        """Only objects whose owner reference carries this LLMDeployment's UID are deleted;
        labels alone (which anyone can copy) are not enough."""
        kept = [ckey for ckey in deletes if uid in observed[ckey].owner_uids]
        for ckey in deletes:
            if ckey not in kept:
                log.warning(
                    "%s/%s: leaving %s %s alone: it carries the model's labels but is not "
                    "owned by it",
                    *key,
                    *ckey,
                )
        return kept

    async def _apply_all(self, key: OwnerKey, plan: ChildrenPlan) -> ObservedDeployment | None:
        """Apply the plan's manifests; returns the stable Deployment as written, if it was."""
        written: ObservedDeployment | None = None
        tolerated = self._tolerated.setdefault(key, {})
        for manifest in plan.apply:
            rtype = CHILD_TYPES[manifest["kind"]]
            response = await asyncio.to_thread(self.api.apply, rtype, manifest)
            ckey = child_key(manifest)
            child = observe_child(rtype.kind, response)
            self._expect.expect_child(key, ckey, child)
            if ckey == ("Deployment", key[1]):
                written = child.deployment
            # What the API server changed in this very write is its own (a webhook's): the
            # next reconcile must not take it for a manual edit.
            if child.content is not None and drifted_fields(manifest, child.content):
                tolerated[ckey] = owned_digest(manifest, child.content)
            else:
                tolerated.pop(ckey, None)
        if not tolerated:
            self._tolerated.pop(key, None)
        return written

    async def _report_reverted(self, body: Mapping[str, Any], plan: ChildrenPlan) -> None:
        """Say which fields someone changed by hand: they are about to be set back."""
        for (kind, child_name), fields in plan.reverted.items():
            message = (
                f"{kind} {child_name}: {', '.join(fields[:5])} changed outside the operator; "
                "setting them back (change the LLMDeployment instead)"
            )
            log.warning("%s/%s: %s", *owner_key(body), message)
            await self._post_event(body, "Warning", MANUAL_CHANGE_REVERTED, message)

    def _stable_template_hash(
        self, name: str, namespace: str, spec: LLMDeploymentSpec, replicas: int
    ) -> str:
        probe = build_children(name, namespace, spec, self.config, BuildOptions(replicas=replicas))
        stable = next(m for m in probe if child_key(m) == ("Deployment", name))
        return template_hash_of(stable) or ""

    def _rollout_gate(
        self,
        key: OwnerKey,
        stable: ObservedDeployment | None,
        target_hash: str,
        spec_hash: str,
        view: ClusterView,
    ) -> RolloutGate:
        """May this model take a new template now? Only an operator change may wait; one
        that may go holds a slot (`_rollouts_starting`) until its write is done, so that
        reconciles of other models running meanwhile count it."""
        change = template_change(stable, target_template_hash=target_hash, spec_hash=spec_hash)
        if change is not TemplateChange.OPERATOR:
            return GO
        if rolling_out(stable):
            return GO  # already rolling: it has its spare replica
        elsewhere = sum(
            1
            for other in view.llmdeployment_keys()
            if other != key
            and (other in self._rollouts_starting or self._model_rolling_out(other, view))
        )
        gate = gate_rollout(
            change,
            rolling_here=False,
            rolling_elsewhere=elsewhere,
            limit=self.config.max_concurrent_operator_rollouts,
        )
        if not gate.hold:
            self._rollouts_starting.add(key)  # no await since the count: it stays true
        return gate

    def _track_rollout_slots(self, key: OwnerKey, view: ClusterView, gate: RolloutGate) -> None:
        """Note whether this model waits or rolls; a rollout that ended frees a slot."""
        if gate.hold:
            self._queued.add(key)
        else:
            self._queued.discard(key)
        if self._model_rolling_out(key, view):
            self._rolling.add(key)
        elif key in self._rolling:
            self._rolling.discard(key)
            self._wake_queued()

    def _wake_queued(self) -> None:
        """Reconcile the models waiting for a slot now, not at the next resync."""
        view = self._last_view
        if view is None or not self._queued:
            return
        loop = asyncio.get_running_loop()
        for waiting in sorted(self._queued):
            task = loop.create_task(self.reconcile(waiting, view))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _model_rolling_out(self, key: OwnerKey, view: ClusterView) -> bool:
        children = self.observed_children(key, view)
        if ("Deployment", f"{key[1]}-{contract.TRACK_CANARY}") in children:
            return True  # a canary runs: it holds a spare replica
        stable = children.get(("Deployment", key[1]))
        return stable is not None and rolling_out(stable.deployment)

    async def _ensure_cache_claim(self, namespace: str, spec: LLMDeploymentSpec) -> None:
        """Create the cache profile's claim in `namespace` once; an existing one is used as is."""
        name = spec.model.cache_profile
        profile = self.config.cache_profiles.get(name) if name else None
        if name is None or profile is None:
            return
        claim = build_cache_claim(name, profile, namespace)
        if claim is None or (namespace, claim["metadata"]["name"]) in self._claims_made:
            return
        created = await asyncio.to_thread(
            self.api.create_if_absent, PERSISTENT_VOLUME_CLAIMS, claim
        )
        if created:
            log.info("%s: created model cache claim %s", namespace, claim["metadata"]["name"])
        self._claims_made.add((namespace, claim["metadata"]["name"]))

    async def _source_claim_problems(
        self, key: OwnerKey, generation: Any, spec: LLMDeploymentSpec
    ) -> list[str]:
        """A pvc:// source's claim must exist and, with more than one replica, be mountable
        on several nodes. Read once per spec generation while it is fine."""
        if spec.model.scheme is not SourceScheme.PVC:
            self._claims_fine.pop(key, None)
            return []
        if self._claims_fine.get(key) == (generation, spec.model.source):
            return []
        claim_name = spec.model.location.partition("/")[0]
        claim = await asyncio.to_thread(self.api.get, PERSISTENT_VOLUME_CLAIMS, key[0], claim_name)
        problems = source_claim_problems(spec, claim_name, claim)
        if not problems:
            self._claims_fine[key] = (generation, spec.model.source)
        return problems
