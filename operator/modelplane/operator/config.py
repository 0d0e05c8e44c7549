"""The operator's own configuration: accelerator profiles, images, probes, namespaces, ports.

`modelplane operator --config FILE` reads a YAML file with these camelCase
fields; every field has a default, so an empty file (or none) is a working
configuration. The builders take this object as an argument and never read
global state, so tests and `modelplane render` pass their own.

Example (any subset):

    accelerators:                 # a built-in name changes only the fields given
      nvidia-h100:
        runtimeClassName: nvidia
        cpuPerGpu: "12"           # a replica asks cpu + gpus x cpuPerGpu
      amd-mi300x:                 # a new one starts from the field defaults
        nodeSelectorTerms:        # ORed; the expressions of one term ANDed
          - matchExpressions: [{key: example.com/pool, operator: In, values: [mi300x]}]
        tolerations: [{key: amd.com/gpu, operator: Exists, effect: NoSchedule}]
        gpuResourceName: amd.com/gpu
        gpuMemoryGiB: 192
        quantizations: [none, awq, gptq, fp8, bitsandbytes, gguf, compressed-tensors]
    images: {gpu: registry.example.com/modelplane/server:gpu, cpu: ...}
    startupProbe: {periodSeconds: 10, failureThreshold: 180}
    drainTimeoutSeconds: 180               # longest a request may run after SIGTERM
    preStopSeconds: 10                    # endpoints drop a stopping pod before SIGTERM
    maxConcurrentOperatorRollouts: 2      # models re-templated by an operator change at once
    modelCache: {sizeLimit: 200Gi}        # or {claimName: model-cache}
    serviceMonitorLabels: {release: kube-prometheus-stack}
    namespaces: [llm-prod, llm-staging]   # empty: all namespaces
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelplane.api import contract
from modelplane.api.engine import Quantization
from modelplane.api.llmdeployment import QUANTITY_PATTERN
from modelplane.operator.quantities import Resource, per_gpu_total

CONFIG_ENV: Final = "MODELPLANE_OPERATOR_CONFIG"
# A model server's drain after SIGTERM: an 8,000-token answer streamed at 45 tokens/s
# (a long reasoning answer on a busy replica) takes about 180 s. An idle server exits
# within a second, so the long default costs only when a request really runs long.
DEFAULT_DRAIN_TIMEOUT_SECONDS: Final = 180
# Endpoint removal reaches kube-proxy and the gateway within a few seconds; 10 s leaves
# room for a slow kube-proxy sync or an external load balancer's health check.
DEFAULT_PRE_STOP_SECONDS: Final = 10
# After the drain: uvicorn's close (5 s for connections) and the engine's shutdown.
SHUTDOWN_MARGIN_SECONDS: Final = 15
NVIDIA_GPU: Final = "nvidia.com/gpu"
# Node labels that say which GPU a node has, one scheme per way nodes are made:
# NVIDIA GPU feature discovery (GPU Operator; any cloud or bare metal), GKE, and
# Karpenter on AWS (whose GPU memory label is MiB per GPU).
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GKE_ACCELERATOR_LABEL: Final = "cloud.google.com/gke-accelerator"
GKE_PARTITION_LABEL: Final = "cloud.google.com/gke-gpu-partition-size"  # MIG slices
KARPENTER_GPU_NAME_LABEL: Final = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL: Final = "karpenter.k8s.aws/instance-gpu-memory"
ALL_QUANTIZATIONS: Final = tuple(Quantization)
# fp8 weights need FP8 tensor cores: Hopper (H100, H200) or Ada (L4, L40S); bitsandbytes
# needs CUDA.
NO_FP8: Final = tuple(q for q in Quantization if q is not Quantization.FP8)
CPU_QUANTIZATIONS: Final = tuple(
    q for q in Quantization if q not in (Quantization.FP8, Quantization.BITSANDBYTES)
)
# Kubernetes' own rules for label keys and values and for object names (DNS-1123 subdomain).
_DNS_SUBDOMAIN: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_PATTERN: Final = rf"^({_DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN: Final = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
OBJECT_NAME_PATTERN: Final = rf"^{_DNS_SUBDOMAIN}$"


class ConfigModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]
LabelKey = Annotated[str, Field(max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ObjectName = Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)]


NodeOperator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


def check_requirement_values(op: str, key: str, values: tuple[str, ...]) -> None:
    """The values a selector requirement's operator takes, as the API server checks them
    (node selectors and label selectors alike; only node selectors have Gt and Lt)."""
    if op in ("In", "NotIn") and not values:
        raise ValueError(f"{op} on {key} needs at least one value")
    if op in ("Exists", "DoesNotExist") and values:
        raise ValueError(f"{op} on {key} takes no values")
    if op in ("Gt", "Lt") and (len(values) != 1 or not re.fullmatch(r"-?[0-9]+", values[0])):
        raise ValueError(f"{op} on {key} needs exactly one integer value")


class _Requirement(ConfigModel):
    """A condition on one label: its key, an operator (the subclass's), and values."""

    key: LabelKey
    operator: str
    values: tuple[LabelValue, ...] = ()

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> _Requirement:
        check_requirement_values(self.operator, self.key, self.values)
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


class NodeSelectorRequirement(_Requirement):
    """One condition on a node label, as in a pod's node affinity."""

    operator: NodeOperator


class NodeSelectorTerm(ConfigModel):
    """Conditions a node must all meet: one term of the pod's required node affinity."""

    # minItems for helm's check; the validator below says it in words for the operator.
    match_expressions: tuple[NodeSelectorRequirement, ...] = Field(
        json_schema_extra={"minItems": 1}
    )

    @model_validator(mode="after")
    def _not_empty(self) -> NodeSelectorTerm:
        if not self.match_expressions:
            raise ValueError(
                "a term needs at least one matchExpressions entry (it selects no node)"
            )
        return self

    def manifest(self) -> dict[str, Any]:
        return {"matchExpressions": [e.manifest() for e in self.match_expressions]}


class Toleration(ConfigModel):
    """A taint the pods accept (core/v1 Toleration)."""

    key: LabelKey | None = Field(None, description="None with Exists: every taint.")
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="None: every effect."
    )
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _as_kubernetes_allows(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError(f"toleration of {self.key}: operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(f"toleration of {self.key}: tolerationSeconds needs effect NoExecute")
        return self

    def manifest(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        return dumped


class AcceleratorProfile(ConfigModel):
    """Where replicas asking for this accelerator run, and the compute each one asks for.

    A replica's CPU request is `cpu + gpus x cpuPerGpu` (memory likewise; the
    memory limit equals the request) unless the LLMDeployment sets its own.
    """

    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Labels a node must all carry (the pod's nodeSelector)."
    )
    node_selector_terms: tuple[NodeSelectorTerm, ...] = Field(
        (),
        description="The pods' required node affinity: a node qualifies when it meets every "
        "condition of any one term. Empty: any node (with the GPU resource).",
    )
    tolerations: tuple[Toleration, ...] = ()
    runtime_class_name: ObjectName | None = Field(
        None, description="RuntimeClass of the pods (e.g. nvidia); None: the node's default."
    )
    priority_class_name: ObjectName | None = Field(
        None, description="PriorityClass of the pods; None: the cluster's default."
    )
    gpu_resource_name: str | None = Field(
        NVIDIA_GPU, description="Extended resource for GPUs; None for CPU-only profiles."
    )
    gpu_memory_gib: Annotated[float, Field(ge=0)] = Field(
        0,
        alias="gpuMemoryGiB",
        description="Memory of one GPU: the least of the products the profile matches.",
    )
    quantizations: tuple[Quantization, ...] = ALL_QUANTIZATIONS
    cpu: Quantity = Field("4", description="CPU request of a replica, before the per-GPU part.")
    memory: Quantity = Field(
        "32Gi", description="Memory request and limit of a replica, before the per-GPU part."
    )
    cpu_per_gpu: Quantity = Field("0", description="CPU added to the request for each GPU.")
    memory_per_gpu: Quantity = Field("0", description="Memory added for each GPU.")

    @property
    def has_gpus(self) -> bool:
        return self.gpu_resource_name is not None

    def replica_cpu(self, gpus: int) -> str:
        return per_gpu_total(self.cpu, self.cpu_per_gpu, gpus, Resource.CPU)

    def replica_memory(self, gpus: int) -> str:
        return per_gpu_total(self.memory, self.memory_per_gpu, gpus, Resource.MEMORY)


# The taints GPU node pools carry: nvidia.com/gpu (GKE adds it itself; the usual one on
# EKS, Karpenter and the GPU Operator's docs) and sku=gpu (what AKS's docs suggest).
GPU_TOLERATIONS: Final = (
    Toleration(key=NVIDIA_GPU, operator="Exists", effect="NoSchedule"),
    Toleration(key="sku", operator="Equal", value="gpu", effect="NoSchedule"),
)


Condition = tuple[str, NodeOperator, tuple[str, ...]]


def _gpu_terms(
    products: tuple[str, ...],
    gke: tuple[str, ...] = (),
    karpenter: tuple[str, ...] = (),
    karpenter_memory: tuple[NodeOperator, str] | None = None,
) -> tuple[NodeSelectorTerm, ...]:
    """One term per labelling scheme (terms are ORed): a node labelled by any of them fits.

    `karpenter_memory` is (operator, MiB) on Karpenter's per-GPU memory label, for a
    GPU name that covers several memory sizes (a100: 40 and 80 GB).
    """

    def term(*conditions: Condition) -> NodeSelectorTerm:
        return NodeSelectorTerm(
            match_expressions=tuple(
                NodeSelectorRequirement(key=k, operator=op, values=v) for k, op, v in conditions
            )
        )

    terms = [term((GPU_PRODUCT_LABEL, "In", products))]
    if gke:
        # A MIG-partitioned GKE node offers slices, not the whole GPUs the profile promises.
        terms.append(
            term((GKE_ACCELERATOR_LABEL, "In", gke), (GKE_PARTITION_LABEL, "DoesNotExist", ()))
        )
    if karpenter:
        conditions: list[Condition] = [(KARPENTER_GPU_NAME_LABEL, "In", karpenter)]
        if karpenter_memory is not None:
            op, mib = karpenter_memory
            conditions.append((KARPENTER_GPU_MEMORY_LABEL, op, (mib,)))
        terms.append(term(*conditions))
    return tuple(terms)


def _gpu_profile(
    terms: tuple[NodeSelectorTerm, ...],
    memory_gib: float,
    quantizations: tuple[Quantization, ...],
    per_gpu: tuple[str, str],
) -> AcceleratorProfile:
    return AcceleratorProfile(
        node_selector_terms=terms,
        tolerations=GPU_TOLERATIONS,
        gpu_memory_gib=memory_gib,
        quantizations=quantizations,
        cpu="0",
        memory="0",
        cpu_per_gpu=per_gpu[0],
        memory_per_gpu=per_gpu[1],
    )


# Per-GPU CPU and memory fit the smallest usual node of each GPU with room for the
# node's reservations and DaemonSets (docs/reference/accelerators.md has the table;
# tests/unit/test_accelerator_fit.py checks it):
# - 4 vCPU / 15-16 GiB per GPU (T4, L4, A10G; and any GPU): 3 CPU, 10Gi;
# - 4 vCPU / 32 GiB per GPU (L40S): 3 CPU, 24Gi;
# - 6 vCPU / 85 GB per GPU (A100 40GB, a2-megagpu-16g): 5 CPU, 64Gi;
# - 12 vCPU / 144+ GiB per GPU (A100 80GB, H100, H200): 8 CPU, 64Gi.
SMALL_GPU: Final = ("3", "10Gi")
BIG_GPU: Final = ("8", "64Gi")

DEFAULT_ACCELERATORS: Final[dict[str, AcceleratorProfile]] = {
    # Any NVIDIA GPU: no node affinity, nothing known about its memory or features.
    "nvidia-gpu": AcceleratorProfile(
        tolerations=GPU_TOLERATIONS, cpu="0", memory="0",
        cpu_per_gpu=SMALL_GPU[0], memory_per_gpu=SMALL_GPU[1],
    ),
    "nvidia-h100": _gpu_profile(
        _gpu_terms(
            ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe",
             "NVIDIA-H100-NVL"),
            gke=("nvidia-h100-80gb", "nvidia-h100-mega-80gb"),
            karpenter=("h100",),
        ),
        80, ALL_QUANTIZATIONS, BIG_GPU,
    ),
    "nvidia-h200": _gpu_profile(
        _gpu_terms(
            ("NVIDIA-H200", "NVIDIA-H200-NVL"),
            gke=("nvidia-h200-141gb",),
            karpenter=("h200",),
        ),
        141, ALL_QUANTIZATIONS, BIG_GPU,
    ),
    "nvidia-a100": _gpu_profile(  # the 80 GB A100s: a name that promises 80 GB keeps it
        _gpu_terms(
            ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
            gke=("nvidia-a100-80gb",),
            karpenter=("a100",),
            karpenter_memory=("Gt", "65536"),
        ),
        80, NO_FP8, BIG_GPU,
    ),
    "nvidia-a100-40gb": _gpu_profile(
        _gpu_terms(
            ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
            gke=("nvidia-tesla-a100",),
            karpenter=("a100",),
            karpenter_memory=("Lt", "65536"),
        ),
        40, NO_FP8, ("5", "64Gi"),
    ),
    "nvidia-l40s": _gpu_profile(
        _gpu_terms(("NVIDIA-L40S",), karpenter=("l40s",)),
        48, ALL_QUANTIZATIONS, ("3", "24Gi"),
    ),
    "nvidia-l4": _gpu_profile(
        _gpu_terms(("NVIDIA-L4",), gke=("nvidia-l4",), karpenter=("l4",)),
        24, ALL_QUANTIZATIONS, SMALL_GPU,
    ),
    "nvidia-a10g": _gpu_profile(
        _gpu_terms(("NVIDIA-A10G",), karpenter=("a10g",)),
        24, NO_FP8, SMALL_GPU,
    ),
    "nvidia-t4": _gpu_profile(
        _gpu_terms(("Tesla-T4",), gke=("nvidia-tesla-t4",), karpenter=("t4",)),
        16, NO_FP8, SMALL_GPU,
    ),
    "cpu": AcceleratorProfile(
        gpu_resource_name=None, quantizations=CPU_QUANTIZATIONS, cpu="2", memory="8Gi"
    ),
}  # fmt: skip


def _over_builtin(name: str, settings: Any) -> Any:
    """A profile named like a built-in one changes only the fields it sets, as helm values do.

    Keys may be camelCase or snake_case; lists (terms, tolerations) are replaced whole.
    """
    builtin = DEFAULT_ACCELERATORS.get(name)
    if builtin is None or not isinstance(settings, dict):
        return settings
    aliases = {
        field: info.alias or field for field, info in AcceleratorProfile.model_fields.items()
    }
    merged: dict[str, Any] = builtin.model_dump(by_alias=True)
    for key, setting in settings.items():
        merged[aliases.get(str(key), str(key))] = setting
    return merged


class Images(ConfigModel):
    gpu: str = "modelplane/server:gpu"
    cpu: str = "modelplane/server:cpu"
    pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    pull_secrets: list[str] = Field(
        default_factory=list,
        description="Secrets (in each model's namespace) for pulling the server image; "
        "a resource's spec.imagePullSecrets are added to these.",
    )


class StartupProbe(ConfigModel):
    """Model loads can take many minutes: period x threshold is the time allowed."""

    period_seconds: Annotated[int, Field(ge=1)] = 10
    failure_threshold: Annotated[int, Field(ge=1)] = 180


class ModelCache(ConfigModel):
    """Where downloaded weights and compile caches live (/cache in the server image)."""

    claim_name: str | None = Field(
        None, description="A PersistentVolumeClaim shared by replicas; None: an emptyDir."
    )
    size_limit: Quantity = Field(
        "100Gi",
        description="The emptyDir's size limit, and its ephemeral-storage request when the "
        "model's size is neither given nor readable from its name.",
    )


class CacheProfile(ConfigModel):
    """A model cache shared by replicas: a PersistentVolumeClaim in each model's namespace,
    filled once per model revision by a download Job and mounted read-only by the replicas."""

    claim_name: str | None = Field(
        None,
        description="Use this existing claim (it must exist in every namespace that uses the "
        "profile); None: the operator creates modelplane-cache-<profile> from the fields below.",
    )
    storage_class_name: str | None = Field(
        None, description="StorageClass of the created claim; None: the cluster's default."
    )
    size: Quantity = Field("500Gi", description="Size of the created claim.")
    access_mode: str = Field(
        "ReadWriteMany",
        pattern="^(ReadWriteMany|ReadWriteOnce)$",
        description="ReadWriteMany lets replicas on every node mount it (EFS, Filestore, "
        "Azure Files, CephFS); ReadWriteOnce suits single-node clusters only.",
    )


# Every namespace carries its own name in this label (Kubernetes 1.21+, set by the API
# server), so a NetworkPolicy can name one namespace exactly.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
NAMESPACE_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LabelSelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(_Requirement):
    """One condition on a label, as in a NetworkPolicy's pod or namespace selector."""

    operator: LabelSelectorOperator


class LabelSelector(ConfigModel):
    """Labels that must all match; empty selects everything."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(sorted(self.match_labels.items()))
        if self.match_expressions:
            out["matchExpressions"] = [e.manifest() for e in self.match_expressions]
        return out


class IPBlock(ConfigModel):
    """Addresses outside the cluster's pods (a node, a load balancer), in CIDR notation."""

    cidr: str = Field(pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")
    except_: tuple[Annotated[str, Field(pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")], ...] = Field(
        (), alias="except"
    )

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": self.cidr}
        if self.except_:
            out["except"] = list(self.except_)
        return out


class NetworkPolicyPeer(ConfigModel):
    """Who may connect, as in a NetworkPolicy's `from`: pods chosen by podSelector (in the
    model's namespace), every pod of the namespaces namespaceSelector chooses, the pods
    podSelector chooses in those namespaces when both are given, or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selectors:
            raise ValueError("a peer is either an ipBlock or pod/namespace selectors, not both")
        if self.ip_block is None and not selectors:
            raise ValueError(
                "a peer needs podSelector, namespaceSelector or ipBlock "
                "(podSelector: {} is every pod of the model's namespace)"
            )
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.manifest()
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.manifest()
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.manifest()
        return out


def _peer(raw: dict[str, Any]) -> NetworkPolicyPeer:
    return NetworkPolicyPeer.model_validate(raw)


DEFAULT_ALLOW_FROM: Final[tuple[dict[str, Any], ...]] = (
    {"podSelector": {}},  # the model's own namespace
    # kube-prometheus-stack's usual namespace: Prometheus scrapes the /metrics port.
    {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "monitoring"}}},
)


class PolicyPort(ConfigModel):
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: Annotated[int, Field(ge=1, le=65535)]

    def manifest(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "port": self.port}


class EgressRule(ConfigModel):
    """One NetworkPolicy egress rule: destinations (`to`; empty: anywhere) on `ports`
    (empty: any port)."""

    to: tuple[NetworkPolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.to:
            out["to"] = [peer.manifest() for peer in self.to]
        if self.ports:
            out["ports"] = [port.manifest() for port in self.ports]
        return out


# Addresses that are not the internet: the cluster's and the nodes' networks, the cloud
# metadata endpoints (169.254.169.254, fd00:ec2::254), loopback.
PRIVATE_IPV4: Final = (
    "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16",
)  # fmt: skip
PRIVATE_IPV6: Final = ("::1/128", "fc00::/7", "fe80::/10")
DEFAULT_ALLOW_TO: Final[tuple[dict[str, Any], ...]] = (
    # DNS, wherever the cluster's resolver is (kube-dns, NodeLocal DNSCache).
    {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    # HTTPS to the internet (a hub's downloads, allowed media hosts), nothing internal.
    {
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_IPV4)}},
            {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_IPV6)}},
        ],
        "ports": [{"protocol": "TCP", "port": 443}],
    },
)


class EgressSettings(ConfigModel):
    """Where a model server may connect: off by default (anywhere). On, only to allowTo:
    by default DNS and HTTPS to public addresses, so a media URL or a tool cannot make the
    engine reach the cluster's services or the cloud's metadata endpoint."""

    enabled: bool = False
    allow_to: tuple[EgressRule, ...] = Field(
        default_factory=lambda: tuple(EgressRule.model_validate(r) for r in DEFAULT_ALLOW_TO),
        description="NetworkPolicy egress rules (to: NetworkPolicyPeers, ports); default: DNS "
        "anywhere, and TCP 443 to every address but private, link-local and loopback ones.",
    )


class NetworkPolicySettings(ConfigModel):
    """Who may reach a model server's port. Modelplane's own pods always may: the operator
    (it reads each replica's /metrics for the autoscaler and the canary analysis) and the
    gateway, both only in controlPlaneNamespace; then the peers allowFrom lists."""

    enabled: bool = True
    control_plane_namespace: Annotated[
        str, Field(max_length=63, pattern=NAMESPACE_NAME_PATTERN)
    ] = Field(
        "modelplane-system",
        description="Namespace of the operator's and the gateway's pods (admitted by their "
        "labels there only). The chart sets it to the release namespace.",
    )
    allow_from: tuple[NetworkPolicyPeer, ...] = Field(
        default_factory=lambda: tuple(map(_peer, DEFAULT_ALLOW_FROM)),
        description="Other peers (NetworkPolicyPeer objects); default: every pod of the "
        "model's own namespace, and the monitoring namespace (where Prometheus scrapes from).",
    )
    egress: EgressSettings = Field(default_factory=EgressSettings)


class OperatorConfig(ConfigModel):
    """Everything the operator needs to know that is not in an LLMDeployment."""

    accelerators: dict[str, AcceleratorProfile] = Field(
        default_factory=lambda: dict(DEFAULT_ACCELERATORS)
    )
    default_gpu_accelerator: str = "nvidia-gpu"
    default_cpu_accelerator: str = "cpu"
    images: Images = Field(default_factory=Images)
    startup_probe: StartupProbe = Field(default_factory=StartupProbe)
    drain_timeout_seconds: Annotated[int, Field(ge=0)] = Field(
        DEFAULT_DRAIN_TIMEOUT_SECONDS,
        description="After SIGTERM, the longest a model server keeps serving: requests in "
        "flight (long streams included) and arriving are served until it is idle, or this "
        "many seconds have passed.",
    )
    pre_stop_seconds: Annotated[int, Field(ge=0, le=300)] = Field(
        DEFAULT_PRE_STOP_SECONDS,
        description="The model-server container's pre-stop sleep (the kubelet's native sleep "
        "action, Kubernetes 1.30+): a stopping pod keeps serving this long before SIGTERM, "
        "while endpoints, kube-proxy and the gateway stop routing to it. 0: no hook.",
    )
    max_concurrent_operator_rollouts: Annotated[int, Field(ge=1)] = Field(
        2,
        description="Models re-templated at once by a change of the operator itself (a new "
        "version, a config change), each rollout wanting a spare GPU; the others wait "
        "(condition Progressing, reason RolloutQueued). A change of a model's own spec is "
        "never held back.",
    )
    shm_size_limit: Quantity = "8Gi"
    model_cache: ModelCache = Field(default_factory=ModelCache)
    cache_profiles: dict[str, CacheProfile] = Field(
        default_factory=dict,
        description="Shared model caches by name, for spec.model.cacheProfile.",
    )
    download_job_deadline_seconds: Annotated[int, Field(ge=60)] = Field(
        6 * 3600, description="How long a model download Job may run before it fails."
    )
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
        return {**DEFAULT_ACCELERATORS, **{n: _over_builtin(n, p) for n, p in value.items()}}

    @property
    def termination_grace_seconds(self) -> int:
        """The pod's grace: its pre-stop sleep, then the server's drain, then time to exit.

        The kubelet counts the grace from the start of the pre-stop hook, so a
        grace shorter than both would SIGKILL a stream the drain still allows.
        """
        return self.pre_stop_seconds + self.drain_timeout_seconds + SHUTDOWN_MARGIN_SECONDS


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
