"""Who reaches a model server under the chart's default install, on a CNI that enforces policy.

The chart is rendered by the real helm binary with default values into a
release namespace of its own (so that a default that merely happens to match
the test's namespace cannot pass); the operator's config file comes from the
rendered ConfigMap and is loaded by the operator's own loader; an
LLMDeployment sample is rendered through `modelplane render`'s code path
with that config. The pods are the ones the rendered Deployments would
create, and tests/support/network_policy.py decides each connection by
networking.k8s.io/v1's ingress rules.

The operator reads every replica's /metrics itself (no prometheusUrl by
default): if the policy shut it out, the autoscaler would never scale and a
canary would never pass a step. With LoRA adapters the model server also
listens on its admin port (adapters' load and unload): the operator alone
may reach it, not the gateway, not the model's namespace, not Prometheus.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.api import contract
from modelplane.operator.config import OperatorConfig, load_config
from modelplane.operator.render_command import render as render_llmdeployments
from tests.chart.helm import CHART, RELEASE, REPO, find, helm, operator_config, values_file
from tests.support.network_policy import Cluster, Pod

RELEASE_NAMESPACE = "llm-platform"
MODELS = "models"
ELSEWHERE = "tenant-b"
SAMPLE = REPO / "manifests" / "samples" / "smollm2-cpu.yaml"


def chart_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with values_file(values) as path:
        result = helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "-f", path)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def loaded_config(docs: list[dict[str, Any]], tmp_path: Path) -> OperatorConfig:
    """The config the operator would run with: the chart's file, through its own loader."""
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump(operator_config(docs)))
    return load_config(path)


class Install:
    """The chart's objects and one model's, and the pods that would run."""

    def __init__(
        self,
        values: dict[str, Any] | None,
        tmp_path: Path,
        sample: list[dict[str, Any]] | None = None,
    ) -> None:
        docs = chart_objects(values)
        with_gateway = chart_objects({**(values or {}), "gateway": {"enabled": True}})
        # Turning the gateway on must not change the policy the operator writes.
        assert operator_config(with_gateway) == operator_config(docs)
        self.config = loaded_config(docs, tmp_path)
        model_objects = render_llmdeployments(
            sample or list(yaml.safe_load_all(SAMPLE.read_text())),
            self.config,
            namespace=MODELS,
            service_monitor_api=False,
        )
        self.cluster = Cluster(docs + model_objects)
        self.operator = Pod.of_workload(find(docs, "Deployment", "-operator"))
        self.gateway = Pod.of_workload(find(with_gateway, "Deployment", "-gateway"))
        self.model = Pod.of_workload(find(model_objects, "Deployment"))
        (self.metrics_port,) = [
            p.port for p in self.model.ports if p.name == contract.SERVER_PORT_NAME
        ]

    def reaches(self, source: Pod) -> bool:
        return bool(self.cluster.ingress(source, self.model, self.metrics_port))


@pytest.fixture(scope="module")
def default_install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    return Install(None, tmp_path_factory.mktemp("default"))


def test_the_model_is_isolated_by_its_own_policy(default_install: Install) -> None:
    (policy,) = default_install.cluster.isolating(default_install.model)
    assert policy["metadata"]["namespace"] == MODELS
    assert default_install.operator.namespace == RELEASE_NAMESPACE
    assert default_install.gateway.namespace == RELEASE_NAMESPACE


def test_the_operator_reads_the_model_pods_metrics(default_install: Install) -> None:
    assert default_install.config.prometheus_url is None  # it scrapes the pods itself
    verdict = default_install.cluster.ingress(
        default_install.operator, default_install.model, default_install.metrics_port
    )
    assert verdict, verdict.reason


def test_the_gateway_in_the_release_namespace_reaches_the_model(default_install: Install) -> None:
    assert default_install.reaches(default_install.gateway)


