"""`modelplane render -f`: the sample renders to objects valid for Kubernetes 1.30 and the
newest version the official schemas know; specs the operator would fail are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import MODELPLANE

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "smollm2-cpu.yaml"


def render(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELPLANE, "render", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, object]]:
    result = render("-f", str(SAMPLE), "--service-monitor")
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_sample_renders_every_child(rendered: list[dict[str, object]]) -> None:
    kinds = sorted(str(doc["kind"]) for doc in rendered)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget",
                     "Service", "ServiceMonitor"]  # fmt: skip


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_sample_render_validates_strictly(rendered: list[dict[str, object]], version: str) -> None:
    for doc in rendered:
        if doc["kind"] != "ServiceMonitor":  # no official schema for the Prometheus Operator's
            kubernetes_validate.validate(doc, version, strict=True)


def test_invalid_spec_is_refused_with_the_reason() -> None:
    spec = yaml.safe_load(SAMPLE.read_text())
    spec["spec"]["rollout"] = {"maxSurge": 0, "maxUnavailable": 0}
    result = render("-f", "-", stdin=yaml.safe_dump(spec))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("modelplane render: smollm2: spec.rollout:")
    assert "set maxUnavailable to 1" in result.stderr


def test_a_file_without_llmdeployments_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = render("-f", str(path))
    assert result.returncode == 2 and "no LLMDeployment found" in result.stderr


MANY_PROBLEMS = """\
apiVersion: modelplane.io/v1alpha1
kind: LLMDeployment
metadata:
  name: Chat_Model
spec:
  model:
    source: hf://HuggingFaceTB/SmolLM2-135M-Instruct
  engine:
    maxModelLength: 4096
    tensorParallelSize: 2
  resources:
    gpus: 3
---
apiVersion: modelplane.io/v1alpha1
kind: LLMDeployment
metadata:
  name: second
spec:
  model: {source: hf://org/model, servdName: chat}
  replicas: -1
  autoscaling: {minReplicas: 5, maxReplicas: 2, zzz: 1}
"""


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Typos, a cross-field rule behind them, the name, and a second resource's problems:
    one run names them all, each typo with the field it most likely meant."""
    path = tmp_path / "broken.yaml"
    path.write_text(MANY_PROBLEMS)
    result = render("-f", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "modelplane render: Chat_Model: spec.engine.maxModelLength: unknown field; "
        "did you mean maxModelLen?",
        "modelplane render: Chat_Model: spec: resources.gpus (3) must be a multiple of "
        "engine.tensorParallelSize (2)",
        "modelplane render: Chat_Model: metadata.name must be a DNS label (lowercase letters, "
        "digits, '-', starting with a letter) of at most 50 characters: it names the model's "
        "Service",
        "modelplane render: second: spec.model.servdName: unknown field; did you mean servedName?",
        "modelplane render: second: spec.replicas: must be greater than or equal to 0 (got -1)",
        "modelplane render: second: spec.autoscaling.zzz: unknown field (the fields here: "
        "enabled, minReplicas, maxReplicas, targets, scaleDownDelaySeconds)",
        "modelplane render: second: spec.autoscaling: autoscaling.minReplicas (5) must not "
        "exceed autoscaling.maxReplicas (2)",
        f"modelplane render: 7 problems in {path}; nothing rendered",
    ]


def test_a_typo_does_not_hide_the_fit_check(tmp_path: Path) -> None:
    """Once the unknown fields are set aside the rest fits or not: a GPU count on the CPU
    profile is named beside the typo."""
    spec = yaml.safe_load(SAMPLE.read_text())
    spec["spec"]["engine"]["enforceEagr"] = True
    spec["spec"]["resources"].update(accelerator="cpu", gpus=1)
    result = render("-f", "-", stdin=yaml.safe_dump(spec))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "modelplane render: smollm2: spec.engine.enforceEagr: unknown field; "
        "did you mean enforceEager?"
    )
    assert lines[1].startswith("modelplane render: smollm2: accelerator cpu has no GPUs")
    assert lines[-1].startswith("modelplane render: 2 problems in -")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("maxModelLength", "maxModelLen"), ("maxmodellen", "maxModelLen"), ("gpu", "gpus"),
     ("zzzz", None)],
)  # fmt: skip
def test_the_closest_known_field_is_suggested(typo: str, meant: str | None) -> None:
    from modelplane.api.llmdeployment import LLMDeploymentSpec
    from modelplane.operator.reconcile.parsing import closest_field, known_fields

    path = ("resources",) if typo == "gpu" else ("engine",)
    assert closest_field(typo, known_fields(LLMDeploymentSpec, path)) == meant
