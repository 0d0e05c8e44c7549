"""What to load and unload on each replica, and what status and Events say about it.

Pure: the adapters the spec asks for and what each serving replica reports
holding (`GET /adapters`) in; per replica, the loads (a changed source or
revision is a reload) and unloads out, then, from what those calls
answered, one status entry per adapter (`Loaded on 2/3 replicas`, or the
error) and the Events to post. An adapter a replica is loading already (a
load the operator gave up waiting on, still running there) is not sent
again; one that failed there is tried again on each pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api.llmdeployment import AdapterState, LLMDeploymentSpec
from modelplane.operator.adapters.admin_client import HeldAdapter
from modelplane.operator.builders.adapters import adapter_location, unreachable_source_message

LOADED: Final = "loaded"
LOADING: Final = "loading"

ADAPTER_LOADED: Final = "AdapterLoaded"
ADAPTER_RELOADED: Final = "AdapterReloaded"
ADAPTER_UNLOADED: Final = "AdapterUnloaded"
ADAPTER_FAILED: Final = "AdapterFailed"


@dataclass(frozen=True)
class DesiredAdapter:
    name: str
    revision: str
    location: str | None  # the source as a replica loads it; None: it cannot
    problem: str | None = None  # why there is no location


def desired_adapters(spec: LLMDeploymentSpec) -> list[DesiredAdapter]:
    """spec.adapters, each with the source a replica can load it from (or why none)."""
    desired = []
    for adapter in spec.adapters:
        location = adapter_location(adapter, spec)
        problem = None if location else unreachable_source_message(adapter, spec)
        desired.append(DesiredAdapter(adapter.name, adapter.revision, location, problem))
    return desired


@dataclass(frozen=True)
class Load:
    adapter: DesiredAdapter
    reload: bool  # the replica holds another source or revision of it


@dataclass(frozen=True)
class ReplicaPlan:
    loads: tuple[Load, ...] = ()
    unloads: tuple[str, ...] = ()
    loading: frozenset[str] = frozenset()  # being loaded there already: wait

    @property
    def empty(self) -> bool:
        return not self.loads and not self.unloads


def _matches(held: HeldAdapter, adapter: DesiredAdapter) -> bool:
    return held.source == adapter.location and held.revision == adapter.revision


def plan_replica(desired: Sequence[DesiredAdapter], held: Sequence[HeldAdapter]) -> ReplicaPlan:
    """The calls that bring one replica from `held` to `desired`."""
    by_name = {h.name: h for h in held}
    loads: list[Load] = []
    loading: set[str] = set()
    for adapter in desired:
        if adapter.location is None:
            continue
        current = by_name.get(adapter.name)
        if current is None:
            loads.append(Load(adapter, reload=False))
        elif not _matches(current, adapter):
            loads.append(Load(adapter, reload=True))
        elif current.state == LOADING:
            loading.add(adapter.name)
        elif current.state != LOADED:  # failed there: try again
            loads.append(Load(adapter, reload=False))
    wanted = {a.name for a in desired}
    unloads = tuple(sorted(h.name for h in held if h.name not in wanted))
    return ReplicaPlan(tuple(loads), unloads, frozenset(loading))


@dataclass(frozen=True)
class ReplicaOutcome:
    """One serving replica after the pass: what it holds, what failed there."""

    pod: str
    loaded: frozenset[str] = frozenset()  # adapters it holds at the desired revision
    loading: frozenset[str] = frozenset()
    errors: Mapping[str, str] = field(default_factory=dict)  # adapter -> error
    unreachable: str | None = None  # why its adapters are unknown (listing failed)


def outcome_after(
    pod: str,
    desired: Sequence[DesiredAdapter],
    held: Sequence[HeldAdapter],
    plan: ReplicaPlan,
    results: Mapping[str, str | None],
) -> ReplicaOutcome:
    """What a replica holds once the plan's loads answered (`results`: adapter -> error)."""
    by_name = {h.name: h for h in held}
    loaded: set[str] = set()
    errors: dict[str, str] = {}
    planned = {load.adapter.name for load in plan.loads}
    for adapter in desired:
        if adapter.name in planned:
            error = results.get(adapter.name)
            if error is None:
                loaded.add(adapter.name)
            else:
                errors[adapter.name] = error
        elif adapter.name not in plan.loading and adapter.name in by_name:
            current = by_name[adapter.name]
            if _matches(current, adapter) and current.state == LOADED:
                loaded.add(adapter.name)
    return ReplicaOutcome(pod, frozenset(loaded), plan.loading, errors)


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def adapter_status(
    desired: Sequence[DesiredAdapter],
    outcomes: Sequence[ReplicaOutcome],
    without_admin: int = 0,
) -> list[dict[str, Any]]:
    """`status.adapters`: one entry per adapter, in spec order, in the resource's spelling.

    `outcomes` are the serving replicas that have the admin port; `without_admin`
    counts serving replicas that do not (yet: they started before LoRA was on).
    """
    replicas = len(outcomes) + without_admin
    entries: list[dict[str, Any]] = []
    for adapter in desired:
        loaded = sum(1 for o in outcomes if adapter.name in o.loaded)
        failures = [
            o.errors[adapter.name] if adapter.name in o.errors else str(o.unreachable)
            for o in outcomes
            if adapter.name in o.errors or (o.unreachable and adapter.name not in o.loaded)
        ]
        counted = f"loaded on {loaded}/{replicas} replicas"
        if adapter.problem is not None:
            state, message = AdapterState.FAILED, adapter.problem
        elif failures:
            state = AdapterState.FAILED
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            message = f"{failures[0]}{more}; {counted}"
        elif replicas == 0:
            state, message = AdapterState.PENDING, "no serving replica yet"
        elif loaded == replicas:
            state, message = AdapterState.LOADED, f"Loaded on {loaded}/{replicas} replicas"
        else:
            state, message = AdapterState.LOADING, f"Loading: {counted}"
            if without_admin:
                message += (
                    f" ({_replicas(without_admin)} still run without LoRA: restarting with it)"
                )
        entries.append(
            {
                "name": adapter.name,
                "revision": adapter.revision,
                "state": state.value,
                "loadedReplicas": loaded,
                "replicas": replicas,
                "message": message,
            }
        )
    return entries


