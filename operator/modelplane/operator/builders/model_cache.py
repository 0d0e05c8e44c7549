"""Where a replica keeps downloaded weights and compile caches, and the Job that fills a cache.

Three layouts, chosen by the spec and the operator config:

- **emptyDir** (default): each pod downloads into its own `/cache`. The
  container requests `ephemeral-storage` sized from the model (see
  `model_size`), so the scheduler places it on a node with room and the
  kubelet does not evict it half-way through a 70B download.
- **operator-wide claim** (`modelCache.claimName`): every replica mounts one
  existing claim read-write at `/cache`.
- **cache profile** (`spec.model.cacheProfile`, hf:// sources): a claim per
  namespace and profile (`modelplane-cache-<profile>`, created by the
  operator unless the profile names an existing one), filled once per model
  revision by a download Job. Replicas start only after the Job succeeded,
  mount the weights read-only (`/cache/huggingface`, with `HF_HUB_OFFLINE=1`)
  and the compile caches read-write (`/cache/compile`), so the second
  replica and every restart skip both the download and torch.compile.

vLLM's compile cache (`VLLM_CACHE_ROOT`, Triton and TorchInductor artefacts)
always lives under `/cache/compile`, on the cache volume, never in the
image's read-only root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders.credentials import credential_env, pod_identity
from modelplane.operator.builders.hashing import stable_hash
from modelplane.operator.builders.model_size import cache_size
from modelplane.operator.builders.security import (
    container_security_context,
    pod_security_context,
)
from modelplane.operator.config import CacheProfile, OperatorConfig

CACHE_DIR: Final = "/cache"
HF_HOME: Final = f"{CACHE_DIR}/huggingface"
COMPILE_DIR: Final = f"{CACHE_DIR}/compile"
HF_SUBPATH: Final = "huggingface"
COMPILE_SUBPATH: Final = "compile"
CACHE_VOLUME: Final = "cache"
SHARED_VOLUME: Final = "model-cache"
CACHE_CLAIM_PREFIX: Final = "modelplane-cache-"
DOWNLOAD_CONTAINER: Final = "download"
# With a cache profile /cache itself holds only small files (locks, Python's caches).
SMALL_CACHE: Final = "1Gi"

CACHE_ENV: Final[tuple[tuple[str, str], ...]] = (
    ("HF_HOME", HF_HOME),
    ("VLLM_CACHE_ROOT", f"{COMPILE_DIR}/vllm"),
    ("TRITON_CACHE_DIR", f"{COMPILE_DIR}/triton"),
    ("TORCHINDUCTOR_CACHE_DIR", f"{COMPILE_DIR}/torchinductor"),
)


@dataclass(frozen=True)
class CacheLayout:
    """The server container's share of the cache: volumes, mounts, env, disk request."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    ephemeral_storage: str | None = None


def cache_profile(spec: LLMDeploymentSpec, config: OperatorConfig) -> CacheProfile | None:
    name = spec.model.cache_profile
    return config.cache_profiles.get(name) if name else None


def cache_claim_name(profile_name: str, profile: CacheProfile) -> str:
    return profile.claim_name or f"{CACHE_CLAIM_PREFIX}{profile_name}"


def _env(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in pairs]


def cache_layout(spec: LLMDeploymentSpec, config: OperatorConfig) -> CacheLayout:
    """Volumes, mounts and env of the replicas' cache, and the disk they request."""
    mount = {"name": CACHE_VOLUME, "mountPath": CACHE_DIR}
    profile = cache_profile(spec, config)
    if profile is not None and spec.model.cache_profile is not None:
        # The Job downloaded the weights: replicas neither fetch nor hold the credentials.
        env = _env(CACHE_ENV)
        claim = cache_claim_name(spec.model.cache_profile, profile)
        return CacheLayout(
            volumes=[
                {"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": SMALL_CACHE}},
                {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
            ],
            mounts=[
                mount,
                {
                    "name": SHARED_VOLUME,
                    "mountPath": HF_HOME,
                    "subPath": HF_SUBPATH,
                    "readOnly": True,
                },
                {"name": SHARED_VOLUME, "mountPath": COMPILE_DIR, "subPath": COMPILE_SUBPATH},
            ],
            env=env + _env((("HF_HUB_OFFLINE", "1"),)),
            ephemeral_storage=SMALL_CACHE,
        )
    env = _env(CACHE_ENV) + credential_env(spec)
    claim_name = config.model_cache.claim_name
    if claim_name:
        return CacheLayout(
            volumes=[{"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim_name}}],
            mounts=[mount],
            env=env,
        )
    size = cache_size(spec, config.model_cache.size_limit)
    return CacheLayout(
        volumes=[{"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": size}}],
        mounts=[mount],
        env=env,
        ephemeral_storage=size,
    )


def cache_labels(profile_name: str) -> dict[str, str]:
    return {
        contract.LABEL_NAME: contract.PART_OF,
        contract.LABEL_INSTANCE: profile_name,
        contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_CACHE,
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
    }


def build_cache_claim(
    profile_name: str, profile: CacheProfile, namespace: str
) -> dict[str, Any] | None:
    """The profile's claim in `namespace`, or None when the profile names an existing one.

    Shared by every model of the namespace that uses the profile, so it has no
    owner: it outlives any one model (delete it to free the space)."""
    if profile.claim_name:
        return None
    spec: dict[str, Any] = {
        "accessModes": [profile.access_mode],
        "resources": {"requests": {"storage": profile.size}},
    }
    if profile.storage_class_name:
        spec["storageClassName"] = profile.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": cache_claim_name(profile_name, profile),
            "namespace": namespace,
            "labels": cache_labels(profile_name),
        },
        "spec": spec,
    }


def download_labels(name: str) -> dict[str, str]:
    """Labels of a download Job and its pod: managed, but never taken for a model server."""
    return {
        contract.LABEL_NAME: contract.PART_OF,
        contract.LABEL_INSTANCE: name,
        contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_DOWNLOAD,
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_LLMDEPLOYMENT: name,
    }


def build_download_job(
    name: str,
    namespace: str,
    spec: LLMDeploymentSpec,
    config: OperatorConfig,
    *,
    image: str,
) -> dict[str, Any] | None:
    """The Job that downloads the spec's revision into its cache profile's claim, or None.

    A Job's pod template cannot change, so the name carries a hash of the
    template: a new revision, image or credential gets a new Job and the old
    one is deleted with the rest of what the desired state no longer has."""
    profile = cache_profile(spec, config)
    if profile is None or spec.model.cache_profile is None:
        return None
    claim = cache_claim_name(spec.model.cache_profile, profile)
    container: dict[str, Any] = {
        "name": DOWNLOAD_CONTAINER,
        "image": image,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelplane", "model", "download"],
        "args": [spec.model.source, "--revision", spec.model.revision, "--cache-dir", CACHE_DIR],
        "env": _env((("HF_HOME", HF_HOME),)) + credential_env(spec),
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"memory": "2Gi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": SHARED_VOLUME, "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
            {"name": "tmp", "emptyDir": {}},
        ],
        **pod_identity(spec, config),
    }
    template = {"metadata": {"labels": download_labels(name)}, "spec": pod_spec}
    suffix = stable_hash(template)[:8]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-dl-{suffix}",
            "namespace": namespace,
            "labels": download_labels(name),
            "annotations": {contract.ANNOTATION_REVISION: spec.model.revision},
        },
        "spec": {
            "backoffLimit": 4,
            "activeDeadlineSeconds": config.download_job_deadline_seconds,
            "template": template,
        },
    }
