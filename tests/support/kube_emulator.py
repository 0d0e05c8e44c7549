"""A Kubernetes API for tests and benchmarks: KMock's emulator, in a thread, with a kubectl.

Nothing real can run a Kubernetes API server here, so the operator is tested
against KMock's `KubernetesEmulator` (discovery, CRUD, list and watch over
HTTP). `ClusterEmulator` adds the API server behaviours the operator relies
on and the emulator leaves out: uid/generation/resourceVersion/timestamps,
status subresources (a status patch changes only status, a main patch never
status), the scale subresource (a patch sets spec.replicas and answers a
Scale), generateName, server-side apply creating a missing object, resourceVersion
preconditions, the garbage collector deleting dependents by their owner
references, and (when a test asks) a flaky server's 500 answers. Lists and
watches honour `labelSelector` (tests/support/label_selectors.py), lists
`limit` and `continue` too, as the API server does (see `_serve_list` and
`_serve_watch` for where they differ), and every request is recorded, so a
test can read what each list and watch asked for (`EmulatorThread.reads`).
`Kubectl` is
the test's own client: it writes through the API, so watches see every
change, exactly as with a real `kubectl`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp.web
import attrs
import httpx
import kmock
import yaml

from modelplane.api import contract
from tests.support.label_selectors import Selector, SelectorError, parse_selector

HARNESS_AGENT: Final = "modelplane-tests/kubectl"
GC_AGENT: Final = "kube-controller-manager/garbage-collector"
APPLY: Final = "application/apply-patch+yaml"

NAMESPACED_VERBS: Final = ("get", "list", "watch", "create", "update", "patch", "delete")


def resource_info(kind: str, *, namespaced: bool = True, subresources: tuple[str, ...] = ()) -> Any:
    return kmock.ResourceInfo(
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=set(NAMESPACED_VERBS),
        subresources=set(subresources),
    )


# What a small cluster serves (for discovery), without the Prometheus Operator.
CLUSTER_RESOURCES: Final[dict[str, Any]] = {
    f"{contract.API_VERSION}/{contract.PLURAL}": kmock.ResourceInfo(
        kind=contract.KIND,
        singular=contract.SINGULAR,
        namespaced=True,
        verbs=set(NAMESPACED_VERBS),
        shortnames={contract.SHORT_NAME},
        subresources={"status", "scale"},
    ),
    "v1/configmaps": resource_info("ConfigMap"),
    "v1/services": resource_info("Service", subresources=("status",)),
    "v1/pods": resource_info("Pod", subresources=("status",)),
    "v1/events": resource_info("Event"),
    "v1/namespaces": resource_info("Namespace", namespaced=False, subresources=("status",)),
    "apps/v1/deployments": resource_info("Deployment", subresources=("status", "scale")),
    "policy/v1/poddisruptionbudgets": resource_info(
        "PodDisruptionBudget", subresources=("status",)
    ),
    "networking.k8s.io/v1/networkpolicies": resource_info("NetworkPolicy"),
    "batch/v1/jobs": resource_info("Job", subresources=("status",)),
    "v1/persistentvolumeclaims": resource_info("PersistentVolumeClaim", subresources=("status",)),
    "coordination.k8s.io/v1/leases": resource_info("Lease"),  # the gateway's demand Leases
    "apiextensions.k8s.io/v1/customresourcedefinitions": resource_info(
        "CustomResourceDefinition", namespaced=False, subresources=("status",)
    ),
}
SERVICE_MONITORS: Final = "monitoring.coreos.com/v1/servicemonitors"


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _scale_of(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale the API server answers for a workload's scale subresource.

    A Deployment's selector is its spec's; a custom resource's is the string at its
    CRD's `labelSelectorPath` (the LLMDeployment's `.status.selector`).
    """
    meta = workload.get("metadata", {})
    spec, status = workload.get("spec", {}), workload.get("status") or {}
    match = spec.get("selector", {}).get("matchLabels")
    selector = (
        ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        if match is not None
        else str(status.get("selector", ""))
    )
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": selector},
    }


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    _version: int = attrs.field(default=0, init=False)
    # Seconds to hold list responses of a resource (by plural): a slow, busy API server.
    list_delays: dict[str, float] = attrs.field(factory=dict, init=False)
    # Requests to answer with 500 before serving them, by (method, path): a flaky API server.
    failures: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _stored(self, request: Any) -> Any | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    def _has_status_subresource(self, resource: Any) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    async def _handle(self, request: Any) -> Any:
        key = (request.method.value, request.url.path)
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            raise kmock.KubernetesError(status=500, reason="InternalError", message="injected")
        if request.action == kmock.action.LIST and request.resource is not None:
            await asyncio.sleep(self.list_delays.get(request.resource.plural, 0))
        if request.resource is not None and isinstance(request.data, dict):
            if self._creates_by_apply(request):
                return await self._create_by_apply(request)
            self._as_api_server_would(request)
        response = await super()._handle(request)
        if request.action == kmock.action.DELETE and request.name is not None:
            await self._collect_garbage()
        if request.subresource == "scale" and request.name is not None:
            stored = self._stored(request)
            if stored is not None:
                return aiohttp.web.json_response(_scale_of(stored.raw))
        return response

    def _creates_by_apply(self, request: Any) -> bool:
        return bool(
            request.method == kmock.method.PATCH
            and request.name is not None
            and request.headers.get("Content-Type") == APPLY
            and self._stored(request) is None
        )

    async def _create_by_apply(self, request: Any) -> Any:
        """Server-side apply creates what does not exist yet."""
        data: dict[str, Any] = request.data
        self._stamp_new(request.resource, data)
        async with self._lock:
            self.objects[request.resource, request.namespace, request.name] = data
            await self._buses[request.resource].put({"type": "ADDED", "object": data})
        return aiohttp.web.json_response(data, status=201)

    def _stamp_new(self, resource: Any, data: dict[str, Any]) -> None:
        meta = data.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        if "name" not in meta and "generateName" in meta:
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_version()
        if self._has_status_subresource(resource):
            data.pop("status", None)

    def _as_api_server_would(self, request: Any) -> None:
        data: dict[str, Any] = request.data
        meta = data.setdefault("metadata", {})
        if request.method == kmock.method.PATCH and request.name is not None:
            stored = self._stored(request)
            if stored is not None:
                precondition = meta.pop("resourceVersion", None)
                current = stored.get("metadata", {}).get("resourceVersion")
                if precondition is not None and precondition != current:
                    raise kmock.KubernetesError(
                        status=409,
                        reason="Conflict",
                        message="the object has been modified; please apply your changes "
                        "to the latest version and try again",
                    )
                if request.subresource == "status":
                    for key in [k for k in data if k not in ("status", "metadata")]:
                        del data[key]
                    meta.clear()
                elif self._has_status_subresource(request.resource):
                    data.pop("status", None)
                spec_before = stored.get("spec")
                if "spec" in data and _merge(spec_before, data["spec"]) != spec_before:
                    meta["generation"] = int(stored["metadata"].get("generation", 1)) + 1
                meta["resourceVersion"] = self._next_version()
        elif request.action == kmock.action.CREATE:
            self._stamp_new(request.resource, data)

    async def _collect_garbage(self) -> None:
        """Delete (and announce) every object whose owners are all gone."""
        while True:
            async with self._lock:
                alive = {
                    obj.get("metadata", {}).get("uid")
                    for _, obj in self.objects.items()
                    if not obj.deleted
                }
                orphans = [
                    (key, obj)
                    for key, obj in self.objects.items()
                    if not obj.deleted
                    and (refs := obj.get("metadata", {}).get("ownerReferences"))
                    and not any(ref.get("uid") in alive for ref in refs)
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return

    def _selected(
        self, request: Any, selector: Selector
    ) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        """The live objects a list or watch of `request` covers, in the API server's order
        (etcd's keys: namespace, then name). Call with the lock held."""
        found = [
            ((namespace or "", name), obj.raw)
            for (resource, namespace, name), obj in self.objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
            and selector.matches(obj.raw.get("metadata", {}).get("labels"))
        ]
        return sorted(found, key=lambda item: item[0])

    def _list_kind(self, request: Any) -> dict[str, str]:
        info = self.resources.get(request.resource) if request.resource else None
        kind = getattr(info, "kind", None)
        if not kind:
            return {}
        resource = request.resource
        api_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        return {"apiVersion": api_version, "kind": f"{kind}List"}

    async def _serve_list(self, request: Any) -> Any:
        """A list as the API server serves it: filtered by `labelSelector`, in pages of
        `limit` items with a `continue` token while more remain. The API server reads
        every page at the first page's resourceVersion; here a later page is read from
        the current state after the last key served, which a client cannot tell apart
        unless objects change between pages."""
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        selector = _selector_of(request)
        limit = _limit_of(request)
        after = _decode_continue(request.params.get("continue", ""))
        async with self._lock:
            found = [item for item in self._selected(request, selector) if item[0] > after]
            version = str(self._version)
        page = found[:limit] if limit else found
        metadata: dict[str, Any] = {"resourceVersion": version}
        if len(page) < len(found):
            metadata["continue"] = _encode_continue(version, page[-1][0])
            if not selector.requirements:  # the API server cannot count selected objects
                metadata["remainingItemCount"] = len(found) - len(page)
        return {**self._list_kind(request), "metadata": metadata, "items": [r for _, r in page]}

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """A watch filtered by `labelSelector`: the objects that match now (as ADDED), then
        changes. As on the API server, an object that starts to match arrives as ADDED
        and one that stops matching (a label removed) as DELETED. The API server starts
        a watch at the `resourceVersion` asked for; this one, like KMock's, always starts
        with the objects as they are, which a list-then-watch client reads as no change."""
        selector = _selector_of(request)
        yield b""  # send the headers: the stream is open even while nothing happens
        bus = self._buses[request.resource]
        async with self._lock:  # no event can slip between the snapshot and the mark
            mark = await bus.mark()
            current = self._selected(request, selector)
        visible = {key for key, _ in current}
        try:
            for _, raw in current:
                yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=mark):
                seen = _watched(event, request, selector, visible)
                if seen is not None:
                    yield seen
        finally:
            await bus.unmark(mark)


