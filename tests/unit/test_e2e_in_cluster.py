"""The pods the e2e tests run in the cluster (e2e/in_cluster.py), checked where they can be.

Their manifests are validated against Kubernetes' own OpenAPI schemas and
meet the restricted Pod Security profile. Their scripts are run here, with
this Python, against real sockets: the service client against a local HTTP
server that answers well, with a 503, without choices, and by hanging up
(each must be counted as the test will count it), the connection probe
against a listening and a closed port, and the listener as the probe's
target.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes_validate
import pytest

from e2e.in_cluster import (
    PROBE_SCRIPT,
    SERVICE_CLIENT_SCRIPT,
    listener_pod,
    probe_pod,
    read_client_log,
    service_client_pod,
)
from e2e.kube import free_port, wait_until

IMAGE = "modelplane/operator:e2e"
PODS = {
    "service client": service_client_pod("c", "models", IMAGE, "http://m.models.svc:8000/v1", "m"),
    "probe": probe_pod("p", "elsewhere", IMAGE, "10.0.0.1", 8000, {"app": "x"}),
    "listener": listener_pod("l", "elsewhere", IMAGE, 8000, {"app": "y"}),
}


@pytest.mark.parametrize("name", PODS)
def test_the_pods_are_valid_and_restricted(name: str) -> None:
    pod = PODS[name]
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["imagePullPolicy"] == "Never"  # only the image loaded into kind
    assert container["resources"]["requests"]


def test_a_probe_with_a_workload_s_labels_cannot_join_that_workload() -> None:
    labels = {"app.kubernetes.io/component": "gateway", "pod-template-hash": "5d8f7"}
    pod = probe_pod("p", "ns", IMAGE, "10.0.0.1", 8000, labels)
    assert pod["metadata"]["labels"] == {"app.kubernetes.io/component": "gateway"}
    assert pod["spec"]["containers"][0]["readinessProbe"] == {"exec": {"command": ["false"]}}


class Answers(BaseHTTPRequestHandler):
    """Answers chat completions in turn: ok, 503, no choices, then hangs up on every call."""

    turns = iter(["ok", "busy", "empty"])
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append({"path": self.path, **json.loads(self.rfile.read(length))})
        turn = next(self.turns, "hang up")
        if turn == "hang up":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = 503 if turn == "busy" else 200
        payloads: dict[str, dict[str, Any]] = {
            "ok": {"choices": [{"message": {"content": "Paris"}}]},
            "busy": {"error": {"message": "draining"}},
            "empty": {},
        }
        payload = payloads[turn]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[str]:
    Answers.turns, Answers.bodies = iter(["ok", "busy", "empty"]), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def first_lines(args: list[str], count: int) -> list[str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        return [proc.stdout.readline() for _ in range(count)]
    finally:
        proc.kill()
        proc.wait()


def test_the_service_client_counts_every_answer_that_is_not_a_good_one(answers: str) -> None:
    url = f"{answers}/v1/chat/completions"
    lines = first_lines([sys.executable, "-c", SERVICE_CLIENT_SCRIPT, url, "smollm2"], 5)
    log = read_client_log("".join(lines))
    assert log.successes == 1
    assert log.failures[0].startswith('HTTP 503: b\'{"error"')
    assert log.failures[1] == "an answer without choices"
    assert log.failures[2].startswith("RemoteDisconnected")
    assert len(log.failures) == 4
    body = Answers.bodies[0]
    assert body["path"] == "/v1/chat/completions" and body["model"] == "smollm2"
    assert body["messages"][0]["role"] == "user"


def test_the_client_log_reads_only_verdict_lines() -> None:
    log = read_client_log("ok\nok\nfail HTTP 502: b''\nTraceback...\nfail URLError: refused\n")
    assert log.successes == 2
    assert log.failures == ["HTTP 502: b''", "URLError: refused"]


def probe(port: int) -> str:
    args = [sys.executable, "-c", PROBE_SCRIPT, "127.0.0.1", str(port), "5"]
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout


def test_the_probe_reports_a_connection_and_a_refusal() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert probe(listening.getsockname()[1]).strip() == "connected"
    closed = free_port()
    assert probe(closed).startswith("refused")


def test_the_listener_accepts_connections_until_stopped() -> None:
    port = free_port()
    args = listener_pod("l", "ns", IMAGE, port, {})["spec"]["containers"][0]["args"]
    proc = subprocess.Popen([sys.executable, "-c", *args], stderr=subprocess.DEVNULL)
    try:

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until("the listener up", up, timeout=30, every=0.1)
        assert probe(port).strip() == "connected"
    finally:
        proc.kill()
        proc.wait()
