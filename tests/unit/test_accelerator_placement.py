"""Accelerator profiles put model servers on nodes that can run them.

Each test renders the Deployment the operator would write and asks
tests/support/node_scheduling.py (the scheduler's filters: labels, node
affinity, taints, requests) whether realistic nodes take its pods. The nodes
are labelled as NVIDIA GPU feature discovery, GKE and Karpenter label them and
sized as the clouds sell them, less a conservative allowance for what the
kubelet reserves and DaemonSets ask (`allocatable` below). The sizes are those
docs/reference/accelerators.md states.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
import pytest

from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders import BuildOptions, build_children
from modelplane.operator.config import (
    DEFAULT_ACCELERATORS,
    GKE_ACCELERATOR_LABEL,
    GKE_PARTITION_LABEL,
    GPU_PRODUCT_LABEL,
    KARPENTER_GPU_MEMORY_LABEL,
    KARPENTER_GPU_NAME_LABEL,
    OperatorConfig,
    load_config,
)
from tests.support.node_scheduling import Node, labels_match, shortfall

CONFIG: Final = OperatorConfig()
GPU_PROFILES: Final = sorted(n for n, p in DEFAULT_ACCELERATORS.items() if p.has_gpus)
SPECIFIC: Final = [n for n in GPU_PROFILES if n != "nvidia-gpu"]  # those that name a GPU
GIB: Final = Decimal(2**30)


def pod_spec(
    accelerator: str, gpus: int, config: OperatorConfig = CONFIG, **resources: str
) -> dict[str, Any]:
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {"source": "hf://Qwen/Qwen2.5-7B-Instruct"},
            "resources": {"accelerator": accelerator, "gpus": gpus, **resources},
        }
    )
    children = build_children("chat", "llm", spec, config, BuildOptions(replicas=1))
    (deployment,) = [c for c in children if c["kind"] == "Deployment"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def requests(pod: dict[str, Any]) -> dict[str, str]:
    (container,) = pod["containers"]
    return dict(container["resources"]["requests"])


# --- nodes as the clouds sell them ------------------------------------------------------


def reserved_memory_gib(memory: Decimal) -> Decimal:
    """GKE's kubelet memory reservation (the largest of GKE, EKS and AKS on these sizes)."""
    tiers = ((4, "0.25"), (4, "0.20"), (8, "0.10"), (112, "0.06"), (10**9, "0.02"))
    left, reserved = memory, Decimal(0)
    for size, share in tiers:
        part = min(left, Decimal(size))
        reserved += part * Decimal(share)
        left -= part
    return reserved


def reserved_cpu(cores: Decimal) -> Decimal:
    """The kubelet CPU reservation GKE and the EKS AMIs share."""
    tiers = ((1, "0.06"), (1, "0.01"), (2, "0.005"), (10**6, "0.0025"))
    left, reserved = cores, Decimal(0)
    for size, share in tiers:
        part = min(left, Decimal(size))
        reserved += part * Decimal(share)
        left -= part
    return reserved


# The kernel's MemTotal is ~3% under the size sold; eviction keeps 100 MiB free; the
# GPU Operator's and the cloud's DaemonSets (device plugin, feature discovery, DCGM
# exporter, CNI, kube-proxy, logging, node exporter) get 0.5 CPU and 1 GiB.
MEMTOTAL_SHARE: Final = Decimal("0.97")
EVICTION_GIB: Final = Decimal("0.1")
DAEMONSET_CPU: Final = Decimal("0.5")
DAEMONSET_GIB: Final = Decimal(1)


@dataclass(frozen=True)
class Machine:
    name: str
    provider: str  # gke | aws (Karpenter) | azure (AKS with the GPU Operator)
    vcpus: int
    memory_gib: int
    gpus: int
    profile: str
    gpu_label: str  # GKE accelerator, Karpenter GPU name or GFD product
    gpu_memory_mib: int = 0  # Karpenter's per-GPU memory label

    def node(self) -> Node:
        labels: dict[str, str]
        if self.provider == "gke":
            labels = {GKE_ACCELERATOR_LABEL: self.gpu_label}
            taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
        elif self.provider == "aws":
            labels = {
                KARPENTER_GPU_NAME_LABEL: self.gpu_label,
                KARPENTER_GPU_MEMORY_LABEL: str(self.gpu_memory_mib),
            }
            taint = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
        else:
            labels = {GPU_PRODUCT_LABEL: self.gpu_label}
            taint = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
        cores, memory = Decimal(self.vcpus), Decimal(self.memory_gib) * MEMTOTAL_SHARE
        cpu = cores - reserved_cpu(cores) - DAEMONSET_CPU
        gib = memory - reserved_memory_gib(memory) - EVICTION_GIB - DAEMONSET_GIB
        return Node(
            labels=labels,
            taints=[taint],
            allocatable={"cpu": cpu, "memory": gib * GIB, "nvidia.com/gpu": Decimal(self.gpus)},
        )


