"""Compact, typed views of the children as the API server reports them.

The operator keeps these in its in-memory indexes: the name, the spec hash
it last applied, for the Deployment the replica counts and conditions that
status and rollout decisions read, and the fields a person could edit (a
copy without status or server bookkeeping), so a manual edit that kept the
spec hash is still seen.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

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
    model_spec_hash: str | None = None  # of the LLMDeployment spec that made the template

    def condition(self, type_: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class ObservedJob:
    """A download Job's outcome: done, failed (and why), or still running."""

    succeeded: bool
    failed: bool
    message: str = ""


@dataclass(frozen=True)
class ObservedChild:
    kind: str
    name: str
    spec_hash: str | None
    resource_version: str | None = None
    deployment: ObservedDeployment | None = field(default=None, compare=False)
    # The fields a person or a controller could have edited (no status, no server
    # bookkeeping), to compare with what the operator wants (reconcile/drift.py).
    content: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    job: ObservedJob | None = field(default=None, compare=False)
    uid: str | None = field(default=None, compare=False)
    owner_uids: tuple[str, ...] = field(default=(), compare=False)  # its ownerReferences' UIDs


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
        model_spec_hash=(meta.get("annotations") or {}).get(contract.ANNOTATION_MODEL_SPEC_HASH),
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


def observe_job(body: Mapping[str, Any]) -> ObservedJob:
    conditions = (body.get("status") or {}).get("conditions") or []
    true = {str(c.get("type")): c for c in conditions if c.get("status") == "True"}
    failed = true.get("Failed")
    return ObservedJob(
        succeeded="Complete" in true,
        failed=failed is not None,
        message=str(failed.get("message") or failed.get("reason") or "") if failed else "",
    )


# The metadata the operator sets on a child; the rest is the API server's bookkeeping.
CONTENT_METADATA: Final = ("name", "namespace", "labels", "annotations", "ownerReferences")


def editable_content(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of `body` without status and without the server's metadata."""
    meta = body.get("metadata") or {}
    content = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("metadata", "status")}
    content["metadata"] = {k: copy.deepcopy(meta[k]) for k in CONTENT_METADATA if k in meta}
    return content


def observe_child(kind: str, body: Mapping[str, Any]) -> ObservedChild:
    """`kind` is passed in: items of a list response carry no `kind` of their own."""
    meta = body.get("metadata", {})
    return ObservedChild(
        kind=kind,
        name=str(meta.get("name", "")),
        spec_hash=(meta.get("annotations") or {}).get(contract.ANNOTATION_SPEC_HASH),
        resource_version=meta.get("resourceVersion"),
        deployment=observe_deployment(body) if kind == "Deployment" else None,
        content=editable_content(body),
        job=observe_job(body) if kind == "Job" else None,
        uid=meta.get("uid"),
        owner_uids=tuple(str(r.get("uid", "")) for r in meta.get("ownerReferences") or []),
    )
