"""Compact, typed views of the children as the API server reports them.

The operator keeps these (not whole objects) in its in-memory indexes: the
name, the spec hash it last applied, and for the Deployment the replica
counts and conditions that status and rollout decisions read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.api import contract


@dataclass(frozen=True)
class DeploymentCondition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ObservedDeployment:
    generation: int | None
    observed_generation: int | None
    spec_replicas: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    template_hash: str | None
    revision: str | None
    conditions: tuple[DeploymentCondition, ...] = ()

    def condition(self, type_: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class ObservedChild:
    kind: str
    name: str
    spec_hash: str | None
    resource_version: str | None = None
    deployment: ObservedDeployment | None = field(default=None, compare=False)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def observe_deployment(body: Mapping[str, Any]) -> ObservedDeployment:
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    status = body.get("status") or {}
    template_meta = spec.get("template", {}).get("metadata", {})
    generation = meta.get("generation")
    observed_generation = status.get("observedGeneration")
    return ObservedDeployment(
        generation=int(generation) if generation is not None else None,
        observed_generation=int(observed_generation) if observed_generation is not None else None,
        spec_replicas=_int(spec.get("replicas", 1)),
        replicas=_int(status.get("replicas")),
        ready_replicas=_int(status.get("readyReplicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        template_hash=(template_meta.get("annotations") or {}).get(
            contract.ANNOTATION_TEMPLATE_HASH
        ),
        revision=(meta.get("annotations") or {}).get(contract.ANNOTATION_REVISION),
        conditions=tuple(
            DeploymentCondition(
                type=str(c.get("type", "")),
                status=str(c.get("status", "")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
            )
            for c in status.get("conditions") or []
        ),
    )


def observe_child(kind: str, body: Mapping[str, Any]) -> ObservedChild:
    """`kind` is passed in: items of a list response carry no `kind` of their own."""
    meta = body.get("metadata", {})
    return ObservedChild(
        kind=kind,
        name=str(meta.get("name", "")),
        spec_hash=(meta.get("annotations") or {}).get(contract.ANNOTATION_SPEC_HASH),
        resource_version=meta.get("resourceVersion"),
        deployment=observe_deployment(body) if kind == "Deployment" else None,
    )
