"""Pods the e2e tests run inside the cluster: a client of a model's Service, a connection probe.

A client outside the cluster can only reach a Service through `kubectl
port-forward`, which talks to one pod and never to the Service's endpoints,
so it cannot see what a rollout does to clients of the Service. These pods
run the control-plane image (already loaded into kind; Python's standard
library only) with the restricted Pod Security settings:

- `service_client_pod`: calls the model's chat completions endpoint in a
  loop, a new connection per request (so each one is routed afresh from the
  Service's endpoints, as after a client's reconnect), and prints one line
  per answer: `ok`, or `fail <why>`. The test reads its log.
- `probe_pod`: tries one TCP connection to an address and prints
  `connected`, `refused` or `timeout` (a NetworkPolicy that drops packets
  shows as a timeout), then exits.

Builders are pure; `ServiceClient` and `probe` drive them through kubectl.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from e2e.kube import Kubectl, wait_until

# Labels a controller puts on the pods it owns (a ReplicaSet selects by the first).
CONTROLLER_LABELS: Final = frozenset({"pod-template-hash", "controller-revision-hash"})
# Requests of each test pod (counted in the suite's capacity need).
TEST_POD_REQUESTS: Final = {"cpu": "50m", "memory": "64Mi"}

SERVICE_CLIENT_SCRIPT: Final = textwrap.dedent(
    """
    import json, sys, time, urllib.error, urllib.request
    url, model = sys.argv[1], sys.argv[2]
    body = json.dumps({"model": model, "max_tokens": 8, "temperature": 0,
                       "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    while True:
        request = urllib.request.Request(url, data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                choices = json.load(answer).get("choices")
            print("ok" if choices else "fail an answer without choices", flush=True)
        except urllib.error.HTTPError as err:
            print(f"fail HTTP {err.code}: {err.read()[:200]!r}", flush=True)
        except Exception as err:
            print(f"fail {type(err).__name__}: {err}", flush=True)
            time.sleep(0.2)
    """
).strip()

PROBE_SCRIPT: Final = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket()
    s.settimeout(float(sys.argv[3]))
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        print("connected")
    except socket.timeout:
        print("timeout")
    except OSError as err:
        print(f"refused {err}")
    """
).strip()


def _pod(
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    labels: Mapping[str, str],
    restart: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",  # loaded into kind by the suite
                    "command": ["python", "-c"],
                    "args": args,
                    "resources": {
                        "requests": dict(TEST_POD_REQUESTS),
                        "limits": {"memory": "128Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def service_client_pod(
    name: str, namespace: str, image: str, url: str, model: str
) -> dict[str, Any]:
    """A pod calling `url` (a chat completions URL) for `model` until it is deleted."""
    labels = {"app.kubernetes.io/name": "modelplane-e2e-client"}
    return _pod(name, namespace, image, [SERVICE_CLIENT_SCRIPT, url, model], labels, "Never")


def probe_pod(
    name: str,
    namespace: str,
    image: str,
    host: str,
    port: int,
    labels: Mapping[str, str],
    timeout_s: float = 5,
) -> dict[str, Any]:
    """A pod (carrying `labels`, which NetworkPolicies select by) that tries host:port once.

    A probe may borrow a workload's labels (the operator's, the gateway's) from
    one of its pods; it must not become one of that workload's pods: without
    the controllers' hash labels no ReplicaSet adopts it, and never ready, it
    is no endpoint of the workload's Services.
    """
    borrowed = {k: v for k, v in labels.items() if k not in CONTROLLER_LABELS}
    args = [PROBE_SCRIPT, host, str(port), str(timeout_s)]
    pod = _pod(name, namespace, image, args, borrowed, "Never")
    pod["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["false"]}}
    return pod


def listener_pod(
    name: str, namespace: str, image: str, port: int, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A pod that accepts connections on `port` (Python's http.server) until deleted."""
    script = (
        "import http.server, sys; http.server.ThreadingHTTPServer("
        "('', int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()"
    )
    args = [script, str(port)]
    return _pod(name, namespace, image, args, labels, "Never")


@dataclass(frozen=True)
class ClientLog:
    successes: int
    failures: list[str]


def read_client_log(text: str) -> ClientLog:
    """The service client's log: `ok` lines and `fail ...` lines (anything else is ignored)."""
    lines = [line.strip() for line in text.splitlines()]
    return ClientLog(
        successes=sum(1 for line in lines if line == "ok"),
        failures=[line.removeprefix("fail ").strip() for line in lines if line.startswith("fail")],
    )


def pod_phase(kubectl: Kubectl, name: str, namespace: str) -> str:
    phase: str = kubectl.json("get", "pod", name, "-n", namespace)["status"].get("phase", "")
    return phase


class ServiceClient:
    """`with ServiceClient(...) as client:` runs the client pod; `client.log()` reads it."""

    def __init__(
        self, kubectl: Kubectl, namespace: str, image: str, service_url: str, model: str
    ) -> None:
        self.name = "e2e-service-client"
        self._kubectl = kubectl
        self._namespace = namespace
        self._manifest = service_client_pod(
            self.name, namespace, image, f"{service_url}/chat/completions", model
        )

    def __enter__(self) -> ServiceClient:
        self._delete()  # a pod left by an interrupted run
        self._kubectl.apply(yaml.safe_dump(self._manifest), self._namespace)
        wait_until(
            "the service client pod running",
            lambda: pod_phase(self._kubectl, self.name, self._namespace) == "Running",
            timeout=180,
        )
        return self

    def __exit__(self, *_: object) -> None:
        self._delete()

    def _delete(self) -> None:
        self._kubectl(
            "delete",
            "pod",
            self.name,
            "-n",
            self._namespace,
            "--ignore-not-found",
            "--wait=true",
            timeout=120,
        )

    def log(self) -> ClientLog:
        return read_client_log(self._kubectl("logs", self.name, "-n", self._namespace))

    def wait_for_answers(self, count: int, timeout: float = 300) -> None:
        """Until `count` more answers than now have arrived."""
        start = self.log().successes
        wait_until(
            f"{count} answers to the service client",
            lambda: self.log().successes >= start + count,
            timeout=timeout,
        )


@dataclass(frozen=True)
class Probe:
    """One connection attempt from a pod in `namespace` carrying `labels` to host:port."""

    name: str
    namespace: str
    host: str
    port: int
    labels: Mapping[str, str]


def _finished(kubectl: Kubectl, probe: Probe) -> bool:
    return pod_phase(kubectl, probe.name, probe.namespace) in ("Succeeded", "Failed")


def run_probes(kubectl: Kubectl, image: str, probes: Sequence[Probe]) -> dict[str, str]:
    """Run the probe pods side by side to their end; each one's verdict by name
    (`connected`, `timeout`, `refused ...`)."""
    for p in probes:
        kubectl("delete", "pod", p.name, "-n", p.namespace, "--ignore-not-found", "--wait=true")
        manifest = probe_pod(p.name, p.namespace, image, p.host, p.port, p.labels)
        kubectl.apply(yaml.safe_dump(manifest), p.namespace)
    try:
        for p in probes:
            finished = functools.partial(_finished, kubectl, p)
            wait_until(f"probe {p.namespace}/{p.name} to finish", finished, timeout=180)
        return {p.name: kubectl("logs", p.name, "-n", p.namespace).strip() for p in probes}
    finally:
        for p in probes:
            kubectl(
                "delete", "pod", p.name, "-n", p.namespace, "--ignore-not-found", "--wait=false"
            )
