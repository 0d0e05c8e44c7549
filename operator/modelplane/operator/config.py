"""The operator's own configuration: accelerator profiles, images, probes, namespaces, ports.

`modelplane operator --config FILE` reads a YAML file with these camelCase
fields; every field has a default, so an empty file (or none) is a working
configuration. The builders take this object as an argument and never read
global state, so tests and `modelplane render` pass their own.

Example (any subset):

    accelerators:                 # merged by name over the built-in profiles
      nvidia-h100:
        nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
        tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        gpuResourceName: nvidia.com/gpu
        gpuMemoryGiB: 80
        quantizations: [none, awq, gptq, fp8, bitsandbytes, gguf, compressed-tensors]
    images: {gpu: registry.example.com/modelplane/server:gpu, cpu: ...}
    startupProbe: {periodSeconds: 10, failureThreshold: 180}
    drainTimeoutSeconds: 30
    modelCache: {sizeLimit: 200Gi}        # or {claimName: model-cache}
    serviceMonitorLabels: {release: kube-prometheus-stack}
    namespaces: [llm-prod, llm-staging]   # empty: all namespaces
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from modelplane.api import contract
from modelplane.api.engine import Quantization
from modelplane.api.llmdeployment import QUANTITY_PATTERN

CONFIG_ENV: Final = "MODELPLANE_OPERATOR_CONFIG"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery
NVIDIA_GPU: Final = "nvidia.com/gpu"
GPU_TOLERATION: Final[dict[str, str]] = {
    "key": NVIDIA_GPU,
    "operator": "Exists",
    "effect": "NoSchedule",
}
ALL_QUANTIZATIONS: Final = tuple(Quantization)
# fp8 weights need FP8 tensor cores: Hopper (H100) or Ada (L4); bitsandbytes needs CUDA.
NO_FP8: Final = tuple(q for q in Quantization if q is not Quantization.FP8)
CPU_QUANTIZATIONS: Final = tuple(
    q for q in Quantization if q not in (Quantization.FP8, Quantization.BITSANDBYTES)
)


class ConfigModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]


class AcceleratorProfile(ConfigModel):
    """Where and how replicas asking for this accelerator run."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu_resource_name: str | None = Field(
        NVIDIA_GPU, description="Extended resource for GPUs; None for CPU-only profiles."
    )
    gpu_memory_gib: Annotated[float, Field(ge=0)] = Field(0, alias="gpuMemoryGiB")
    quantizations: tuple[Quantization, ...] = ALL_QUANTIZATIONS
    cpu: Quantity = "4"
    memory: Quantity = "32Gi"

    @property
    def has_gpus(self) -> bool:
        return self.gpu_resource_name is not None


def _gpu_profile(
    product: str, memory_gib: float, quantizations: tuple[Quantization, ...]
) -> AcceleratorProfile:
    return AcceleratorProfile(
        node_selector={GPU_PRODUCT_LABEL: product},
        tolerations=[GPU_TOLERATION],
        gpu_memory_gib=memory_gib,
        quantizations=quantizations,
        cpu="8",
        memory="64Gi",
    )


DEFAULT_ACCELERATORS: Final[dict[str, AcceleratorProfile]] = {
    # Any NVIDIA GPU: no node selector, nothing known about its memory or features.
    "nvidia-gpu": AcceleratorProfile(tolerations=[GPU_TOLERATION]),
    "nvidia-h100": _gpu_profile("NVIDIA-H100-80GB-HBM3", 80, ALL_QUANTIZATIONS),
    "nvidia-a100": _gpu_profile("NVIDIA-A100-SXM4-80GB", 80, NO_FP8),
    "nvidia-l4": _gpu_profile("NVIDIA-L4", 24, ALL_QUANTIZATIONS),
    "nvidia-t4": _gpu_profile("Tesla-T4", 16, NO_FP8),
    "cpu": AcceleratorProfile(
        gpu_resource_name=None, quantizations=CPU_QUANTIZATIONS, cpu="2", memory="8Gi"
    ),
}


class Images(ConfigModel):
    gpu: str = "modelplane/server:gpu"
    cpu: str = "modelplane/server:cpu"
    pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")


