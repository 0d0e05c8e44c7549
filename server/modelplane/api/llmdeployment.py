"""The LLMDeployment resource as typed models: the spec users write, the status it gets.

The operator parses `spec` into `LLMDeploymentSpec` at its boundary and works
only with typed values afterwards; the CRD's OpenAPI schema in `crds/` is
generated from these models (`make crd`), so the schema the API server
enforces and the checks the operator runs cannot drift apart. Each
cross-field rule is written twice on purpose, side by side: as a pydantic
validator (what the operator enforces, with a message saying what to change)
and as a Kubernetes CEL rule (`x-kubernetes-validations`, what the API server
enforces before the object is stored). Tests evaluate both on the same specs.

`spec.engine` is `EngineConfig` (shared with `modelplane serve`) plus the
container image, so the server's flags and the resource's fields are one model.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from modelplane.api.engine import EngineConfig, Runner

# Kubernetes resource quantities as users write them ("4", "500m", "32Gi").
QUANTITY_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# DNS-1035 label: what Service names (and so LLMDeployment names) must be.
DNS_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain: what Secret and ServiceAccount names must be.
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Child names append at most "-canary" (7 characters) and pod names a further
# generated suffix; 50 keeps every derived name within Kubernetes' 63.
MAX_NAME_LENGTH: Final = 50
MAX_CANARY_STEPS: Final = 10
DEFAULT_CANARY_STEPS: Final = (10, 50, 100)


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _cel(*rules: dict[str, str]) -> dict[str, Any]:
    """Schema extra that carries CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


class ResourceModel(BaseModel):
    """camelCase names as in the resource; unknown fields are refused, not ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SourceScheme(StrEnum):
    HF = "hf"
    PVC = "pvc"
    S3 = "s3"
    FILE = "file"


SOURCE_PATTERN: Final = r"^(hf|pvc|s3|file)://.+"


def known_source_scheme(value: str, field: str) -> str:
    """`value` when it is a source of a scheme Modelplane fetches; else a ValueError."""
    if not re.match(SOURCE_PATTERN, value):
        raise ValueError(f"{field} must start with hf://, pvc://, s3:// or file:// (got {value!r})")
    return value


CREDENTIALS_RULE: Final = _rule(
    "!has(self.credentialsSecretRef) || self.source.startsWith('hf://') || "
    "self.source.startsWith('s3://')",
    "model.credentialsSecretRef applies to hf:// and s3:// sources only",
)
CACHE_PROFILE_RULE: Final = _rule(
    "!has(self.cacheProfile) || self.source.startsWith('hf://')",
    "model.cacheProfile applies to hf:// sources only (a pvc:// source already is a volume, "
    "an s3:// source is streamed)",
)


class LocalObjectReference(ResourceModel):
    """An object in the LLMDeployment's namespace, by name."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)] = (
        Field(description="The object's name.")
    )


