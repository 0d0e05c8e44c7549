"""Every dashboard query, evaluated by a real Prometheus scraping Modelplane's real parts.

What runs, all real and as users run it:

- the model server: `modelplane serve` on vLLM's CPU engine with SmolLM2, serving a
  LoRA adapter (random weights the test writes: tests/support/lora_adapter.py);
- the operator: a `modelplane operator` process with the chart's operator
  config, reconciling an LLMDeployment named after the model, with
  autoscaling on; its autoscaler reads the real server's /metrics (the pod
  object's podIP and `http` container port lead to it);
- two gateway replicas (`modelplane gateway`, static discovery): A, in
  front of the server from before it is ready, so its first request is held
  until the model has loaded, and listing the adapter; A has tenants (a
  tenants file of two teams: team-a, and team-b with one request a minute and a
  token budget), keeps their limits in a real `redis-server` (Debian's package, as
  in cluster setups with several gateway replicas), and runs one request at a
  time per replica (the static file's `concurrency: 1`), so a second request at
  once waits in its queue; B, listing the server and a replica that
  passed B's readiness check and died before B's first request (a bare HTTP
  server answering /ready, then stopped), so that request fails over: a
  retry and an ejection;
- Prometheus, scraping each of them with the scrape settings and relabelings
  of the chart's PodMonitors (model servers, gateway, operator), translated
  into scrape jobs the way the Prometheus Operator does (pod_monitors.py).

The fake part: there is no Kubernetes here. The API is KMock's emulator
(tests/support/kube_emulator.py), and the test plays the kubelet and the Deployment
controller (truth_stack.py): it creates the model server's Pod from the Deployment
the operator wrote, reports it ready once the server is, and reports the
Deployment's replica counts. The pod metadata Kubernetes discovery would attach to each
target (namespace, pod name, pod labels, container port name) is given as
static labels, taken from that Pod and from the pods of the chart's rendered
gateway and operator Deployments. A user scales the model's Deployment to 2
by hand; the autoscaler, on the real server's metrics, takes it back to 1: a
real scaling decision.

After a little traffic (streamed and not, one for the adapter, plus a client error; team-a's
and team-b's, team-b throttled, team-a's second request at once queued), each panel
query with Grafana's variables substituted goes through Prometheus' HTTP API
and must return data. Panels fed by exporters that cannot run here are listed
in ABSENT with the reason; their queries must still parse and, to keep the
list honest, return nothing.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelplane.api import contract
from tests.chart.helm import find, render
from tests.conftest import ServerProcess
from tests.integration.gateway.conftest import GatewayProcess
from tests.integration.operator.conftest import Cluster
from tests.monitoring.dashboards import (
    DASHBOARDS,
    Query,
    all_queries,
    label_values_query,
    load,
    substitute,
    variables,
)
from tests.monitoring.pod_monitors import discovered, scrape_job
from tests.monitoring.prometheus import PrometheusServer
from tests.monitoring.truth_stack import DoomedReplica, ModelServerPod, chart_pod, operator_process
from tests.support.kube_emulator import EmulatorThread
from tests.support.lora_adapter import write_random_adapter
from tests.support.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.engine

MODEL = "smollm2"
ADAPTER = "sql"
NAMESPACE = "ml-demo"
POD = "smollm2-6c9f7d-x2x4q"
TEAM_A, TEAM_B = "team-a", "team-b"
KEYS = {TEAM_A: "sk-truth-team-a-0001", TEAM_B: "sk-truth-team-b-0001"}
BUDGET = 100_000  # team-b's tokens a month: spent a little, never all
TENANTS = {
    "tenants": {
        TEAM_A: {"keys": [KEYS[TEAM_A]], "weight": 2},
        TEAM_B: {
            "keys": [KEYS[TEAM_B]],
            "requestsPerMinute": 1,
            "budget": {"tokens": BUDGET, "period": "month"},
        },
    }
}
# Grafana's values when the dashboard opens on this model: every tenant (All).
VALUES = {"namespace": NAMESPACE, "model": MODEL, "tenant": ".*", "datasource": "prometheus"}
# What each template variable must offer.
OFFERED = {"namespace": {NAMESPACE}, "model": {MODEL}, "tenant": {TEAM_A, TEAM_B}}
SCRAPE = {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"}
CHART_VALUES = {
    "gateway": {"enabled": True},
    "monitoring": {"modelServers": SCRAPE, "gateway": SCRAPE, "operator": SCRAPE},
}
LLMD_SPEC = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": MODEL},
    "engine": {"maxModelLen": 2048},
    "resources": {"gpus": 0},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 2,
        "targets": {"queueDepthPerReplica": 4},
        "scaleDownDelaySeconds": 1,
    },
}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}]}

MODELS = "Modelplane / Models"
OPERATOR = "Modelplane / Operator"
NO_GPU = "DCGM exporter: needs NVIDIA GPUs, none here"
# (dashboard, panel, refId or None for all of the panel's queries) -> why no data here
ABSENT: dict[tuple[str, str, str | None], str] = {
    (MODELS, "GPU utilization", None): NO_GPU,
    (MODELS, "GPU memory used", None): NO_GPU,
}
# (dashboard, variable) -> why it offers nothing here; every variable's exporter runs here.
ABSENT_VARIABLES: dict[tuple[str, str], str] = {}


def absent_reason(query: Query) -> str | None:
    return ABSENT.get((query.dashboard, query.panel, query.ref_id)) or ABSENT.get(
        (query.dashboard, query.panel, None)
    )


def auth(tenant: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}


def ask(url: str, tenant: str | None = TEAM_A, **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=600, headers=auth(tenant)) as client:
        return client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8, **extra})


def chat(url: str, tenant: str | None = TEAM_A, **extra: Any) -> int:
    return ask(url, tenant, **extra).status_code


def send_traffic(gateway_url: str, server_url: str) -> None:
    """Through the gateway, as team-a: one plain and two streamed requests, and one for the
    adapter. To the server itself: one for a model it does not have (the gateway would answer
    that one itself)."""
    assert chat(gateway_url) == 200
    assert chat(gateway_url, model=ADAPTER) == 200
    with httpx.Client(base_url=gateway_url, timeout=120, headers=auth(TEAM_A)) as client:
        for path, body in (
            ("/v1/chat/completions", {**CHAT, "max_tokens": 16, "stream": True}),
            (
                "/v1/completions",
                {"model": MODEL, "prompt": "Once", "max_tokens": 16, "stream": True},
            ),
        ):
            with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                assert any(line == "data: [DONE]" for line in response.iter_lines())
    assert chat(server_url, None, model="no-such-model") == 404


def team_b_twice(gateway_url: str) -> list[tuple[int, str | None]]:
    """Two requests of team-b, one after the other; its limit is one a minute. Status and
    error code of each."""
    answers = [ask(gateway_url, TEAM_B) for _ in range(2)]
    return [(a.status_code, a.json().get("error", {}).get("code")) for a in answers]


def team_a_queued(gateway_url: str) -> None:
    """Two requests of team-a at once on a model that runs one at a time per replica: the
    second waits at the gateway until the first, streaming, has finished."""
    first = {**CHAT, "max_tokens": 48, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(base_url=gateway_url, timeout=120, headers=auth(TEAM_A)) as client,
        client.stream("POST", "/v1/chat/completions", json=first) as running,
    ):
        assert running.status_code == 200
        lines = running.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # it holds the slot
        assert chat(gateway_url) == 200  # waits for the slot
        assert any(line == "data: [DONE]" for line in lines)


def scrape_jobs(
    docs: list[dict[str, Any]],
    model_server_pod: dict[str, Any],
    server_port: int,
    gateway_metrics_ports: list[int],
    operator_port: int,
) -> list[dict[str, Any]]:
    """One job per chart PodMonitor, its targets labelled as pod discovery would label them."""
    gateways = [
        (
            f"127.0.0.1:{port}",
            discovered(
                chart_pod(docs, "-gateway", f"7f6b9-{i}x2k"), contract.GATEWAY_METRICS_PORT_NAME
            ),
        )
        for i, port in enumerate(gateway_metrics_ports)
    ]
    operator = chart_pod(docs, "-operator", "5c8d4-k9m2p")
    return [
        scrape_job(
            find(docs, "PodMonitor", "-model-servers"),
            [(f"127.0.0.1:{server_port}", discovered(model_server_pod, contract.SERVER_PORT_NAME))],
        ),
        scrape_job(find(docs, "PodMonitor", "-gateway"), gateways),
        scrape_job(
            find(docs, "PodMonitor", "-operator"),
            [(f"127.0.0.1:{operator_port}", discovered(operator, "metrics"))],
        ),
    ]


@dataclass
class Stack:
    prometheus: PrometheusServer
    server_url: str
    dead_replica_url: str


@pytest.fixture(scope="module")
def stack(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard-truth")
    docs = render(CHART_VALUES)
    with contextlib.ExitStack() as stop:
        adapter = write_random_adapter(smollm2_dir, tmp / "adapter")
        server = ServerProcess(
            args=["--model", str(smollm2_dir), "--served-model-name", MODEL,
                  "--max-model-len", "2048", "--enforce-eager",
                  "--adapter", f"{ADAPTER}={adapter}"],
            log_path=tmp / "server.log",
        )  # fmt: skip
        stop.callback(server.stop)
        server.start()
        if not Path(REDIS_SERVER).exists():
            pytest.fail("no redis-server: `make redis` installs Debian's package")
        redis = RedisServer(tmp)
        stop.callback(redis.stop)
        redis.start()
        (tmp / "tenants.yaml").write_text(yaml.safe_dump(TENANTS))
        (tmp / "gateway-a.yaml").write_text(yaml.safe_dump({"models": {MODEL: {
            "upstreams": [server.url], "adapters": [ADAPTER], "concurrency": 1,
        }}}))  # fmt: skip
        # Gateway A is up before the model is: its first request waits for it.
        front = GatewayProcess.with_args(
            tmp, "gateway-a", "--config", str(tmp / "gateway-a.yaml"),
            "--health-interval", "0.25", "--hold-timeout", "600",
            "--tenants", str(tmp / "tenants.yaml"), "--redis-url", redis.url,
        )  # fmt: skip
        stop.callback(front.stop)
        front.start()
        front.wait_synced()
        held: list[int] = []
        asker = threading.Thread(target=lambda: held.append(chat(front.url)), daemon=True)
        asker.start()
        cluster = Cluster(stop.enter_context(EmulatorThread()))
        stop.callback(cluster.kubectl.close)
        operator_port = stop.enter_context(operator_process(docs, cluster, tmp))
        cluster.create_llmd(MODEL, LLMD_SPEC, NAMESPACE)
        pod = ModelServerPod(cluster, NAMESPACE, MODEL, POD).create(server.port)
        pod.report(ready=False)  # its engine is loading
        doomed = DoomedReplica()
        stop.callback(doomed.die)
        # Gateway B notices a dead replica only by failing attempts, never by polling.
        failover = GatewayProcess.static(
            tmp, "gateway-b", [doomed.url, server.url],
            "--health-interval", "600", "--eject-after", "1",
        )  # fmt: skip
        stop.callback(failover.stop)

        jobs = scrape_jobs(
            docs,
            pod.manifest,
            server.port,
            [front.metrics_port, failover.metrics_port],
            operator_port,
        )
        prom = PrometheusServer(
            {"global": {"evaluation_interval": "1s"}, "scrape_configs": jobs}, tmp
        )
        stop.callback(prom.stop)
        prom.start().wait_ready()
        prom.wait_for(f'modelplane_gateway_held_requests{{model="{MODEL}"}} == 1', timeout_s=120)
        server.wait_ready()
        pod.report(ready=True)
        pod.report_the_only_replica()
        asker.join(600)
        assert held == [200]

        failover.start()
        failover.wait_synced()
        doomed.die()  # gateway B saw it ready; now it is gone
        gateway_b = f'model="{MODEL}", instance="127.0.0.1:{failover.metrics_port}"'
        prom.wait_for(f"modelplane_gateway_retries_total{{{gateway_b}}} == 0")
        prom.wait_for('modelplane_operator_scaling_decisions_total{direction="down"} == 0')
        served = f'sum(modelplane_requests_total{{job="{contract.JOB_MODEL_SERVER}"}})'
        throttled = f'modelplane_gateway_tenant_throttled_total{{tenant="{TEAM_B}"}}'
        send_traffic(front.url, server.url)
        assert team_b_twice(front.url) == [(200, None), (429, "rate_limit_exceeded")]
        team_a_queued(front.url)
        # A scrape after each wave, so counters and histograms have two points to rate:
        # 1 held + 5 + 1 of team-b + 2 queued.
        prom.wait_for(f"{served} >= 9")
        prom.wait_for(f"{throttled} == 1")  # the series from its first refusal on
        assert chat(failover.url, None) == 200  # the dead replica first, then retried
        # Someone scales the model to 2 by hand (`kubectl scale llmd`); the autoscaler
        # takes it back to 1.
        pod.scale_by_hand(2)
        prom.wait_for('modelplane_operator_scaling_decisions_total{direction="down"} == 1')
        pod.report_the_only_replica()
        send_traffic(front.url, server.url)
        # team-b's minute may have passed since its first request, or not.
        first, second = team_b_twice(front.url)
        assert first in ((200, None), (429, "rate_limit_exceeded"))
        assert second == (429, "rate_limit_exceeded")
        team_a_queued(front.url)
        prom.wait_for(f"{served} >= 17")  # 9 + 1 retried + 5 + 2 queued (+ team-b's)
        prom.wait_for(f"{throttled} >= 2")
        prom.wait_for(f"modelplane_gateway_retries_total{{{gateway_b}}} == 1")
        prom.wait_for(
            f'modelplane_llmdeployment_phase{{phase="Ready", namespace="{NAMESPACE}"}} == 1'
        )
        yield Stack(prom, server.url, doomed.url)


def samples(answer: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    assert answer["status"] == "success", answer
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def test_every_panel_with_an_exporter_here_shows_data(stack: Stack) -> None:
    empty, served = [], 0
    for query in all_queries():
        if absent_reason(query):
            continue
        found = samples(stack.prometheus.query(substitute(query.expr, VALUES)))
        if not any(math.isfinite(v) for _, v in found):
            empty.append(f"{query}: {found}")
        served += 1
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert served == 56


def test_panels_of_absent_exporters_parse_and_are_listed_truthfully(stack: Stack) -> None:
    absent = [q for q in all_queries() if absent_reason(q)]
    assert len(absent) == 2
    for query in absent:
        answer = stack.prometheus.query(substitute(query.expr, VALUES))
        assert answer["status"] == "success", f"{query}: {answer.get('error')}"
        assert samples(answer) == [], f"{query} has data: take it off ABSENT"


def test_template_variables_offer_the_served_namespace_and_model(stack: Stack) -> None:
    for path in DASHBOARDS:
        board = load(path)
        for name, variable in variables(board).items():
            if variable["type"] != "query":
                continue
            match, label = label_values_query(substitute(variable["query"]["query"], VALUES))
            offered = stack.prometheus.label_values(label, match)
            if (board["title"], name) in ABSENT_VARIABLES:
                assert offered == []
            else:
                assert OFFERED[name] <= set(offered), f"{board['title']} ${name}: {offered}"


def panel_samples(stack: Stack, dashboard: str, panel: str, ref_id: str) -> list[Any]:
    (query,) = [q for q in all_queries() if q.key == (dashboard, panel, ref_id)]
    return samples(stack.prometheus.query(substitute(query.expr, VALUES)))


def test_model_panels_show_what_the_traffic_did(stack: Stack) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, MODELS, name, ref_id)

    codes = {m["code"] for m, v in panel("Requests/s by status") if v > 0}
    assert codes == {"200", "404"}
    ((_, error_ratio),) = panel("Error ratio (5xx)")
    assert error_ratio == 0
    for ref_id in ("A", "B"):  # tokens in, tokens out
        ((labels, rate),) = panel("Tokens/s in and out", ref_id)
        assert labels == {"model_name": MODEL} and rate > 0
    ((labels, p50),) = panel("Time to first token")
    assert labels == {"model": MODEL} and 0 < p50 < 60
    ((labels, kv),) = panel("KV-cache usage")
    assert labels == {"model_name": MODEL, "pod": POD} and 0 <= kv <= 1
    replicas = {ref_id: panel("Replicas: desired vs ready", ref_id) for ref_id in "ABCD"}
    assert replicas["A"] == [({"llmdeployment": MODEL}, 1)]  # desired, back from 2
    assert replicas["B"] == [({"llmdeployment": MODEL}, 1)]  # ready
    assert replicas["C"] == [({"llmdeployment": MODEL}, 2)]  # maxReplicas
    assert replicas["D"] == [({"model_name": MODEL}, 1)]  # ready servers that report


def test_start_up_panels_show_the_servers_phases_and_the_replicas_start_up(
    stack: Stack,
) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, MODELS, name, ref_id)

    phases = {labels["phase"]: seconds for labels, seconds in panel("Server start-up by phase")}
    # The server runs eager: no compilation to report, and none reported as 0.
    assert set(phases) == {
        "process", "config", "engine_start", "weights_locate", "weights_load", "kv_cache", "ready"
    }  # fmt: skip
    assert all(seconds >= 0 for seconds in phases.values())
    assert 0 < sum(phases.values()) < 600
    # The pod was reported scheduled while the server loaded, and ready once it was.
    ((labels, mean),) = panel("Replica start-up: scheduled to ready")
    assert labels == {"llmdeployment": MODEL}
    assert 0 < mean < sum(phases.values()) + 5


def test_gateway_panels_show_the_hold_the_retry_and_the_ejection(stack: Stack) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, MODELS, name, ref_id)

    codes = {m["code"] for m, v in panel("Gateway requests/s by code") if v > 0}
    assert codes == {"200", "429"}  # the retried request too; team-b throttled
    for ref_id in "ABC":
        ((_, added),) = panel("Gateway added latency", ref_id)
        assert 0 <= added < 5
    ((labels, retries),) = panel("Gateway retries and ejections", "A")
    assert labels == {"model": MODEL} and retries > 0
    ejections = {m["upstream"]: v for m, v in panel("Gateway retries and ejections", "B")}
    assert ejections[stack.dead_replica_url] > 0
    assert ejections[stack.server_url] == 0  # listed from discovery on, never ejected
    ((_, held_now),) = panel("Held requests")
    assert held_now == 0
    (held,) = [q for q in all_queries() if q.key == (MODELS, "Held requests", "A")]
    graph = f"max_over_time(({substitute(held.expr, VALUES)})[5m:1s])"  # the panel over the run
    assert samples(stack.prometheus.query(graph)) == [({"model": MODEL}, 1)]


def test_adapter_panels_show_the_adapters_requests_tokens_and_replica(stack: Stack) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, MODELS, name, ref_id)

    requests = [(m, v) for m, v in panel("Adapter requests/s by code") if v > 0]
    assert [m for m, _ in requests] == [{"model": MODEL, "adapter": ADAPTER, "code": "200"}]
    for ref_id in "AB":  # prompt, completion
        ((labels, rate),) = panel("Adapter tokens/s", ref_id)
        assert labels == {"model": MODEL, "adapter": ADAPTER} and rate > 0
    assert panel("Adapter replicas") == [({"model": MODEL, "adapter": ADAPTER}, 1)]


def test_operator_panels_show_the_deployment_and_the_scale_down(stack: Stack) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, OPERATOR, name, ref_id)

    ((_, up),) = panel("Operator replicas up")
    assert up == 1
    phases = {m["phase"]: v for m, v in panel("LLMDeployments by phase")}
    assert phases["Ready"] == 1 and sum(phases.values()) == 1
    ((labels, _),) = panel("LLMDeployment phases")
    assert labels == {"namespace": NAMESPACE, "llmdeployment": MODEL, "model": MODEL,
                      "phase": "Ready"}  # fmt: skip
    decisions = {m["direction"]: v for m, v in panel("Scaling decisions")}
    assert decisions["down"] > 0 and decisions["up"] == 0
    assert {m["result"] for m, v in panel("Reconciles/s by result") if v > 0} == {"ok"}
    ((_, error_ratio),) = panel("Reconcile errors", "B")
    assert error_ratio == 0


def test_tenant_panels_show_who_used_what_and_who_was_throttled(stack: Stack) -> None:
    def panel(name: str, ref_id: str = "A") -> list[Any]:
        return panel_samples(stack, MODELS, name, ref_id)

    requests = {(m["tenant"], m["model"]) for m, v in panel("Tenant requests/s") if v > 0}
    assert requests == {(TEAM_A, MODEL), (TEAM_B, MODEL)}  # the adapter's under its model
    for ref_id in "AB":  # prompt, completion
        assert {m["tenant"] for m, v in panel("Tenant tokens/s", ref_id) if v > 0} == {
            TEAM_A,
            TEAM_B,
        }
    shares = {m["tenant"]: v for m, v in panel("Tenant share of model tokens")}
    assert shares.keys() == {TEAM_A, TEAM_B} and shares[TEAM_A] > shares[TEAM_B] > 0
    assert sum(shares.values()) == pytest.approx(1)
    # Every tenant's and reason's counter exists from 0 on: only team-b's limit refused.
    ((labels, throttled),) = [(m, v) for m, v in panel("Tenant throttled requests/s") if v > 0]
    assert labels == {"tenant": TEAM_B, "reason": "requests_per_minute"} and throttled > 0
    ((labels, used),) = panel("Tenant budget used")
    assert labels == {"tenant": TEAM_B, "period": "month"} and 0 < used < 1
    waits = {m["tenant"]: v for m, v in panel("Tenant queue wait (p95)") if math.isfinite(v)}
    assert 0 <= waits[TEAM_A] < 60
    # team-a's second request at once waited for the first one's slot.
    waited = (
        f'sum(modelplane_gateway_queue_seconds_count{{tenant="{TEAM_A}"}})'
        f' - sum(modelplane_gateway_queue_seconds_bucket{{tenant="{TEAM_A}", le="0.005"}})'
    )
    assert samples(stack.prometheus.query(waited))[0][1] >= 2
    assert panel("Tenant requests waiting") == [({"model": MODEL, "tenant": TEAM_A}, 0)]
    ((labels, up),) = panel("Tenant limit store up")
    assert labels["store"] == "redis" and up == 1
