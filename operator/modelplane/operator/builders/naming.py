"""Names and labels of an LLMDeployment's children, from the shared contract.

Every child carries Kubernetes' recommended `app.kubernetes.io/*` labels plus
Modelplane's own (`modelplane.io/llmdeployment`, `modelplane.io/track`); the
gateway, the chart's ServiceMonitors and the dashboards select by them.
"""

from __future__ import annotations

from typing import Final

from modelplane.api import contract

CONFIG_SUFFIX: Final = "-server-config"


def child_labels(name: str, track: str = contract.TRACK_STABLE) -> dict[str, str]:
    return {
        contract.LABEL_NAME: contract.PART_OF,
        contract.LABEL_INSTANCE: name,
        contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_LLMDEPLOYMENT: name,
        contract.LABEL_TRACK: track,
    }


def pod_selector(name: str, track: str = contract.TRACK_STABLE) -> dict[str, str]:
    """matchLabels of one track's pods (immutable on a Deployment, so never the revision)."""
    return {contract.LABEL_LLMDEPLOYMENT: name, contract.LABEL_TRACK: track}


def model_selector(name: str) -> dict[str, str]:
    """matchLabels of every object serving this model, on any track."""
    return {contract.LABEL_LLMDEPLOYMENT: name}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def service_name(name: str, track: str = contract.TRACK_STABLE) -> str:
    return name if track == contract.TRACK_STABLE else f"{name}-{track}"


def config_map_name(name: str, track: str = contract.TRACK_STABLE) -> str:
    """Each track mounts its own settings file: a canary must not change the stable's."""
    return f"{service_name(name, track)}{CONFIG_SUFFIX}"


def endpoint(name: str, namespace: str) -> str:
    """The model's OpenAI base URL inside the cluster."""
    return f"http://{service_name(name)}.{namespace}.svc:{contract.SERVER_PORT}/v1"
