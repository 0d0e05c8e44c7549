"""Plan, then execute: which children to apply or delete to reach the desired state.

Pure: desired manifests and the observed children in, a small plan out.
A child is applied when it is missing, when its spec-hash annotation differs
from the desired one, when a field the operator sets was changed by someone
else (a `kubectl edit` that kept the annotation; reconcile/drift.py), or
(Deployment only) when its replicas differ;
children the desired state no longer has (a ServiceMonitor switched off, a
canary track after its rollout) are deleted, and children to keep (a stable
track pinned while a canary runs) keep the template they run, only their
replica count follows the desired one (through the scale subresource). An
unchanged state gives an empty plan: nothing is written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api import contract
from modelplane.operator.reconcile.drift import CHECKED_KINDS, drifted_fields, owned_digest
from modelplane.operator.reconcile.observed import ObservedChild

ChildKey = tuple[str, str]  # (kind, name)
DELETE_ORDER: Final = {"Service": 0, "Deployment": 1}


@dataclass(frozen=True)
class ChildrenPlan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildKey] = field(default_factory=list)
    rescale: dict[ChildKey, int] = field(default_factory=dict)  # kept Deployments' new counts
    reverted: dict[ChildKey, list[str]] = field(default_factory=dict)  # edited fields, reset

    @property
    def empty(self) -> bool:
        return not self.apply and not self.delete and not self.rescale


def child_key(manifest: Mapping[str, Any]) -> ChildKey:
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


def _hash_of(manifest: Mapping[str, Any]) -> str | None:
    value = manifest["metadata"].get("annotations", {}).get(contract.ANNOTATION_SPEC_HASH)
    return str(value) if value is not None else None


def _edited_fields(
    manifest: Mapping[str, Any], seen: ObservedChild, tolerated: str | None
) -> list[str]:
    if seen.content is None or seen.kind not in CHECKED_KINDS:
        return []
    edited = drifted_fields(manifest, seen.content)
    if edited and tolerated is not None and tolerated == owned_digest(manifest, seen.content):
        return []
    return edited


def plan_children(
    desired: list[dict[str, Any]],
    observed: Mapping[ChildKey, ObservedChild],
    *,
    keep: Collection[ChildKey] = (),
    tolerated: Mapping[ChildKey, str] | None = None,
) -> ChildrenPlan:
    """`keep`: children whose template stays as it runs (a stable track pinned during a
    canary); a kept Deployment is still rescaled to the desired count. `tolerated`: per
    child, the `owned_digest` of what the API server returned for the operator's last
    write of it, when that differed from the manifest (a mutating webhook's doing): the
    same difference again is not a manual edit."""
    plan = ChildrenPlan()
    for manifest in desired:
        key = child_key(manifest)
        seen = observed.get(key)
        rescale = (
            seen is not None
            and seen.deployment is not None
            and seen.deployment.spec_replicas != manifest["spec"]["replicas"]
        )
        if key in keep:
            if rescale:
                plan.rescale[key] = int(manifest["spec"]["replicas"])
            continue
        stale = seen is None or seen.spec_hash != _hash_of(manifest)
        if not stale and seen is not None:
            edited = _edited_fields(manifest, seen, (tolerated or {}).get(key))
            if edited:
                plan.reverted[key] = edited
                stale = True
        if stale or rescale:
            plan.apply.append(manifest)
    wanted = {child_key(m) for m in desired} | set(keep)
    # Traffic first: a track's Service goes before its pods, its pods before their settings.
    gone = [key for key in observed if key not in wanted]
    plan.delete.extend(sorted(gone, key=lambda key: (DELETE_ORDER.get(key[0], 2), key)))
    return plan
