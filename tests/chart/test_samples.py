"""manifests/samples/: what each sample becomes on a cluster, validated like the API server would.

Every file in the folder, whatever it holds: `modelplane render -f` (the
operator's own parsing, fit check and builders, with the operator config the
chart installs) must accept it, and every object it renders must validate
with kubernetes-validate --strict for Kubernetes 1.30 and the newest, the
ServiceMonitor against the Prometheus Operator's schema. That each sample is
a valid LLMDeployment by the CRD's schema and CEL rules is checked, for every
file of the folder too, by tests/unit/test_crd.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from modelplane.cli import build_parser
from tests.chart.helm import REPO, operator_config, render
from tests.chart.validate import validate

SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def llmdeployments(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d.get("kind") == contract.KIND]


def render_sample(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    config = tmp_path / "operator.yaml"
    config.write_text(yaml.safe_dump(operator_config(render())))
    args = build_parser().parse_args(
        ["render", "-f", str(path), "--config", str(config), "--service-monitor"]
    )
    code = args.handler(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_sample_renders_into_valid_objects(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = render_sample(sample, tmp_path, capsys)
    assert {"Deployment", "Service"} <= {o["kind"] for o in objects}
    for version in KUBE_VERSIONS:
        errors = {f"{o['kind']}/{o['metadata']['name']}": validate(o, version) for o in objects}
        assert not {k: v for k, v in errors.items() if v}, (version, errors)


def test_the_samples_cover_cpu_gpu_quantized_and_scale_to_zero() -> None:
    specs = [d["spec"] for path in SAMPLES for d in llmdeployments(path)]
    assert any(s["resources"].get("gpus", 0) == 0 for s in specs)
    gpu = [s for s in specs if s["resources"].get("gpus", 0) > 0]
    assert any(s.get("engine", {}).get("quantization") == "awq" for s in gpu)
    assert any(s.get("autoscaling", {}).get("minReplicas") == 0 for s in specs)


GPU_SAMPLES = [
    p for p in SAMPLES if any(d["spec"]["resources"].get("gpus") for d in llmdeployments(p))
]


@pytest.mark.parametrize("sample", GPU_SAMPLES, ids=[s.name for s in GPU_SAMPLES])
def test_gpu_samples_land_on_their_accelerator(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = render_sample(sample, tmp_path, capsys)
    profiles = operator_config(render())["accelerators"]
    for llmd in llmdeployments(sample):
        resources = llmd["spec"]["resources"]
        (deployment,) = [
            o
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] == llmd["metadata"]["name"]
        ]
        pod = deployment["spec"]["template"]["spec"]
        profile = profiles[resources["accelerator"]]
        assert pod.get("nodeSelector", {}) == profile["nodeSelector"]
        affinity = pod.get("affinity", {}).get("nodeAffinity", {})
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
        assert required.get("nodeSelectorTerms", []) == profile["nodeSelectorTerms"]
        server = pod["containers"][0]
        assert server["resources"]["limits"][profile["gpuResourceName"]] == str(resources["gpus"])
        quantization = llmd["spec"].get("engine", {}).get("quantization")
        if quantization:
            assert server["args"][server["args"].index("--quantization") + 1] == quantization
