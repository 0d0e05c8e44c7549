"""The chart as `helm lint` and `helm template` see it, validated like an API server would.

Every case of the values matrix is rendered by the real helm binary and each
object is validated for Kubernetes 1.30 (the chart's minimum) and the newest
version kubernetes-validate knows (see validate.py for how the Prometheus
Operator kinds are checked). The other tests read the rendered objects for
what a user relies on: watch scope, peering, the gateway, and the labels,
ports and job names the operator, gateway, dashboards and alerts agree on
(modelplane.api.contract). RBAC, the operator's config file, the command
lines and the install bundle have their own modules beside this one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from tests.chart.helm import (
    CHART,
    NAMESPACE,
    container,
    find,
    kinds,
    lint,
    operator_config,
    render,
)
from tests.chart.validate import validate

MONITORING_ON: dict[str, Any] = {
    "modelServers": {"enabled": True},
    "operator": {"enabled": True},
    "gateway": {"enabled": True},
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
    "namespaced-2-replicas-gateway": {
        "operator": {"replicas": 2, "watchNamespaces": ["ml-team-a", "ml-team-b"]},
        "gateway": {"enabled": True, "apiKeys": {"secretName": "llm-keys"}},
        "monitoring": MONITORING_ON,
    },
    "gateway-on": {
        "gateway": {"enabled": True, "requestsPerMinute": 600, "extraArgs": ["--max-attempts=2"]},
        "monitoring": MONITORING_ON,
    },
    "gateway-tenants-redis-secret": {
        "gateway": {
            "enabled": True,
            "tenants": {"secretName": "llm-tenants"},
            "redis": {"urlSecret": {"name": "redis-auth", "key": "url"}, "failure": "closed"},
            "replicaConcurrency": 16,
        },
        "monitoring": MONITORING_ON,
    },
    "gateway-tenants-redis-url": {
        "gateway": {
            "enabled": True,
            "tenants": {"secretName": "llm-tenants"},
            "redis": {"url": "redis://redis.infra:6379/0"},
        },
    },
    "gateway-one-replica-own-image": {
        "gateway": {
            "enabled": True,
            "replicas": 1,
            "image": {"repository": "registry.example.com/gw", "tag": "1.2.3"},
            "serviceAccount": {"create": False, "name": "existing"},
            "service": {"type": "LoadBalancer", "port": 80},
        },
    },
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
    args: list[str] = container(docs, "-operator")["args"]
    return args


@pytest.mark.parametrize(
    "case",
    [
        "defaults",
        "monitoring-on",
        "cluster-wide-2-replicas",
        "namespaced-2-replicas-gateway",
        "gateway-tenants-redis-secret",
    ],
)
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
    """Monitoring objects need the Prometheus Operator CRDs, so they are opt-in; so is the
    gateway. The LLMDeployment CRD is a template (test_crd_template.py)."""
    docs = render()
    assert kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for d in docs:
        assert d["metadata"].get("namespace") == (
            None if d["kind"] in cluster_scoped else NAMESPACE
        )


def test_monitoring_off_renders_no_monitoring_object() -> None:
    docs = render(MATRIX["monitoring-off"])
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com")]
    assert not [d for d in docs if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_cluster_wide_watches_all_namespaces() -> None:
    docs = render()
    assert operator_config(docs)["namespaces"] == []
    assert not [a for a in operator_args(docs) if "namespace" in a]


def test_namespaced_watches_only_the_listed_namespaces() -> None:
    docs = render(MATRIX["namespaced"])
    assert operator_config(docs)["namespaces"] == ["ml-team-a", "ml-team-b"]
    monitor = find(docs, "PodMonitor", "-model-servers")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml-team-a", "ml-team-b"]}


def test_two_replicas_peer_and_one_runs_standalone() -> None:
    one = render()
    assert not [a for a in operator_args(one) if a.startswith("--peering")]
    assert find(one, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert not [d for d in one if d["apiVersion"].startswith("kopf.dev/")]

    two = render(MATRIX["cluster-wide-2-replicas"])
    deployment = find(two, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 2
    assert "--peering=modelplane" in operator_args(two)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    # kopf names each replica in the peering object by POD_ID.
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container(two, "-operator")["env"]
    }
    assert env["POD_ID"] == "metadata.name"
    (peering,) = [d for d in two if d["apiVersion"] == "kopf.dev/v1"]
    assert (peering["kind"], peering["metadata"]["name"]) == ("ClusterKopfPeering", "modelplane")


def test_namespaced_replicas_peer_in_each_watched_namespace() -> None:
    docs = render(MATRIX["namespaced-2-replicas-gateway"])
    peerings = [d for d in docs if d["apiVersion"] == "kopf.dev/v1"]
    assert {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in peerings} == {
        ("KopfPeering", "ml-team-a", "modelplane"),
        ("KopfPeering", "ml-team-b", "modelplane"),
    }


def test_operator_runs_its_command_with_the_mounted_config() -> None:
    docs = render({"operator": {"logLevel": "debug", "config": {"resyncSeconds": 60}}})
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    operator = pod["containers"][0]
    assert operator["command"] == ["modelplane"]
    assert operator["args"] == [
        "operator",
        "--config=/etc/modelplane/operator.yaml",
        "--log-level=debug",
    ]
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/modelplane"
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config_map = find(docs, "ConfigMap", "-operator-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert operator_config(docs)["resyncSeconds"] == 60
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True


def test_operator_pods_roll_when_their_config_changes() -> None:
    def checksum(values: dict[str, Any]) -> str:
        template = find(render(values), "Deployment", "-operator")["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum({})
    assert checksum({"operator": {"config": {"resyncSeconds": 60}}}) != base
    # The watched namespaces are written into the config file by the chart: they count too.
    assert checksum({"operator": {"watchNamespaces": ["ml"]}}) != base
    assert checksum({"operator": {"logLevel": "debug"}}) == base


def test_operator_ports_follow_its_config() -> None:
    docs = render({"operator": {"healthPort": 9001, "config": {"metricsPort": 9000}}})
    ports = {p["name"]: p["containerPort"] for p in container(docs, "-operator")["ports"]}
    assert ports == {"metrics": 9000, "healthz": 9001}
    config = operator_config(docs)
    assert (config["metricsPort"], config["healthPort"]) == (9000, 9001)


# --- the gateway ---------------------------------------------------------------


def test_gateway_is_a_deployment_and_service_on_the_contract_port() -> None:
    docs = render(MATRIX["gateway-on"])
    deployment = find(docs, "Deployment", "-gateway")
    pod = deployment["spec"]["template"]
    gateway = pod["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    # The operator's default NetworkPolicy admits exactly these pod labels.
    labels = pod["metadata"]["labels"]
    assert labels[contract.LABEL_PART_OF] == contract.PART_OF
    assert labels[contract.LABEL_COMPONENT] == contract.COMPONENT_GATEWAY
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {
        "http": contract.GATEWAY_PORT,
        contract.GATEWAY_METRICS_PORT_NAME: contract.GATEWAY_METRICS_PORT,
    }
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert gateway["securityContext"] == container(docs, "-operator")["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The drain (30 s) fits in the grace period, after the preStop pause.
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30 + 5
    # One control-plane image runs the operator and the gateway.
    assert gateway["image"] == container(docs, "-operator")["image"] == "modelplane/operator:0.1.0"

    service = find(docs, "Service", "-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]  # clients reach the API, never /metrics
    assert (port["port"], port["targetPort"]) == (8080, "http")
    pdb = find(docs, "PodDisruptionBudget", "-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_gateway_can_run_its_own_image_and_service_account() -> None:
    docs = render(MATRIX["gateway-one-replica-own-image"])
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/gw:1.2.3"
    assert pod["serviceAccountName"] == "existing"
    assert not [
        d for d in docs if d["kind"] == "ServiceAccount" and "gateway" in d["metadata"]["name"]
    ]
    binding = find(docs, "ClusterRoleBinding", "-gateway")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "existing", "namespace": NAMESPACE}
    ]
    assert find(docs, "Service", "-gateway")["spec"]["type"] == "LoadBalancer"
    assert not [
        d for d in docs if d["kind"] == "PodDisruptionBudget"
    ]  # one replica: nothing to keep


def test_gateway_reads_api_keys_from_the_secret() -> None:
    docs = render(MATRIX["namespaced-2-replicas-gateway"])
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    key_file = next(a for a in gateway["args"] if a.startswith("--api-key-file="))
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "api-keys")
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "llm-keys"
    (item,) = volume["secret"]["items"]
    assert item["key"] == "keys"
    assert key_file.removeprefix("--api-key-file=") == f"{mount['mountPath']}/{item['path']}"
    assert "--api-key-file" not in str(container(render(MATRIX["gateway-on"]), "-gateway")["args"])


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
    docs = render(MATRIX["gateway-on"])
    assert job_names(docs) == {
        contract.JOB_MODEL_SERVER,
        contract.JOB_OPERATOR,
        contract.JOB_GATEWAY,
    }
    alerts = (CHART / "files" / "alerts.yaml").read_text()
    operator_dashboard = (CHART / "dashboards" / "operator.json").read_text()
    used = set(re.findall(r'job=\\?"([^"\\]+)', alerts + operator_dashboard))
    # The tenants' alerts read the gateway's series.
    assert used == {contract.JOB_MODEL_SERVER, contract.JOB_OPERATOR, contract.JOB_GATEWAY}


def test_gateway_pod_monitor_scrapes_the_gateway_pods() -> None:
    docs = render(MATRIX["gateway-on"])
    monitor = find(docs, "PodMonitor", "-gateway")["spec"]
    pod_labels = find(docs, "Deployment", "-gateway")["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["podMetricsEndpoints"]
    # The metrics port: the API port answers /metrics with 404.
    assert (endpoint["port"], endpoint["path"]) == (contract.GATEWAY_METRICS_PORT_NAME, "/metrics")
    # No gateway, nothing to scrape.
    off = render({"monitoring": {"gateway": {"enabled": True}}})
    assert not [d for d in off if "gateway" in d["metadata"]["name"]]


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
    assert kinds(monitoring) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]  # no gateway
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
