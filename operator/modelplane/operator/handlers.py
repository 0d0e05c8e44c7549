"""kopf registration: thin handlers that feed the indexes and call the reconciler.

The operator is level-triggered. Indexes (kopf's in-memory caches fed by
watches) hold every LLMDeployment and a compact view of every child the
operator manages; kopf starts handlers only after they are first filled, so
a restarted operator sees existing children and writes nothing. Any event
on an LLMDeployment or on one of its children reconciles that LLMDeployment
from the indexes; a periodic resync (`resyncSeconds`) does the same for all
of them. LoRA adapters are loaded into the serving pods by `AdapterSync`, asked
for on each LLMDeployment and pod event and by a loop of its own (pod
events reach no reconcile: pods are not children). The autoscaler and the
canary analysis run in a loop of their own,
started here like the resync (every `autoscalerIntervalSeconds`, over the
pods' index); the gateway's scale-from-zero demand, a write of the model's
demand Lease (indexed like the children), is also decided as it comes
(`Autoscaler.on_demand`). A
`@kopf.timer` would make kopf add a finalizer and progress annotations to
every LLMDeployment. No change-tracking handlers, timers or daemons are
used, so kopf itself writes nothing to the resources: no annotations, and no
finalizer (owner references delete the children with their LLMDeployment).
kopf pauses its handlers while another peered replica is active; it cannot
pause these loops, so each of their ticks asks the peering gate first
(kube/peering.py). Children and pods are listed and watched with server-side
label selectors, in pages (kube/watch_scope.py): another tenant's objects
never reach the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import kopf

from modelplane.api import contract
from modelplane.api.demand import (
    DEMAND_LEASE_SELECTOR,
    DemandSignal,
    demand_lease_name,
    demand_signal,
)
from modelplane.operator.adapters.sync import AdapterSync
from modelplane.operator.autoscaler.controller import Autoscaler, metrics_source
from modelplane.operator.canary.analysis import CanaryAnalysis
from modelplane.operator.canary.store import CanaryMeasurements
from modelplane.operator.config import config_from_environment
from modelplane.operator.kube.client import (
    KubeApi,
    apply_api_timeouts,
    bearer_credentials,
    load_client_configuration,
)
from modelplane.operator.kube.peering import POD_ID_ENV, ActivityGate, activity_gate
from modelplane.operator.kube.resources import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    JOBS,
    LEASES,
    NETWORK_POLICIES,
    POD_DISRUPTION_BUDGETS,
    SERVICE_MONITORS,
    SERVICES,
    ResourceType,
)
from modelplane.operator.kube.watch_scope import (
    MANAGED_LABELS,
    MODEL_POD_LABELS,
    kopf_label_filter,
    label_selector,
    scope_watches,
    watch_selectors,
)
from modelplane.operator.metrics import OperatorMetrics
from modelplane.operator.reconcile.children_plan import ChildKey
from modelplane.operator.reconcile.expectations import OwnerKey
from modelplane.operator.reconcile.observed import ObservedChild, observe_child
from modelplane.operator.reconcile.pods import ObservedPod, observe_pod
from modelplane.operator.reconcile.reconciler import Reconciler

log = logging.getLogger(__name__)

# Only objects this operator created, by label, not by owner reference: the API server
# selects by label (watch_scope), and kopf checks the same labels again on arrival.
MANAGED: Final[dict[str, Any]] = kopf_label_filter(MANAGED_LABELS)
CHILD_INDEXES: Final[dict[str, ResourceType]] = {
    "configmaps_idx": CONFIG_MAPS,
    "services_idx": SERVICES,
    "deployments_idx": DEPLOYMENTS,
    "pdbs_idx": POD_DISRUPTION_BUDGETS,
    "networkpolicies_idx": NETWORK_POLICIES,
    "servicemonitors_idx": SERVICE_MONITORS,
    "jobs_idx": JOBS,
}
LLMD = (contract.GROUP, contract.VERSION, contract.PLURAL)
# How often every model's adapters are checked again at most (failed loads retried); pod
# and LLMDeployment events start a model's check at once.
ADAPTER_RESYNC_SECONDS: Final = 30.0


class IndexView:
    """The reconciler's read-only view of kopf's indexes (live objects, always current)."""

    def __init__(self, indexes: Mapping[str, Any]) -> None:
        self._llmds: kopf.Index[OwnerKey, dict[str, Any]] = indexes["llmdeployments_idx"]
        self._children = [indexes[name] for name in CHILD_INDEXES]
        self._pods: kopf.Index[OwnerKey, ObservedPod] = indexes["pods_idx"]
        self._demand: kopf.Index[OwnerKey, DemandSignal] = indexes["demand_leases_idx"]

    def llmdeployment(self, key: OwnerKey) -> Mapping[str, Any] | None:
        store = self._llmds.get(key)
        return next(iter(store), None) if store else None

    def children(self, key: OwnerKey) -> dict[ChildKey, ObservedChild]:
        found: dict[ChildKey, ObservedChild] = {}
        for index in self._children:
            for child in index.get(key, ()):
                found[(child.kind, child.name)] = child
        return found

    def llmdeployment_keys(self) -> list[OwnerKey]:
        return list(self._llmds)

    def pods(self, key: OwnerKey) -> list[ObservedPod]:
        return list(self._pods.get(key, ()))

    def demand(self, key: OwnerKey) -> DemandSignal | None:
        return next(iter(self._demand.get(key, ())), None)


def _owner(namespace: str | None, labels: Mapping[str, str]) -> OwnerKey:
    return (namespace or "", labels[contract.LABEL_LLMDEPLOYMENT])


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Same credentials as the operator's own client: service account, else $KUBECONFIG."""
    configuration = load_client_configuration()
    scheme, token = bearer_credentials(configuration)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any) -> None:
    config = config_from_environment()
    # Events only for problems: routine work posts nothing, so a resync writes nothing.
    settings.posting.level = logging.WARNING
    # Re-establish watches regularly so a silently dropped connection cannot go unnoticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    apply_api_timeouts(settings)
    # Only the operator's own children and model pods, selected by the API server, in pages.
    scope_watches(
        settings,
        {
            **watch_selectors(CHILD_INDEXES.values()),
            LEASES: label_selector(DEMAND_LEASE_SELECTOR),  # the gateway's demand Leases
        },
    )
    # Watching chosen namespaces needs no cluster-wide permission: skip kopf's scans of
    # namespaces and CRDs, so the namespaced Role is enough.
    settings.scanning.disabled = bool(config.namespaces)
    api = await asyncio.to_thread(KubeApi.from_environment)
    service_monitor_api = await asyncio.to_thread(api.api_exists, SERVICE_MONITORS.api_version)
    metrics = OperatorMetrics()
    metrics.serve(config.metrics_port)
    # The canary analysis records its measurements here; the reconciler reads them.
    measurements = CanaryMeasurements()
    reconciler = Reconciler(
        api,
        config,
        metrics,
        service_monitor_api=service_monitor_api,
        canary_measurements=measurements,
    )
    view = IndexView(
        {
            name: indexes[name]
            for name in ["llmdeployments_idx", "pods_idx", "demand_leases_idx", *CHILD_INDEXES]
        }
    )
    source = metrics_source(config)
    autoscaler = Autoscaler(reconciler, source)
    canary = CanaryAnalysis(reconciler, source, measurements)
    adapters = AdapterSync(reconciler)

    def start_afresh() -> None:  # another replica worked meanwhile: trust what it wrote
        autoscaler.forget_all()
        canary.forget_all()

    # `--peering NAME` makes peering mandatory; `modelplane operator` passes that or
    # `--standalone`, never leaving kopf to guess.
    peered = settings.peering.mandatory and not settings.peering.standalone
    try:
        gate = activity_gate(
            api,
            peering=settings.peering.name if peered else None,
            priority=settings.peering.priority,
            namespaces=config.namespaces,
            identity=os.environ.get(POD_ID_ENV),
            on_resume=start_afresh,
        )
    except ValueError as err:
        raise kopf.PermanentError(str(err)) from err
    memo.reconciler = reconciler
    memo.autoscaler = autoscaler
    memo.canary = canary
    memo.adapters = adapters
    memo.metrics_source = source
    memo.metrics = metrics
    memo.api = api
    memo.view = view
    # kopf runs handlers only once every index is filled; the loops must wait for that too,
    # or after a slow start they would see children missing from half-filled indexes.
    memo.indexed = asyncio.Event()
    adapter_every = min(config.resync_seconds, ADAPTER_RESYNC_SECONDS)
    memo.tasks = [
        asyncio.create_task(
            _every(lambda: reconciler.resync(view), config.resync_seconds, memo.indexed, gate)
        ),
        asyncio.create_task(
            _measure_forever(
                autoscaler, canary, view, config.autoscaler_interval_seconds, memo.indexed, gate
            )
        ),
        # Every model's LoRA adapters again: a failed load is retried, a missed event caught.
        asyncio.create_task(
            _every(lambda: _now(adapters.tick, view), adapter_every, memo.indexed, gate)
        ),
    ]
    log.info(
        "modelplane operator started: metrics on :%d, resync every %.0fs, autoscaler every "
        "%gs from %s, ServiceMonitors %s",
        config.metrics_port,
        config.resync_seconds,
        config.autoscaler_interval_seconds,
        config.prometheus_url or "the pods' /metrics",
        "on" if service_monitor_api else "off (no monitoring.coreos.com API)",
    )