class StartupProbe(ConfigModel):
    """Model loads can take many minutes: period x threshold is the time allowed."""

    period_seconds: Annotated[int, Field(ge=1)] = 10
    failure_threshold: Annotated[int, Field(ge=1)] = 180


class ModelCache(ConfigModel):
    """Where downloaded weights and compile caches live (/cache in the server image)."""

    claim_name: str | None = Field(
        None, description="A PersistentVolumeClaim shared by replicas; None: an emptyDir."
    )
    size_limit: Quantity = "100Gi"


DEFAULT_ALLOW_FROM: Final[tuple[dict[str, Any], ...]] = (
    {"podSelector": {}},  # the same namespace
    {
        "namespaceSelector": {},
        "podSelector": {
            "matchLabels": {
                contract.LABEL_PART_OF: contract.PART_OF,
                contract.LABEL_COMPONENT: contract.COMPONENT_GATEWAY,
            }
        },
    },
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
)


class NetworkPolicySettings(ConfigModel):
    """Which peers may reach the model server port (NetworkPolicyPeer objects)."""

    enabled: bool = True
    # NetworkPolicyPeer objects allowed to reach the model server port.
    allow_from: list[dict[str, Any]] = Field(default_factory=lambda: list(DEFAULT_ALLOW_FROM))


class OperatorConfig(ConfigModel):
    """Everything the operator needs to know that is not in an LLMDeployment."""

    accelerators: dict[str, AcceleratorProfile] = Field(
        default_factory=lambda: dict(DEFAULT_ACCELERATORS)
    )
    default_gpu_accelerator: str = "nvidia-gpu"
    default_cpu_accelerator: str = "cpu"
    images: Images = Field(default_factory=Images)
    startup_probe: StartupProbe = Field(default_factory=StartupProbe)
    drain_timeout_seconds: Annotated[int, Field(ge=0)] = 30
    shm_size_limit: Quantity = "8Gi"
    model_cache: ModelCache = Field(default_factory=ModelCache)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    service_monitor_interval: str = "15s"
    service_monitor_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on the ServiceMonitors, for a Prometheus that selects "
        "monitors by label (kube-prometheus-stack: release: <its release>).",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty: all namespaces."
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = contract.OPERATOR_METRICS_PORT
    health_port: Annotated[int, Field(ge=0, le=65535)] | None = 8081
    resync_seconds: Annotated[float, Field(gt=0)] = 300
    autoscaler_interval_seconds: Annotated[float, Field(gt=0)] = Field(
        10, description="How often the autoscaler measures and decides for each LLMDeployment."
    )
    prometheus_url: str | None = Field(
        None,
        description="Read replica metrics from this Prometheus (series labelled with the pod's "
        "namespace and pod, as the chart's PodMonitor does); None: scrape each pod's /metrics.",
    )
    canary_min_requests: Annotated[int, Field(ge=0)] = Field(
        10,
        description="Requests a canary step must have answered before it may pass: less "
        "traffic is no evidence (the step waits longer). Its dwell is the resource's "
        "rollout.canary.stepSeconds.",
    )
    prometheus_window_seconds: Annotated[float, Field(gt=0)] = Field(
        60,
        description="The range of Prometheus samples one decision reads: rates and the TTFT "
        "p95 are taken between its oldest and newest scrape (at least two scrape intervals).",
    )
    log_format: str = Field("json", pattern="^(json|plain|full)$")

    @field_validator("accelerators", mode="before")
    @classmethod
    def _merge_over_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {**DEFAULT_ACCELERATORS, **value}

    @property
    def termination_grace_seconds(self) -> int:
        """Longer than the server's drain, so in-flight requests finish before SIGKILL."""
        return self.drain_timeout_seconds + 15


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why."""


def load_config(path: Path | None) -> OperatorConfig:
    """Read the YAML file at `path` (None: defaults)."""
    if path is None:
        return OperatorConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read operator config {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"operator config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"operator config {path} must be a mapping of settings")
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"operator config {path}: {details}") from err


def config_from_environment() -> OperatorConfig:
    """The configuration `modelplane operator` passed on (a path in MODELPLANE_OPERATOR_CONFIG)."""
    path = os.environ.get(CONFIG_ENV)
    return load_config(Path(path) if path else None)
