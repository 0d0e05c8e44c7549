"""Plan, then execute: which children to apply or delete to reach the desired state.

Pure: desired manifests and the observed children in, a small plan out.
A child is applied when it is missing, when its spec-hash annotation differs
from the desired one, or (Deployment only, while the operator owns the
count) when its replicas differ; children the desired state no longer has
(a ServiceMonitor switched off) are deleted. An unchanged state gives an
empty plan: nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.api import contract
from modelplane.operator.observed import ObservedChild

ChildKey = tuple[str, str]  # (kind, name)


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
) -> ChildrenPlan:
    plan = ChildrenPlan()
    for manifest in desired:
        key = child_key(manifest)
        seen = observed.get(key)
        stale = seen is None or seen.spec_hash != _hash_of(manifest)
        rescale = (
            replicas_owned
            and seen is not None
            and seen.deployment is not None
            and seen.deployment.spec_replicas != manifest["spec"]["replicas"]
        )
        if stale or rescale:
            plan.apply.append(manifest)
    wanted = {child_key(m) for m in desired}
    plan.delete.extend(sorted(key for key in observed if key not in wanted))
    return plan
