"""Which nodes a model server's pods may run on, from its accelerator profile.

The profile's label conditions become a required node affinity whose terms
are ORed, so one profile reaches nodes labelled by GPU feature discovery, by
GKE or by Karpenter alike; its nodeSelector (labels a node must all carry),
tolerations, RuntimeClass and PriorityClass are copied as they are. Only what
the profile sets is written, so a profile without them leaves the pod spec as
Kubernetes defaults it.
"""

from __future__ import annotations

from typing import Any

from modelplane.operator.config import AcceleratorProfile


def pod_placement(profile: AcceleratorProfile) -> dict[str, Any]:
    """The pod spec fields that place the pods: nodeSelector, affinity, tolerations, classes."""
    fields: dict[str, Any] = {}
    if profile.node_selector:
        fields["nodeSelector"] = dict(profile.node_selector)
    if profile.node_selector_terms:
        fields["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [t.manifest() for t in profile.node_selector_terms]
                }
            }
        }
    if profile.tolerations:
        fields["tolerations"] = [t.manifest() for t in profile.tolerations]
    if profile.runtime_class_name is not None:
        fields["runtimeClassName"] = profile.runtime_class_name
    if profile.priority_class_name is not None:
        fields["priorityClassName"] = profile.priority_class_name
    return fields
