"""Scaling an LLMDeployment from outside: an HPA (or KEDA) through its scale subresource.

No cluster runs here, so what an API server and the HPA controller would
check is checked offline: the HPA manifest in manifests/autoscaling/ by the
official autoscaling/v2 schema (kubernetes-validate, strict), and the
scale subresource it targets by the CRD in crds/ (which the chart installs:
its replica and selector paths exist in the resource's schema with the types
the API server requires). That a write of the subresource moves the Deployment is shown
against the emulator (tests/integration/operator/test_operator_lifecycle.py)
and on a real cluster (e2e/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from tests.chart.helm import REPO
from tests.chart.validate import validate

HPA = REPO / "manifests" / "autoscaling" / "hpa.yaml"
CRD = REPO / "crds" / "llmdeployments.modelplane.io.yaml"
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def schema_at(root: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema of the field a CRD's JSONPath (`.spec.replicas`) names."""
    node = root
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_hpa_manifest_validates(version: str) -> None:
    assert validate(load(HPA), version) == []


def test_the_hpa_targets_the_llmdeployment_scale_subresource() -> None:
    target = load(HPA)["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == (contract.API_VERSION, contract.KIND)
    crd = load(CRD)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == contract.VERSION]
    scale = version["subresources"]["scale"]
    root = version["schema"]["openAPIV3Schema"]
    # The API server requires integer replica paths and a string selector path.
    assert scale["specReplicasPath"] == ".spec.replicas"
    assert schema_at(root, scale["specReplicasPath"])["type"] == "integer"
    assert schema_at(root, scale["statusReplicasPath"])["type"] == "integer"
    assert schema_at(root, scale["labelSelectorPath"])["type"] == "string"


def test_the_hpa_targets_a_sample_the_operator_does_not_autoscale() -> None:
    """Two writers of spec.replicas would fight: the HPA's target keeps autoscaling off."""
    name = load(HPA)["spec"]["scaleTargetRef"]["name"]
    samples = [load(p) for p in sorted((REPO / "manifests" / "samples").glob("*.yaml"))]
    (target,) = [s for s in samples if s["metadata"]["name"] == name]
    assert not target["spec"].get("autoscaling", {}).get("enabled", False)