@dataclass(frozen=True)
class ReplicaCalls:
    """What the pass did on one replica: the plan, and what each load and unload answered."""

    pod: str
    plan: ReplicaPlan
    load_errors: Mapping[str, str | None]  # adapter -> error (None: loaded)
    unload_errors: Mapping[str, str | None]


def adapter_events(calls: Sequence[ReplicaCalls]) -> list[tuple[str, str, str]]:
    """(type, reason, message) per adapter and outcome, each naming the replicas it covers."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    failures: list[tuple[str, str, str]] = []
    for call in calls:
        for load in call.plan.loads:
            name, error = load.adapter.name, call.load_errors.get(load.adapter.name)
            if error is None:
                reason = ADAPTER_RELOADED if load.reload else ADAPTER_LOADED
                grouped.setdefault((reason, name, load.adapter.revision), []).append(call.pod)
            else:
                failures.append(("Warning", ADAPTER_FAILED, f"adapter {name}: {error}"))
        for name in call.plan.unloads:
            error = call.unload_errors.get(name)
            if error is None:
                grouped.setdefault((ADAPTER_UNLOADED, name, ""), []).append(call.pod)
            else:
                failures.append(("Warning", ADAPTER_FAILED, f"unloading {name}: {error}"))
    events: list[tuple[str, str, str]] = []
    verbs = {ADAPTER_LOADED: "loaded", ADAPTER_RELOADED: "reloaded", ADAPTER_UNLOADED: "unloaded"}
    for (reason, name, revision), pods in sorted(grouped.items()):
        at = f" at revision {revision}" if revision else ""
        events.append(
            (
                "Normal",
                reason,
                f"adapter {name}{at} {verbs[reason]} on {_replicas(len(pods))}: "
                f"{', '.join(sorted(pods))}",
            )
        )
    return events + failures
