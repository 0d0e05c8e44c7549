"""The operator's Kubernetes API client: the one place that writes to the cluster.

Built on the official client's configuration and transport (in-cluster service
account or kubeconfig, token refresh, TLS), with plain JSON in and out so the
builders' dicts go through untouched. Children are written with server-side
apply (field manager `modelplane-operator`, forced): one call creates or
updates, and fields the operator stops setting are removed, which a merge
patch would leave behind (e.g. a GPU limit after a switch to CPU). Status is
a JSON merge patch of the changed fields only; so are the scale writes (the
autoscaler's of the LLMDeployment's `spec.replicas`, field manager
`modelplane-autoscaler`; the reconciler's of a stable Deployment pinned
during a canary) and the autoscaler's state annotation. Calls are blocking; the
reconciler runs them in worker threads.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from modelplane.api import contract
from modelplane.operator.kube.resources import EVENTS, LLMDEPLOYMENTS, ResourceType

FIELD_MANAGER: Final = contract.MANAGED_BY
USER_AGENT: Final = f"{contract.MANAGED_BY}/0.1.0"
APPLY: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
EVENT_MESSAGE_LIMIT: Final = 1024
# (connect, read) seconds for every call: an API server that accepts a connection and then
# says nothing must not hold a reconcile, the autoscaler or a status write for ever. The
# slowest call the operator makes (a server-side apply of a Deployment) takes well under 1 s.
REQUEST_TIMEOUT: Final = (5.0, 30.0)


def build_event(
    about: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event about the object `about` (what `kubectl describe` lists)."""
    meta = about["metadata"]
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    seconds = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": about.get("apiVersion", contract.API_VERSION),
            "kind": about.get("kind", contract.KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "action": reason,
        "message": message,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "count": 1,
    }


def load_client_configuration() -> Any:
    """In a pod: its service account; elsewhere: the current context of $KUBECONFIG.

    Both the operator's client and kopf's login use this, so they always
    talk to the same cluster as the same identity.
    """
    import kubernetes

    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException:
        # Read $KUBECONFIG now: the library's default was fixed when it was imported.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def bearer_credentials(configuration: Any) -> tuple[str | None, str | None]:
    """(scheme, token) of the configuration's Authorization header, if it has one."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    if not header:
        return None, None
    scheme, _, token = header.partition(" ")
    return (scheme, token) if token else (None, scheme)


def apply_api_timeouts(settings: Any) -> None:
    """The same bounds on kopf's own calls (kopf.OperatorSettings): its patches and
    events, and the connection of its watches (their length is the watch timeout)."""
    connect, read = REQUEST_TIMEOUT
    settings.networking.connect_timeout = connect
    settings.networking.request_timeout = read
    settings.watching.connect_timeout = connect


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeApi:
    def __init__(self, api_client: Any, *, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
        self._client = api_client
        self._timeout = timeout

    @classmethod
    def from_environment(cls) -> KubeApi:
        import kubernetes

        client = kubernetes.client.ApiClient(load_client_configuration())
        client.user_agent = USER_AGENT
        return cls(client)

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        method, url, headers, body, _ = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self._timeout
            )
        except Exception as err:  # urllib3's timeouts and connection errors
            if isinstance(err, KubeError):
                raise
            raise KubeError(0, f"{method} {path}: {err.__class__.__name__}: {err}") from err
        data = response.read()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = data.decode(errors="replace")[:200]
            raise KubeError(response.status, message or response.reason or "")
        return json.loads(data) if data else {}

    def apply(self, rtype: ResourceType, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self.request(
            "PATCH",
            rtype.object_path(meta["namespace"], meta["name"]),
            body=manifest,
            content_type=APPLY,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", rtype.object_path(namespace, name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def create_if_absent(self, rtype: ResourceType, manifest: dict[str, Any]) -> bool:
        """Create the object unless one of that name exists (left as it is); True if created."""
        try:
            self.request(
                "POST",
                rtype.collection_path(manifest["metadata"]["namespace"]),
                body=manifest,
                query=[("fieldManager", FIELD_MANAGER)],
            )
        except KubeError as err:
            if err.status == 409:
                return False
            raise
        return True

    def delete(
        self, rtype: ResourceType, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        """Delete the object; with `uid`, only that very object (not one re-created since)."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", rtype.object_path(namespace, name), body=body)
        except KubeError as err:
            if err.status != 404:  # already gone is what we wanted
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            LLMDEPLOYMENTS.object_path(namespace, name, "status"),
            body={"status": status},
            content_type=MERGE_PATCH,
        )

    def scale(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        replicas: int,
        *,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Set replicas through the scale subresource; returns the Scale. `field_manager`
        names the writer in the object's managedFields (what GitOps tools are told)."""
        return self.request(
            "PATCH",
            rtype.object_path(namespace, name, "scale"),
            body={"spec": {"replicas": replicas}},
            content_type=MERGE_PATCH,
            query=[("fieldManager", field_manager)],
        )

    def patch_annotations(
        self, rtype: ResourceType, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        """Set (or, with None, remove) annotations, leaving all others as they are."""
        return self.request(
            "PATCH",
            rtype.object_path(namespace, name),
            body={"metadata": {"annotations": annotations}},
            content_type=MERGE_PATCH,
        )

    def post_event(
        self, about: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> dict[str, Any]:
        event = build_event(about, type_, reason, message, datetime.now(UTC))
        return self.request(
            "POST", EVENTS.collection_path(event["metadata"]["namespace"]), body=event
        )

    def api_exists(self, api_version: str) -> bool:
        """Whether the cluster serves `api_version` (e.g. monitoring.coreos.com/v1)."""
        try:
            self.request("GET", f"/apis/{api_version}")
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True
