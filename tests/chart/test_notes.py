"""NOTES.txt, as `helm install` prints it (rendered by helm itself with --dry-run=client), stays
true to the chart: the first LLMDeployment it offers is the CPU sample, and the names, ports and
URLs it tells the user to use are those of the objects the chart and the operator create."""

from __future__ import annotations

import re

import yaml

from modelplane.api import contract
from tests.chart.helm import NAMESPACE, REPO, find, notes, render

SAMPLE = REPO / "manifests" / "samples" / "smollm2-cpu.yaml"


def heredoc(text: str) -> dict[str, object]:
    body = text.split("<<'YAML'", 1)[1].split("\n", 1)[1].split("\nYAML\n", 1)[0]
    doc: dict[str, object] = yaml.safe_load(body)
    return doc


def test_the_first_model_is_the_cpu_sample_in_a_watched_namespace() -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    text = notes()
    assert heredoc(text) == sample
    name = sample["metadata"]["name"]
    # The Service the operator creates is named after the LLMDeployment, on the server port.
    assert f"port-forward svc/{name} {contract.SERVER_PORT}:{contract.SERVER_PORT}" in text
    assert "kubectl apply -n default" in text

    namespaced = notes({"operator": {"watchNamespaces": ["ml-a", "ml-b"]}})
    assert "kubectl apply -n ml-a" in namespaced
    assert "namespaces: ml-a, ml-b" in namespaced


def test_the_gateway_is_reached_by_its_service() -> None:
    values = {"gateway": {"enabled": True, "service": {"port": 80}}}
    text = notes(values)
    service = find(render(values), "Service", "-gateway")
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert f"http://{name}.{NAMESPACE}.svc:{port}/v1" in text
    assert f"port-forward svc/{name} 8080:{port}" in text
    assert "Authorization" not in text

    with_keys = notes({"gateway": {"enabled": True, "apiKeys": {"secretName": "llm-keys"}}})
    assert with_keys.count('-H "Authorization: Bearer $API_KEY"') == 2
    assert "Secret llm-keys" in with_keys


def test_without_the_gateway_it_says_how_to_turn_it_on() -> None:
    text = notes()
    assert "--set gateway.enabled=true" in text
    assert not re.search(r"svc/\S*gateway", text)


def test_double_scraping_is_called_out() -> None:
    text = notes({"monitoring": {"modelServers": {"enabled": True}}})
    assert "spec.monitoring.serviceMonitor" in text and "scraped twice" in text
    assert "scraped twice" not in notes()