def _watched(
    event: dict[str, Any], request: Any, selector: Selector, visible: set[tuple[str, str]]
) -> dict[str, Any] | None:
    """What a watcher of `request` is told about `event` (None: nothing); keeps `visible`,
    the objects this watcher was last told match, up to date."""
    obj = event.get("object", {})
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    if request.namespace is not None and namespace != request.namespace:
        return None
    if request.name is not None and meta.get("name") != request.name:
        return None
    key = (namespace or "", meta.get("name", ""))
    was = key in visible
    matches = event.get("type") != "DELETED" and selector.matches(meta.get("labels"))
    if matches:
        visible.add(key)
        return event if was else {"type": "ADDED", "object": obj}
    if was:
        visible.discard(key)
        return {"type": "DELETED", "object": obj}
    return None


def _bad_request(message: str) -> Exception:
    return kmock.KubernetesError(status=400, reason="BadRequest", message=message)


def _selector_of(request: Any) -> Selector:
    try:
        return parse_selector(request.params.get("labelSelector", ""))
    except SelectorError as err:
        raise _bad_request(str(err)) from err


def _limit_of(request: Any) -> int:
    text = request.params.get("limit", "0")
    try:
        return max(0, int(text))
    except ValueError:
        raise _bad_request(f"limit: invalid value {text!r}: not an integer") from None


