"""The model's Service: its in-cluster endpoint, and what the gateway discovers it by.

The annotations are the gateway's contract (modelplane.api.contract): the
served model name, this track's share of traffic, the revision it serves,
the balancing strategy, the names of the model's LoRA adapters, and how many
requests one replica runs at once (when `--max-num-seqs` tells the engine).
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from modelplane.api.extra_args import flag_value
from modelplane.api.llmdeployment import LLMDeploymentSpec, routing_strategy, served_model_name
from modelplane.operator.builders.naming import child_labels, pod_selector, service_name


def _adapters_annotation(spec: LLMDeploymentSpec) -> dict[str, str]:
    """The adapters' names, which the gateway routes to this model's replicas."""
    if not spec.adapters:
        return {}
    return {contract.ANNOTATION_ADAPTERS: ",".join(a.name for a in spec.adapters)}


def _concurrency_annotation(spec: LLMDeploymentSpec) -> dict[str, str]:
    """What one replica runs at once when the engine is told (`--max-num-seqs` in
    `engine.extraArgs`): where the gateway starts queueing by tenant weight."""
    seqs = flag_value(spec.engine.extra_args, "--max-num-seqs")
    if seqs is None or not seqs.isdecimal() or not 1 <= int(seqs) <= 4096:
        return {}
    return {contract.ANNOTATION_REPLICA_CONCURRENCY: str(int(seqs))}


def build_service(
    name: str,
    namespace: str,
    spec: LLMDeploymentSpec,
    *,
    track: str = contract.TRACK_STABLE,
    traffic_weight: int = 100,
    revision: str | None = None,
) -> dict[str, Any]:
    """`revision`: what the track's pods serve, when not the spec's (a stable track pinned
    while a canary runs)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name, track),
            "namespace": namespace,
            "labels": child_labels(name, track),
            "annotations": {
                contract.ANNOTATION_SERVED_MODEL: served_model_name(name, spec),
                contract.ANNOTATION_TRAFFIC_WEIGHT: str(traffic_weight),
                contract.ANNOTATION_REVISION: revision or spec.model.revision,
                contract.ANNOTATION_ROUTING: routing_strategy(spec),
                **_adapters_annotation(spec),
                **_concurrency_annotation(spec),
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector(name, track),
            "ports": [
                {
                    "name": contract.SERVER_PORT_NAME,
                    "port": contract.SERVER_PORT,
                    "targetPort": contract.SERVER_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
