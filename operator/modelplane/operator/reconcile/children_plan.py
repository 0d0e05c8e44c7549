"""Plan, then execute: which children to apply or delete to reach the desired state.

Pure: desired manifests and the observed children in, a small plan out.
A child is applied when it is missing, when its spec-hash annotation differs
from the desired one, or (Deployment only) when its replicas differ;
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
from modelplane.operator.reconcile.observed import ObservedChild

ChildKey = tuple[str, str]  # (kind, name)
DELETE_ORDER: Final = {"Service": 0, "Deployment": 1}


@dataclass(frozen=True)
class ChildrenPlan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildKey] = field(default_factory=list)
    rescale: dict[ChildKey, int] = field(default_factory=dict)  # kept Deployments' new counts

    @property
    def empty(self) -> bool:
        return not self.apply and not self.delete and not self.rescale


def child_key(manifest: Mapping[str, Any]) -> ChildKey:
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


def _hash_of(manifest: Mapping[str, Any]) -> str | None:
    value = manifest["metadata"].get("annotations", {}).get(contract.ANNOTATION_SPEC_HASH)
    return str(value) if value is not None else None


def plan_children(
    desired: list[dict[str, Any]],
    observed: Mapping[ChildKey, ObservedChild],
    *,
    keep: Collection[ChildKey] = (),
) -> ChildrenPlan:
    """`keep`: children whose template stays as it runs (a stable track pinned during a
    canary); a kept Deployment is still rescaled to the desired count."""
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
        if stale or rescale:
            plan.apply.append(manifest)
    wanted = {child_key(m) for m in desired} | set(keep)
    # Traffic first: a track's Service goes before its pods, its pods before their settings.
    gone = [key for key in observed if key not in wanted]
    plan.delete.extend(sorted(gone, key=lambda key: (DELETE_ORDER.get(key[0], 2), key)))
    return plan
