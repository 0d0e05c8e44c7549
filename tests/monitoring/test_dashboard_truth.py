"""Every dashboard query, evaluated by a real Prometheus scraping the real model server.

The model server is `modelplane serve` on vLLM's CPU engine with SmolLM2. A
real Prometheus scrapes it with the scrape settings and relabelings of the
chart's rendered model-server PodMonitor, translated into a scrape job the way
the Prometheus Operator does. There is no cluster, so the pod metadata that
Kubernetes discovery would attach to the target (namespace, pod name, the
operator's pod labels) is given as static labels: the one fake part.

After a little traffic (streamed and not, plus a client error), each panel
query with Grafana's variables substituted goes through Prometheus' HTTP API
and must return data. Panels fed by exporters that do not run here are listed
in ABSENT with the reason; their queries must still parse and, to keep the
list honest, return nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chart.helm import find, render
from tests.conftest import ServerProcess
from tests.monitoring.dashboards import (
    DASHBOARDS,
    Query,
    all_queries,
    label_values_query,
    load,
    substitute,
    variables,
)
from tests.monitoring.prometheus import PrometheusServer

pytestmark = pytest.mark.engine

MODEL = "smollm2"
NAMESPACE = "ml-demo"
POD = "smollm2-6c9f7d-x2x4q"
VALUES = {"namespace": NAMESPACE, "model": MODEL, "datasource": "prometheus"}

MODELS = "Modelplane / Models"
OPERATOR = "Modelplane / Operator"
NO_GPU = "DCGM exporter: needs NVIDIA GPUs, none here"
NO_OPERATOR = "the operator's metrics: the operator does not run in this test"
NO_GATEWAY = "the gateway's metrics: the gateway does not run in this test"
# (dashboard, panel, refId or None for all of the panel's queries) -> why no data here
ABSENT: dict[tuple[str, str, str | None], str] = {
    (MODELS, "GPU utilization", None): NO_GPU,
    (MODELS, "GPU memory used", None): NO_GPU,
    (MODELS, "Replicas: desired vs ready", "A"): NO_OPERATOR,
    (MODELS, "Replicas: desired vs ready", "B"): NO_OPERATOR,
    (MODELS, "Replicas: desired vs ready", "C"): NO_OPERATOR,
    (MODELS, "Gateway requests/s by code", None): NO_GATEWAY,
    (MODELS, "Gateway added latency", None): NO_GATEWAY,
    (MODELS, "Gateway retries and ejections", None): NO_GATEWAY,
    (MODELS, "Held requests", None): NO_GATEWAY,
    **{(OPERATOR, q.panel, None): NO_OPERATOR for q in all_queries() if q.dashboard == OPERATOR},
}
ABSENT_VARIABLES = {(OPERATOR, "namespace"): NO_OPERATOR}


def absent_reason(query: Query) -> str | None:
    return ABSENT.get((query.dashboard, query.panel, query.ref_id)) or ABSENT.get(
        (query.dashboard, query.panel, None)
    )


def scrape_job(endpoint: dict[str, Any], target: str, pod_meta: dict[str, str]) -> dict[str, Any]:
    """A PodMonitor endpoint as a Prometheus scrape job (camelCase keys to snake_case)."""

    def snake(rule: dict[str, Any]) -> dict[str, Any]:
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): v for k, v in rule.items()}

    return {
        "job_name": "podMonitor/modelplane-model-servers",
        "scrape_interval": endpoint["interval"],
        "scrape_timeout": endpoint["scrapeTimeout"],
        "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [target], "labels": pod_meta}],
        "relabel_configs": [snake(r) for r in endpoint["relabelings"]],
        "metric_relabel_configs": [snake(r) for r in endpoint.get("metricRelabelings", [])],
    }


@pytest.fixture(scope="module")
def prometheus(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    tmp = tmp_path_factory.mktemp("dashboard-truth")
    scrape = {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"}
    monitor = find(render({"monitoring": {"modelServers": scrape}}), "PodMonitor", "-model-servers")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    server = ServerProcess(
        args=["--model", str(smollm2_dir), "--served-model-name", MODEL,
              "--max-model-len", "2048", "--enforce-eager"],
        log_path=tmp / "server.log",
    )  # fmt: skip
    pod_meta = {  # what Kubernetes pod discovery would attach to this target
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": POD,
        "__meta_kubernetes_pod_label_modelplane_io_llmdeployment": MODEL,
        "__meta_kubernetes_pod_label_modelplane_io_track": "stable",
    }
    job = scrape_job(endpoint, f"127.0.0.1:{server.port}", pod_meta)
    config = {"global": {"evaluation_interval": "1s"}, "scrape_configs": [job]}
    prom = PrometheusServer(config, tmp)
    try:
        server.start()
        prom.start().wait_ready()
        server.wait_ready()
        prom.wait_for('up{job="modelplane-model-server"} == 1')
        for wave in (1, 2):
            send_traffic(server.url)
            # A scrape after each wave, so counters and histograms have two points to rate.
            prom.wait_for(f"sum(modelplane_requests_total) >= {4 * wave}")
        yield prom
    finally:
        prom.stop()
        server.stop()


def send_traffic(url: str) -> None:
    """One plain and two streamed requests, and one for a model the server does not have."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}]}
    with httpx.Client(base_url=url, timeout=120) as client:
        plain = client.post("/v1/chat/completions", json={**chat, "max_tokens": 8})
        assert plain.status_code == 200
        for path, body in (
            ("/v1/chat/completions", {**chat, "max_tokens": 16, "stream": True}),
            (
                "/v1/completions",
                {"model": MODEL, "prompt": "Once", "max_tokens": 16, "stream": True},
            ),
        ):
            with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                assert any(line == "data: [DONE]" for line in response.iter_lines())
        missing = client.post("/v1/chat/completions", json={**chat, "model": "no-such-model"})
        assert missing.status_code == 404


