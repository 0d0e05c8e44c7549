"""Model-server pods for the operator's tests: Pod objects in the emulator, real /metrics.

The emulator runs no kubelet, so a test plays it: it creates the Pod object
a Deployment would create (the pod template's labels, a container port
named `http`) and reports its status (`podIP` 127.0.0.1, the Ready
condition). Behind each pod a real HTTP server on 127.0.0.1 serves
Prometheus text produced by prometheus_client: vLLM's metric names
(`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, the TTFT
histogram with vLLM's buckets, ...) and the model server's own
`modelplane_*` metrics from its real `ServerMetrics` class. The operator
finds the port the way it finds a real pod's, through the container port
named `http`; only its number differs from production's 8000, because
every fake pod shares 127.0.0.1. Tests change the served numbers while the
operator runs. A pod may also name an admin port (a container port named
`admin`), where a FakeAdmin (fake_admin.py) records the operator's LoRA calls.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelplane.api import contract
from modelplane.operator.builders.naming import child_labels
from modelplane.server.metrics import ServerMetrics
from tests.support.kube_emulator import Kubectl

# vLLM's TTFT buckets (vllm/v1/metrics/buckets.py), +Inf added by prometheus_client.
VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
MODEL = "smollm2"


class ModelServerMetrics:
    """What one replica's /metrics says: the engine's and the server's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        engine = ("model_name", "engine")
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Waiting.", engine, registry=self.registry
        )
        self.running = Gauge(
            "vllm:num_requests_running", "Running.", engine, registry=self.registry
        )
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV usage.", engine, registry=self.registry)
        self.finished = Counter(
            "vllm:request_success", "Finished.", (*engine, "finished_reason"),
            registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "TTFT.", engine,
            buckets=VLLM_TTFT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.server = ServerMetrics(self.registry)
        self.load(waiting=0, running=0, kv=0.0)

    def load(self, *, waiting: float, running: float, kv: float | None = None) -> None:
        self.waiting.labels(MODEL, "0").set(waiting)
        self.running.labels(MODEL, "0").set(running)
        self.kv.labels(MODEL, "0").set(kv if kv is not None else min(1.0, running / 16))

    def serve(self, requests: int, *, ttft: float = 0.1, code: int = 200) -> None:
        """`requests` streamed chat requests answered with `code` after `ttft` seconds."""
        endpoint = "/v1/chat/completions"
        self.server.requests.labels(MODEL, endpoint, str(code)).inc(requests)
        if code < 400:
            self.finished.labels(MODEL, "0", "stop").inc(requests)
            for _ in range(requests):
                self.ttft.labels(MODEL, "0").observe(ttft)
                self.server.ttft.labels(MODEL, endpoint).observe(ttft)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scrape the operator gave up on (it stopped, or timed out) is no test failure."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakePod:
    """One pod: its metrics, its HTTP server, and its object in the emulator."""

    def __init__(self, name: str, llmd: str, track: str, admin_port: int | None = None) -> None:
        self.name = name
        self.admin_port = admin_port  # a container port named `admin` (LoRA: fake_admin.py)
        self.llmd = llmd
        self.track = track
        self.metrics = ModelServerMetrics()
        self.scrapes = 0
        self.broken = False  # /metrics answers 500 (a dying engine)
        pod = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                pod.scrapes += 1
                if pod.broken:
                    self.send_error(500, "engine dead")
                    return
                body = pod.metrics.text()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self.http.server_address[1])
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def manifest(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": child_labels(self.llmd, self.track),
            },
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "modelplane/server:cpu",
                        "ports": self._ports(),
                    }
                ]
            },
        }

    def _ports(self) -> list[dict[str, Any]]:
        ports = [{"name": contract.SERVER_PORT_NAME, "containerPort": self.port}]
        if self.admin_port is not None:
            ports.append(
                {"name": contract.SERVER_ADMIN_PORT_NAME, "containerPort": self.admin_port}
            )
        return ports

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class FakePods:
    """Plays the kubelet for the test: pods appear, get ready, go away."""

    def __init__(self, kubectl: Kubectl, namespace: str = "default") -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.pods: dict[str, FakePod] = {}

    def start(
        self,
        llmd: str,
        name: str,
        *,
        ready: bool = True,
        track: str = contract.TRACK_STABLE,
        admin_port: int | None = None,
    ) -> FakePod:
        """`admin_port`: where the pod's admin API answers (a FakeAdmin's port)."""
        pod = FakePod(name, llmd, track, admin_port)
        self.pods[name] = pod
        self.kubectl.create("pods", pod.manifest(self.namespace))
        self.set_ready(pod, ready)
        return pod

    def set_ready(self, pod: FakePod, ready: bool) -> None:
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        self.kubectl.patch(
            "v1", "pods", self.namespace, pod.name, {"status": status}, subresource="status"
        )

    def stop(self, pod: FakePod) -> None:
        self.kubectl.delete("v1", "pods", self.namespace, pod.name)
        pod.close()
        del self.pods[pod.name]

    def close(self) -> None:
        for pod in self.pods.values():
            pod.close()
