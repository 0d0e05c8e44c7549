"""`modelplane usage` against a real Prometheus scraping two gateway replicas' tenant counters.

The counters are the gateway's own `TenantMetrics`, served by prometheus_client
on two ports (two replicas); Prometheus scrapes them every second. One replica
restarts mid-period (its counters drop to zero and count again): the report
still charges what was counted before and after.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from modelplane.gateway.tenants.metrics import TenantMetrics
from tests.conftest import free_port
from tests.monitoring.prometheus import PrometheusServer


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Replica:
    """One gateway replica's tenant series on its own /metrics port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: WSGIServer | None = None
        self.start()

    def start(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = TenantMetrics(self.registry)
        for tenant in ("team-a", "team-b"):  # created at zero, as the gateway does
            self.metrics.prepare(tenant, ["llama", "smollm2"])
        self.server = make_server(
            "127.0.0.1", self.port, make_wsgi_app(self.registry), ThreadingWSGIServer, _Quiet
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PrometheusServer, list[Replica]]]:
    replicas = [Replica(free_port()), Replica(free_port())]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "modelplane-gateway",
                "static_configs": [{"targets": [f"127.0.0.1:{r.port}" for r in replicas]}],
            }
        ],
    }
    prometheus = PrometheusServer(config, tmp_path).start().wait_ready()
    try:
        yield prometheus, replicas
    finally:
        prometheus.stop()
        for r in replicas:
            r.stop()


def wait_until(prometheus: PrometheusServer, expr: str, expected: float) -> None:
    """Poll until Prometheus has scraped the value `expr` should now sum to."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = prometheus.query(expr)
        result = answer["data"]["result"]
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.2)
    pytest.fail(f"{expr} never reached {expected}:\n{prometheus.log()}")


def usage(prometheus: PrometheusServer, *extra: str) -> subprocess.CompletedProcess[str]:
    modelplane = str(Path(sys.executable).parent / "modelplane")
    return subprocess.run(
        [modelplane, "usage", "--prometheus", prometheus.url, "--period", "day", "--step", "1",
         *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_usage_sums_replicas_counts_across_a_restart_and_gives_shares(
    stack: tuple[PrometheusServer, list[Replica]],
) -> None:
    prometheus, (one, two) = stack
    tokens = "sum(modelplane_gateway_tenant_tokens_total)"
    wait_until(prometheus, f"count({'modelplane_gateway_tenant_tokens_total'})", 16)

    def both(act: Callable[[TenantMetrics], None]) -> None:
        act(one.metrics)
        act(two.metrics)

    one.metrics.admitted("team-a", "llama")
    one.metrics.used("team-a", "llama", prompt=300, completion=100)
    two.metrics.admitted("team-b", "llama")
    two.metrics.used("team-b", "llama", prompt=80, completion=20)
    both(lambda m: m.admitted("team-b", "smollm2"))
    both(lambda m: m.used("team-b", "smollm2", prompt=10, completion=5))
    one.metrics.budget("team-a", "day", 1000, 400)
    wait_until(prometheus, tokens, 530)

    # Replica two restarts: its counters start again from zero, then count on.
    two.stop()
    wait_until(prometheus, f'up{{instance="127.0.0.1:{two.port}"}}', 0)
    two.start()
    wait_until(prometheus, f'up{{instance="127.0.0.1:{two.port}"}}', 1)  # its zeros scraped
    wait_until(prometheus, tokens, 415)  # replica one's 400 + 15
    two.metrics.admitted("team-b", "llama")
    two.metrics.used("team-b", "llama", prompt=7, completion=3)
    wait_until(prometheus, tokens, 425)

    done = usage(prometheus)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Usage this day: ")
    assert lines[1].split() == ["TENANT", "REQUESTS", "TOKENS", "IN", "TOKENS", "OUT",
                                "BUDGET", "USED", "SHARE", "OF", "MODEL"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[2:]}
    # team-a: 1 request, 300 in, 100 out; 400 of llama's 510 tokens; budget 400 of 1,000.
    assert rows["team-a"].split()[:4] == ["team-a", "1", "300", "100"]
    assert "400 of 1,000 (40%)" in rows["team-a"] and "llama 78%" in rows["team-a"]
    # team-b: 2 + 2 requests; 80 + 20 + 2 x 15 + 10 in and out, across the restart.
    assert rows["team-b"].split()[:4] == ["team-b", "4", "107", "33"]
    assert "llama 22%" in rows["team-b"] and "smollm2 100%" in rows["team-b"]

    as_csv = usage(prometheus, "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert "team-b,smollm2,2,20,10,1.0000,," in as_csv.stdout.splitlines()


def test_a_prometheus_that_refuses_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "modelplane"), "usage", "--prometheus",
         f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot read Prometheus" in done.stderr and "Traceback" not in done.stderr