MACHINES: Final = [
    # L4
    Machine("g2-standard-4", "gke", 4, 16, 1, "nvidia-l4", "nvidia-l4"),
    Machine("g2-standard-24", "gke", 24, 96, 2, "nvidia-l4", "nvidia-l4"),
    Machine("g2-standard-96", "gke", 96, 384, 8, "nvidia-l4", "nvidia-l4"),
    Machine("g6.xlarge", "aws", 4, 16, 1, "nvidia-l4", "l4", 22888),
    Machine("g6.12xlarge", "aws", 48, 192, 4, "nvidia-l4", "l4", 22888),
    Machine("g6.48xlarge", "aws", 192, 768, 8, "nvidia-l4", "l4", 22888),
    # T4
    Machine("n1-standard-4 + 1 T4", "gke", 4, 15, 1, "nvidia-t4", "nvidia-tesla-t4"),
    Machine("n1-standard-16 + 4 T4", "gke", 16, 60, 4, "nvidia-t4", "nvidia-tesla-t4"),
    Machine("g4dn.xlarge", "aws", 4, 16, 1, "nvidia-t4", "t4", 16384),
    Machine("g4dn.12xlarge", "aws", 48, 192, 4, "nvidia-t4", "t4", 16384),
    # A10G
    Machine("g5.xlarge", "aws", 4, 16, 1, "nvidia-a10g", "a10g", 24576),
    Machine("g5.12xlarge", "aws", 48, 192, 4, "nvidia-a10g", "a10g", 24576),
    Machine("g5.48xlarge", "aws", 192, 768, 8, "nvidia-a10g", "a10g", 24576),
    # L40S
    Machine("g6e.xlarge", "aws", 4, 32, 1, "nvidia-l40s", "l40s", 46068),
    Machine("g6e.12xlarge", "aws", 48, 384, 4, "nvidia-l40s", "l40s", 46068),
    Machine("g6e.48xlarge", "aws", 192, 1536, 8, "nvidia-l40s", "l40s", 46068),
    # A100 40GB
    Machine("a2-highgpu-1g", "gke", 12, 85, 1, "nvidia-a100-40gb", "nvidia-tesla-a100"),
    Machine("a2-highgpu-8g", "gke", 96, 680, 8, "nvidia-a100-40gb", "nvidia-tesla-a100"),
    Machine("a2-megagpu-16g", "gke", 96, 1360, 16, "nvidia-a100-40gb", "nvidia-tesla-a100"),
    Machine("p4d.24xlarge", "aws", 96, 1152, 8, "nvidia-a100-40gb", "a100", 40960),
    # A100 80GB
    Machine("a2-ultragpu-1g", "gke", 12, 170, 1, "nvidia-a100", "nvidia-a100-80gb"),
    Machine("a2-ultragpu-8g", "gke", 96, 1360, 8, "nvidia-a100", "nvidia-a100-80gb"),
    Machine("p4de.24xlarge", "aws", 96, 1152, 8, "nvidia-a100", "a100", 81920),
    Machine("NC24ads_A100_v4", "azure", 24, 220, 1, "nvidia-a100", "NVIDIA-A100-80GB-PCIe"),
    Machine("ND96amsr_A100_v4", "azure", 96, 1900, 8, "nvidia-a100", "NVIDIA-A100-SXM4-80GB"),
    # H100
    Machine("a3-highgpu-1g", "gke", 26, 234, 1, "nvidia-h100", "nvidia-h100-80gb"),
    Machine("a3-highgpu-8g", "gke", 208, 1872, 8, "nvidia-h100", "nvidia-h100-80gb"),
    Machine("a3-megagpu-8g", "gke", 208, 1872, 8, "nvidia-h100", "nvidia-h100-mega-80gb"),
    Machine("p5.4xlarge", "aws", 16, 256, 1, "nvidia-h100", "h100", 81920),
    Machine("p5.48xlarge", "aws", 192, 2048, 8, "nvidia-h100", "h100", 81920),
    Machine("NC40ads_H100_v5", "azure", 40, 320, 1, "nvidia-h100", "NVIDIA-H100-NVL"),
    Machine("ND96isr_H100_v5", "azure", 96, 1900, 8, "nvidia-h100", "NVIDIA-H100-80GB-HBM3"),
    # H200
    Machine("a3-ultragpu-8g", "gke", 224, 2952, 8, "nvidia-h200", "nvidia-h200-141gb"),
    Machine("p5e.48xlarge", "aws", 192, 2048, 8, "nvidia-h200", "h200", 144384),
    Machine("ND96isr_H200_v5", "azure", 96, 1850, 8, "nvidia-h200", "NVIDIA-H200"),
]


