"""Replica metrics from Prometheus: the query, the samples read back, the failures.

`data/prometheus_range.json` is a real answer of Debian's Prometheus 2.42 to
the collector's range query, recorded while it scraped a pod serving
vLLM-style metrics every second (10 requests answered before the window's
first scrape, 30 more and 2 failures (HTTP 500) before its second). The end-to-end path against a
running Prometheus is in tests/integration/operator/test_operator_autoscaling.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelplane.operator.autoscaler import ScrapeTarget, parse_metrics
from modelplane.operator.autoscaler.prometheus import (
    collect_from_prometheus,
    exposition,
    range_query,
    snapshots_from_matrix,
)
from tests.unit.autoscaler.test_observations import exposition as vllm_text

RECORDED = json.loads((Path(__file__).parent / "data" / "prometheus_range.json").read_text())


def test_the_query_asks_for_every_signal_of_these_pods_only() -> None:
    query = range_query("llm", ["chat-7d9-a", "chat.b"], 59.5)
    assert query.startswith('{__name__=~"vllm:num_requests_waiting|')
    assert "vllm:time_to_first_token_seconds_bucket" in query
    assert "vllm:request_success_total" in query
    assert query.endswith(r'namespace="llm",pod=~"chat-7d9-a|chat\\.b"}[60s]')
    assert range_query("llm", ["chat-a"], 3) == RECORDED["query"]  # what was recorded


def samples_of(text: str) -> list[tuple[str, dict[str, str], float]]:
    """What Prometheus stores of an exposition: every series, `_created` included."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


@pytest.mark.parametrize("kv_name", ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"])
def test_samples_read_back_as_the_pod_would_have_been_read(kv_name: str) -> None:
    text = vllm_text(kv_name=kv_name, first_tokens=(0.05, 0.3, 1.2), engines=2)
    direct = parse_metrics(text, at=5.0)
    via = parse_metrics(exposition(samples_of(text)), at=5.0)
    assert via == direct


def test_a_recorded_range_gives_the_window_between_its_first_and_last_scrape() -> None:
    scrapes = snapshots_from_matrix(RECORDED["response"]["data"]["result"])
    (pod,) = scrapes
    first, *_, last = scrapes[pod]
    assert (last.waiting, last.running) == (2, 5)
    assert (first.finished, last.finished) == (10, 40)
    assert last.at is not None and first.at is not None and last.at - first.at == pytest.approx(2)


async def test_collect_from_a_recorded_answer(prometheus_answering: str) -> None:
    collection = await collect_from_prometheus(
        prometheus_answering,
        "llm",
        [ScrapeTarget("chat-a", ""), ScrapeTarget("chat-b", ""), ScrapeTarget("chat-c", "", False)],
        window_s=3,
    )
    a, b, c = collection.observations
    assert a.finished_per_s == pytest.approx(15)  # 30 requests over the 2 s between scrapes
    assert (a.requests, a.errors) == (32, 2)  # and 2 answered 500 (a series new in the range)
    assert a.ttft is not None and a.ttft.total == 30
    assert 0.25 < (a.ttft.quantile(0.95) or 0) <= 0.5
    assert b.error == "Prometheus has no vLLM samples of pod chat-b in the last 3s"
    assert c.loading
    assert set(collection.snapshots) == {"chat-a"}


async def test_an_unreachable_prometheus_fails_each_ready_pod_and_no_loading_one() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    collection = await collect_from_prometheus(
        closed, "llm", [ScrapeTarget("a", ""), ScrapeTarget("b", "", ready=False)], window_s=60
    )
    a, b = collection.observations
    assert a.error == f"cannot reach Prometheus at {closed}/api/v1/query: ConnectError"
    assert b.loading and b.error is None


async def test_nothing_ready_asks_nothing() -> None:
    collection = await collect_from_prometheus(
        "http://127.0.0.1:9", "llm", [ScrapeTarget("a", "", ready=False)], window_s=60
    )
    assert [o.loading for o in collection.observations] == [True]


@pytest.fixture
def prometheus_answering() -> Any:
    """A real HTTP server answering the recorded range query (and refusing any other)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query).get("query", [""])[0]
            if url.path == "/api/v1/query" and "chat-a" in query:
                body = json.dumps(RECORDED["response"]).encode()
                self.send_response(200)
            else:
                body = json.dumps({"status": "error", "error": "unexpected"}).encode()
                self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
