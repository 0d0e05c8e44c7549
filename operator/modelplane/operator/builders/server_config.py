"""The ConfigMap holding the server's settings file (`modelplane serve --config`).

The serving settings that are not engine flags (the model location, the
served name, drain timeout, log format) live in a file, so `kubectl get
configmap` shows how a replica was started. Its hash is part of the pod
template's hash: changing it rolls the replicas.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec, served_model_name
from modelplane.operator.builders.model_source import ModelLocation
from modelplane.operator.builders.naming import child_labels, config_map_name
from modelplane.operator.config import OperatorConfig

CONFIG_DIR: Final = "/etc/modelplane/config"
CONFIG_FILE: Final = "serve.yaml"


def serve_settings(
    name: str, spec: LLMDeploymentSpec, config: OperatorConfig, location: ModelLocation
) -> dict[str, Any]:
    """`modelplane serve --config` contents, in the server's camelCase option names."""
    return {
        "model": location.model,
        "servedModelName": served_model_name(name, spec),
        "drainTimeout": config.drain_timeout_seconds,
        "logFormat": "json",
    }


def build_config_map(
    name: str,
    namespace: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    location: ModelLocation,
    *,
    track: str = contract.TRACK_STABLE,
) -> dict[str, Any]:
    settings = serve_settings(name, spec, config, location)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name, track),
            "namespace": namespace,
            "labels": child_labels(name, track),
        },
        "data": {CONFIG_FILE: yaml.safe_dump(settings, sort_keys=True)},
    }
