"""Operator config: defaults that work, a YAML file merged over them, errors that say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.api.engine import Quantization
from modelplane.operator.config import ConfigError, OperatorConfig, load_config
from modelplane.operator.operator_command import kopf_args


def test_defaults_ship_the_common_accelerators() -> None:
    config = OperatorConfig()
    # The names are a contract: resources name them. L40S, A10G, H200, A100 40GB came later.
    assert {"nvidia-gpu", "nvidia-h100", "nvidia-a100", "nvidia-l4", "nvidia-t4", "cpu",
            "nvidia-l40s", "nvidia-a10g", "nvidia-h200", "nvidia-a100-40gb"} == set(
        config.accelerators
    )  # fmt: skip
    h100, a100, cpu = (config.accelerators[n] for n in ("nvidia-h100", "nvidia-a100", "cpu"))
    assert h100.gpu_resource_name == "nvidia.com/gpu" and h100.gpu_memory_gib == 80
    assert Quantization.FP8 in h100.quantizations and Quantization.FP8 not in a100.quantizations
    assert cpu.gpu_resource_name is None and not cpu.has_gpus
    assert config.metrics_port == 8080 and config.autoscaler_interval_seconds == 10
    assert config.termination_grace_seconds > config.drain_timeout_seconds
    assert config.namespaces == [] and config.prometheus_url is None


def test_file_overrides_and_merges_profiles(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(
        "accelerators:\n"
        "  amd-mi300x:\n"
        "    gpuResourceName: amd.com/gpu\n"
        "    gpuMemoryGiB: 192\n"
        "    nodeSelector: {amd.com/gpu.product: MI300X}\n"
        "images: {gpu: registry.example.com/server:gpu}\n"
        "startupProbe: {failureThreshold: 360}\n"
        "namespaces: [llm]\n"
        "prometheusUrl: http://prometheus.monitoring:9090\n"
    )
    config = load_config(path)
    assert config.accelerators["amd-mi300x"].gpu_resource_name == "amd.com/gpu"
    assert "nvidia-h100" in config.accelerators  # built-ins stay
    assert config.images.gpu == "registry.example.com/server:gpu"
    assert config.images.cpu == OperatorConfig().images.cpu
    assert config.startup_probe.failure_threshold == 360
    assert config.prometheus_url == "http://prometheus.monitoring:9090"
    assert kopf_args(config)[-4:] == ["--namespace", "llm", "--liveness",
                                      "http://0.0.0.0:8081/healthz"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metricsPort: 99999\n", "metricsPort"),
        ("unknownSetting: 1\n", "unknownSetting"),
        ("- a list\n", "must be a mapping"),
        ("images: {gpu: [\n", "not valid YAML"),
        ("modelCache: {sizeLimit: lots}\n", "modelCache.sizeLimit"),
        (
            "accelerators: {x: {tolerations: [{key: a, operator: Exists, effect: NoSchedul}]}}\n",
            "accelerators.x.tolerations.0.effect",
        ),
        (
            "accelerators: {x: {tolerations: [{operator: Equal, value: x}]}}\n",
            "a toleration without a key must use operator Exists",
        ),
        (
            "accelerators: {x: {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: In}]}]"
            "}}\n",
            "In on a needs at least one value",
        ),
        (
            "accelerators: {x: {nodeSelectorTerms: [{matchExpressions: [{key: a, operator: Gt, "
            "values: [big]}]}]}}\n",
            "Gt on a needs exactly one integer value",
        ),
        (
            "accelerators: {x: {nodeSelectorTerms: [{matchExpressions: []}]}}\n",
            "a term needs at least one matchExpressions entry",
        ),
        (
            "accelerators: {nvidia-h100: {runtimeClassName: Nvidia_RT}}\n",
            "accelerators.nvidia-h100.runtimeClassName",
        ),
        ("accelerators: {nvidia-l4: {cpuPerGpu: lots}}\n", "accelerators.nvidia-l4.cpuPerGpu"),
    ],
)
def test_bad_files_are_refused_with_the_setting_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_all_namespaces_without_a_list() -> None:
    args = kopf_args(OperatorConfig(health_port=None))
    assert "--all-namespaces" in args and "--standalone" in args
    assert args[args.index("-m") + 1] == "modelplane.operator.handlers"
