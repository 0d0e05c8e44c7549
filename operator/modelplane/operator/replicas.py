"""How many replicas the model server Deployment should have: the autoscaler seam.

While `autoscaling.enabled`, the autoscaler owns the replica count: the
operator creates the Deployment at `minReplicas` (0 allowed: scale to zero)
and never overwrites the count afterwards; the autoscaler (`autoscaling`)
changes it through the Deployment's scale subresource. With autoscaling
disabled the count follows `spec.replicas`.
"""

from __future__ import annotations

from modelplane.api.llmdeployment import LLMDeploymentSpec


def deployment_replicas(spec: LLMDeploymentSpec, observed_replicas: int | None) -> int:
    """Replicas to write; `observed_replicas` is the Deployment's current spec (None: absent)."""
    if spec.autoscaling.enabled:
        if observed_replicas is None:
            return spec.autoscaling.min_replicas
        return observed_replicas
    return spec.replicas


def replicas_owned_by_operator(spec: LLMDeploymentSpec) -> bool:
    """Whether a reconcile may change an existing Deployment's replicas."""
    return not spec.autoscaling.enabled
