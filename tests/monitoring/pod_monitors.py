"""PodMonitors as the Prometheus scrape jobs the Prometheus Operator generates from them.

There is no cluster here, so Kubernetes pod discovery is played by static
targets carrying the `__meta_kubernetes_*` labels discovery would attach to a
pod's named container port (`discovered`). The job then relabels them as the
Prometheus Operator's generated job does: keep only pods the monitor's
selector matches and the port it names, set `namespace`, `container`, `pod`,
a default `job` and `endpoint`, then apply the endpoint's own relabelings;
`honorLabels` and the metric relabelings carry over. So a selector that
misses the pods, a port name the pods do not have, or a label a relabeling
overwrites shows up as it would in a cluster: no target, or wrong labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from modelplane.operator.builders.service_monitor import pod_label_meta


def label_present_meta(label: str) -> str:
    """Discovery's `__meta_kubernetes_pod_labelpresent_*` name for a pod label."""
    return pod_label_meta(label).replace("_pod_label_", "_pod_labelpresent_")


def snake(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator RelabelConfig (camelCase) as Prometheus' relabel_config."""
    return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): v for k, v in rule.items()}


def discovered(pod: Mapping[str, Any], port_name: str) -> dict[str, str]:
    """What pod discovery attaches to the target of `pod`'s container port `port_name`."""
    meta = pod["metadata"]
    labels: dict[str, str] = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
    }
    for key, value in (meta.get("labels") or {}).items():
        labels[pod_label_meta(key)] = value
        labels[label_present_meta(key)] = "true"
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == port_name:
                labels["__meta_kubernetes_pod_container_name"] = container["name"]
                labels["__meta_kubernetes_pod_container_port_name"] = port_name
                return labels
    raise AssertionError(f"pod {meta['name']} has no container port named {port_name!r}")


def _selected(monitor: Mapping[str, Any], namespace: str) -> bool:
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return True
    return namespace in (selector.get("matchNames") or [monitor["metadata"]["namespace"]])


def scrape_job(
    monitor: Mapping[str, Any], targets: Sequence[tuple[str, Mapping[str, str]]]
) -> dict[str, Any]:
    """The job for the monitor's one endpoint over (address, discovered labels) targets."""
    meta, spec = monitor["metadata"], monitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    for _, labels in targets:
        namespace = labels["__meta_kubernetes_namespace"]
        assert _selected(monitor, namespace), f"{meta['name']} does not watch {namespace}"
    keep = [
        {
            "action": "keep",
            "source_labels": [pod_label_meta(key), label_present_meta(key)],
            "regex": f"({value});true",
        }
        for key, value in sorted(spec["selector"]["matchLabels"].items())
    ]
    generated = [
        *keep,
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": endpoint["port"],
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    return {
        "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scrape_interval": endpoint["interval"],
        "scrape_timeout": endpoint["scrapeTimeout"],
        "metrics_path": endpoint["path"],
        "static_configs": [
            {"targets": [address], "labels": dict(labels)} for address, labels in targets
        ],
        "relabel_configs": [*generated, *(snake(r) for r in endpoint.get("relabelings", []))],
        "metric_relabel_configs": [snake(r) for r in endpoint.get("metricRelabelings", [])],
    }
