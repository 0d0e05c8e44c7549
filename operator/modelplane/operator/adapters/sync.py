"""Bring each serving replica's LoRA adapters in line with `spec.adapters`.

One pass for one LLMDeployment: list what each serving replica holds
(`GET /adapters` on its admin port, found from the pod index like the
autoscaler's scrapes), plan per replica (`adapters.plan`), load, reload and
unload (replicas side by side, at most CONCURRENCY calls at once across the
operator; a load may take minutes, so it never runs under the reconciler's
lock or in a kopf handler), then write `status.adapters` and post the
Events. Passes are asked for by the kopf handlers (the LLMDeployment
changed; one of its pods changed, e.g. became ready) and by a periodic loop
(a failed load is tried again); a pass asked for while one runs for the same
model runs once more after it, never beside it.

The status write follows the operator's one-writer rule: under the
reconciler's per-resource lock, recorded in its expectations, like the
autoscaler's. The pass writes only `status.adapters`; a Warning Event for a
failure is posted once, not on every retry of it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any, Final

import httpx

from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.adapters.admin_client import (
    AdminTarget,
    HeldAdapter,
    list_adapters,
    load_adapter,
    unload_adapter,
)
from modelplane.operator.adapters.plan import (
    ADAPTER_FAILED,
    DesiredAdapter,
    ReplicaCalls,
    ReplicaOutcome,
    ReplicaPlan,
    adapter_events,
    adapter_status,
    desired_adapters,
    outcome_after,
    plan_replica,
)
from modelplane.operator.kube.client import KubeError
from modelplane.operator.kube.resources import SECRETS
from modelplane.operator.reconcile.expectations import OwnerKey
from modelplane.operator.reconcile.parsing import parse_spec
from modelplane.operator.reconcile.reconciler import ClusterView, Reconciler

log = logging.getLogger(__name__)

CONCURRENCY: Final = 8  # admin calls in flight at once, across every model


class AdapterSync:
    def __init__(self, reconciler: Reconciler, *, concurrency: int = CONCURRENCY) -> None:
        self._reconciler = reconciler
        self._http = httpx.AsyncClient()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[OwnerKey] = set()
        self._again: set[OwnerKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: dict[OwnerKey, set[str]] = {}  # failures already posted as Events

    def request(self, key: OwnerKey, view: ClusterView) -> None:
        """Run a pass for `key` soon; one already running is followed by one more."""
        if key in self._running:
            self._again.add(key)
            return
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, view))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def tick(self, view: ClusterView) -> None:
        """A pass for every LLMDeployment (the periodic retry)."""
        for key in view.llmdeployment_keys():
            self.request(key, view)

    def forget(self, key: OwnerKey) -> None:
        self._warned.pop(key, None)
        self._again.discard(key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _run(self, key: OwnerKey, view: ClusterView) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    await self.sync(key, view)
                except (KubeError, OSError) as err:
                    log.warning("adapters of %s/%s: %s (the next pass retries)", *key, err)
                except Exception:
                    log.exception("adapters of %s/%s failed (the next pass retries)", *key)
                if key not in self._again:
                    return
        finally:
            self._running.discard(key)

    async def sync(self, key: OwnerKey, view: ClusterView) -> None:
        """One pass: list, load and unload on every serving replica, report."""
        body = view.llmdeployment(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.forget(key)
            return
        namespace, name = key
        parsed = parse_spec(name, body.get("spec"), self._reconciler.config)
        if parsed.spec is None or not parsed.servable:
            return  # the reconciler reports the spec's problems
        spec = parsed.spec
        desired = desired_adapters(spec)
        serving = [p for p in view.pods(key) if p.serving]
        admin = [p for p in serving if p.admin_url is not None]
        reported = "adapters" in self._reconciler.observed_status(key, body)
        if not desired and not admin and not reported:
            return  # no adapters, none to unload, none reported
        try:
            api_key = await self._api_key(namespace, spec) if admin else None
        except KubeError as err:
            # Without the key no admin call can succeed: each replica says why.
            ref = spec.auth.api_key_secret_ref
            assert ref is not None
            problem = (
                f"cannot read Secret {ref.name} for the admin API's key ({err}); the operator "
                "needs get on it"
            )
            targets = [AdminTarget(p.name, str(p.admin_url)) for p in admin]
            listed: list[list[HeldAdapter] | str] = [problem for _ in targets]
        else:
            targets = [AdminTarget(p.name, str(p.admin_url), api_key) for p in admin]
            listed = list(await asyncio.gather(*(self._list(t) for t in targets)))
        plans = {
            t.pod: plan_replica(desired, held)
            for t, held in zip(targets, listed, strict=True)
            if not isinstance(held, str)
        }
        if any(plan.loads for plan in plans.values()):
            # Loads take a while: say they are under way before waiting for them.
            interim = [
                _interim_outcome(t.pod, desired, held, plans.get(t.pod))
                for t, held in zip(targets, listed, strict=True)
            ]
            await self._write_status(key, view, body, desired, interim, len(serving) - len(admin))
        calls = await asyncio.gather(
            *(self._execute(t, plans[t.pod]) for t in targets if t.pod in plans)
        )
        outcomes: list[ReplicaOutcome] = []
        done = {c.pod: c for c in calls}
        for target, held in zip(targets, listed, strict=True):
            if isinstance(held, str):
                outcomes.append(ReplicaOutcome(target.pod, unreachable=held))
                continue
            call = done[target.pod]
            outcomes.append(outcome_after(target.pod, desired, held, call.plan, call.load_errors))
        await self._write_status(key, view, body, desired, outcomes, len(serving) - len(admin))
        failures = [
            ("Warning", ADAPTER_FAILED, reason)
            for reason in dict.fromkeys(r for r in listed if isinstance(r, str))
        ]
        await self._post_events(key, body, adapter_events(calls) + failures)

    async def _api_key(self, namespace: str, spec: LLMDeploymentSpec) -> str | None:
        """The model's first API key, which the admin API wants as a bearer token."""
        ref = spec.auth.api_key_secret_ref
        if ref is None:
            return None
        secret = await asyncio.to_thread(self._reconciler.api.get, SECRETS, namespace, ref.name)
        encoded = ((secret or {}).get("data") or {}).get(ref.key)
        if not encoded:
            return None
        try:
            text = base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        keys = [line.strip() for line in text.splitlines()]
        return next((k for k in keys if k and not k.startswith("#")), None)

    async def _list(self, target: AdminTarget) -> list[HeldAdapter] | str:
        async with self._slots:
            return await list_adapters(self._http, target)

    async def _execute(self, target: AdminTarget, plan: ReplicaPlan) -> ReplicaCalls:
        """One replica's calls, one after another (one engine loads one adapter at a time)."""
        loads: dict[str, str | None] = {}
        unloads: dict[str, str | None] = {}
        for name in plan.unloads:
            async with self._slots:
                unloads[name] = await unload_adapter(self._http, target, name)
        for load in plan.loads:
            adapter = load.adapter
            assert adapter.location is not None  # planned only with one
            async with self._slots:
                loads[adapter.name] = await load_adapter(
                    self._http, target, adapter.name, adapter.location, adapter.revision
                )
        return ReplicaCalls(target.pod, plan, loads, unloads)

    async def _write_status(
        self,
        key: OwnerKey,
        view: ClusterView,
        body: Mapping[str, Any],
        desired: list[DesiredAdapter],
        outcomes: list[ReplicaOutcome],
        without_admin: int,
    ) -> None:
        entries = adapter_status(desired, outcomes, without_admin) if desired else None
        reconciler = self._reconciler
        async with reconciler.lock(key):
            # The resource as the index shows it now: loads may have taken minutes.
            current = reconciler.observed_status(key, view.llmdeployment(key) or body)
            if current.get("adapters") == entries:
                return
            patch = {"adapters": entries}
            await asyncio.to_thread(reconciler.api.patch_status, *key, patch)
            reconciler.expectations.expect_status(key, patch)

    async def _post_events(
        self, key: OwnerKey, body: Mapping[str, Any], events: list[tuple[str, str, str]]
    ) -> None:
        warned = self._warned.get(key, set())
        now_failing = {message for type_, _, message in events if type_ == "Warning"}
        for type_, reason, message in events:
            if type_ == "Warning" and message in warned:
                continue  # posted when it first failed; status keeps saying it
            log.log(
                logging.WARNING if type_ == "Warning" else logging.INFO,
                "%s/%s: %s",
                *key,
                message,
            )
            try:
                await asyncio.to_thread(
                    self._reconciler.api.post_event, body, type_, reason, message
                )
            except KubeError as err:  # status says it already
                log.warning("%s/%s: no %s event: %s", *key, reason, err)
        self._warned[key] = now_failing


def _interim_outcome(
    pod: str,
    desired: list[DesiredAdapter],
    held: list[HeldAdapter] | str,
    plan: ReplicaPlan | None,
) -> ReplicaOutcome:
    """A replica while its loads run: what it holds already, the rest loading."""
    if isinstance(held, str) or plan is None:
        return ReplicaOutcome(pod, unreachable=held if isinstance(held, str) else None)
    before = outcome_after(pod, desired, held, ReplicaPlan(loading=plan.loading), {})
    planned = frozenset(load.adapter.name for load in plan.loads)
    return ReplicaOutcome(pod, before.loaded - planned, plan.loading | planned)