class ModelSpec(ResourceModel):
    """Which model to serve, and under which name."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                f"self.source.matches('{SOURCE_PATTERN}')",
                "model.source must start with hf://, pvc://, s3:// or file://",
            ),
            CREDENTIALS_RULE,
            CACHE_PROFILE_RULE,
        )
    )

    source: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Where the weights come from: hf://ORG/NAME (Hugging Face), "
        "pvc://CLAIM/PATH (a PersistentVolumeClaim in the same namespace), "
        "s3://BUCKET/PATH (streamed by vLLM), or file:///PATH (a path inside the image; "
        "local and development use)."
    )
    revision: Annotated[str, Field(min_length=1, max_length=255)] = Field(
        "main",
        description="Model version: a branch, tag or commit for hf:// sources, a version "
        "label otherwise. Changing it is a model-version upgrade (a rollout).",
    )
    served_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        None,
        description="The OpenAI `model` name clients use; defaults to the LLMDeployment's name.",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        None,
        description="A Secret in the same namespace holding the source's credentials, one "
        "variable per key: HF_TOKEN for hf:// (gated or private repositories); "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN, AWS_REGION "
        "and AWS_ENDPOINT_URL, for s3://. The kubelet reads it; the operator never does. "
        "With workload identity (IRSA, GKE), set serviceAccountName instead.",
    )
    cache_profile: Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)] | None = Field(
        None,
        description="A cache profile of the operator's configuration (hf:// sources): the "
        "weights are downloaded once by a Job into a PersistentVolumeClaim of that profile "
        "in this namespace, and every replica mounts them read-only. Empty: each pod "
        "downloads into its own emptyDir.",
    )
    size: Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)] | None = Field(
        None,
        description="Disk the weights take (e.g. 16Gi); sizes the cache's ephemeral-storage "
        "request. Empty: estimated from the parameter count in the source's name "
        "(8B, 135M, ...) and the quantization, else the operator's modelCache.sizeLimit.",
    )

    @field_validator("source")
    @classmethod
    def _source_has_a_known_scheme(cls, value: str) -> str:
        return known_source_scheme(value, "model.source")

    @model_validator(mode="after")
    def _settings_fit_the_source(self) -> ModelSpec:
        scheme = self.scheme
        if self.credentials_secret_ref is not None and scheme not in (
            SourceScheme.HF,
            SourceScheme.S3,
        ):
            raise ValueError(CREDENTIALS_RULE["message"] + f" (source is {scheme.value}://)")
        if self.cache_profile is not None and scheme is not SourceScheme.HF:
            raise ValueError(CACHE_PROFILE_RULE["message"] + f" (source is {scheme.value}://)")
        return self

    @property
    def scheme(self) -> SourceScheme:
        return SourceScheme(self.source.split("://", 1)[0])

    @property
    def location(self) -> str:
        """The source without its scheme: ORG/NAME, CLAIM/PATH, BUCKET/PATH or /PATH."""
        return self.source.split("://", 1)[1]


class EngineSpec(EngineConfig):
    """How the inference engine runs the model (`modelplane serve` engine flags) and its image."""

    image: Annotated[str, Field(max_length=512)] = Field(
        "",
        description="Container image of the model server; empty: the operator's default "
        "image for GPU or CPU serving.",
    )

    def engine_config(self) -> EngineConfig:
        """The engine settings without the image, as `modelplane serve` takes them."""
        return EngineConfig.model_validate(self.model_dump(exclude={"image"}))


class ResourcesSpec(ResourceModel):
    """Compute for one replica."""

    accelerator: Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)] | None = Field(
        None,
        description="Accelerator profile from the operator's configuration (e.g. nvidia-h100, "
        "nvidia-a100, nvidia-l4, nvidia-t4, cpu): node selector, tolerations and GPU "
        "resource name. Empty: the operator's default profile for GPU or CPU serving.",
    )
    gpus: Annotated[int, Field(ge=0, le=64)] = Field(
        0, description="GPUs per replica; 0 serves on CPU."
    )
    cpu: Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)] | None = Field(
        None,
        description='CPU request per replica (e.g. "4"); empty: the accelerator '
        "profile's default.",
    )
    memory: Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)] | None = Field(
        None,
        description="Memory request and limit per replica (e.g. 32Gi); empty: the accelerator "
        "profile's default.",
    )


class AutoscalingTargets(ResourceModel):
    """Per-replica targets; any subset, and the most demanding one decides."""

    ttft_p95_seconds: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Time to first token, 95th percentile, in seconds."
    )
    queue_depth_per_replica: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Requests waiting in the engine's queue per replica."
    )
    kv_cache_utilization: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Fraction of the KV cache in use (0-1]."
    )
    gpu_utilization: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="GPU utilisation (0-1]."
    )

    @property
    def any(self) -> bool:
        """Whether any target is set."""
        return any(
            v is not None
            for v in (
                self.ttft_p95_seconds,
                self.queue_depth_per_replica,
                self.kv_cache_utilization,
                self.gpu_utilization,
            )
        )


# What the autoscaler scales on when `targets` names none.
DEFAULT_TARGETS: Final = AutoscalingTargets(kv_cache_utilization=0.8)


class AutoscalingSpec(ResourceModel):
    """Replica count driven by latency and load signals; replaces `replicas` while enabled."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            )
        )
    )

    enabled: bool = Field(False, description="Scale between minReplicas and maxReplicas.")
    min_replicas: Annotated[int, Field(ge=0, le=1000)] = Field(
        1,
        description="Fewest replicas; 0 allows scale to zero (the gateway holds requests "
        "while a replica starts).",
    )
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = Field(4, description="Most replicas.")
    targets: AutoscalingTargets = Field(
        default_factory=AutoscalingTargets,
        description="What to scale on; none named: kvCacheUtilization 0.8.",
    )
    scale_down_delay_seconds: Annotated[int, Field(ge=0, le=86400)] = Field(
        300, description="How long load must stay low before a replica is removed."
    )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must not exceed "
                f"autoscaling.maxReplicas ({self.max_replicas})"
            )
        return self

    @property
    def scaling_targets(self) -> AutoscalingTargets:
        """The targets the policy works to: those named, else the default."""
        return self.targets if self.targets.any else DEFAULT_TARGETS


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    CANARY = "Canary"


