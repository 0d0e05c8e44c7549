"""Kubernetes discovery: model replicas from the operator's Services and their EndpointSlices.

For each LLMDeployment the operator creates one Service per serving track
(stable, canary), labelled as a Modelplane model server and annotated with
the OpenAI model name, the track's traffic weight, revision and balancing
strategy (names in `modelplane.api.contract`). The Services say *what* is
served; their EndpointSlices say *where*: the addresses of ready pods.
EndpointSlices do not carry the Service's annotations, so both are watched
and joined by the `kubernetes.io/service-name` label.

LLMDeployments are watched too: a Service takes traffic only if one of them
owns it (`discovery.ownership`: the operator's managed-by label and an owner
reference whose uid matches), one LLMDeployment keeps each model name, and
its `auth.apiKeySecretRef` names the key the gateway sends to its replicas
(`discovery.model_keys`), read with `get` when the LLMDeployment appears and
every key refresh interval after.

The official client is synchronous; each watch runs in a daemon thread
(list, then watch from the list's resourceVersion, list again after an
error or a 410 Gone) and hands every event to the event loop, where the
routing table is recomputed by a pure function and swapped whole.

A model whose Services exist but have no ready endpoint is scaled to zero
(or starting): its requests are held, and the gateway records demand in the
LLMDeployment's demand Lease (`discovery.demand_leases`), which the
autoscaler watches. Each route names the LLMDeployments behind it
(`ModelRoute.demand`) for that.

A model's LoRA adapters are named by its Services' `modelplane.io/adapters`
annotation; which replica has which loaded comes from the replicas' own
`/ready` answers (`discovery.adapter_probe`), polled only for models with
adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.api import contract
from modelplane.gateway.discovery.adapter_probe import INTERVAL_S, AdapterProbe, Loaded
from modelplane.gateway.discovery.model_keys import (
    KeyReading,
    SecretReader,
    merge_readings,
    read_secret_key,
)
from modelplane.gateway.discovery.ownership import (
    NameConflict,
    Owner,
    SecretRef,
    claim_model_names,
    llmdeployment_reference,
    owner_of,
    untrusted_reason,
)
from modelplane.gateway.routing.adapters import annotation_adapter_names
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute, Routing, RoutingTable, Track

log = logging.getLogger("modelplane.gateway.discovery")

SERVICE_SELECTOR = (
    f"{contract.LABEL_PART_OF}={contract.PART_OF},"
    f"{contract.LABEL_COMPONENT}={contract.COMPONENT_MODEL_SERVER},"
    f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# EndpointSlices copy their Service's labels, but select only on the one
# label every slice has; the join with the watched Services filters them.
SLICE_SELECTOR = SERVICE_NAME_LABEL

ObjectKey = tuple[str, str]  # (namespace, name)
SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"
LLMDEPLOYMENT = contract.KIND
KEY_REFRESH_S = 30.0  # a rotated or revoked model key takes effect within this
# (connect, read) seconds of a list: an API server that stops answering mid-list must not
# stall discovery; the stream logs the failure and lists again. A watch's read bound is its
# own timeout plus a margin.
LIST_TIMEOUT = (5.0, 60.0)


@dataclass(frozen=True)
class ModelService:
    namespace: str
    name: str
    model: str
    track: str
    weight: int
    revision: str
    routing: Routing | None
    llmdeployment: str
    managed: bool = False  # labelled as the operator's
    owner_reference: tuple[str, str] | None = None  # (name, uid) of its LLMDeployment
    adapters: frozenset[str] = frozenset()  # LoRA adapters configured for the model
    adapter_problems: tuple[str, ...] = ()  # names in the annotation that were left out
    concurrency: int | None = None  # requests one replica runs at once, when the Service says


def model_service(obj: Mapping[str, Any]) -> ModelService | None:
    """The serving track a Service describes, or None if it is not a usable one."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    model = annotations.get(contract.ANNOTATION_SERVED_MODEL)
    if not model:
        return None
    track = labels.get(contract.LABEL_TRACK) or contract.TRACK_STABLE
    default_weight = 100 if track == contract.TRACK_STABLE else 0
    try:
        weight = int(annotations.get(contract.ANNOTATION_TRAFFIC_WEIGHT, default_weight))
    except ValueError:
        weight = default_weight
    routing_value = annotations.get(contract.ANNOTATION_ROUTING)
    routing = Routing(routing_value) if routing_value in set(Routing) else None
    adapters = annotation_adapter_names(annotations.get(contract.ANNOTATION_ADAPTERS))
    return ModelService(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        model=model,
        track=track,
        weight=max(0, min(100, weight)),
        revision=annotations.get(contract.ANNOTATION_REVISION, ""),
        routing=routing,
        llmdeployment=labels.get(contract.LABEL_LLMDEPLOYMENT, ""),
        managed=labels.get(contract.LABEL_MANAGED_BY) == contract.MANAGED_BY,
        owner_reference=llmdeployment_reference(meta),
        adapters=frozenset(adapters.names),
        adapter_problems=adapters.problems,
        concurrency=replica_concurrency(annotations.get(contract.ANNOTATION_REPLICA_CONCURRENCY)),
    )


