"""The LLMDeployment CRD is a chart template, so `helm upgrade` upgrades it, and uninstall keeps it.

Helm installs a chart's crds/ folder on the first install only and never
upgrades it: a field added to the resource would be missing from the
cluster's CRD after `helm upgrade`, and the API server would prune it from
every object. So the chart renders the CRD from a template
(templates/crd-llmdeployments.yaml, reading files/crds/, a copy of crds/),
annotated `helm.sh/resource-policy: keep` because deleting a CRD deletes
every LLMDeployment and so every model; `crds.install: false` leaves the CRD
to whoever else owns it. The real helm binary renders the chart here; that
`helm upgrade` does bring a dropped field back on a real cluster is
e2e/test_helm_upgrade.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modelplane.api import contract
from tests.chart.helm import REPO, find_all, lint, render, template

CRD_NAME = f"{contract.PLURAL}.{contract.GROUP}"
GENERATED = REPO / "crds" / f"{CRD_NAME}.yaml"
KEEP = {"helm.sh/resource-policy": "keep"}


def crds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in find_all(docs, "CustomResourceDefinition")}


def without_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in crd.items() if k != "metadata"}


def test_the_chart_renders_the_generated_crd_kept_on_uninstall() -> None:
    generated = yaml.safe_load(GENERATED.read_text())
    rendered = crds(render())
    assert list(rendered) == [CRD_NAME]  # the peering CRDs stay in crds/ (see below)
    crd = rendered[CRD_NAME]
    # Everything the API server enforces (schema, CEL rules, subresources, columns) is the
    # generated file's, unchanged: apiVersion, kind and spec.
    assert without_metadata(crd) == without_metadata(generated)
    assert crd["metadata"]["annotations"] == KEEP
    assert crd["metadata"]["labels"].items() >= generated["metadata"]["labels"].items()
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_the_crd_carries_the_chart_s_common_labels() -> None:
    crd = crds(render({"commonLabels": {"team": "ml-platform"}}))[CRD_NAME]
    assert crd["metadata"]["labels"]["team"] == "ml-platform"
    assert crd["metadata"]["annotations"] == KEEP


def test_crds_install_false_renders_no_crd() -> None:
    docs = render({"crds": {"install": False}})
    assert crds(docs) == {}
    assert any(d["kind"] == "Deployment" for d in docs)  # the rest of the install is there


@pytest.mark.parametrize("install", [True, False])
def test_the_llmdeployment_crd_is_never_installed_twice(install: bool) -> None:
    """With Helm's crds/ folder included too (as `helm install` does), the LLMDeployment CRD
    comes once, from the template, or not at all; kopf's peering CRDs come from crds/."""
    result = template({"crds": {"install": install}}, None, "--include-crds")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]
    peering = ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    assert sorted(names) == sorted([CRD_NAME, *peering] if install else peering)


def test_the_crd_template_is_lint_clean_either_way() -> None:
    for install in (True, False):
        result = lint({"crds": {"install": install}})
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_crds_value_is_refused() -> None:
    result = template({"crds": {"instal": False}})
    assert result.returncode != 0
    assert "additional properties 'instal'" in result.stderr
