"""The Prometheus Operator ServiceMonitor scraping a model's replicas (`/metrics`).

Built only where the monitoring.coreos.com API exists and the resource asks
for it; it selects the model's Services on every track.
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from modelplane.operator.config import OperatorConfig
from modelplane.operator.naming import child_labels, model_selector

SERVICE_MONITOR_API = "monitoring.coreos.com/v1"


def build_service_monitor(name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    return {
        "apiVersion": SERVICE_MONITOR_API,
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": child_labels(name)},
        "spec": {
            "selector": {"matchLabels": model_selector(name)},
            "endpoints": [
                {
                    "port": contract.SERVER_PORT_NAME,
                    "path": "/metrics",
                    "interval": config.service_monitor_interval,
                }
            ],
        },
    }