async def _every(
    work: Callable[[], Awaitable[None]],
    every: float,
    indexed: asyncio.Event,
    gate: ActivityGate,
) -> None:
    """`work` every `every` seconds while this replica is the active one, once indexed."""
    await indexed.wait()
    while True:
        await asyncio.sleep(every)
        if await gate.active():
            await work()


async def _now(step: Callable[[IndexView], None], view: IndexView) -> None:
    step(view)


async def _measure_forever(
    autoscaler: Autoscaler,
    canary: CanaryAnalysis,
    view: IndexView,
    every: float,
    indexed: asyncio.Event,
    gate: ActivityGate,
) -> None:
    """The autoscaler's decisions and the canary steps' analysis, on one clock."""
    await indexed.wait()
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        if await gate.active():
            await asyncio.gather(autoscaler.tick(view), canary.tick(view))
        # A tick that took long (slow scrapes) shortens the wait, never stacks ticks up.
        await asyncio.sleep(max(0.0, every - (loop.time() - started)))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "adapters" in memo:
        await memo.adapters.close()
    if "metrics_source" in memo:
        await memo.metrics_source.close()
    if "reconciler" in memo:
        memo.reconciler.close()
    if "metrics" in memo:
        memo.metrics.close()
    if "api" in memo:
        memo.api.close()


