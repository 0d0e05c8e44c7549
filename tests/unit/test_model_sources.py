"""Reaching private model sources and keeping the weights: what the rendered pods say.

Credentials come from a Secret the kubelet reads (never the operator), by
name, only the variables the downloaders use; a ServiceAccount and pull
Secrets go on the pod; the emptyDir cache asks for the disk the model needs;
a cache profile gives a claim, a download Job and read-only weights. Every
rendered object is checked against the official Kubernetes schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders import BuildOptions, build_children
from modelplane.operator.builders.model_cache import build_cache_claim
from modelplane.operator.builders.model_size import estimated_disk_gib, parameter_count
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.claims import source_claim_problems
from modelplane.operator.reconcile.fit import fit_problems
from modelplane.server.model_download import DownloadError, ignored_patterns, repository

VERSIONS = ["1.30", kubernetes_validate.latest_version()]
PROFILES = OperatorConfig.model_validate(
    {
        "cacheProfiles": {"shared": {"storageClassName": "efs-sc"}, "mine": {"claimName": "w"}},
        "images": {"pullSecrets": ["registry", "shared"]},
    }
)
GATED: dict[str, Any] = {
    "model": {
        "source": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "credentialsSecretRef": {"name": "hf-token"},
    },
    "serviceAccountName": "model-reader",
    "imagePullSecrets": [{"name": "shared"}, {"name": "team"}],
}


def build(spec: dict[str, Any], config: OperatorConfig = PROFILES) -> dict[str, dict[str, Any]]:
    typed = LLMDeploymentSpec.model_validate(spec)
    built = build_children("llama", "llm", typed, config, BuildOptions(replicas=2))
    return {m["kind"]: m for m in built}


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return pod


def env_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod_of(manifest)["containers"][0].get("env", [])}


def test_an_hf_token_comes_from_the_secret_by_reference() -> None:
    env = env_of(build(GATED)["Deployment"])
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": False}},
    }
    assert not any(name.startswith("AWS_") for name in env)


def test_s3_keys_and_endpoint_come_from_the_secret_and_only_the_keys_are_required() -> None:
    spec = {"model": {"source": "s3://models/llama", "credentialsSecretRef": {"name": "s3"}}}
    env = env_of(build(spec)["Deployment"])
    optional = {
        name: e["valueFrom"]["secretKeyRef"]["optional"]
        for name, e in env.items()
        if "valueFrom" in e
    }
    assert optional == {
        "AWS_ACCESS_KEY_ID": False,
        "AWS_SECRET_ACCESS_KEY": False,
        "AWS_SESSION_TOKEN": True,
        "AWS_REGION": True,
        "AWS_DEFAULT_REGION": True,
        "AWS_ENDPOINT_URL": True,
    }
    assert "HF_TOKEN" not in env


def test_service_account_and_pull_secrets_go_on_the_pod_without_a_token() -> None:
    pod = pod_of(build(GATED)["Deployment"])
    assert pod["serviceAccountName"] == "model-reader"
    # The operator's first, then the resource's, each once.
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "shared"}, {"name": "team"}]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_without_identity_settings_the_pod_has_none() -> None:
    pod = pod_of(build({"model": {"source": "hf://o/m"}}, OperatorConfig())["Deployment"])
    assert "serviceAccountName" not in pod and "imagePullSecrets" not in pod
    assert not any("valueFrom" in e for e in env_of(build({"model": {"source": "hf://o/m"}})
                                                    ["Deployment"]).values())  # fmt: skip


@pytest.mark.parametrize(
    ("source", "quantization", "size", "disk"),
    [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", "none", None, "19Gi"),
        ("hf://meta-llama/Llama-3.1-70B-Instruct", "none", None, "163Gi"),
        ("hf://Qwen/Qwen2.5-7B-Instruct-AWQ", "awq", None, "5Gi"),
        ("hf://mistralai/Mixtral-8x7B-Instruct-v0.1", "none", None, "131Gi"),
        ("hf://HuggingFaceTB/SmolLM2-135M-Instruct", "none", None, "1Gi"),
        ("hf://org/nameless", "none", None, "100Gi"),  # nothing to go by: modelCache.sizeLimit
        ("hf://meta-llama/Llama-3.1-8B-Instruct", "none", "40Gi", "40Gi"),  # the spec wins
    ],
)
def test_the_empty_dir_cache_requests_the_disk_the_model_needs(
    source: str, quantization: str, size: str | None, disk: str
) -> None:
    model: dict[str, Any] = {"source": source, **({"size": size} if size else {})}
    deployment = build({"model": model, "engine": {"quantization": quantization}})["Deployment"]
    container = pod_of(deployment)["containers"][0]
    assert container["resources"]["requests"]["ephemeral-storage"] == disk
    (cache,) = [v for v in pod_of(deployment)["volumes"] if v["name"] == "cache"]
    assert cache["emptyDir"]["sizeLimit"] == disk


def test_parameter_counts_read_from_names() -> None:
    assert parameter_count("hf://meta-llama/Llama-3.1-8B") == 8e9
    assert parameter_count("hf://Qwen/Qwen2.5-0.5B-Instruct") == 0.5e9
    assert parameter_count("hf://org/model-v3") is None  # a version is not a size
    assert parameter_count("hf://org/gpt2") is None
    spec = LLMDeploymentSpec.model_validate({"model": {"source": "hf://x/Phi-3-mini"}})
    assert estimated_disk_gib(spec) is None


def test_compile_caches_live_on_the_cache_volume() -> None:
    env = env_of(build({"model": {"source": "hf://o/m-1B"}})["Deployment"])
    for name in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME"):
        assert env[name]["value"].startswith("/cache/")


def test_a_cache_profile_gives_a_download_job_and_read_only_weights() -> None:
    spec = {**GATED, "model": {**GATED["model"], "cacheProfile": "shared"}}
    built = build(spec)
    job, deployment = built["Job"], built["Deployment"]
    assert len(job["metadata"]["name"]) <= 63  # its pods' job-name label must fit
    job_pod = pod_of(job)
    assert job_pod["restartPolicy"] == "Never" and job_pod["serviceAccountName"] == "model-reader"
    assert env_of(job)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert job_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "modelplane-cache-shared"
    mounts = {m["mountPath"]: m for m in pod_of(deployment)["containers"][0]["volumeMounts"]}
    assert mounts["/cache/huggingface"] == {
        "name": "model-cache", "mountPath": "/cache/huggingface", "subPath": "huggingface",
        "readOnly": True,
    }  # fmt: skip
    assert mounts["/cache/compile"]["subPath"] == "compile"
    env = env_of(deployment)
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and "HF_TOKEN" not in env
    # Not a model server: the gateway and the autoscaler must never take it for one.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "model-download"
    assert "modelplane.io/track" not in job_pod.get("metadata", {}).get("labels", {})


def test_a_new_revision_is_a_new_job_and_the_same_one_is_the_same() -> None:
    spec = {"model": {"source": "hf://o/m-1B", "cacheProfile": "shared"}}
    first = build(spec)["Job"]["metadata"]["name"]
    assert build(spec)["Job"]["metadata"]["name"] == first
    again = build({"model": {**spec["model"], "revision": "v2"}})["Job"]["metadata"]["name"]
    assert again != first


def test_the_profile_claim_is_shared_and_an_existing_claim_is_not_created() -> None:
    claim = build_cache_claim("shared", PROFILES.cache_profiles["shared"], "llm")
    assert claim is not None
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "500Gi"}},
        "storageClassName": "efs-sc",
    }
    assert "ownerReferences" not in claim["metadata"]
    assert build_cache_claim("mine", PROFILES.cache_profiles["mine"], "llm") is None
    spec = {"model": {"source": "hf://o/m-1B", "cacheProfile": "mine"}}
    (volume,) = [v for v in pod_of(build(spec)["Job"])["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == "w"


@pytest.mark.parametrize("version", VERSIONS)
def test_everything_rendered_is_valid_for_kubernetes(version: str) -> None:
    spec = {**GATED, "model": {**GATED["model"], "cacheProfile": "shared"}}
    manifests = [*build(spec).values(), *build(GATED).values()]
    claim = build_cache_claim("shared", PROFILES.cache_profiles["shared"], "llm")
    for manifest in [*manifests, claim]:
        if manifest is not None and manifest["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(manifest, version, strict=True)


def test_an_unknown_cache_profile_does_not_fit() -> None:
    spec = LLMDeploymentSpec.model_validate({"model": {"source": "hf://o/m", "cacheProfile": "x"}})
    (problem,) = fit_problems("llama", spec, PROFILES)
    assert "model.cacheProfile x is not a cache profile" in problem
    assert "known: mine, shared" in problem


def _claim(*modes: str) -> dict[str, Any]:
    return {"spec": {"accessModes": list(modes)}}


@pytest.mark.parametrize(
    ("modes", "spec", "refused"),
    [
        (("ReadWriteOnce",), {"replicas": 2}, True),
        (("ReadWriteOncePod",), {"replicas": 3}, True),
        (("ReadWriteOnce",), {"replicas": 1}, False),
        (("ReadWriteOnce",), {"replicas": 1, "autoscaling": {"enabled": True}}, True),
        (("ReadWriteOnce",), {"autoscaling": {"enabled": True, "maxReplicas": 1}}, False),
        (("ReadOnlyMany",), {"replicas": 4}, False),
        (("ReadWriteOnce", "ReadOnlyMany"), {"replicas": 4}, False),
        (("ReadWriteMany",), {"replicas": 4}, False),
    ],
)
def test_a_single_node_claim_is_refused_for_several_replicas(
    modes: tuple[str, ...], spec: dict[str, Any], refused: bool
) -> None:
    typed = LLMDeploymentSpec.model_validate({"model": {"source": "pvc://weights/m"}, **spec})
    problems = source_claim_problems(typed, "weights", _claim(*modes))
    assert bool(problems) is refused
    if refused:
        assert "use a ReadOnlyMany or ReadWriteMany claim" in problems[0]


def test_a_missing_claim_is_named() -> None:
    typed = LLMDeploymentSpec.model_validate({"model": {"source": "pvc://weights/m"}})
    (problem,) = source_claim_problems(typed, "weights", None)
    assert "PersistentVolumeClaim weights does not exist" in problem


def test_the_download_fetches_one_weights_format() -> None:
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "original/consolidated.pth",
             "flax_model.msgpack", "tokenizer.json"]  # fmt: skip
    ignored = ignored_patterns(files)
    assert "*.bin" in ignored and "original/*" in ignored and "*.msgpack" in ignored
    assert "*.bin" not in ignored_patterns(["config.json", "pytorch_model.bin"])


@pytest.mark.parametrize("source", ["s3://b/m", "hf://only-org", "hf://a/b/c", "hf:///b"])
def test_the_download_refuses_what_it_cannot_fetch(source: str) -> None:
    with pytest.raises(DownloadError):
        repository(source)


def test_the_download_command_says_why_it_failed(tmp_path: Path) -> None:
    """No network here: offline, the command must fail in one readable line, exit 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "modelplane"), "model", "download", "hf://org/model-1B",
         "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach the Hugging Face Hub for org/model-1B" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "compile").is_dir()
