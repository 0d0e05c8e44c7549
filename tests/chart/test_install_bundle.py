"""The CRDs the chart installs, and manifests/install.yaml: `kubectl apply` installs what Helm does.

crds/ is the one source of the CRDs (`make crd` generates the LLMDeployment
one); the chart holds byte-identical copies (`make chart-crds`): the
LLMDeployment CRD in files/crds/, rendered by a template so that `helm
upgrade` upgrades it (test_crd_template.py), kopf's peering CRDs in Helm's
crds/ folder. manifests/install.yaml is `helm template` of the chart with
default values and the gateway (`gateway.enabled=true`: the README's
first model is called through it) in namespace modelplane-system, CRDs and
the Namespace included (`make manifests`): rendered here again by the real
helm binary, it must be identical, and every object in it must validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import CHART, REPO, helm
from tests.chart.validate import validate

CRDS = REPO / "crds"
CHART_CRDS = CHART / "crds"  # Helm's folder: installed once, never upgraded
CHART_TEMPLATED_CRDS = CHART / "files" / "crds"  # rendered by templates/crd-llmdeployments.yaml
INSTALL = REPO / "manifests" / "install.yaml"
BUNDLE_RELEASE = "modelplane"
BUNDLE_NAMESPACE = "modelplane-system"
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# What the bundle sets beyond the chart's defaults (`make manifests`).
BUNDLE_VALUES = ("--set", "gateway.enabled=true")


def yaml_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}


def crd_docs(folder: Path) -> list[dict[str, Any]]:
    return [
        d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]


def bundle_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]


def helm_template(*args: str) -> str:
    result = helm("template", BUNDLE_RELEASE, str(CHART), "--namespace", BUNDLE_NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_chart_crds_are_copies_of_crds() -> None:
    """Each CRD once in the chart, byte for byte the repository's: the LLMDeployment CRD as a
    template's file (upgraded by `helm upgrade`), kopf's peering CRDs in Helm's crds/."""
    templated, static = yaml_files(CHART_TEMPLATED_CRDS), yaml_files(CHART_CRDS)
    assert set(templated) == {"llmdeployments.modelplane.io.yaml"}
    assert set(static) == {"kopf-peering.yaml"}
    assert {**templated, **static} == yaml_files(CRDS), "run `make chart-crds` and commit"
    assert {d["metadata"]["name"] for d in crd_docs(CRDS)} == {
        "llmdeployments.modelplane.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_peering_crds_are_valid(kube_version: str) -> None:
    for doc in yaml.safe_load_all((CRDS / "kopf-peering.yaml").read_text()):
        kubernetes_validate.validate(doc, kube_version, strict=True)
        spec = doc["spec"]
        # Where kopf looks for them (kopf/_cogs/structs/references.py: kopf.dev/v1).
        assert spec["group"] == "kopf.dev" and [v["name"] for v in spec["versions"]] == ["v1"]
        scope = "Cluster" if spec["names"]["kind"] == "ClusterKopfPeering" else "Namespaced"
        assert spec["scope"] == scope


def test_install_bundle_is_the_rendered_chart() -> None:
    rendered = helm_template("--include-crds", "--set", "createNamespace=true", *BUNDLE_VALUES)
    assert INSTALL.read_text() == rendered, "run `make manifests` and commit the result"


def test_install_bundle_installs_what_helm_installs_and_its_namespace() -> None:
    """Helm installs crds/ and then the templates; the bundle holds both, every CRD of
    crds/ once, and the Namespace that `helm install --create-namespace` would create."""
    bundle = [(d["kind"], d["metadata"]["name"]) for d in bundle_docs()]
    templates = [d for d in yaml.safe_load_all(helm_template(*BUNDLE_VALUES)) if d]
    crds = crd_docs(CHART_CRDS)
    expected = [("Namespace", BUNDLE_NAMESPACE)]
    expected += [(d["kind"], d["metadata"]["name"]) for d in [*crds, *templates]]
    assert sorted(bundle) == sorted(expected)
    names = [name for kind, name in bundle if kind == "CustomResourceDefinition"]
    assert sorted(names) == sorted(d["metadata"]["name"] for d in crd_docs(CRDS))


def test_kubectl_apply_meets_each_object_s_prerequisites_first() -> None:
    """`kubectl apply -f` creates objects in file order: the Namespace before anything in
    it, and each CRD before any object of its kind."""
    docs = bundle_docs()
    order = [d["kind"] for d in docs]
    namespace_at = order.index("Namespace")
    assert order.count("Namespace") == 1
    defined_at = {
        (d["spec"]["group"], d["spec"]["names"]["kind"]): i
        for i, d in enumerate(docs)
        if d["kind"] == "CustomResourceDefinition"
    }
    for at, doc in enumerate(docs):
        namespace = doc["metadata"].get("namespace")
        assert namespace in (None, BUNDLE_NAMESPACE)
        if namespace is not None:
            assert at > namespace_at, f"{doc['kind']} before its Namespace"
        group = doc["apiVersion"].rpartition("/")[0]
        assert defined_at.get((group, doc["kind"]), -1) < at, f"{doc['kind']} before its CRD"


def test_the_bundle_runs_the_gateway_the_readme_sends_users_through() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in bundle_docs()}
    service = docs[("Service", f"{BUNDLE_RELEASE}-gateway")]
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    gateway = docs[("Deployment", f"{BUNDLE_RELEASE}-gateway")]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "gateway"
    readme = (REPO / "README.md").read_text()
    assert f"http://{BUNDLE_RELEASE}-gateway.{BUNDLE_NAMESPACE}.svc:8080/v1" in readme


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_of_the_bundle_validates(kube_version: str) -> None:
    errors = {
        f"{d['kind']}/{d['metadata']['name']}": validate(d, kube_version) for d in bundle_docs()
    }
    assert not {k: v for k, v in errors.items() if v}, errors
