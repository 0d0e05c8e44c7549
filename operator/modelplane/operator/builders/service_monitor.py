"""The Prometheus Operator ServiceMonitor scraping a model's replicas (`/metrics`).

Built only where the monitoring.coreos.com API exists and the resource asks
for it; it selects the model's Services on every track.

Its series must look exactly like those of the chart's cluster-wide
model-server monitor (`monitoring.modelServers`), because the dashboards and
alerts join on them: `job="modelplane-model-server"`, the pod's `namespace`
and `pod`, and the operator's pod labels as `llmdeployment` and `track`. The
relabelings below are those of the chart's monitor (a test runs both through
a real Prometheus); only one of the two should be enabled, or every replica
is scraped twice.
"""

from __future__ import annotations

import re
from typing import Any

from modelplane.api import contract
from modelplane.operator.builders.naming import child_labels, model_selector
from modelplane.operator.config import OperatorConfig

SERVICE_MONITOR_API = "monitoring.coreos.com/v1"


def pod_label_meta(label: str) -> str:
    """The name Prometheus' Kubernetes discovery gives a pod label (`__meta_kubernetes_...`)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def model_server_relabelings() -> list[dict[str, Any]]:
    """Target labels the dashboards and alerts select and join model-server series by."""
    copies = [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_name", "pod"),
        (pod_label_meta(contract.LABEL_LLMDEPLOYMENT), "llmdeployment"),
        (pod_label_meta(contract.LABEL_TRACK), "track"),
    ]
    rules: list[dict[str, Any]] = [
        {"action": "replace", "sourceLabels": [source], "targetLabel": target}
        for source, target in copies
    ]
    rules.append(
        {"action": "replace", "targetLabel": "job", "replacement": contract.JOB_MODEL_SERVER}
    )
    return rules


def build_service_monitor(name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    # Extra labels first: a Prometheus selecting by label (e.g. `release`) finds the
    # monitor, but they cannot replace the labels the operator finds its children by.
    labels = {**config.service_monitor_labels, **child_labels(name)}
    return {
        "apiVersion": SERVICE_MONITOR_API,
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": model_selector(name)},
            "endpoints": [
                {
                    "port": contract.SERVER_PORT_NAME,
                    "path": "/metrics",
                    "interval": config.service_monitor_interval,
                    "relabelings": model_server_relabelings(),
                }
            ],
        },
    }
