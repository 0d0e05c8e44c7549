"""The bring-your-own-autoscaler examples in manifests/autoscaling/ (HPA, KEDA).

No cluster runs here, so what the API server would check is checked offline
(tests/chart/validate.py): the HPA by the official autoscaling/v2 schemas
(kubernetes-validate, strict), KEDA's ScaledObject by the models generated
from KEDA's CRDs (cloudcoil-models-keda, strict), the LLMDeployment by the
project's CRD schema, its CEL rules and the operator's own model. The KEDA
trigger's query is asked of a real Prometheus (Debian's package) scraping
pods with real /metrics endpoints, through the scrape job the chart's
PodMonitor becomes (tests/monitoring/pod_monitors.py), so a label it selects
on that the series do not carry shows up as a wrong sum; every trigger's
query (the how-to's scale-to-zero ScaledObject too) is parsed by promtool.
That the operator
follows a write of the scale subresource and its autoscaler stands aside is
tested against the emulator (tests/integration/operator/test_operator_byo_autoscaler.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from tests.chart.helm import REPO, find, render
from tests.chart.validate import validate
from tests.integration.operator.fake_pods import FakePod
from tests.monitoring.pod_monitors import discovered, scrape_job
from tests.monitoring.prometheus import PrometheusServer, promtool
from tests.unit.test_crd import cel_failures

EXAMPLES = REPO / "manifests" / "autoscaling"
KEDA = EXAMPLES / "keda-scaledobject.yaml"
HOW_TO = REPO / "docs" / "how-to" / "bring-your-own-autoscaler.md"
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SCRAPE = {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def how_to_documents() -> list[dict[str, Any]]:
    """The YAML blocks of the how-to page."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", HOW_TO.read_text(), re.M | re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    files = [
        (f"{path.name}:{doc['kind']}", doc)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in documents(path)
    ]
    return files + [(f"{HOW_TO.name}:{doc['kind']}", doc) for doc in how_to_documents()]


def scaled_objects() -> list[dict[str, Any]]:
    return [doc for _, doc in example_documents() if doc["kind"] == "ScaledObject"]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(
    "doc", [d for _, d in example_documents()], ids=[i for i, _ in example_documents()]
)
def test_every_example_validates(doc: dict[str, Any], version: str) -> None:
    assert validate(doc, version) == []
    if doc["kind"] == contract.KIND:
        assert cel_failures(doc) == []
        LLMDeploymentSpec.model_validate(doc["spec"])


def test_the_check_refuses_a_broken_scaledobject() -> None:
    """What `kubectl apply` of a mistaken ScaledObject would be refused for."""
    scaled = of_kind(documents(KEDA), "ScaledObject")
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")  # HPA's name
    unquoted = copy.deepcopy(scaled)
    unquoted["spec"]["triggers"][0]["metadata"]["threshold"] = 5  # metadata values are strings
    untargeted = copy.deepcopy(scaled)
    del untargeted["spec"]["scaleTargetRef"]
    assert validate(misspelt, KUBE_VERSIONS[0]) == ["unknown field spec.minReplicas"]
    for broken in (unquoted, untargeted):
        assert validate(broken, KUBE_VERSIONS[0]) != []


def test_the_scaledobjects_target_the_example_llmdeployment_which_leaves_them_replicas() -> None:
    """One writer of spec.replicas: the target's own autoscaler is off."""
    llmd = of_kind(documents(KEDA), contract.KIND)
    assert llmd["spec"]["autoscaling"]["enabled"] is False
    assert len(scaled_objects()) == 2  # the example's and the how-to's scale-to-zero one
    for scaled in scaled_objects():
        target = scaled["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == (contract.API_VERSION, contract.KIND)
        assert target["name"] == llmd["metadata"]["name"]


def test_every_trigger_query_parses(tmp_path: Path) -> None:
    queries = [
        trigger["metadata"]["query"]
        for scaled in scaled_objects()
        for trigger in scaled["spec"]["triggers"]
    ]
    assert len(queries) == 4
    rules = [{"record": f"keda:query_{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def pods() -> Iterator[list[tuple[str, FakePod]]]:
    """(namespace, pod): the example's model on both tracks, another model, and a model of
    the same name in another namespace, each with its engine queue."""
    made = [
        ("default", FakePod("smollm2-keda-7d9f-a", "smollm2-keda", contract.TRACK_STABLE), 3),
        ("default", FakePod("smollm2-keda-c-5b4-b", "smollm2-keda", contract.TRACK_CANARY), 4),
        ("default", FakePod("other-6c8-a", "other", contract.TRACK_STABLE), 50),
        ("team-b", FakePod("smollm2-keda-7d9f-a", "smollm2-keda", contract.TRACK_STABLE), 100),
    ]
    for _, pod, waiting in made:
        pod.metrics.load(waiting=waiting, running=1)
    yield [(namespace, pod) for namespace, pod, _ in made]
    for _, pod, _ in made:
        pod.close()


def test_the_keda_query_sums_the_models_queue_as_the_podmonitor_labels_it(
    pods: list[tuple[str, FakePod]], tmp_path: Path
) -> None:
    monitor = find(render({"monitoring": {"modelServers": SCRAPE}}), "PodMonitor", "-model-servers")
    targets = [
        (f"127.0.0.1:{pod.port}", discovered(pod.manifest(namespace), contract.SERVER_PORT_NAME))
        for namespace, pod in pods
    ]
    prometheus = PrometheusServer({"scrape_configs": [scrape_job(monitor, targets)]}, tmp_path)
    try:
        prometheus.start().wait_ready()
        prometheus.wait_for(f"count(up == 1) == {len(pods)}")
        (trigger,) = of_kind(documents(KEDA), "ScaledObject")["spec"]["triggers"]
        (sample,) = prometheus.wait_for(trigger["metadata"]["query"])
        # 3 waiting on the stable replica + 4 on the canary's; not the other model's 50,
        # nor the 100 of the model of the same name in team-b.
        assert float(sample["value"][1]) == 7
    finally:
        prometheus.stop()
