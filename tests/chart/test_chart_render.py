"""The chart as `helm lint` and `helm template` see it, validated like an API server would.

Every case of the values matrix is rendered by the real helm binary and each
object is validated for Kubernetes 1.30 (the chart's minimum) and the newest
version kubernetes-validate knows (see validate.py for how the Prometheus
Operator kinds are checked). The other tests read the rendered objects for
what a user relies on: watch scope, peering, and the labels, ports and job
names the operator, dashboards and alerts agree on (modelplane.api.contract).
"""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from tests.chart.helm import CHART, NAMESPACE, find, kinds, lint, render
from tests.chart.validate import validate

MONITORING_ON: dict[str, Any] = {
    "modelServers": {"enabled": True},
    "operator": {"enabled": True},
    "dashboards": {"enabled": True},
    "alerts": {"enabled": True},
}
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "monitoring-on": {"monitoring": MONITORING_ON},
    "monitoring-off": {"monitoring": {k: {"enabled": False} for k in MONITORING_ON}},
    "namespaced": {
        "operator": {"watchNamespaces": ["ml-team-a", "ml-team-b"]},
        "monitoring": {
            **MONITORING_ON,
            "modelServers": {"enabled": True, "namespaces": ["ml-team-a", "ml-team-b"]},
        },
    },
    "cluster-wide-2-replicas": {"operator": {"replicas": 2}, "monitoring": MONITORING_ON},
    "servicemonitor-custom-grafana": {
        "commonLabels": {"team": "ml-platform"},
        "monitoring": {
            **MONITORING_ON,
            "labels": {"release": "kube-prometheus-stack"},
            "modelServers": {"enabled": True, "kind": "ServiceMonitor", "interval": "30s"},
            "dashboards": {
                "enabled": True,
                "namespace": "grafana",
                "label": "dashboards",
                "labelValue": "modelplane",
                "annotations": {"grafana_folder": "LLMs"},
            },
        },
    },
    "operator-off-monitoring-on": {"operator": {"enabled": False}, "monitoring": MONITORING_ON},
}
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = find(docs, "Deployment", "-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    return args


@pytest.mark.parametrize("case", ["defaults", "monitoring-on", "cluster-wide-2-replicas"])
def test_helm_lint_strict_is_clean(case: str) -> None:
    result = lint(MATRIX[case])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_rendered_object_validates(case: str, kube_version: str) -> None:
    docs = render(MATRIX[case], kube_version=kube_version)
    assert docs, "the chart rendered nothing"
    errors = {f"{d['kind']}/{d['metadata']['name']}": validate(d, kube_version) for d in docs}
    assert not {k: v for k, v in errors.items() if v}, errors


def test_validation_catches_what_the_api_server_would_reject() -> None:
    """The validators are not vacuous: a typo'd field or bad value is reported."""
    docs = render({"monitoring": MONITORING_ON})
    deployment = find(docs, "Deployment", "-operator")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert validate(deployment, KUBE_VERSIONS[0])
    monitor = find(docs, "PodMonitor", "-model-servers")
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeIntervall"] = "15s"
    assert validate(monitor, KUBE_VERSIONS[0]) == [
        "unknown field spec.podMetricsEndpoints[0].scrapeIntervall"
    ]
    rule = find(docs, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert validate(rule, KUBE_VERSIONS[0])


def test_defaults_install_only_the_operator() -> None:
    """Monitoring objects need the Prometheus Operator CRDs, so they are opt-in."""
    docs = render()
    assert kinds(docs) == ["ConfigMap", "Deployment", "ServiceAccount"]
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)


def test_monitoring_off_renders_no_monitoring_object() -> None:
    docs = render(MATRIX["monitoring-off"])
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    assert not [d for d in docs if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_cluster_wide_watches_all_namespaces() -> None:
    args = operator_args(render())
    assert "--all-namespaces" in args
    assert not [a for a in args if a.startswith("--namespace")]


def test_namespaced_watches_only_the_listed_namespaces() -> None:
    args = operator_args(render(MATRIX["namespaced"]))
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=ml-team-a",
        "--namespace=ml-team-b",
    ]
    assert "--all-namespaces" not in args
    monitor = find(render(MATRIX["namespaced"]), "PodMonitor", "-model-servers")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml-team-a", "ml-team-b"]}


def test_two_replicas_peer_and_one_runs_standalone() -> None:
    one = render()
    assert "--standalone" in operator_args(one)
    assert not [a for a in operator_args(one) if a.startswith("--peering")]
    assert find(one, "Deployment")["spec"]["strategy"]["type"] == "Recreate"

    two = render(MATRIX["cluster-wide-2-replicas"])
    deployment = find(two, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "--peering=modelplane" in operator_args(two)
    assert "--standalone" not in operator_args(two)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_operator_runs_its_command_with_the_mounted_config() -> None:
    docs = render({"operator": {"logLevel": "debug", "config": {"x": 1}}})
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["modelplane"]
    assert container["args"][:3] == [
        "operator",
        "--config=/etc/modelplane/operator.yaml",
        "--log-level=debug",
    ]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/modelplane"
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config_map = find(docs, "ConfigMap", "-operator-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert yaml.safe_load(config_map["data"]["operator.yaml"]) == {"x": 1}
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def meta_label(label: str) -> str:
    """Prometheus' Kubernetes discovery name for a pod label."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_model_server_monitor_selects_by_the_contract(kind: str) -> None:
    values = {"monitoring": {"modelServers": {"enabled": True, "kind": kind}}}
    monitor = find(render(values), kind, "-model-servers")
    spec = monitor["spec"]
    assert spec["selector"] == {
        "matchLabels": {
            contract.LABEL_PART_OF: contract.PART_OF,
            contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
        }
    }
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"]
    assert endpoint["port"] == contract.SERVER_PORT_NAME
    assert endpoint["path"] == "/metrics"
    targets = {r["targetLabel"]: r.get("sourceLabels") for r in endpoint["relabelings"]}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]
    assert targets["llmdeployment"] == [meta_label(contract.LABEL_LLMDEPLOYMENT)]
    assert targets["track"] == [meta_label(contract.LABEL_TRACK)]


def test_operator_pod_monitor_finds_the_operator_metrics_port() -> None:
    docs = render({"monitoring": MONITORING_ON})
    monitor = find(docs, "PodMonitor", "-operator")["spec"]
    template = find(docs, "Deployment", "-operator")["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[contract.LABEL_COMPONENT] == contract.COMPONENT_OPERATOR
    assert pod_labels[contract.LABEL_PART_OF] == contract.PART_OF
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports[endpoint["port"]] == contract.OPERATOR_METRICS_PORT
    # The operator's LLMDeployment series keep their own `namespace` label.
    assert endpoint["honorLabels"] is True


def job_names(docs: list[dict[str, Any]]) -> set[str]:
    names = set()
    for d in docs:
        if d["kind"] in ("PodMonitor", "ServiceMonitor"):
            endpoints = d["spec"].get("podMetricsEndpoints") or d["spec"]["endpoints"]
            for r in endpoints[0]["relabelings"]:
                if r["targetLabel"] == "job":
                    names.add(r["replacement"])
    return names


def test_alerts_and_dashboards_select_the_jobs_the_monitors_create() -> None:
    docs = render({"monitoring": MONITORING_ON})
    assert job_names(docs) == {"modelplane-model-server", "modelplane-operator"}
    alerts = (CHART / "files" / "alerts.yaml").read_text()
    operator_dashboard = (CHART / "dashboards" / "operator.json").read_text()
    used = set(re.findall(r'job=\\?"([^"\\]+)', alerts + operator_dashboard))
    assert used == job_names(docs)


@pytest.mark.parametrize("case", ["monitoring-on", "servicemonitor-custom-grafana"])
def test_dashboards_are_configmaps_for_the_grafana_sidecar(case: str) -> None:
    dashboards_values = MATRIX[case]["monitoring"]["dashboards"]
    label = dashboards_values.get("label", "grafana_dashboard")
    label_value = dashboards_values.get("labelValue", "1")
    namespace = dashboards_values.get("namespace", NAMESPACE)
    maps = [d for d in render(MATRIX[case]) if label in d["metadata"].get("labels", {})]
    files = {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")}
    assert len(maps) == len(files) == 2
    titles = set()
    for config_map in maps:
        meta = config_map["metadata"]
        assert meta["labels"][label] == label_value
        assert meta["namespace"] == namespace
        assert meta.get("annotations", {}) == dashboards_values.get("annotations", {})
        ((key, body),) = config_map["data"].items()
        assert key.startswith("modelplane-") and key.endswith(".json")
        assert body.strip() == files[key.removeprefix("modelplane-")].strip()
        titles.add(json.loads(body)["title"])
    assert titles == {"Modelplane / Models", "Modelplane / Operator"}


def test_monitoring_labels_reach_monitors_and_rules() -> None:
    docs = render(MATRIX["servicemonitor-custom-grafana"])
    monitoring = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    assert kinds(monitoring) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    for d in monitoring:
        assert d["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert all(d["metadata"]["labels"]["team"] == "ml-platform" for d in docs)


def test_prometheus_rule_wraps_the_alert_file_unchanged() -> None:
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]
    rule = find(render({"monitoring": MONITORING_ON}), "PrometheusRule")
    assert rule["spec"]["groups"] == source
    # Nothing scrapes the operator: its absent() alert would always fire, so it is left out.
    alone = find(render({"monitoring": {"alerts": {"enabled": True}}}), "PrometheusRule")
    assert alone["spec"]["groups"] == [g for g in source if g["name"] != "modelplane-operator"]