class CanarySpec(ResourceModel):
    """A new revision takes a growing share of traffic while it stays healthy."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                "self.steps.size() > 0 && self.steps[self.steps.size() - 1] == 100",
                "rollout.canary.steps must end at 100",
            ),
            _rule(
                # Standard CEL has no pairwise list macro, so the (bounded) pairs
                # are spelled out; maxItems keeps the rule's cost fixed.
                " && ".join(
                    f"(self.steps.size() <= {i + 1} || self.steps[{i}] < self.steps[{i + 1}])"
                    for i in range(MAX_CANARY_STEPS - 1)
                ),
                "rollout.canary.steps must be strictly ascending",
            ),
        )
    )

    weight: Annotated[int, Field(ge=1, le=99)] = Field(
        10, description="Share of traffic (percent) the new revision takes first."
    )
    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]], Field(max_length=MAX_CANARY_STEPS)
    ] = Field(
        default_factory=lambda: list(DEFAULT_CANARY_STEPS),
        description="Shares (percent) the new revision moves through while healthy; "
        "strictly ascending, ending at 100 (promotion).",
        # The CRD needs the default spelled out: the CEL rules read `steps`.
        json_schema_extra={"default": list(DEFAULT_CANARY_STEPS)},
    )
    step_seconds: Annotated[int, Field(ge=0, le=86400)] = Field(
        300, description="How long each step must stay healthy before the next."
    )
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01, description="Highest fraction of failed requests before the canary is rolled back."
    )
    max_ttft_p95_seconds: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Highest time-to-first-token p95 before the canary is rolled back."
    )

    @field_validator("steps")
    @classmethod
    def _steps_ascend_to_100(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100:
            raise ValueError("rollout.canary.steps must end at 100")
        if any(a >= b for a, b in itertools.pairwise(steps)):
            raise ValueError(f"rollout.canary.steps must be strictly ascending (got {steps})")
        return steps


class RolloutSpec(ResourceModel):
    """How a new revision or configuration replaces the running replicas."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                "self.maxSurge > 0 || self.maxUnavailable > 0",
                "rollout.maxSurge and rollout.maxUnavailable cannot both be 0: "
                "set maxUnavailable to 1 when there is no spare GPU for a surge replica",
            )
        )
    )

    strategy: RolloutStrategy = Field(
        RolloutStrategy.ROLLING_UPDATE, description="RollingUpdate or Canary."
    )
    max_surge: Annotated[int, Field(ge=0, le=100)] = Field(
        1,
        description="Replicas started above the desired count during a rollout; 0 for "
        "clusters with no spare GPU (then maxUnavailable must be at least 1).",
    )
    max_unavailable: Annotated[int, Field(ge=0, le=100)] = Field(
        0, description="Replicas that may be unavailable during a rollout."
    )
    canary: CanarySpec = Field(
        default_factory=CanarySpec, description="Canary steps (strategy Canary only)."
    )

    @model_validator(mode="after")
    def _some_replica_can_move(self) -> RolloutSpec:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError(
                "rollout.maxSurge and rollout.maxUnavailable cannot both be 0: set "
                "maxUnavailable to 1 when there is no spare GPU for a surge replica"
            )
        return self


