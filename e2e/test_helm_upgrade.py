"""`helm upgrade` of a running install: the CRD follows the chart, and models keep serving.

1. The CRD on the cluster is made older than the chart's (one spec field,
   `monitoring`, removed from its schema, as an install from before that
   field would have it). `helm upgrade` must bring the chart's CRD back:
   Helm never upgrades a chart's crds/ folder, so a chart that keeps its CRD
   there leaves the field out and the API server prunes it from every
   object written afterwards.
2. An upgrade that changes the operator's configuration (the model servers'
   drain time) restarts the operator, which re-templates every model: the
   model rolls out while a client inside the cluster calls its Service, and
   no request fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import pytest
import yaml

from e2e import models
from e2e.environment import REPO
from e2e.in_cluster import ServiceClient
from e2e.kube import Helm, Kubectl, wait_until
from e2e.models import LOAD_TIMEOUT, Model
from e2e.suite import CONTROL_PLANE_IMAGE, Release, install
from modelplane.api import contract

CRD_NAME: Final = f"{contract.PLURAL}.{contract.GROUP}"
CRD_FILE: Final = REPO / "crds" / f"{CRD_NAME}.yaml"
DROPPED: Final = "monitoring"  # the spec field the "older" CRD lacks
MANIFEST: Final = models.variant("smollm2-cpu.yaml", "smollm2-upgrade", {})
DRAIN_S: Final = 40  # the chart's default is 30


@pytest.fixture(scope="module")
def model(models_namespace: str, kubectl: Kubectl) -> Iterator[Model]:
    with models.deployed(kubectl, models_namespace, MANIFEST) as applied:
        yield applied


def served_version(crd: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The index and schema of the CRD's version contract.VERSION."""
    for index, version in enumerate(crd["spec"]["versions"]):
        if version["name"] == contract.VERSION:
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return index, schema
    raise AssertionError(f"{CRD_NAME} serves no version {contract.VERSION}")


def spec_properties(crd: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = served_version(crd)[1]["properties"]["spec"]["properties"]
    return properties


def test_helm_upgrade_brings_the_crd_up_to_date(
    release: Release, helm: Helm, kubectl: Kubectl, models_namespace: str
) -> None:
    shipped = spec_properties(yaml.safe_load(CRD_FILE.read_text()))[DROPPED]
    index, _ = served_version(kubectl.json("get", "crd", CRD_NAME))
    path = f"/spec/versions/{index}/schema/openAPIV3Schema/properties/spec/properties/{DROPPED}"
    kubectl(
        "patch", "crd", CRD_NAME, "--type=json", "-p", json.dumps([{"op": "remove", "path": path}])
    )
    assert DROPPED not in spec_properties(kubectl.json("get", "crd", CRD_NAME))

    before = helm.revision(release.name, release.namespace)
    install(helm, release)
    assert helm.revision(release.name, release.namespace) == before + 1

    live = spec_properties(kubectl.json("get", "crd", CRD_NAME))
    assert live.get(DROPPED) == shipped, f"helm upgrade left spec.{DROPPED} out of the CRD"
    body = models.variant("smollm2-cpu.yaml", "kept-fields", {DROPPED: {"dashboards": False}})
    created = json.loads(
        kubectl(
            "create",
            "--dry-run=server",
            "-n",
            models_namespace,
            "-o",
            "json",
            "-f",
            "-",
            stdin=yaml.safe_dump(body),
        )
    )
    assert created["spec"].get(DROPPED, {}).get("dashboards") is False, "the field was pruned"


def test_an_operator_config_change_rolls_models_without_failing_their_clients(
    model: Model, release: Release, helm: Helm, kubectl: Kubectl
) -> None:
    before = models.template_hash(kubectl, model)
    upgraded = release.with_values(
        models.merged(release.values, {"operator": {"config": {"drainTimeoutSeconds": DRAIN_S}}})
    )
    with ServiceClient(
        kubectl, model.namespace, CONTROL_PLANE_IMAGE, model.service_url, model.served_name
    ) as service_client:
        service_client.wait_for_answers(5)
        install(helm, upgraded)  # --wait: the restarted operator is ready

        def rolled_out() -> bool:
            new = models.template_hash(kubectl, model)
            return (
                new != before
                and models.ready(kubectl, model, 1)
                and models.pod_template_hashes(kubectl, model) == {new}
            )

        wait_until(
            "the model re-templated by the upgraded operator",
            rolled_out,
            timeout=LOAD_TIMEOUT,
            every=5,
        )
        service_client.wait_for_answers(5)
        log = service_client.log()
    assert log.failures == [], (
        f"{len(log.failures)} of {log.successes + len(log.failures)} requests to the "
        f"Service failed during the upgrade: {log.failures[:5]}"
    )
    deployment = kubectl.json("get", "deployment", model.name, "-n", model.namespace)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= DRAIN_S
