"""Can the replicas mount a pvc:// source's claim? Pure: the spec and the claim in, problems out.

A ReadWriteOnce claim attaches to one node at a time (ReadWriteOncePod to one
pod), so replicas placed on a second node would wait in ContainerCreating
for ever with a Multi-Attach error. Such a spec is refused before any pod
exists, saying what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from modelplane.api.llmdeployment import LLMDeploymentSpec

SINGLE_NODE_MODES: Final = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})


def most_replicas(spec: LLMDeploymentSpec) -> int:
    """The most replicas the spec may run (the autoscaler's bound when it is on)."""
    if spec.autoscaling.enabled:
        return max(spec.replicas, spec.autoscaling.max_replicas)
    return spec.replicas


def source_claim_problems(
    spec: LLMDeploymentSpec, claim_name: str, claim: Mapping[str, Any] | None
) -> list[str]:
    if claim is None:
        return [
            f"model.source {spec.model.source}: PersistentVolumeClaim {claim_name} does not "
            "exist in this namespace; create it (holding the weights) or fix the claim's name"
        ]
    modes = set((claim.get("spec") or {}).get("accessModes") or [])
    replicas = most_replicas(spec)
    if modes and modes <= SINGLE_NODE_MODES and replicas > 1:
        mode = " and ".join(sorted(modes))
        return [
            f"model.source {spec.model.source}: PersistentVolumeClaim {claim_name} is {mode}, "
            f"mountable on one node only, but up to {replicas} replicas may run; use a "
            "ReadOnlyMany or ReadWriteMany claim, or run one replica (replicas: 1, and "
            "autoscaling.maxReplicas: 1 if autoscaling is on)"
        ]
    return []