# An adapter's name is an OpenAI `model` name and a path segment of the server's admin
# API: letters, digits, '.', '_' and '-', starting and ending with a letter or digit.
ADAPTER_NAME_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
MAX_ADAPTER_NAME_LENGTH: Final = 63  # as `modelplane serve` takes them
MAX_ADAPTERS: Final = 64


class AdapterSpec(ResourceModel):
    """A LoRA adapter served beside the base model, under a `model` name of its own."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                f"self.source.matches('{SOURCE_PATTERN}')",
                "adapters[].source must start with hf://, pvc://, s3:// or file://",
            )
        )
    )

    name: Annotated[
        str,
        Field(min_length=1, max_length=MAX_ADAPTER_NAME_LENGTH, pattern=ADAPTER_NAME_PATTERN),
    ] = Field(
        description="The OpenAI `model` name clients use for this adapter; unique among the "
        "adapters and different from the base model's served name."
    )
    source: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Where the adapter's weights come from, like model.source: hf://ORG/NAME, "
        "pvc://CLAIM/PATH (the model's own claim, which the replicas mount), s3://BUCKET/PATH "
        "or file:///PATH (inside the image)."
    )
    revision: Annotated[str, Field(min_length=1, max_length=255)] = Field(
        "main",
        description="Adapter version: a branch, tag or commit for hf:// sources, a version "
        "label otherwise. Changing it reloads the adapter on every replica (no restart).",
    )

    @field_validator("source")
    @classmethod
    def _source_has_a_known_scheme(cls, value: str) -> str:
        return known_source_scheme(value, "adapters[].source")

    @property
    def scheme(self) -> SourceScheme:
        return SourceScheme(self.source.split("://", 1)[0])

    @property
    def location(self) -> str:
        return self.source.split("://", 1)[1]


class SecretKeyRef(ResourceModel):
    """A key of a Secret in the LLMDeployment's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Secret name.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        "keys", description="Key whose value holds the API keys, one per line."
    )


class AuthSpec(ResourceModel):
    """Who may call the model server."""

    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret with the accepted API keys (one per line); none: the server is open "
        "(the gateway may still require keys).",
    )


class MonitoringSpec(ResourceModel):
    """Prometheus and Grafana integration."""

    service_monitor: bool = Field(
        True,
        description="Create a ServiceMonitor (only where the Prometheus Operator's "
        "monitoring.coreos.com API exists).",
    )
    dashboards: bool = Field(
        True,
        description="List this model in Modelplane's Grafana dashboards (shipped by the chart).",
    )


