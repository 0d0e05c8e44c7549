"""How many replicas the model server Deployment runs: `spec.replicas`, one writer each.

`LLMDeployment.spec.replicas` is the one replica count, exposed through the
resource's `scale` subresource. Who writes it depends on the spec: with
`autoscaling.enabled` the operator's autoscaler does (nobody else should);
with it off, the user, `kubectl scale llmd`, an HPA or a KEDA ScaledObject
does. The reconciler alone writes the Deployment and sets its replicas from
`spec.replicas`, clamped to the autoscaling bounds while autoscaling is on
(so a hand edit outside them cannot run more than `maxReplicas`). A new
autoscaled resource starts at `spec.replicas` (1 unless set; 0 starts at
zero) and the autoscaler moves it from there.
"""

from __future__ import annotations

from modelplane.api.llmdeployment import LLMDeploymentSpec


def deployment_replicas(spec: LLMDeploymentSpec) -> int:
    """Replicas the stable Deployment runs for this spec."""
    if spec.autoscaling.enabled:
        bounds = spec.autoscaling
        return min(max(spec.replicas, bounds.min_replicas), bounds.max_replicas)
    return spec.replicas
