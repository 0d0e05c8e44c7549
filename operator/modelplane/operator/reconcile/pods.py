"""Compact views of a model's pods, as the autoscaler and the canary analysis need them.

The operator keeps these in a watch-fed index (no list call per tick): the
pod's name and track, whether it is ready (serving: capacity) or still
loading, whether it is going away, and where its `/metrics` answer. The
metrics port is the container port named `http` (the one the Service and
the chart's PodMonitor use), falling back to the server's port when a pod
has no such name, so the operator scrapes exactly what Prometheus would.
The admin port (LoRA adapters) is the container port named `admin`; a pod
without one serves no adapters. A ready pod's start-up is the time from its
`PodScheduled` condition's transition to its `Ready` one (whole seconds, as
the kubelet writes them): image pull, container start, model load, warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.api import contract
from modelplane.operator.timestamps import epoch_of


@dataclass(frozen=True)
class ObservedPod:
    name: str
    track: str
    ip: str | None  # status.podIP; None until the pod is scheduled and started
    port: int
    ready: bool  # the Ready condition is True: it passes /ready and takes traffic
    terminating: bool  # deletionTimestamp set: going away, neither capacity nor loading
    template_hash: str | None = None  # which pod template (revision and settings) it runs
    admin_port: int | None = None  # the admin API's (LoRA adapters), when the pod has one
    ready_at: float | None = None  # epoch s of the Ready condition's turn to True, when ready
    startup_seconds: float | None = None  # PodScheduled -> Ready, when both are known

    @property
    def admin_url(self) -> str | None:
        """Base URL of the pod's admin API, e.g. http://10.1.2.3:8001."""
        if not self.ip or self.admin_port is None:
            return None
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.admin_port}"

    @property
    def metrics_url(self) -> str | None:
        if not self.ip:
            return None
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"

    @property
    def serving(self) -> bool:
        """Ready with an address: scrape it, count it as capacity."""
        return self.ready and not self.terminating and self.ip is not None


def _named_port(spec: Mapping[str, Any], name: str) -> int | None:
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def _http_port(spec: Mapping[str, Any]) -> int:
    return _named_port(spec, contract.SERVER_PORT_NAME) or contract.SERVER_PORT


def _transition(conditions: list[Any], type_: str) -> float | None:
    """When the condition of `type_` last turned True (epoch s); None unless it is True."""
    for c in conditions:
        if isinstance(c, Mapping) and c.get("type") == type_ and c.get("status") == "True":
            return epoch_of(c.get("lastTransitionTime"))
    return None


def scheduled_to_ready(conditions: list[Any]) -> float | None:
    """Seconds from the pod's scheduling to its readiness; None while it is not ready."""
    scheduled, ready = _transition(conditions, "PodScheduled"), _transition(conditions, "Ready")
    if scheduled is None or ready is None or ready < scheduled:
        return None
    return ready - scheduled


def observe_pod(body: Mapping[str, Any]) -> ObservedPod:
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ObservedPod(
        name=str(meta.get("name", "")),
        track=str((meta.get("labels") or {}).get(contract.LABEL_TRACK, contract.TRACK_STABLE)),
        ip=status.get("podIP") or None,
        port=_http_port(body.get("spec") or {}),
        ready=ready,
        terminating=bool(meta.get("deletionTimestamp")),
        template_hash=(meta.get("annotations") or {}).get(contract.ANNOTATION_TEMPLATE_HASH),
        admin_port=_named_port(body.get("spec") or {}, contract.SERVER_ADMIN_PORT_NAME),
        ready_at=_transition(conditions, "Ready"),
        startup_seconds=scheduled_to_ready(conditions),
    )