def samples(answer: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    assert answer["status"] == "success", answer
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def test_every_panel_with_an_exporter_here_shows_data(prometheus: PrometheusServer) -> None:
    empty, served = [], 0
    for query in all_queries():
        if absent_reason(query):
            continue
        found = samples(prometheus.query(substitute(query.expr, VALUES)))
        if not any(math.isfinite(v) for _, v in found):
            empty.append(f"{query}: {found}")
        served += 1
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert served == 19


def test_panels_of_absent_exporters_parse_and_are_listed_truthfully(
    prometheus: PrometheusServer,
) -> None:
    absent = [q for q in all_queries() if absent_reason(q)]
    assert len(absent) == 24
    for query in absent:
        answer = prometheus.query(substitute(query.expr, VALUES))
        assert answer["status"] == "success", f"{query}: {answer.get('error')}"
        assert samples(answer) == [], f"{query} has data: take it off ABSENT"


def test_template_variables_offer_the_served_namespace_and_model(
    prometheus: PrometheusServer,
) -> None:
    for path in DASHBOARDS:
        board = load(path)
        for name, variable in variables(board).items():
            if variable["type"] != "query":
                continue
            match, label = label_values_query(substitute(variable["query"]["query"], VALUES))
            offered = prometheus.label_values(label, match)
            if (board["title"], name) in ABSENT_VARIABLES:
                assert offered == []
            else:
                assert VALUES[name] in offered, f"{board['title']} ${name}: {offered}"


def panel_samples(prometheus: PrometheusServer, panel: str, ref_id: str) -> list[Any]:
    (query,) = [q for q in all_queries() if q.key == (MODELS, panel, ref_id)]
    return samples(prometheus.query(substitute(query.expr, VALUES)))


def test_panels_show_what_the_traffic_did(prometheus: PrometheusServer) -> None:
    codes = {m["code"] for m, v in panel_samples(prometheus, "Requests/s by status", "A") if v > 0}
    assert codes == {"200", "404"}
    ((_, error_ratio),) = panel_samples(prometheus, "Error ratio (5xx)", "A")
    assert error_ratio == 0
    for ref_id in ("A", "B"):  # tokens in, tokens out
        ((labels, rate),) = panel_samples(prometheus, "Tokens/s in and out", ref_id)
        assert labels == {"model_name": MODEL} and rate > 0
    ((labels, p50),) = panel_samples(prometheus, "Time to first token", "A")
    assert labels == {"model": MODEL} and 0 < p50 < 60
    ((labels, kv),) = panel_samples(prometheus, "KV-cache usage", "A")
    assert labels == {"model_name": MODEL, "pod": POD} and 0 <= kv <= 1
    ((labels, ready),) = panel_samples(prometheus, "Replicas: desired vs ready", "D")
    assert labels == {"model_name": MODEL} and ready == 1
