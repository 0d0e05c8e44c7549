"""The operator on differently equipped clusters: with the Prometheus Operator's API, and
restricted to chosen namespaces (the namespaced Role)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.support.kube_emulator import CLUSTER_RESOURCES, SERVICE_MONITORS, resource_info

SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}


@pytest.fixture
def cluster_resources() -> dict[str, Any]:
    """A cluster that also serves monitoring.coreos.com/v1 ServiceMonitors."""
    return {**CLUSTER_RESOURCES, SERVICE_MONITORS: resource_info("ServiceMonitor")}


def test_service_monitor_follows_the_spec_where_the_api_exists(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator():
        cluster.create_llmd("chat", SPEC)
        monitor = wait_for("a ServiceMonitor", lambda: cluster.objects("servicemonitors")["chat"])
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
        cluster.patch_llmd("chat", {"monitoring": {"serviceMonitor": False}})
        wait_for("the ServiceMonitor gone", lambda: cluster.objects("servicemonitors") == {})
        assert "chat" in cluster.objects("deployments")


def test_namespaced_operator_leaves_other_namespaces_alone(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(namespaces=["team-a"]):
        cluster.create_llmd("chat", SPEC, namespace="team-b")
        cluster.create_llmd("chat", SPEC, namespace="team-a")
        wait_for("team-a served", lambda: cluster.status("chat", "team-a").get("phase"))
        assert "chat" in cluster.objects("deployments", "team-a")
        assert cluster.objects("deployments", "team-b") == {}
        assert "status" not in cluster.llmd("chat", "team-b")
    watches = [r.url.path for r in cluster.operator_requests() if r.params.get("watch")]
    assert watches and all("/namespaces/team-a/" in path for path in watches)
