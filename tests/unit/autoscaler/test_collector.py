"""The collector against real HTTP servers on loopback serving Prometheus text.

No fake of httpx: a threaded http.server answers like pods do (fine, broken,
slow, not a metrics endpoint) and a closed port stands for a pod that died.
Only the clock is injected, so the window between two scrapes is exact.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    AutoscalingTargets,
    PolicyState,
    ScrapeTarget,
    collect,
    decide,
)
from tests.unit.autoscaler.test_observations import exposition

SERVED: dict[str, str] = {}


class Pods(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow/metrics":
            time.sleep(2.0)  # a pod too busy to answer its scrape
        if self.path == "/trickle/metrics":  # a byte every 0.1 s: no phase ever times out
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"#")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the scraper gave up and closed: what the test wants
                return
            return
        if self.path == "/endless/metrics":  # answers without end
            self.send_response(200)
            self.end_headers()
            line = b"# " + b"x" * 1022 + b"\n"
            try:
                while True:
                    self.wfile.write(line * 64)
            except OSError:
                return
        if self.path == "/broken/metrics":
            self.send_error(500, "engine dead")
            return
        body = SERVED.get(self.path, "hello, not metrics\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pods() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pods)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_scrapes_every_ready_pod_and_marks_the_ones_that_fail(pods: str) -> None:
    SERVED["/a/metrics"] = exposition(running=10, waiting=1, kv=0.9, finished=100)
    SERVED["/b/metrics"] = exposition(running=12, waiting=0, kv=0.9, finished=200)
    SERVED["/other/metrics"] = "# TYPE up gauge\nup 1\n"  # some other exporter
    targets = [
        ScrapeTarget("pod-a", f"{pods}/a/metrics"),
        ScrapeTarget("pod-b", f"{pods}/b/metrics"),
        ScrapeTarget("pod-broken", f"{pods}/broken/metrics"),
        ScrapeTarget("pod-slow", f"{pods}/slow/metrics"),
        ScrapeTarget("pod-gone", f"http://127.0.0.1:{closed_port()}/metrics"),
        ScrapeTarget("pod-web", f"{pods}/index.html"),
        ScrapeTarget("pod-other", f"{pods}/other/metrics"),
        ScrapeTarget("pod-new", f"{pods}/new/metrics", ready=False),
    ]
    started = time.monotonic()
    first = await collect(targets, {}, timeout_s=0.5, clock=Clock(100.0))
    assert time.monotonic() - started < 1.9  # concurrent: the slow pod held up nobody
    seen = {o.name: o for o in first.observations}
    assert [o.name for o in first.observations] == [t.name for t in targets]
    assert (seen["pod-a"].running, seen["pod-a"].waiting, seen["pod-a"].kv_cache_usage) == (
        10,
        1,
        0.9,
    )
    assert seen["pod-broken"].error == f"{pods}/broken/metrics answered HTTP 500"
    assert seen["pod-slow"].error == f"no answer from {pods}/slow/metrics within 0.5s"
    assert "cannot reach" in (seen["pod-gone"].error or "")
    assert "sent unreadable metrics" in (seen["pod-web"].error or "")
    assert seen["pod-other"].error == f"{pods}/other/metrics exports no vLLM metrics"
    assert seen["pod-new"].loading and seen["pod-new"].error is None
    assert set(first.snapshots) == {"pod-a", "pod-b"}

    # Ten seconds later: the window gives rates; a policy decision uses the two
    # pods that answered and says which ones it left out.
    SERVED["/a/metrics"] = exposition(running=10, waiting=1, kv=0.9, finished=140)
    second = await collect(targets[:3], first.snapshots, timeout_s=0.5, clock=Clock(110.0))
    a = next(o for o in second.observations if o.name == "pod-a")
    assert a.finished_per_s == pytest.approx(4.0)
    spec = AutoscalingSpec(targets=AutoscalingTargets(kv_cache_utilization=0.8))
    decision = decide(second.observations, 3, spec, PolicyState(), 110.0)
    assert decision.desired_replicas == 4  # 3 x 0.9 / 0.8
    assert "left out pod-broken" in decision.reason


async def test_a_trickling_or_endless_pod_is_cut_off_in_time_and_size(pods: str) -> None:
    """httpx's timeouts are per phase: a pod sending a byte every 0.1 s never trips one.
    The scrape is bounded in total time and in bytes, and the others are measured."""
    SERVED["/a/metrics"] = exposition(running=2, waiting=0, kv=0.5, finished=10)
    targets = [
        ScrapeTarget("pod-a", f"{pods}/a/metrics"),
        ScrapeTarget("pod-trickle", f"{pods}/trickle/metrics"),
        ScrapeTarget("pod-endless", f"{pods}/endless/metrics"),
    ]
    got = await collect(targets, {}, timeout_s=1.0, clock=Clock(100.0))
    seen = {o.name: o for o in got.observations}
    assert seen["pod-a"].error is None and seen["pod-a"].running == 2
    # Read to its end (4 s), the trickle would be "exports no vLLM metrics".
    assert seen["pod-trickle"].error == f"no answer from {pods}/trickle/metrics within 1s"
    assert seen["pod-endless"].error == f"{pods}/endless/metrics sent more than 8 MiB of metrics"