@pytest.mark.parametrize("component", ["gateway", "operator"])
def test_modelplane_s_labels_elsewhere_reach_nothing(
    default_install: Install, component: str
) -> None:
    """Anyone who may create a pod in some namespace can copy the control plane's labels."""
    source = default_install.gateway if component == "gateway" else default_install.operator
    for namespace in (ELSEWHERE, "modelplane-system", "monitoring-not"):
        impostor = replace(source, namespace=namespace)
        verdict = default_install.cluster.ingress(
            impostor, default_install.model, default_install.metrics_port
        )
        assert not verdict, f"{component} labels in {namespace}: {verdict.reason}"


def test_any_other_pod_in_another_namespace_is_refused(default_install: Install) -> None:
    for labels in ({}, {"app": "curl"}, {contract.LABEL_PART_OF: contract.PART_OF}):
        assert not default_install.reaches(Pod(ELSEWHERE, labels))


def test_pods_of_the_model_s_own_namespace_reach_it(default_install: Install) -> None:
    assert default_install.reaches(Pod(MODELS, {"app": "my-client"}))


def test_the_default_prometheus_namespace_reaches_the_metrics(default_install: Install) -> None:
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert default_install.reaches(prometheus)


def test_only_the_model_server_port_is_open(default_install: Install) -> None:
    verdict = default_install.cluster.ingress(default_install.operator, default_install.model, 22)
    assert not verdict, verdict.reason


def test_a_configured_prometheus_reaches_the_metrics_and_monitoring_no_longer(
    tmp_path: Path,
) -> None:
    prometheus_only = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    values = {
        "operator": {
            "config": {"networkPolicy": {"allowFrom": [{"podSelector": {}}, prometheus_only]}}
        }
    }
    install = Install(values, tmp_path)
    assert install.reaches(Pod("observability", {"app.kubernetes.io/name": "prometheus"}))
    assert not install.reaches(Pod("observability", {"app.kubernetes.io/name": "grafana"}))
    assert not install.reaches(Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}))
    # Replacing the list keeps Modelplane's own pods in.
    assert install.reaches(install.operator) and install.reaches(install.gateway)


def test_the_control_plane_namespace_is_the_chart_s_to_set() -> None:
    values = {"operator": {"config": {"networkPolicy": {"controlPlaneNamespace": "x"}}}}
    with values_file(values) as path:
        result = helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "-f", path)
    assert result.returncode != 0
    assert "controlPlaneNamespace is set by the chart" in result.stderr


# --- the admin port (LoRA adapters) -----------------------------------------


@pytest.fixture(scope="module")
def lora_install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The sample model with one LoRA adapter: its pods listen on the admin port too."""
    (sample,) = yaml.safe_load_all(SAMPLE.read_text())
    sample["spec"]["adapters"] = [{"name": "sql", "source": "hf://example/smollm2-sql-lora"}]
    return Install(None, tmp_path_factory.mktemp("lora"), [sample])


def admin_port(install: Install) -> int:
    (port,) = [p.port for p in install.model.ports if p.name == contract.SERVER_ADMIN_PORT_NAME]
    return port


def test_the_operator_reaches_the_admin_port(lora_install: Install) -> None:
    verdict = lora_install.cluster.ingress(
        lora_install.operator, lora_install.model, admin_port(lora_install)
    )
    assert verdict, verdict.reason


def test_the_gateway_reaches_the_api_but_not_the_admin_port(lora_install: Install) -> None:
    assert lora_install.reaches(lora_install.gateway)
    verdict = lora_install.cluster.ingress(
        lora_install.gateway, lora_install.model, admin_port(lora_install)
    )
    assert not verdict, verdict.reason


def test_no_one_else_reaches_the_admin_port(lora_install: Install) -> None:
    others = [
        Pod(MODELS, {"app": "my-client"}),  # admitted to the API port
        Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),  # admitted to /metrics
        replace(lora_install.operator, namespace=ELSEWHERE),  # copied labels
    ]
    port = admin_port(lora_install)
    for source in others:
        verdict = lora_install.cluster.ingress(source, lora_install.model, port)
        assert not verdict, f"{source}: {verdict.reason}"


def test_a_model_without_adapters_has_no_admin_port(default_install: Install) -> None:
    names = {p.name for p in default_install.model.ports}
    assert names == {contract.SERVER_PORT_NAME}
