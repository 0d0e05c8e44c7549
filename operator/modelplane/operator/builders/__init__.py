"""Pure builders: (name, namespace, typed spec, operator config) -> child manifests.

No client calls and no global state: the operator, `modelplane render` and
the tests call the same functions. Each manifest carries a hash of its own
content (replicas excluded: the autoscaler owns them) in the
`modelplane.io/spec-hash` annotation, so a resync can tell "unchanged" from
"drifted" without diffing against the API server's defaulted objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders.deployment import build_deployment, server_image
from modelplane.operator.builders.hashing import stable_hash
from modelplane.operator.builders.model_cache import build_download_job
from modelplane.operator.builders.model_source import locate_model
from modelplane.operator.builders.policies import build_network_policy, build_pod_disruption_budget
from modelplane.operator.builders.server_config import build_config_map
from modelplane.operator.builders.service import build_service
from modelplane.operator.builders.service_monitor import build_service_monitor
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.fit import resolve_placement


@dataclass(frozen=True)
class CanaryTrack:
    """A canary rollout's second track: its replicas and its share of the traffic."""

    replicas: int
    weight: int


@dataclass(frozen=True)
class BuildOptions:
    """What the builders need to know about the cluster and the current state."""

    replicas: int
    service_monitor_api: bool = False
    canary: CanaryTrack | None = (
        None  # also build the canary track's ConfigMap, Service, Deployment, budget
    )
    stable_revision: str | None = None  # what the stable Service announces, if not the spec's


def spec_hash(manifest: dict[str, Any]) -> str:
    """Hash of everything the operator owns in `manifest` (not replicas, not the hash itself)."""
    content = copy.deepcopy(manifest)
    content["metadata"].get("annotations", {}).pop(contract.ANNOTATION_SPEC_HASH, None)
    if content["kind"] == "Deployment":
        content["spec"].pop("replicas", None)
    return stable_hash(content)


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[contract.ANNOTATION_SPEC_HASH] = spec_hash(manifest)
    return manifest


def build_children(
    name: str,
    namespace: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    options: BuildOptions,
) -> list[dict[str, Any]]:
    """Every child of the LLMDeployment, in creation order. `spec` must pass the fit check."""
    placement = resolve_placement(spec, config)
    if placement is None:
        raise ValueError(f"no accelerator profile for {name}; run the fit check first")
    location = locate_model(spec.model)
    config_map = build_config_map(name, namespace, spec, config, location)
    canary = options.canary
    stable_weight = 100 - canary.weight if canary is not None else 100
    children = [
        config_map,
        build_service(
            name, namespace, spec, traffic_weight=stable_weight, revision=options.stable_revision
        ),
        build_deployment(
            name,
            namespace,
            spec,
            config,
            placement,
            location,
            replicas=options.replicas,
            config_map_data=config_map["data"],
        ),
        build_pod_disruption_budget(name, namespace),
    ]
    if canary is not None:
        track = contract.TRACK_CANARY
        canary_config = build_config_map(name, namespace, spec, config, location, track=track)
        children += [
            canary_config,
            build_service(name, namespace, spec, track=track, traffic_weight=canary.weight),
            build_deployment(
                name, namespace, spec, config, placement, location, replicas=canary.replicas,
                config_map_data=canary_config["data"], track=track,
            ),
            build_pod_disruption_budget(name, namespace, track=track),
        ]  # fmt: skip
    job = build_download_job(
        name, namespace, spec, config, image=server_image(spec, config, placement)
    )
    if job is not None:
        children.insert(0, job)  # first: the replicas wait for it
    if config.network_policy.enabled:
        children.append(build_network_policy(name, namespace, config))
    if options.service_monitor_api and spec.monitoring.service_monitor:
        children.append(build_service_monitor(name, namespace, config))
    return [with_spec_hash(child) for child in children]
