"""PodDisruptionBudget and NetworkPolicy of a model's replicas.

The budget (one per track: a canary's Deployment has its own, removed with
it) lets node drains take one replica at a time but never blocks them forever
(a single-replica model is still drainable), and lets pods that are not ready
(loading, crashing) be evicted at any time.

The network policy admits the model server port only from Modelplane's own
pods, the operator (it reads each replica's /metrics: without it the
autoscaler never scales and a canary never passes a step) and the gateway,
both by their labels and only in the control-plane namespace (the chart's
release namespace), since anyone who can create a pod elsewhere can copy
labels; then from the peers the config lists (by default the model's own
namespace and the monitoring namespace, where Prometheus scrapes from).
The admin port (LoRA adapters' load and unload) admits the operator alone:
not the gateway, not the configured peers.
With `networkPolicy.egress.enabled` the same policy also limits where the
model server may connect (`egress.allowTo`).
"""

from __future__ import annotations

from typing import Any, Final

from modelplane.api import contract
from modelplane.operator.builders.naming import (
    child_labels,
    model_selector,
    pod_selector,
    service_name,
)
from modelplane.operator.config import NAMESPACE_NAME_LABEL, NetworkPolicySettings, OperatorConfig

CONTROL_PLANE_COMPONENTS: Final = (contract.COMPONENT_OPERATOR, contract.COMPONENT_GATEWAY)


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


def _component_peer(namespace: str, component: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {
            "matchLabels": {
                contract.LABEL_COMPONENT: component,
                contract.LABEL_PART_OF: contract.PART_OF,
            }
        },
    }


def control_plane_peers(namespace: str) -> list[dict[str, Any]]:
    """The operator's and the gateway's pods, in `namespace` only."""
    return [_component_peer(namespace, component) for component in CONTROL_PLANE_COMPONENTS]


def network_policy_peers(settings: NetworkPolicySettings) -> list[dict[str, Any]]:
    """Everyone admitted to the model server port: the control plane, then the config's list."""
    return control_plane_peers(settings.control_plane_namespace) + [
        peer.manifest() for peer in settings.allow_from
    ]


def build_network_policy(name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    egress = config.network_policy.egress
    policy: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": child_labels(name)},
        "spec": {
            "podSelector": {"matchLabels": model_selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": network_policy_peers(config.network_policy),
                    "ports": [{"protocol": "TCP", "port": contract.SERVER_PORT}],
                },
                {
                    # The admin API (adapters' load and unload): the operator alone.
                    "from": [
                        _component_peer(
                            config.network_policy.control_plane_namespace,
                            contract.COMPONENT_OPERATOR,
                        )
                    ],
                    "ports": [{"protocol": "TCP", "port": contract.SERVER_ADMIN_PORT}],
                },
            ],
        },
    }
    if egress.enabled:
        policy["spec"]["policyTypes"].append("Egress")
        policy["spec"]["egress"] = [rule.manifest() for rule in egress.allow_to]
    return policy
