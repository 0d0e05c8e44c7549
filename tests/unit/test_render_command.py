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