@pytest.mark.parametrize("machine", MACHINES, ids=[m.name for m in MACHINES])
def test_a_replica_using_every_gpu_of_a_usual_node_is_scheduled_there(machine: Machine) -> None:
    """Labels, taints and the requests (per-GPU CPU and memory) all admit the pod."""
    node = machine.node()
    assert shortfall(pod_spec(machine.profile, machine.gpus), node) == []
    # The generic profile fits every one of them too.
    assert shortfall(pod_spec("nvidia-gpu", machine.gpus), node) == []


def test_every_gpu_profile_has_a_usual_node() -> None:
    assert {m.profile for m in MACHINES} == set(SPECIFIC)


@pytest.mark.parametrize("accelerator", GPU_PROFILES)
def test_rendered_pod_has_the_profiles_affinity_tolerations_and_per_gpu_requests(
    accelerator: str,
) -> None:
    profile = CONFIG.accelerators[accelerator]
    one, two = pod_spec(accelerator, 1), pod_spec(accelerator, 2)
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": one},
        "1.30",
        strict=True,
    )
    if accelerator == "nvidia-gpu":
        assert "affinity" not in one  # any node with the GPU resource
    else:
        terms = one["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        schemes = {e["key"] for t in terms for e in t["matchExpressions"] if e["operator"] == "In"}
        assert GPU_PRODUCT_LABEL in schemes and KARPENTER_GPU_NAME_LABEL in schemes
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in one[
        "tolerations"
    ]
    assert "nodeSelector" not in one
    assert "runtimeClassName" not in one and "priorityClassName" not in one
    assert requests(one)["cpu"] == profile.cpu_per_gpu
    assert requests(one)["memory"] == profile.memory_per_gpu
    for pod, gpus in ((one, 1), (two, 2)):
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["memory"] == requests(pod)["memory"]
        assert requests(pod)["nvidia.com/gpu"] == container["resources"]["limits"][
            "nvidia.com/gpu"
        ] == str(gpus)  # fmt: skip
    cpu_one, cpu_two = (Decimal(requests(p)["cpu"]) for p in (one, two))
    assert cpu_two == 2 * cpu_one
    assert requests(two)["memory"] == f"{2 * int(profile.memory_per_gpu[:-2])}Gi"


@pytest.mark.parametrize(
    ("labels", "profiles"),
    [
        # NVIDIA GPU feature discovery: the product name, spaces as dashes.
        ({GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}, {"nvidia-h100"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-H100-PCIe"}, {"nvidia-h100"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-H100-NVL"}, {"nvidia-h100"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-H200"}, {"nvidia-h200"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}, {"nvidia-a100"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-A100-80GB-PCIe"}, {"nvidia-a100"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-40GB"}, {"nvidia-a100-40gb"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-A100-PCIE-40GB"}, {"nvidia-a100-40gb"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-L4"}, {"nvidia-l4"}),
        ({GPU_PRODUCT_LABEL: "NVIDIA-L40S"}, {"nvidia-l40s"}),  # not the L4's
        ({GPU_PRODUCT_LABEL: "NVIDIA-A10G"}, {"nvidia-a10g"}),
        ({GPU_PRODUCT_LABEL: "Tesla-T4"}, {"nvidia-t4"}),
        # MIG slices under the single strategy are not whole GPUs.
        ({GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}, set()),
        # GKE
        ({GKE_ACCELERATOR_LABEL: "nvidia-h100-mega-80gb"}, {"nvidia-h100"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-h200-141gb"}, {"nvidia-h200"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-tesla-a100"}, {"nvidia-a100-40gb"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-a100-80gb"}, {"nvidia-a100"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-l4"}, {"nvidia-l4"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-tesla-t4"}, {"nvidia-t4"}),
        ({GKE_ACCELERATOR_LABEL: "nvidia-a100-80gb", GKE_PARTITION_LABEL: "1g.10gb"}, set()),
        # Karpenter on AWS: one name for both A100 sizes, told apart by memory (MiB).
        ({KARPENTER_GPU_NAME_LABEL: "a100", KARPENTER_GPU_MEMORY_LABEL: "81920"},
         {"nvidia-a100"}),
        ({KARPENTER_GPU_NAME_LABEL: "a100", KARPENTER_GPU_MEMORY_LABEL: "40960"},
         {"nvidia-a100-40gb"}),
        ({KARPENTER_GPU_NAME_LABEL: "l40s"}, {"nvidia-l40s"}),
        ({KARPENTER_GPU_NAME_LABEL: "h200"}, {"nvidia-h200"}),
        # A GPU no profile names: only nvidia-gpu takes it.
        ({GPU_PRODUCT_LABEL: "NVIDIA-A10"}, set()),
        ({}, set()),
    ],
)  # fmt: skip
def test_a_node_matches_the_profile_of_its_gpu_and_no_other(
    labels: dict[str, str], profiles: set[str]
) -> None:
    matching = {a for a in SPECIFIC if labels_match(pod_spec(a, 1), labels)}
    assert matching == profiles
    assert labels_match(pod_spec("nvidia-gpu", 1), labels)


def test_cpu_profile_places_its_pods_anywhere() -> None:
    pod = pod_spec("cpu", 0)
    assert not {"affinity", "nodeSelector", "tolerations", "runtimeClassName"} & set(pod)
    assert requests(pod)["cpu"] == "2" and requests(pod)["memory"] == "8Gi"


def test_a_foreign_taint_keeps_the_pods_off() -> None:
    node = Node(
        labels={GPU_PRODUCT_LABEL: "NVIDIA-L4"},
        taints=[{"key": "dedicated", "value": "training", "effect": "NoSchedule"}],
        allocatable={"cpu": Decimal(8), "memory": 64 * GIB, "nvidia.com/gpu": Decimal(1)},
    )
    assert shortfall(pod_spec("nvidia-l4", 1), node) == [
        "a NoSchedule/NoExecute taint is not tolerated"
    ]


def test_the_resources_own_cpu_and_memory_win() -> None:
    pod = pod_spec("nvidia-l4", 2, cpu="6", memory="40Gi")
    assert requests(pod)["cpu"] == "6" and requests(pod)["memory"] == "40Gi"


def test_a_profile_of_a_builtin_name_changes_only_what_it_sets(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(
        "accelerators:\n"
        "  nvidia-h100:\n"
        "    runtimeClassName: nvidia\n"
        "    priorityClassName: llm-serving\n"
        '    cpuPerGpu: "12"\n'
    )
    config = load_config(path)
    pod = pod_spec("nvidia-h100", 2, config)
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "llm-serving"
    assert requests(pod)["cpu"] == "24"
    assert requests(pod)["memory"] == "128Gi"  # the built-in memoryPerGpu stays
    assert pod["affinity"] == pod_spec("nvidia-h100", 2)["affinity"]
    assert pod["tolerations"] == pod_spec("nvidia-h100", 2)["tolerations"]
    assert labels_match(pod, {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"})


def test_a_profiles_terms_are_replaced_whole_and_new_profiles_start_empty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(
        "accelerators:\n"
        "  nvidia-l4:\n"
        "    nodeSelectorTerms:\n"
        "      - matchExpressions: [{key: example.com/pool, operator: In, values: [llm]}]\n"
        "  amd-mi300x:\n"
        "    gpuResourceName: amd.com/gpu\n"
        "    nodeSelector: {amd.com/gpu.product: MI300X}\n"
    )
    config = load_config(path)
    l4 = pod_spec("nvidia-l4", 1, config)
    assert labels_match(l4, {"example.com/pool": "llm"})
    assert not labels_match(l4, {GPU_PRODUCT_LABEL: "NVIDIA-L4"})
    amd = pod_spec("amd-mi300x", 1, config)
    assert amd["nodeSelector"] == {"amd.com/gpu.product": "MI300X"}
    assert "affinity" not in amd and "tolerations" not in amd
    assert requests(amd)["cpu"] == "4" and requests(amd)["amd.com/gpu"] == "1"


@pytest.mark.parametrize(
    ("requirement", "labels", "holds"),
    [
        ({"key": "a", "operator": "In", "values": ["x", "y"]}, {"a": "y"}, True),
        ({"key": "a", "operator": "In", "values": ["x"]}, {}, False),
        ({"key": "a", "operator": "NotIn", "values": ["x"]}, {}, True),
        ({"key": "a", "operator": "NotIn", "values": ["x"]}, {"a": "x"}, False),
        ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
        ({"key": "a", "operator": "DoesNotExist"}, {"a": ""}, False),
        ({"key": "a", "operator": "Gt", "values": ["65536"]}, {"a": "81920"}, True),
        ({"key": "a", "operator": "Gt", "values": ["65536"]}, {}, False),
        ({"key": "a", "operator": "Lt", "values": ["65536"]}, {"a": "big"}, False),
    ],
)  # fmt: skip
def test_the_matcher_reads_node_affinity_as_kubernetes_does(
    requirement: dict[str, Any], labels: dict[str, str], holds: bool
) -> None:
    term = {"matchExpressions": [requirement]}
    required = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    assert labels_match({"affinity": {"nodeAffinity": required}}, labels) is holds