class LLMDeploymentSpec(ResourceModel):
    """A model served over the OpenAI API by replicas of `modelplane serve`."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            _rule(
                "self.resources.gpus == 0 || "
                "self.resources.gpus % self.engine.tensorParallelSize == 0",
                "resources.gpus must be a multiple of engine.tensorParallelSize",
            )
        )
    )

    model: ModelSpec = Field(description="The model and its served name.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description=EngineSpec.__doc__)
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Compute for one replica."
    )
    replicas: Annotated[int, Field(ge=0, le=1000)] = Field(
        1,
        description="The replica count, also the scale subresource's (kubectl scale, an HPA, "
        "KEDA). While autoscaling is enabled the autoscaler writes it, within minReplicas and "
        "maxReplicas, starting from the value given (0 starts at zero).",
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Autoscaling on latency and load."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How revisions and changes roll out."
    )
    auth: AuthSpec = Field(default_factory=AuthSpec, description="API keys for the server.")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Prometheus and Grafana integration."
    )
    service_account_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)] | None
    ) = Field(
        None,
        description="ServiceAccount the replicas (and the download Job) run as, for workload "
        "identity (IRSA, GKE Workload Identity, Azure Workload Identity). Empty: the "
        "namespace's default. Its API token is not mounted.",
    )
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] = Field(
        default_factory=list,
        description="Secrets for pulling the server image from a private registry, added to "
        "the operator's images.pullSecrets.",
    )
    adapters: Annotated[list[AdapterSpec], Field(max_length=MAX_ADAPTERS)] = Field(
        default_factory=list,
        description="LoRA adapters served beside the base model, each under its own `model` "
        "name. The operator loads and unloads them on the running replicas: adding, removing "
        "or changing one restarts no pod (only the first adapter of a model does, to turn LoRA "
        "on, and removing the last one, to turn it off, unless engine LoRA settings keep it on).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **_cel(
                _rule(
                    "self.all(a, self.exists_one(b, b.name == a.name))",
                    "adapters[].name must be unique",
                )
            ),
        },
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names_are_unique(cls, adapters: list[AdapterSpec]) -> list[AdapterSpec]:
        names = [a.name for a in adapters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"adapters[].name must be unique (repeated: {', '.join(repeated)})")
        return adapters

    @model_validator(mode="after")
    def _tensor_parallel_divides_gpus(self) -> LLMDeploymentSpec:
        gpus, tp = self.resources.gpus, self.engine.tensor_parallel_size
        if gpus > 0 and gpus % tp != 0:
            raise ValueError(
                f"resources.gpus ({gpus}) must be a multiple of engine.tensorParallelSize ({tp})"
            )
        return self


def served_model_name(name: str, spec: LLMDeploymentSpec) -> str:
    """The OpenAI `model` name: spec.model.servedName, or the resource's name."""
    return spec.model.served_name or name


def routing_strategy(spec: LLMDeploymentSpec) -> str:
    """How the gateway balances this model: prefix affinity for chat, least load for pooling."""
    return "least-load" if spec.engine.runner is Runner.POOLING else "prefix"


NAME_RULE: Final = _rule(
    f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
    f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
    f"metadata.name must be a DNS label (lowercase letters, digits, '-', starting with a "
    f"letter) of at most {MAX_NAME_LENGTH} characters: it names the model's Service",
)


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an LLMDeployment (the rule NAME_RULE enforces), or None."""
    if len(name) > MAX_NAME_LENGTH or not re.match(DNS_LABEL_PATTERN, name):
        return NAME_RULE["message"]
    return None


ADAPTER_NAME_RULE: Final = _rule(
    "!has(self.spec.adapters) || self.spec.adapters.all(a, a.name != "
    "(has(self.spec.model.servedName) ? self.spec.model.servedName : self.metadata.name))",
    "adapters[].name must differ from the base model's served name (model.servedName, "
    "else metadata.name)",
)


def adapter_name_problem(name: str, spec: LLMDeploymentSpec) -> str | None:
    """Why an adapter's name clashes with the base model's (the rule ADAPTER_NAME_RULE
    enforces), or None."""
    served = served_model_name(name, spec)
    if any(adapter.name == served for adapter in spec.adapters):
        return f"{ADAPTER_NAME_RULE['message']}: {served!r} is both"
    return None


# --- status -----------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    LOADING = "Loading"
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SCALING_LIMITED = "ScalingLimited"  # written by the autoscaler
    FIT_CHECK = "FitCheck"
    CANARY = "Canary"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class StatusModel(BaseModel):
    """Status is written by several parties (operator, autoscaler): unknown fields are kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """One aspect of the resource's state, in Kubernetes' condition convention."""

    type: str = Field(description="Ready, Progressing, Degraded, ScalingLimited, FitCheck, ...")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=1024)] = Field(
        "", description="One CamelCase word saying why."
    )
    message: Annotated[str, Field(max_length=32768)] = Field(
        "", description="What happened and what to do, for people."
    )
    last_transition_time: str | None = Field(
        None,
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation the condition was computed from."
    )


