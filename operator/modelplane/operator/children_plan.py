"""Plan, then execute: which children to apply or delete to reach the desired state.

Pure: desired manifests and the observed children in, a small plan out.
A child is applied when it is missing, when its spec-hash annotation differs
from the desired one, or (Deployment only, while the operator owns the
count) when its replicas differ; children the desired state no longer has
(a ServiceMonitor switched off, a canary track after its rollout) are
deleted, and children to keep (a stable track pinned while a canary runs)
are left as they run. An unchanged state gives an
empty plan: nothing is written.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api import contract
from modelplane.operator.observed import ObservedChild

ChildKey = tuple[str, str]  # (kind, name)
DELETE_ORDER: Final = {"Service": 0, "Deployment": 1}


@dataclass(frozen=True)
class ChildrenPlan:
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildKey] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.apply and not self.delete


def child_key(manifest: Mapping[str, Any]) -> ChildKey:
    return str(manifest["kind"]), str(manifest["metadata"]["name"])


def _hash_of(manifest: Mapping[str, Any]) -> str | None:
    value = manifest["metadata"].get("annotations", {}).get(contract.ANNOTATION_SPEC_HASH)
    return str(value) if value is not None else None


def plan_children(
    desired: list[dict[str, Any]],
    observed: Mapping[ChildKey, ObservedChild],
    *,
    replicas_owned: bool,
    keep: Collection[ChildKey] = (),
    always_rescale: Collection[ChildKey] = (),
) -> ChildrenPlan:
    """`keep`: children left exactly as they run (a stable track pinned during a canary);
    `always_rescale`: Deployments whose replicas the operator owns even while autoscaling
    owns the others' (the canary's)."""
    plan = ChildrenPlan()
    for manifest in desired:
        key = child_key(manifest)
        if key in keep:
            continue
        seen = observed.get(key)
        stale = seen is None or seen.spec_hash != _hash_of(manifest)
        rescale = (
            (replicas_owned or key in always_rescale)
            and seen is not None
            and seen.deployment is not None
            and seen.deployment.spec_replicas != manifest["spec"]["replicas"]
        )
        if stale or rescale:
            plan.apply.append(manifest)
    wanted = {child_key(m) for m in desired} | set(keep)
    # Traffic first: a track's Service goes before its pods, its pods before their settings.
    gone = [key for key in observed if key not in wanted]
    plan.delete.extend(sorted(gone, key=lambda key: (DELETE_ORDER.get(key[0], 2), key)))
    return plan