def _encode_continue(version: str, last: tuple[str, str]) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": int(version), "start": "/".join(last)}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    """The key after which a continued list resumes; ("", "") for the first page."""
    if not token:
        return ("", "")
    try:
        start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
        namespace, _, name = str(start).partition("/")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _bad_request(f"continue key is not valid: {token!r}") from None
    return (namespace, name)


@dataclass(frozen=True)
class Read:
    """One list or watch request, as the emulator recorded it."""

    verb: str  # "list" or "watch"
    plural: str
    namespace: str | None  # None: all namespaces
    label_selector: str
    limit: int | None
    user_agent: str

    @property
    def selector(self) -> Selector:
        return parse_selector(self.label_selector)


def reads_of(requests: Iterable[Any]) -> list[Read]:
    """The list and watch requests among `requests` (of collections, not of one object)."""
    found = []
    for request in requests:
        if request.action not in (kmock.action.LIST, kmock.action.WATCH) or request.name:
            continue
        if request.resource is None or not request.resource.plural:  # discovery
            continue
        limit = request.params.get("limit")
        found.append(
            Read(
                verb="watch" if request.action == kmock.action.WATCH else "list",
                plural=request.resource.plural,
                namespace=request.namespace,
                label_selector=request.params.get("labelSelector", ""),
                limit=int(limit) if limit is not None else None,
                user_agent=request.headers.get("User-Agent", ""),
            )
        )
    return found


class EmulatorThread:
    """Runs a ClusterEmulator on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, resources: Mapping[str, Any] = CLUSTER_RESOURCES) -> None:
        self._resources = dict(resources)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self.url = ""
        self.emulator: ClusterEmulator

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            for resource, info in self._resources.items():
                emulator.resources[resource] = info
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}
            ],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def requests(self) -> list[Any]:
        """Every request served so far (tests read them for the RBAC check)."""
        return list(self.emulator)

    def reads(self) -> list[Read]:
        """Every list and watch served so far, with the selector and page size asked for."""
        return reads_of(self.requests())

    def preload(self, resource: str, objects: Iterable[dict[str, Any]]) -> int:
        """Store `objects` of `resource` (e.g. "v1/pods") as if created before anyone looked:
        no requests recorded, no watch events. For benchmarks that need a crowded cluster."""

        async def store() -> int:
            count = 0
            async with self.emulator._lock:
                for data in objects:
                    self.emulator._stamp_new(kmock.resource(resource), data)
                    meta = data["metadata"]
                    self.emulator.objects[resource, meta.get("namespace"), meta["name"]] = data
                    count += 1
            return count

        return asyncio.run_coroutine_threadsafe(store(), self._loop).result()


class Kubectl:
    """The test's own API client (it plays the user and the cluster's controllers)."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        self._http = httpx.Client(
            base_url=url, headers={"User-Agent": HARNESS_AGENT}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
        prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        base = f"{prefix}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def create(self, plural: str, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = self.path(manifest["apiVersion"], plural, meta.get("namespace", "default"))
        return self._ok(self._http.post(path, json=manifest))

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self._ok(self._http.get(self.path(api_version, plural, namespace, name)))

    def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = self.path(api_version, plural, namespace, name)
        if subresource:
            path = f"{path}/{subresource}"
        headers = {"Content-Type": "application/merge-patch+json"}
        return self._ok(self._http.patch(path, json=body, headers=headers))

    def delete(self, api_version: str, plural: str, namespace: str, name: str) -> None:
        self._ok(self._http.delete(self.path(api_version, plural, namespace, name)))

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise AssertionError(f"{response.request.method} {response.url}: {response.text}")
        data: dict[str, Any] = response.json()
        return data
