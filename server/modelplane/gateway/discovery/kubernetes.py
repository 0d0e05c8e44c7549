"""Kubernetes discovery: model replicas from the operator's Services and their EndpointSlices.

For each LLMDeployment the operator creates one Service per serving track
(stable, canary), labelled as a Modelplane model server and annotated with
the OpenAI model name, the track's traffic weight, revision and balancing
strategy (names in `modelplane.api.contract`). The Services say *what* is
served; their EndpointSlices say *where*: the addresses of ready pods.
EndpointSlices do not carry the Service's annotations, so both are watched
and joined by the `kubernetes.io/service-name` label.

The official client is synchronous; each watch runs in a daemon thread
(list, then watch from the list's resourceVersion, list again after an
error or a 410 Gone) and hands every event to the event loop, where the
routing table is recomputed by a pure function and swapped whole.

A model whose Services exist but have no ready endpoint is scaled to zero
(or starting): its requests are held, and the gateway records demand in the
LLMDeployment's demand Lease (`discovery.demand_leases`), which the
autoscaler watches. Each route names the LLMDeployments behind it
(`ModelRoute.demand`) for that.
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
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute, Routing, RoutingTable, Track

log = logging.getLogger("modelplane.gateway.discovery")

SERVICE_SELECTOR = (
    f"{contract.LABEL_PART_OF}={contract.PART_OF},"
    f"{contract.LABEL_COMPONENT}={contract.COMPONENT_MODEL_SERVER}"
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# EndpointSlices copy their Service's labels, but select only on the one
# label every slice has; the join with the watched Services filters them.
SLICE_SELECTOR = SERVICE_NAME_LABEL

ObjectKey = tuple[str, str]  # (namespace, name)
SERVICE = "Service"
ENDPOINT_SLICE = "EndpointSlice"


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
    return ModelService(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        model=model,
        track=track,
        weight=max(0, min(100, weight)),
        revision=annotations.get(contract.ANNOTATION_REVISION, ""),
        routing=routing,
        llmdeployment=labels.get(contract.LABEL_LLMDEPLOYMENT, ""),
    )


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


def routes_from_cluster(
    services: Mapping[ObjectKey, ModelService],
    slices: Mapping[ObjectKey, tuple[ObjectKey, tuple[str, ...]]],
    default_routing: Routing = Routing.LEAST_LOAD,
) -> dict[str, ModelRoute]:
    """Join Services and EndpointSlices into one route per served model name."""
    ready: dict[ObjectKey, set[str]] = {}
    for service_key, urls in slices.values():
        ready.setdefault(service_key, set()).update(urls)
    by_model: dict[str, list[ModelService]] = {}
    for service in services.values():
        by_model.setdefault(service.model, []).append(service)
    routes: dict[str, ModelRoute] = {}
    for model, members in sorted(by_model.items()):
        members.sort(key=lambda s: (s.track != contract.TRACK_STABLE, s.namespace, s.name))
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
        demand = tuple(
            dict.fromkeys(
                DemandTarget(s.namespace, s.llmdeployment) for s in members if s.llmdeployment
            )
        )
        routes[model] = ModelRoute(name=model, tracks=tracks, routing=routing, demand=demand)
    return routes


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
    ) -> None:
        self.table = table
        self.api_client = api_client
        self.namespaces = tuple(namespaces)
        self.default_routing = default_routing
        self.watch_timeout_s = watch_timeout_s
        self.retry_delay_s = retry_delay_s
        self._services: dict[ObjectKey, ModelService] = {}
        self._slices: dict[ObjectKey, tuple[ObjectKey, tuple[str, ...]]] = {}
        self._listed: set[str] = set()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._responses: dict[str, Any] = {}  # the open watch response of each stream

    # ---- event-loop side -------------------------------------------------

    def _on_list(self, stream: str, items: list[dict[str, Any]]) -> None:
        """A fresh full listing replaces everything that stream said before."""
        kind, _, namespace = stream.partition("/")
        store: dict[ObjectKey, Any] = self._services if kind == SERVICE else self._slices
        for key in [k for k in store if not namespace or k[0] == namespace]:
            del store[key]
        for item in items:
            self._upsert(kind, item)
        self._listed.add(stream)
        self._publish()

    def _on_event(self, stream: str, event_type: str, obj: dict[str, Any]) -> None:
        kind = stream.partition("/")[0]
        if event_type == "DELETED":
            store: dict[ObjectKey, Any] = self._services if kind == SERVICE else self._slices
            store.pop(_key(obj), None)
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
                self._services[key] = service
        else:
            endpoints = slice_endpoints(obj)
            if endpoints is None:
                self._slices.pop(key, None)
            else:
                self._slices[key] = endpoints

    def _publish(self) -> None:
        streams = self._stream_names()
        if not set(streams) <= self._listed:
            return  # not every stream has delivered its first list yet
        routes = routes_from_cluster(self._services, self._slices, self.default_routing)
        if routes != self.table.routes or not self.table.synced:
            self.table.replace(routes)

    def _stream_names(self) -> list[str]:
        spaces = self.namespaces or ("",)
        return [f"{kind}/{ns}" for kind in (SERVICE, ENDPOINT_SLICE) for ns in spaces]

    async def run(self) -> None:
        """Start the watch threads and wait forever (cancel to stop)."""
        self._loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(
                target=self._watch_forever, args=(stream,), name=f"watch-{stream}", daemon=True
            )
            for stream in self._stream_names()
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()
        finally:
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

    def _watch_forever(self, stream: str) -> None:
        kind, _, namespace = stream.partition("/")
        list_fn = _list_function(self.api_client(), kind, namespace)
        args = (namespace,) if namespace else ()
        selector = SERVICE_SELECTOR if kind == SERVICE else SLICE_SELECTOR
        while not self._stop.is_set():
            try:
                raw = list_fn(*args, label_selector=selector, _preload_content=False)
                listing = json.loads(raw.data)
                self._post(self._on_list, stream, listing.get("items") or [])
                version = (listing.get("metadata") or {}).get("resourceVersion")
                # Watch from the listing; after a normal end (the server's
                # timeout) go on from the last version seen, without a relist.
                while not self._stop.is_set():
                    version = self._watch_once(stream, list_fn, args, selector, version)
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
        list_fn: Callable[..., Any],
        args: tuple[str, ...],
        selector: str,
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
            _request_timeout=(10, self.watch_timeout_s + 30),
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
                self._post(self._on_event, stream, event.get("type", ""), obj)
        finally:
            self._responses.pop(stream, None)
            response.release_conn()
        return version


def _list_function(api: Any, kind: str, namespace: str) -> Callable[..., Any]:
    from kubernetes import client

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