def replica_concurrency(annotation: object) -> int | None:
    """The Service's replica-concurrency annotation; anything but 1..4096 is unknown."""
    if not isinstance(annotation, str) or not annotation.isdecimal() or len(annotation) > 4:
        return None
    value = int(annotation)
    return value if 1 <= value <= 4096 else None


def slice_endpoints(obj: Mapping[str, Any]) -> tuple[ObjectKey, tuple[str, ...]] | None:
    """(the Service it belongs to, base URLs of its ready endpoints)."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service:
        return None
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == contract.SERVER_PORT_NAME), None)
    if port is None:
        port = ports[0].get("port") if ports else contract.SERVER_PORT
    ipv6 = obj.get("addressType") == "IPv6"
    urls: list[str] = []
    for endpoint in obj.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # The API: a missing `ready` means unknown, to be taken as ready; a
        # terminating endpoint is never ready.
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        for address in endpoint.get("addresses") or []:
            host = f"[{address}]" if ipv6 else address
            urls.append(f"http://{host}:{port}")
    return (meta.get("namespace") or "default", service), tuple(sorted(set(urls)))


@dataclass(frozen=True)
class ClusterRoutes:
    """What the watched objects add up to: the routes, and what was refused and why."""

    routes: dict[str, ModelRoute]
    conflicts: list[NameConflict]
    untrusted: dict[ObjectKey, str]  # model Services that take no traffic: why not


def routes_from_cluster(
    services: Mapping[ObjectKey, ModelService],
    slices: Mapping[ObjectKey, tuple[ObjectKey, tuple[str, ...]]],
    owners: Mapping[ObjectKey, Owner],
    keys: Mapping[SecretRef, KeyReading] | None = None,
    default_routing: Routing = Routing.LEAST_LOAD,
    loaded: Mapping[str, frozenset[str]] | None = None,
) -> ClusterRoutes:
    """Join the Services the operator owns and their EndpointSlices into one route per
    served model name, each served by one LLMDeployment (`ownership`), with its key.
    `loaded`: the adapters each replica (by URL) has loaded, as its `/ready` said."""
    keys = keys or {}
    loaded = loaded or {}
    ready: dict[ObjectKey, set[str]] = {}
    for service_key, urls in slices.values():
        ready.setdefault(service_key, set()).update(urls)
    untrusted: dict[ObjectKey, str] = {}
    claims: dict[str, set[Owner]] = {}
    trusted: list[tuple[ModelService, Owner]] = []
    for key, service in services.items():
        reason = untrusted_reason(
            service.namespace, service.managed, service.owner_reference, owners
        )
        if reason is not None:
            untrusted[key] = reason
            continue
        assert service.owner_reference is not None  # trusted: it has one
        owner = owners[(service.namespace, service.owner_reference[0])]
        claims.setdefault(service.model, set()).add(owner)
        trusted.append((service, owner))
    winners, conflicts = claim_model_names(claims)
    by_model: dict[str, list[ModelService]] = {}
    for service, owner in trusted:
        if winners[service.model] == owner:
            by_model.setdefault(service.model, []).append(service)
    routes: dict[str, ModelRoute] = {}
    for model, members in sorted(by_model.items()):
        members.sort(key=lambda s: (s.track != contract.TRACK_STABLE, s.name))
        routing = next((s.routing for s in members if s.routing is not None), default_routing)
        tracks = tuple(
            Track(
                name=s.track,
                weight=s.weight,
                upstreams=tuple(sorted(ready.get((s.namespace, s.name), ()))),
                revision=s.revision,
            )
            for s in members
        )
        owner = winners[model]
        upstream_key, problem = _upstream_key(owner, keys)
        adapters = frozenset().union(*(s.adapters for s in members))
        held = {u: loaded.get(u, frozenset()) & adapters for t in tracks for u in t.upstreams}
        routes[model] = ModelRoute(
            name=model,
            tracks=tracks,
            routing=routing,
            demand=(DemandTarget(owner.namespace, owner.name),),
            upstream_key=upstream_key,
            upstream_key_problem=problem,
            adapters=adapters,
            loaded={u: names for u, names in held.items() if names},
            concurrency=min(
                (s.concurrency for s in members if s.concurrency is not None), default=None
            ),
        )
    return ClusterRoutes(routes, conflicts, untrusted)


def _upstream_key(
    owner: Owner, keys: Mapping[SecretRef, KeyReading]
) -> tuple[str | None, str | None]:
    """(the key to send the owner's replicas, why there is none when one is needed)."""
    if owner.key_ref is None:
        return None, None
    reading = keys.get(owner.key_ref)
    if reading is None:
        return None, f"Secret {owner.key_ref.namespace}/{owner.key_ref.name} not read yet"
    return reading.key, None if reading.key is not None else reading.problem


class WatchError(RuntimeError):
    """The API server ended a watch with an error (410 Gone when it is too old)."""


ApiClientFactory = Callable[[], Any]


def default_api_client() -> Any:
    """In a pod: the service account; elsewhere: the current kubeconfig context."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class KubernetesDiscovery:
    def __init__(
        self,
        table: RoutingTable,
        api_client: ApiClientFactory = default_api_client,
        *,
        namespaces: Iterable[str] = (),
        default_routing: Routing = Routing.LEAST_LOAD,
        watch_timeout_s: int = 300,
        retry_delay_s: float = 2.0,
        key_refresh_s: float = KEY_REFRESH_S,
        on_conflicts: Callable[[Mapping[str, int]], None] = lambda refused: None,
        read_key: SecretReader = read_secret_key,
        list_timeout: tuple[float, float] = LIST_TIMEOUT,
        adapter_probe_s: float = INTERVAL_S,
    ) -> None:
        self.table = table
        self.list_timeout = list_timeout
        self.api_client = api_client
        self.namespaces = tuple(namespaces)
        self.default_routing = default_routing
        self.watch_timeout_s = watch_timeout_s
        self.retry_delay_s = retry_delay_s
        self.key_refresh_s = key_refresh_s
        self.on_conflicts = on_conflicts  # LLMDeployments refused, per model name
        self.read_key = read_key
        self._services: dict[ObjectKey, ModelService] = {}
        self._slices: dict[ObjectKey, tuple[ObjectKey, tuple[str, ...]]] = {}
        self._owners: dict[ObjectKey, Owner] = {}
        self._keys: dict[SecretRef, KeyReading] = {}
        # The Secrets the owners name; replaced whole on the loop, read by the refresh thread.
        self._wanted: frozenset[SecretRef] = frozenset()
        self._reported: tuple[dict[ObjectKey, str], list[NameConflict], dict[str, str]] = (
            {},
            [],
            {},
        )
        self._listed: set[str] = set()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._responses: dict[str, Any] = {}  # the open watch response of each stream
        self._loaded: Loaded = {}
        self.adapter_probe = AdapterProbe(self._on_loaded, interval_s=adapter_probe_s)

    # ---- event-loop side -------------------------------------------------

    def _store(self, kind: str) -> dict[ObjectKey, Any]:
        if kind == SERVICE:
            return self._services
        return self._slices if kind == ENDPOINT_SLICE else self._owners

    def _on_keys(self, fresh: dict[SecretRef, KeyReading]) -> None:
        merged = merge_readings(self._keys, fresh)
        # Readings of Secrets no LLMDeployment names any more go (a fresh one is for an
        # LLMDeployment whose event comes right after).
        merged = {r: k for r, k in merged.items() if r in self._wanted or r in fresh}
        if merged != self._keys:
            self._keys = merged
            self._publish()

    def _on_loaded(self, loaded: Loaded) -> None:
        self._loaded = loaded
        self._publish()

    def _on_list(self, stream: str, items: list[dict[str, Any]]) -> None:
        """A fresh full listing replaces everything that stream said before."""
        kind, _, namespace = stream.partition("/")
        store = self._store(kind)
        for key in [k for k in store if not namespace or k[0] == namespace]:
            del store[key]
        for item in items:
            self._upsert(kind, item)
        self._listed.add(stream)
        self._publish()

    def _on_event(self, stream: str, event_type: str, obj: dict[str, Any]) -> None:
        kind = stream.partition("/")[0]
        if event_type == "DELETED":
            self._store(kind).pop(_key(obj), None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._upsert(kind, obj)
        else:
            return  # BOOKMARK
        self._publish()

    def _upsert(self, kind: str, obj: dict[str, Any]) -> None:
        key = _key(obj)
        if kind == SERVICE:
            service = model_service(obj)
            if service is None:
                self._services.pop(key, None)
            else:
                before = self._services.get(key)
                if service.adapter_problems and (
                    before is None or before.adapter_problems != service.adapter_problems
                ):
                    log.warning(
                        "Service %s/%s: adapters left out: %s", *key,
                        "; ".join(service.adapter_problems),
                        extra={"namespace": key[0], "service": key[1]},
                    )  # fmt: skip
                self._services[key] = service
        elif kind == LLMDEPLOYMENT:
            owner = owner_of(obj)
            if owner is None:
                self._owners.pop(key, None)
            else:
                self._owners[key] = owner
        else:
            endpoints = slice_endpoints(obj)
            if endpoints is None:
                self._slices.pop(key, None)
            else:
                self._slices[key] = endpoints

    def _publish(self) -> None:
        self._wanted = frozenset(o.key_ref for o in self._owners.values() if o.key_ref)
        streams = self._stream_names()
        if not set(streams) <= self._listed:
            return  # not every stream has delivered its first list yet
        found = routes_from_cluster(
            self._services,
            self._slices,
            self._owners,
            self._keys,
            self.default_routing,
            self._loaded,
        )
        self.adapter_probe.watch(
            u for r in found.routes.values() if r.adapters for u in r.upstreams
        )
        self._report(found)
        if found.routes != self.table.routes or not self.table.synced:
            self.table.replace(found.routes)

    def _report(self, found: ClusterRoutes) -> None:
        """Log what is refused when it changes, and count the name conflicts."""
        problems = {
            name: route.upstream_key_problem
            for name, route in found.routes.items()
            if route.upstream_key_problem is not None
        }
        untrusted, conflicts, known_problems = self._reported
        for (namespace, name), reason in sorted(found.untrusted.items()):
            if untrusted.get((namespace, name)) != reason:
                log.warning(
                    "Service %s/%s takes no traffic: %s", namespace, name, reason,
                    extra={"namespace": namespace, "service": name, "reason": reason},
                )  # fmt: skip
        if found.conflicts != conflicts:
            for conflict in found.conflicts:
                log.warning(
                    "model name %r is served by %s (created first); refused: %s",
                    conflict.model, conflict.winner, ", ".join(map(str, conflict.refused)),
                    extra={
                        "model": conflict.model,
                        "llmdeployment": str(conflict.winner),
                        "refused": [str(o) for o in conflict.refused],
                    },
                )  # fmt: skip
            self.on_conflicts({c.model: len(c.refused) for c in found.conflicts})
        for model, problem in sorted(problems.items()):
            if known_problems.get(model) != problem:
                log.error(
                    "no API key for the replicas of %s: %s", model, problem,
                    extra={"model": model, "reason": problem},
                )  # fmt: skip
        self._reported = (found.untrusted, found.conflicts, problems)

    def _stream_names(self) -> list[str]:
        spaces = self.namespaces or ("",)
        kinds = (SERVICE, ENDPOINT_SLICE, LLMDEPLOYMENT)
        return [f"{kind}/{ns}" for kind in kinds for ns in spaces]

    async def run(self) -> None:
        """Start the watch threads and wait forever (cancel to stop)."""
        self._loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(
                target=self._watch_forever, args=(stream,), name=f"watch-{stream}", daemon=True
            )
            for stream in self._stream_names()
        ]
        threads.append(threading.Thread(target=self._refresh_keys, name="model-keys", daemon=True))
        for thread in threads:
            thread.start()
        probe = asyncio.create_task(self.adapter_probe.run(), name="adapter-probe")
        try:
            await asyncio.Event().wait()
        finally:
            probe.cancel()
            self.stop()

    def stop(self) -> None:
        """Stop the watch threads, interrupting their blocked reads."""
        self._stop.set()
        for response in list(self._responses.values()):
            with contextlib.suppress(Exception):
                response.shutdown()

    # ---- thread side -----------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed while shutting down
            self._loop.call_soon_threadsafe(callback, *args)

    def _read_keys(self, api: Any, refs: Iterable[SecretRef]) -> None:
        """Read each Secret's key and hand the readings to the loop."""
        fresh = {ref: self.read_key(api, ref) for ref in sorted(set(refs), key=_ref_order)}
        if fresh:
            self._post(self._on_keys, fresh)

    def _keys_for(self, api: Any, objects: Iterable[Mapping[str, Any]]) -> None:
        """Before an LLMDeployment reaches the loop, its key: a model never routes
        without the key its replicas require, not even for the moment in between."""
        refs = [o.key_ref for obj in objects if (o := owner_of(obj)) and o.key_ref]
        self._read_keys(api, [r for r in refs if r not in self._wanted])

    def _refresh_keys(self) -> None:
        api = self.api_client()
        while not self._stop.wait(self.key_refresh_s):
            self._read_keys(api, self._wanted)

    def _watch_forever(self, stream: str) -> None:
        kind, _, namespace = stream.partition("/")
        api = self.api_client()
        list_fn = _list_function(api, kind, namespace)
        args = (namespace,) if namespace else ()
        selector = {SERVICE: SERVICE_SELECTOR, ENDPOINT_SLICE: SLICE_SELECTOR}.get(kind)
        while not self._stop.is_set():
            try:
                raw = list_fn(
                    *args,
                    label_selector=selector,
                    _preload_content=False,
                    _request_timeout=self.list_timeout,
                )
                listing = json.loads(raw.data)
                items = listing.get("items") or []
                if kind == LLMDEPLOYMENT:
                    self._keys_for(api, items)
                self._post(self._on_list, stream, items)
                version = (listing.get("metadata") or {}).get("resourceVersion")
                # Watch from the listing; after a normal end (the server's
                # timeout) go on from the last version seen, without a relist.
                while not self._stop.is_set():
                    version = self._watch_once(stream, api, list_fn, args, selector, version)
            except Exception as err:  # any failure, 410 Gone included: list again
                if self._stop.is_set():
                    return
                log.warning(
                    "watch failed; listing again",
                    extra={"stream": stream, "error": f"{err.__class__.__name__}: {err}"},
                )
                self._stop.wait(self.retry_delay_s)

    def _watch_once(
        self,
        stream: str,
        api: Any,
        list_fn: Callable[..., Any],
        args: tuple[str, ...],
        selector: str | None,
        version: str | None,
    ) -> str | None:
        from kubernetes.watch.watch import iter_resp_lines

        response = list_fn(
            *args,
            label_selector=selector,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            _request_timeout=(self.list_timeout[0], self.watch_timeout_s + 30),
            _preload_content=False,
        )
        self._responses[stream] = response
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise WatchError(f"{obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if stream.startswith(LLMDEPLOYMENT) and event.get("type") in ("ADDED", "MODIFIED"):
                    self._keys_for(api, [obj])
                self._post(self._on_event, stream, event.get("type", ""), obj)
        finally:
            self._responses.pop(stream, None)
            response.release_conn()
        return version


def _list_function(api: Any, kind: str, namespace: str) -> Callable[..., Any]:
    from kubernetes import client

    if kind == LLMDEPLOYMENT:
        custom = client.CustomObjectsApi(api)
        group, version, plural = contract.GROUP, contract.VERSION, contract.PLURAL
        if namespace:
            return lambda ns, **kw: custom.list_namespaced_custom_object(
                group, version, ns, plural, **kw
            )
        return lambda **kw: custom.list_cluster_custom_object(group, version, plural, **kw)
    if kind == SERVICE:
        core = client.CoreV1Api(api)
        return core.list_namespaced_service if namespace else core.list_service_for_all_namespaces
    disc = client.DiscoveryV1Api(api)
    if namespace:
        return disc.list_namespaced_endpoint_slice
    return disc.list_endpoint_slice_for_all_namespaces


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name", "")


def _ref_order(ref: SecretRef) -> tuple[str, str, str]:
    return (ref.namespace, ref.name, ref.key)