class CanaryPhase(StrEnum):
    PROGRESSING = "Progressing"  # moving through the steps (starting replicas, or analysing)
    PROMOTING = "Promoting"  # every step passed: the stable Deployment takes the new template
    ABORTED = "Aborted"  # a step breached a bound: traffic back on stable, canary deleted


class CanaryStatus(StatusModel):
    """Where a canary rollout stands (strategy Canary): the operator's own progress record."""

    phase: CanaryPhase = Field(description="Progressing, Promoting or Aborted.")
    revision: str = Field(description="The model revision the canary runs.")
    template_hash: str = Field(
        description="Hash of the pod template the canary brings (what an abort refuses again)."
    )
    step: int = Field(0, description="Current step, 1-based, of the canary's traffic shares.")
    steps: int = Field(0, description="Number of steps.")
    weight: int = Field(0, description="Share of traffic (percent) the canary takes now.")
    step_started_at: str | None = Field(
        None,
        description="When the current step's share took effect; empty while its replicas start.",
        json_schema_extra={"format": "date-time"},
    )
    message: str | None = Field(None, description="What happened last, for people.")


class AdapterState(StrEnum):
    LOADED = "Loaded"  # on every serving replica
    LOADING = "Loading"  # on some replicas, or none yet, and none failed
    FAILED = "Failed"  # a replica refused or failed the load
    PENDING = "Pending"  # no serving replica to load it on


class AdapterStatus(StatusModel):
    """Where one adapter of spec.adapters stands on the serving replicas."""

    name: str = Field(description="The adapter's name (spec.adapters[].name).")
    revision: str | None = Field(None, description="The revision it is loaded at.")
    state: AdapterState = Field(description="Loaded, Loading, Failed or Pending.")
    loaded_replicas: int = Field(0, description="Serving replicas that hold it.")
    replicas: int = Field(0, description="Serving replicas it should be on.")
    message: str = Field("", description="e.g. 'Loaded on 2/3 replicas', or the error.")


class LLMDeploymentStatus(StatusModel):
    """What the operator observed, written from the children's actual state."""

    phase: Phase | None = Field(
        None, description="Pending, Loading, Ready, Progressing, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded, ScalingLimited, FitCheck."
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation this status was computed from."
    )
    model: str | None = Field(None, description="The served model name (the OpenAI `model`).")
    replicas: int | None = Field(None, description="Replicas that exist (ready or not).")
    ready_replicas: int | None = Field(None, description="Replicas that pass readiness.")
    updated_replicas: int | None = Field(
        None, description="Replicas running the current revision and configuration."
    )
    desired_replicas: int | None = Field(
        None,
        description="Replicas the Deployment was given: spec.replicas, within the "
        "autoscaling bounds while autoscaling is enabled.",
    )
    ready: str | None = Field(None, description="ready/desired replicas, for kubectl get.")
    served_revision: str | None = Field(
        None, description="The model revision all ready replicas serve."
    )
    endpoint: str | None = Field(None, description="OpenAI base URL inside the cluster.")
    selector: str | None = Field(None, description="Label selector of the replicas' pods.")
    last_scale_time: str | None = Field(
        None, description="When the autoscaler last changed the replica count (RFC 3339)."
    )
    scale_reason: str | None = Field(None, description="Why the autoscaler chose desiredReplicas.")
    canary: CanaryStatus | None = Field(
        None, description="The canary rollout in progress, or the last one aborted."
    )
    last_replica_startup_seconds: float | None = Field(
        None,
        description="Seconds the most recently ready replica took from its pod's scheduling "
        "to readiness (PodScheduled -> Ready): image pull, model load, compilation, warm-up.",
    )
    adapters: list[AdapterStatus] | None = Field(
        None,
        description="Each LoRA adapter of spec.adapters: on how many serving replicas it is "
        "loaded, or why not.",
    )
