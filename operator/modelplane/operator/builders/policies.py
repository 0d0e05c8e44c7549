"""PodDisruptionBudget and NetworkPolicy of a model's replicas.

The budget (one per track: a canary's Deployment has its own, removed with
it) lets node drains take one replica at a time but never blocks them forever
(a single-replica model is still drainable), and lets pods that are not ready
(loading, crashing) be evicted at any time. The network policy
admits the model server port only from the peers the operator config lists
(by default: the same namespace, Modelplane's gateway anywhere, and the
monitoring namespace).
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from modelplane.operator.builders.naming import (
    child_labels,
    model_selector,
    pod_selector,
    service_name,
)
from modelplane.operator.config import OperatorConfig


def build_pod_disruption_budget(
    name: str, namespace: str, *, track: str = contract.TRACK_STABLE
) -> dict[str, Any]:
    """One budget per track: each Deployment's pods are drained one at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": service_name(name, track),
            "namespace": namespace,
            "labels": child_labels(name, track),
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": pod_selector(name, track)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_network_policy(name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": child_labels(name)},
        "spec": {
            "podSelector": {"matchLabels": model_selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": list(config.network_policy.allow_from),
                    "ports": [{"protocol": "TCP", "port": contract.SERVER_PORT}],
                }
            ],
        },
    }
