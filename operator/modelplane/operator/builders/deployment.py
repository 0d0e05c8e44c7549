"""The Deployment running `modelplane serve` replicas of one model.

Probes follow the server's contract: `/ready` (weights loaded and a warm-up
served) gates start-up and traffic, with a start-up allowance from the
operator config because loads take minutes; `/health` is liveness. The pod
runs non-root with a read-only root filesystem, all capabilities dropped,
`/dev/shm` in memory (tensor parallelism and the engine's IPC need it), a
pre-stop sleep (endpoints drop a stopping pod before it gets SIGTERM) and a
termination grace covering that sleep and the server's drain. The pod
template's hash is an annotation, so a changed template is visible and
drives the rollout.
"""

from __future__ import annotations

from typing import Any, Final

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders.adapters import engine_settings, serves_lora
from modelplane.operator.builders.credentials import pod_identity
from modelplane.operator.builders.hashing import stable_hash
from modelplane.operator.builders.model_cache import CacheLayout, cache_layout
from modelplane.operator.builders.model_source import ModelLocation
from modelplane.operator.builders.naming import child_labels, config_map_name, pod_selector
from modelplane.operator.builders.placement import pod_placement
from modelplane.operator.builders.security import (
    container_security_context,
    pod_security_context,
)
from modelplane.operator.builders.server_config import CONFIG_DIR, CONFIG_FILE
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.fit import Placement

CONTAINER: Final = "server"
KEYS_DIR: Final = "/etc/modelplane/keys"
KEYS_FILE: Final = "keys"


def server_args(spec: LLMDeploymentSpec, location: ModelLocation) -> list[str]:
    """`modelplane serve` arguments: the settings file, the listener, and the engine flags."""
    args = [
        "--config", f"{CONFIG_DIR}/{CONFIG_FILE}",
        "--host", "0.0.0.0",
        "--port", str(contract.SERVER_PORT),
    ]  # fmt: skip
    args += engine_settings(spec).serve_flags()
    args += [f"--engine-arg={arg}" for arg in location.engine_args]
    if serves_lora(spec):
        # The admin API the operator loads adapters through (builders/adapters.py).
        args += ["--admin-port", str(contract.SERVER_ADMIN_PORT)]
    if spec.auth.api_key_secret_ref is not None:
        args += ["--api-key-file", f"{KEYS_DIR}/{KEYS_FILE}"]
    return args


def server_image(spec: LLMDeploymentSpec, config: OperatorConfig, placement: Placement) -> str:
    return spec.engine.image or (config.images.gpu if placement.on_gpu else config.images.cpu)


def _resources(spec: LLMDeploymentSpec, placement: Placement) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": placement.cpu, "memory": placement.memory}
    limits: dict[str, str] = {"memory": placement.memory}
    gpu = placement.profile.gpu_resource_name
    if gpu is not None and spec.resources.gpus > 0:
        # Extended resources must be requested and limited alike.
        requests[gpu] = limits[gpu] = str(spec.resources.gpus)
    return {"requests": requests, "limits": limits}


def _ports(spec: LLMDeploymentSpec) -> list[dict[str, Any]]:
    ports = [
        {
            "name": contract.SERVER_PORT_NAME,
            "containerPort": contract.SERVER_PORT,
            "protocol": "TCP",
        }
    ]
    if serves_lora(spec):
        ports.append(
            {
                "name": contract.SERVER_ADMIN_PORT_NAME,
                "containerPort": contract.SERVER_ADMIN_PORT,
                "protocol": "TCP",
            }
        )
    return ports


def _pre_stop(config: OperatorConfig) -> dict[str, Any]:
    """The kubelet's own sleep before SIGTERM (Kubernetes 1.30+), so endpoints drop the pod
    while it still serves. Native, not `exec sleep`: it needs nothing in the image (a
    `spec.engine.image` may have no shell or `sleep`) and spawns no process in it."""
    if config.pre_stop_seconds == 0:
        return {}
    return {"lifecycle": {"preStop": {"sleep": {"seconds": config.pre_stop_seconds}}}}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.SERVER_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _volumes(
    name: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    location: ModelLocation,
    track: str,
    cache: CacheLayout,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(name, track)}},
        *cache.volumes,
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size_limit}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        *cache.mounts,
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    ref = spec.auth.api_key_secret_ref
    if ref is not None:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": KEYS_FILE}]},
            }
        )
        mounts.append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
    return volumes + location.volumes, mounts + location.mounts


def build_pod_template(
    name: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    placement: Placement,
    location: ModelLocation,
    *,
    config_map_data: dict[str, str],
    track: str = contract.TRACK_STABLE,
) -> dict[str, Any]:
    image = server_image(spec, config, placement)
    cache = cache_layout(spec, config)
    volumes, mounts = _volumes(name, spec, config, location, track, cache)
    startup = config.startup_probe
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelplane", "serve"],
        "args": server_args(spec, location),
        "ports": _ports(spec),
        "resources": _resources(spec, placement),
        "env": cache.env,
        "startupProbe": _probe(
            "/ready", period=startup.period_seconds, failures=startup.failure_threshold
        ),
        "readinessProbe": _probe("/ready", period=5, failures=3),
        "livenessProbe": _probe("/health", period=10, failures=6),
        **_pre_stop(config),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if cache.ephemeral_storage is not None:
        # Downloads land on the node's disk: ask for room, or the kubelet evicts the pod.
        container["resources"]["requests"]["ephemeral-storage"] = cache.ephemeral_storage
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        **pod_identity(spec, config),
    }
    pod_spec.update(pod_placement(placement.profile))
    template: dict[str, Any] = {
        "metadata": {
            "labels": child_labels(name, track),
            "annotations": {contract.ANNOTATION_REVISION: spec.model.revision},
        },
        "spec": pod_spec,
    }
    # The settings file is mounted, not inlined: include it so a change rolls the pods.
    template_hash = stable_hash({"template": template, "config": config_map_data})
    template["metadata"]["annotations"][contract.ANNOTATION_TEMPLATE_HASH] = template_hash
    return template


def build_deployment(
    name: str,
    namespace: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    placement: Placement,
    location: ModelLocation,
    *,
    replicas: int,
    config_map_data: dict[str, str],
    track: str = contract.TRACK_STABLE,
) -> dict[str, Any]:
    template = build_pod_template(
        name, spec, config, placement, location, config_map_data=config_map_data, track=track
    )
    startup = config.startup_probe
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name if track == contract.TRACK_STABLE else f"{name}-{track}",
            "namespace": namespace,
            "labels": child_labels(name, track),
            "annotations": {contract.ANNOTATION_REVISION: spec.model.revision},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            # A rollout only counts as stuck after the longest allowed model load.
            "progressDeadlineSeconds": startup.period_seconds * startup.failure_threshold + 300,
            "selector": {"matchLabels": pod_selector(name, track)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": spec.rollout.max_surge,
                    "maxUnavailable": spec.rollout.max_unavailable,
                },
            },
            "template": template,
        },
    }


def template_hash_of(deployment: dict[str, Any]) -> str | None:
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    value = annotations.get(contract.ANNOTATION_TEMPLATE_HASH)
    return str(value) if value is not None else None