@kopf.index(*LLMD)
def llmdeployments_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): copy.deepcopy(dict(body))}


def _register_child_index(index_name: str, rtype: ResourceType) -> None:
    def index(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
        return {_owner(namespace, labels): observe_child(rtype.kind, body)}

    index.__name__ = index_name
    kopf.index(rtype.group, rtype.version, rtype.plural, labels=MANAGED, id=index_name)(index)


for _name, _rtype in CHILD_INDEXES.items():
    _register_child_index(_name, _rtype)

# The model servers' pods (labelled by their Deployment's template), for the autoscaler.
MODEL_PODS: Final[dict[str, Any]] = kopf_label_filter(MODEL_POD_LABELS)


@kopf.index("", "v1", "pods", labels=MODEL_PODS)
def pods_idx(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    return {_owner(namespace, labels): observe_pod(body)}


@kopf.on.event("", "v1", "pods", labels=MODEL_PODS)
async def pod_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """A model pod changed (e.g. became ready): bring its adapters in line (a pass for a
    model without adapters or admin ports makes no call)."""
    memo.indexed.set()
    memo.adapters.request(_owner(namespace, labels), memo.view)


@kopf.on.event(*LLMD)
async def llmdeployment_changed(
    namespace: str | None, name: str, type: str, memo: Any, **_: Any
) -> None:
    memo.indexed.set()
    key = (namespace or "", name)
    if type == "DELETED":
        memo.reconciler.forget(key)
        memo.autoscaler.forget(key)
        memo.canary.forget(key)
        memo.adapters.forget(key)
        return
    await memo.reconciler.reconcile(key, memo.view)
    memo.adapters.request(key, memo.view)


def _register_child_events(rtype: ResourceType) -> None:
    async def child_changed(
        namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
    ) -> None:
        memo.indexed.set()
        await memo.reconciler.reconcile(_owner(namespace, labels), memo.view)

    kopf.on.event(
        rtype.group, rtype.version, rtype.plural, labels=MANAGED, id=f"{rtype.plural}-changed"
    )(child_changed)


for _rtype in CHILD_INDEXES.values():
    _register_child_events(_rtype)

# The gateway's scale-from-zero demand: one Lease per LLMDeployment, selected by label
# (on the API server, `start`), and only under the name the gateway gives it.
DEMAND_LEASES: Final[dict[str, Any]] = kopf_label_filter(DEMAND_LEASE_SELECTOR)


@kopf.index(LEASES.group, LEASES.version, LEASES.plural, labels=DEMAND_LEASES)
def demand_leases_idx(
    namespace: str | None, name: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    owner = _owner(namespace, labels)
    if name != demand_lease_name(owner[1]):
        return None
    return {owner: demand_signal(body)}


@kopf.on.event(LEASES.group, LEASES.version, LEASES.plural, labels=DEMAND_LEASES)
async def demand_changed(
    namespace: str | None, labels: kopf.Labels, type: str, memo: Any, **_: Any
) -> None:
    """The gateway holds requests for a model: while no replica is ready, decide now."""
    memo.indexed.set()
    if type != "DELETED":
        await memo.autoscaler.on_demand(_owner(namespace, labels), memo.view)
