"""The operator's per-model ServiceMonitor and the chart's model-server monitor label series alike.

Either may scrape the model servers (a user enables one of the two), and the
dashboards and alerts select and join on the labels their relabelings make:
job, namespace, pod, llmdeployment, track. A real Prometheus runs each
monitor's relabelings, translated into scrape jobs the way the Prometheus
Operator does, over the same discovered target: what Kubernetes discovery
attaches to a model-server pod (the one fake part: there is no cluster, so
these `__meta_*` labels are given as static labels, and the target's port is
closed: labels are computed before any scrape). Its targets API must show
identical target labels for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.api import contract
from modelplane.operator.builders.service_monitor import build_service_monitor, pod_label_meta
from modelplane.operator.config import OperatorConfig
from tests.chart.helm import find, render
from tests.monitoring.pod_monitors import snake
from tests.monitoring.prometheus import PrometheusServer

NAMESPACE = "ml-demo"
LLMD = "chat"
POD = "chat-7d9c5b-x2x4q"
JOIN_LABELS = {"job", "namespace", "pod", "llmdeployment", "track"}
# What Kubernetes discovery attaches to a model-server pod's target (pod role for a
# PodMonitor, endpoints role for a ServiceMonitor: the latter also carries the pod's).
DISCOVERED = {
    "__meta_kubernetes_namespace": NAMESPACE,
    "__meta_kubernetes_pod_name": POD,
    "__meta_kubernetes_service_name": LLMD,
    pod_label_meta(contract.LABEL_LLMDEPLOYMENT): LLMD,
    pod_label_meta(contract.LABEL_TRACK): contract.TRACK_STABLE,
    pod_label_meta(contract.LABEL_COMPONENT): contract.COMPONENT_MODEL_SERVER,
}


def monitors() -> dict[str, dict[str, Any]]:
    """Each monitor's one scrape endpoint, by who creates it."""
    operator = build_service_monitor(LLMD, NAMESPACE, OperatorConfig())
    chart_sm = find(
        render({"monitoring": {"modelServers": {"enabled": True, "kind": "ServiceMonitor"}}}),
        "ServiceMonitor",
    )
    chart_pm = find(render({"monitoring": {"modelServers": {"enabled": True}}}), "PodMonitor")
    return {
        "operator-servicemonitor": operator["spec"]["endpoints"][0],
        "chart-servicemonitor": chart_sm["spec"]["endpoints"][0],
        "chart-podmonitor": chart_pm["spec"]["podMetricsEndpoints"][0],
    }


def test_operator_and_chart_monitors_use_the_same_relabelings() -> None:
    endpoints = monitors()
    operator = endpoints.pop("operator-servicemonitor")
    for endpoint in endpoints.values():
        assert endpoint["relabelings"] == operator["relabelings"]
        assert (endpoint["port"], endpoint["path"]) == (operator["port"], operator["path"])


def test_operator_service_monitors_carry_the_labels_a_prometheus_selects_by() -> None:
    """kube-prometheus-stack only picks up monitors labelled `release: <its release>`."""
    config = OperatorConfig(
        service_monitor_labels={"release": "kube-prometheus-stack", contract.LABEL_TRACK: "x"}
    )
    labels = build_service_monitor(LLMD, NAMESPACE, config)["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"
    # The labels the operator finds its children by cannot be overridden.
    assert labels[contract.LABEL_TRACK] == contract.TRACK_STABLE
    assert labels[contract.LABEL_LLMDEPLOYMENT] == LLMD


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    jobs = [
        {
            "job_name": name,
            "scrape_interval": "1h",  # never mind scraping: the targets API shows the labels
            "metrics_path": endpoint["path"],
            "static_configs": [{"targets": ["127.0.0.1:9"], "labels": DISCOVERED}],
            "relabel_configs": [snake(r) for r in endpoint["relabelings"]],
        }
        for name, endpoint in monitors().items()
    ]
    server = PrometheusServer({"scrape_configs": jobs}, Path(tmp_path_factory.mktemp("relabel")))
    try:
        yield server.start().wait_ready()
    finally:
        server.stop()


def target_labels(prometheus: PrometheusServer, pools: int) -> dict[str, dict[str, str]]:
    """Target labels by scrape pool, once Prometheus has discovered every pool's target."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()
        targets = answer["data"]["activeTargets"]
        if len(targets) == pools:
            return {t["scrapePool"]: t["labels"] for t in targets}
        time.sleep(0.1)
    pytest.fail(f"Prometheus did not discover {pools} targets:\n{prometheus.log()}")


def test_every_monitor_gives_the_series_the_labels_dashboards_and_alerts_join_on(
    prometheus: PrometheusServer,
) -> None:
    labels = target_labels(prometheus, pools=len(monitors()))
    expected = {
        "job": contract.JOB_MODEL_SERVER,
        "namespace": NAMESPACE,
        "pod": POD,
        "llmdeployment": LLMD,
        "track": contract.TRACK_STABLE,
    }
    for pool, found in labels.items():
        assert {k: found.get(k) for k in JOIN_LABELS} == expected, pool
    assert len({tuple(sorted(found.items())) for found in labels.values()}) == 1, labels
