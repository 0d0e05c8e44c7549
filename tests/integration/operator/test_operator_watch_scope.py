"""The operator lists and watches only what it manages, and lists in pages.

The cluster is KMock's emulator (tests/support/kube_emulator.py), which
filters lists and watches by `labelSelector` and pages lists by `limit` and
`continue` as the API server does, and records every request: the tests read
what each list and watch of a child kind asked for. Other tenants' Pods and
ConfigMaps share the namespace, some labelled as managed by another tool.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.api import contract
from modelplane.operator.handlers import CHILD_INDEXES
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.support.kube_emulator import (
    CLUSTER_RESOURCES,
    HARNESS_AGENT,
    SERVICE_MONITORS,
    Read,
    resource_info,
)

SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
# The kinds the operator would otherwise read cluster-wide (issue 12): every one must be narrowed.
CHILD_KINDS = {
    "configmaps",
    "services",
    "deployments",
    "poddisruptionbudgets",
    "networkpolicies",
    "servicemonitors",
}
MODEL_SERVER = {contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER}


@pytest.fixture
def cluster_resources() -> dict[str, Any]:
    """A cluster that also serves ServiceMonitors, so the operator watches them too."""
    return {**CLUSTER_RESOURCES, SERVICE_MONITORS: resource_info("ServiceMonitor")}


def other_tenants(cluster: Cluster, namespace: str) -> None:
    """Pods and ConfigMaps the operator has no business reading."""
    for i, labels in enumerate(
        [
            {"app": "web"},
            {contract.LABEL_MANAGED_BY: "Helm", contract.LABEL_LLMDEPLOYMENT: "chat"},
            {contract.LABEL_MANAGED_BY: "Helm", **MODEL_SERVER},
        ]
    ):
        meta = {"name": f"other-{i}", "namespace": namespace, "labels": labels}
        cluster.kubectl.create(
            "configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
        )
        pod = {"containers": [{"name": "web", "image": "nginx"}]}
        cluster.kubectl.create(
            "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod}
        )


def operator_reads(cluster: Cluster) -> list[Read]:
    return [r for r in cluster.emulator.reads() if r.user_agent != HARNESS_AGENT]


def assert_selected(read: Read) -> None:
    """The API server sends this read only the operator's own children (model pods for pods)."""
    requirements = read.selector.keys()
    assert requirements.get(contract.LABEL_MANAGED_BY) is not None, read
    managed = requirements[contract.LABEL_MANAGED_BY]
    assert (managed.operator, managed.values) == ("in", frozenset({contract.MANAGED_BY})), read
    assert requirements[contract.LABEL_LLMDEPLOYMENT].operator == "exists", read
    if read.plural == "pods":
        component = requirements[contract.LABEL_COMPONENT]
        assert component.values == {contract.COMPONENT_MODEL_SERVER}, read


@pytest.mark.parametrize("namespaces", [[], ["team-a"]], ids=["all-namespaces", "team-a"])
def test_every_list_and_watch_of_a_child_kind_carries_the_selector(
    cluster: Cluster, run_operator: OperatorFactory, namespaces: list[str]
) -> None:
    other_tenants(cluster, "team-a")
    with run_operator(namespaces=namespaces):
        cluster.create_llmd("chat", SPEC, namespace="team-a")
        wait_for("a status", lambda: cluster.status("chat", "team-a").get("phase"))
        wait_for("children", lambda: "chat" in cluster.objects("networkpolicies", "team-a"))
    reads = operator_reads(cluster)
    kinds = CHILD_KINDS | {rtype.plural for rtype in CHILD_INDEXES.values()} | {"pods"}
    for kind in kinds:
        of_kind = [r for r in reads if r.plural == kind]
        assert {r.verb for r in of_kind} == {"list", "watch"}, (kind, of_kind)
        for read in of_kind:
            assert_selected(read)
            if namespaces:
                assert read.namespace in namespaces, read
    lists = [r for r in reads if r.verb == "list"]
    assert lists and all(r.limit and r.limit > 0 for r in lists), lists
    # The emulator answered with the operator's own objects only.
    assert set(cluster.objects("configmaps", "team-a")) >= {"other-0", "other-1", "other-2"}


def test_a_child_stripped_of_its_labels_is_labelled_again(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    """Removing the label takes the Service out of the operator's watch (the API server says
    DELETED), so the operator forgets it and its next resync applies it again, label and all."""
    with run_operator(resyncSeconds=0.5):
        cluster.create_llmd("chat", SPEC)
        wait_for("the Service", lambda: "chat" in cluster.objects("services"))
        unlabel = {"metadata": {"labels": {contract.LABEL_MANAGED_BY: None}}}
        cluster.kubectl.patch("v1", "services", "default", "chat", unlabel)
        wait_for(
            "the Service labelled again",
            lambda: (
                cluster.objects("services")["chat"]["metadata"]["labels"].get(
                    contract.LABEL_MANAGED_BY
                )
                == contract.MANAGED_BY
            ),
        )
