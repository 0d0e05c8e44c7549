"""The builders: children of an LLMDeployment for CPU and GPU serving, quantizations, tensor
parallelism and maxSurge 0, each valid for Kubernetes 1.30 and the newest version the
official schemas know; and a pod whose `modelplane serve` arguments, read back by the
server's own option parser, reproduce the resource's engine settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.cli import build_parser
from modelplane.operator.builders import BuildOptions, build_children, spec_hash
from modelplane.operator.builders.deployment import CONTAINER
from modelplane.operator.config import OperatorConfig
from modelplane.server.options import options_from_args

VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CONFIG = OperatorConfig()

SPECS: dict[str, dict[str, Any]] = {
    "cpu": {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}},
    "h100 fp8 tp2": {
        "model": {"source": "hf://meta-llama/Llama-3.1-70B-Instruct", "revision": "abc123",
                  "servedName": "llama-70b"},
        "engine": {"quantization": "fp8", "kvCacheDtype": "fp8", "tensorParallelSize": 2,
                   "maxModelLen": 8192},
        "resources": {"accelerator": "nvidia-h100", "gpus": 2},
        "rollout": {"maxSurge": 0, "maxUnavailable": 1},
    },
    "l4 awq from pvc with keys": {
        "model": {"source": "pvc://models/qwen2.5-7b-awq", "servedName": "qwen"},
        "engine": {"quantization": "awq", "image": "registry.example.com/server:1",
                   "extraArgs": ["--max-num-seqs=64"]},
        "resources": {"accelerator": "nvidia-l4", "gpus": 1, "cpu": "6", "memory": "40Gi"},
        "auth": {"apiKeySecretRef": {"name": "llm-keys"}},
    },
    "t4 gptq embeddings": {
        "model": {"source": "s3://models/bge", "servedName": "bge"},
        "engine": {"quantization": "gptq", "runner": "pooling"},
        "resources": {"accelerator": "nvidia-t4", "gpus": 1},
    },
}  # fmt: skip


def children(
    spec: dict[str, Any], *, replicas: int = 1, service_monitor: bool = True
) -> dict[str, dict[str, Any]]:
    typed = LLMDeploymentSpec.model_validate(spec)
    options = BuildOptions(replicas=replicas, service_monitor_api=service_monitor)
    built = build_children("chat", "llm", typed, CONFIG, options)
    return {m["kind"]: m for m in built}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["name"] == CONTAINER
    return dict(c)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", SPECS)
def test_children_are_valid_kubernetes_objects(case: str, version: str) -> None:
    for kind, manifest in children(SPECS[case]).items():
        if kind == "ServiceMonitor":
            continue  # a CRD of the Prometheus Operator: no official schema to check against
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("case", SPECS)
def test_every_child_carries_the_contract_labels(case: str) -> None:
    for manifest in children(SPECS[case]).values():
        labels = manifest["metadata"]["labels"]
        assert labels == {
            contract.LABEL_NAME: "modelplane",
            contract.LABEL_INSTANCE: "chat",
            contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
            contract.LABEL_PART_OF: "modelplane",
            contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
            contract.LABEL_LLMDEPLOYMENT: "chat",
            contract.LABEL_TRACK: contract.TRACK_STABLE,
        }
        assert manifest["metadata"]["namespace"] == "llm"
        assert manifest["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]


def test_cpu_pod_has_no_gpu_and_cpu_image() -> None:
    c = container(children(SPECS["cpu"])["Deployment"])
    assert c["image"] == CONFIG.images.cpu
    assert c["resources"] == {
        # 135M parameters in 16 bits, with headroom, rounded up: the emptyDir cache's room.
        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "8Gi"},
    }
    pod = children(SPECS["cpu"])["Deployment"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_gpu_pod_requests_gpus_on_the_accelerators_nodes() -> None:
    deployment = children(SPECS["h100 fp8 tp2"])["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["image"] == CONFIG.images.gpu
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "nvidia.com/gpu.product", "operator": "In",
            "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe",
                       "NVIDIA-H100-NVL"]} in terms[0]["matchExpressions"]  # fmt: skip
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # Two H100s: twice the per-GPU CPU and memory of the profile.
    assert c["resources"]["requests"]["cpu"] == "16"
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"] == "128Gi"
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


@pytest.mark.parametrize("case", SPECS)
def test_pod_is_locked_down_and_probed(case: str) -> None:
    deployment = children(SPECS[case])["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] > CONFIG.drain_timeout_seconds
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "/cache" in mounts and "/tmp" in mounts
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations[contract.ANNOTATION_TEMPLATE_HASH]) == 16


def _serve_options(built: dict[str, dict[str, Any]], tmp_path: Path) -> Any:
    """Read the pod's command line back with `modelplane serve`'s own parser."""
    c = container(built["Deployment"])
    settings_path = tmp_path / "serve.yaml"
    settings_path.write_text(built["ConfigMap"]["data"]["serve.yaml"])
    mounted = "/etc/modelplane/config/serve.yaml"
    args = [str(settings_path) if a == mounted else a for a in c["args"]]
    assert c["command"] == ["modelplane", "serve"]
    return options_from_args(build_parser().parse_args(["serve", *args]))


@pytest.mark.parametrize("case", SPECS)
def test_server_arguments_reproduce_the_engine_settings(case: str, tmp_path: Path) -> None:
    spec = LLMDeploymentSpec.model_validate(SPECS[case])
    options = _serve_options(children(SPECS[case]), tmp_path)
    engine = options.engine.model_dump()
    expected = spec.engine.engine_config().model_dump()
    source_args = [a for a in engine.pop("extra_args") if a not in expected["extra_args"]]
    expected.pop("extra_args")
    assert engine == expected
    assert options.served_model_name == (spec.model.served_name or "chat")
    assert (options.host, options.port) == ("0.0.0.0", contract.SERVER_PORT)
    if spec.model.source.startswith("hf://") and spec.model.revision != "main":
        assert source_args == [f"--revision={spec.model.revision}"]


def test_model_sources_become_server_model_paths(tmp_path: Path) -> None:
    assert _serve_options(children(SPECS["cpu"]), tmp_path).model == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    pvc = children(SPECS["l4 awq from pvc with keys"])
    assert _serve_options(pvc, tmp_path).model == "/models/qwen2.5-7b-awq"
    volumes = {v["name"]: v for v in pvc["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["api-keys"]["secret"]["secretName"] == "llm-keys"
    assert _serve_options(pvc, tmp_path).api_key_file == Path("/etc/modelplane/keys/keys")
    s3 = _serve_options(children(SPECS["t4 gptq embeddings"]), tmp_path)
    assert s3.model == "s3://models/bge"
    assert "--load-format=runai_streamer" in s3.engine.extra_args


def test_service_is_what_the_gateway_discovers() -> None:
    chat = children(SPECS["cpu"])["Service"]
    assert chat["metadata"]["name"] == "chat"
    annotations = dict(chat["metadata"]["annotations"])
    assert annotations.pop(contract.ANNOTATION_SPEC_HASH)
    assert annotations == {
        contract.ANNOTATION_SERVED_MODEL: "chat",
        contract.ANNOTATION_TRAFFIC_WEIGHT: "100",
        contract.ANNOTATION_REVISION: "main",
        contract.ANNOTATION_ROUTING: "prefix",
    }
    assert chat["spec"]["selector"] == {
        contract.LABEL_LLMDEPLOYMENT: "chat",
        contract.LABEL_TRACK: contract.TRACK_STABLE,
    }
    (port,) = chat["spec"]["ports"]
    assert (port["name"], port["port"]) == (contract.SERVER_PORT_NAME, contract.SERVER_PORT)
    embeddings = children(SPECS["t4 gptq embeddings"])["Service"]["metadata"]["annotations"]
    assert embeddings[contract.ANNOTATION_ROUTING] == "least-load"
    assert embeddings[contract.ANNOTATION_SERVED_MODEL] == "bge"


def test_service_monitor_only_where_the_api_exists_and_wanted() -> None:
    assert "ServiceMonitor" in children(SPECS["cpu"], service_monitor=True)
    assert "ServiceMonitor" not in children(SPECS["cpu"], service_monitor=False)
    off = {**SPECS["cpu"], "monitoring": {"serviceMonitor": False}}
    assert "ServiceMonitor" not in children(off, service_monitor=True)


def test_spec_hash_ignores_replicas_and_follows_content() -> None:
    one = children(SPECS["cpu"], replicas=1)["Deployment"]
    three = children(SPECS["cpu"], replicas=3)["Deployment"]
    assert three["spec"]["replicas"] == 3
    assert spec_hash(one) == spec_hash(three)
    longer = {**SPECS["cpu"], "engine": {"maxModelLen": 1024}}
    changed = children(longer)
    assert spec_hash(changed["Deployment"]) != spec_hash(one)
    assert spec_hash(changed["Service"]) == spec_hash(children(SPECS["cpu"])["Service"])
    # A changed settings file changes the pod template, so replicas roll.
    renamed = {**SPECS["cpu"], "model": {**SPECS["cpu"]["model"], "servedName": "other"}}
    hash_key = contract.ANNOTATION_TEMPLATE_HASH
    template = children(renamed)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert template[hash_key] != one["spec"]["template"]["metadata"]["annotations"][hash_key]


def test_builders_are_deterministic() -> None:
    assert yaml.safe_dump(children(SPECS["h100 fp8 tp2"])) == yaml.safe_dump(
        children(SPECS["h100 fp8 tp2"])
    )
