"""What the dashboard truth test runs beside the model server, and the cluster parts it plays.

There is no Kubernetes here: the API is KMock's emulator (tests/support/kube_emulator.py),
so the test plays the kubelet (pods from a Deployment's template, their
readiness) and the Deployment controller (replica counts in its status). The
operator runs as users run it, a `modelplane operator` process, against the
emulator. `DoomedReplica` is a replica that passes a gateway's readiness check
and is gone by the first request: a bare HTTP server, stopped.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from modelplane.api import contract
from modelplane.operator.timestamps import rfc3339
from tests.chart.helm import find, operator_config
from tests.conftest import free_port
from tests.integration.gateway.conftest import Process
from tests.integration.operator.conftest import Cluster, wait_for


def chart_pod(
    docs: list[dict[str, Any]], deployment_suffix: str, pod_suffix: str
) -> dict[str, Any]:
    """A pod of one of the chart's rendered Deployments, as its ReplicaSet would name it."""
    deployment = find(docs, "Deployment", deployment_suffix)
    template = deployment["spec"]["template"]
    meta = {
        **template["metadata"],
        "name": f"{deployment['metadata']['name']}-{pod_suffix}",
        "namespace": deployment["metadata"]["namespace"],
    }
    return {"metadata": meta, "spec": template["spec"]}


class ModelServerPod:
    """The Pod the operator's Deployment asks for, its `http` port the real server's.

    Only the port number differs from what the ReplicaSet would create: the
    server listens on a free local port, not 8000.
    """

    def __init__(self, cluster: Cluster, namespace: str, deployment: str, name: str) -> None:
        self.cluster, self.namespace, self.deployment, self.name = (
            cluster, namespace, deployment, name,
        )  # fmt: skip
        self.manifest: dict[str, Any] = {}
        self.scheduled_at = 0.0  # when the scheduler bound it (its creation, here)

    def create(self, port: int) -> ModelServerPod:
        found = wait_for(
            "the operator's Deployment",
            lambda: self.cluster.objects("deployments", self.namespace)[self.deployment],
        )
        template = copy.deepcopy(found["spec"]["template"])
        for container in template["spec"]["containers"]:
            for container_port in container.get("ports") or []:
                if container_port["name"] == contract.SERVER_PORT_NAME:
                    container_port["containerPort"] = port
        meta = {**template["metadata"], "name": self.name, "namespace": self.namespace}
        self.manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                         "spec": template["spec"]}  # fmt: skip
        self.cluster.kubectl.create("pods", self.manifest)
        self.scheduled_at = time.time()
        return self

    def report(self, *, ready: bool) -> None:
        """Play the kubelet: running on 127.0.0.1, passing its readiness probe or not yet,
        with the conditions' transition times (the operator's scheduled -> ready)."""
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": rfc3339(self.scheduled_at),
                },
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": rfc3339(time.time()),
                },
            ],
        }
        self.cluster.kubectl.patch(
            "v1", "pods", self.namespace, self.name, {"status": status}, subresource="status"
        )

    def replicas_asked(self) -> int:
        deployment = self.cluster.objects("deployments", self.namespace)[self.deployment]
        replicas: int = deployment["spec"]["replicas"]
        return replicas

    def scale_by_hand(self, replicas: int) -> None:
        """What `kubectl scale llmd` does: a patch of the LLMDeployment's scale subresource
        (its stable Deployment carries its name)."""
        self.cluster.kubectl.patch(
            contract.API_VERSION, contract.PLURAL, self.namespace, self.deployment,
            {"spec": {"replicas": replicas}}, subresource="scale",
        )  # fmt: skip

    def report_the_only_replica(self) -> None:
        """Play the Deployment controller until the model settles on this one pod.

        A controller reports every generation it sees, so this reports the
        Deployment's current one whenever it asks for one replica and its status
        is behind, until the operator has reconciled the LLMDeployment's latest
        spec (at one replica) and the Deployment's status has caught up with it.
        """

        def settled() -> bool:
            llmd = self.cluster.llmd(self.deployment, self.namespace)
            deployment = self.cluster.objects("deployments", self.namespace)[self.deployment]
            # The emulator applies no CRD defaults: no replicas is the default, 1.
            if llmd["spec"].get("replicas", 1) != 1 or deployment["spec"]["replicas"] != 1:
                return False
            status = llmd.get("status") or {}
            reconciled: bool = status.get("observedGeneration") == llmd["metadata"]["generation"]
            generation = deployment["metadata"]["generation"]
            if (deployment.get("status") or {}).get("observedGeneration") != generation:
                self.cluster.report_deployment(
                    self.deployment, self.namespace,
                    replicas=1, readyReplicas=1, updatedReplicas=1, availableReplicas=1,
                )  # fmt: skip
                return False
            return reconciled

        wait_for("the Deployment at 1 replica, reported", settled, timeout=120)


@contextlib.contextmanager
def operator_process(docs: list[dict[str, Any]], cluster: Cluster, tmp: Path) -> Iterator[int]:
    """`modelplane operator` with the chart's operator config; yields its metrics port.

    Changed from the chart's: the ports (free local ones; no liveness
    endpoint), plain logs, and an autoscaler deciding every half second.
    """
    port = free_port()
    config = {
        **operator_config(docs),
        "metricsPort": port,
        "healthPort": None,
        "logFormat": "plain",
        "autoscalerIntervalSeconds": 0.5,
    }
    (tmp / "operator.yaml").write_text(yaml.safe_dump(config))
    kubeconfig = cluster.emulator.write_kubeconfig(tmp / "kubeconfig")
    operator = Process(
        ["operator", "--config", str(tmp / "operator.yaml")],
        tmp / "operator.log",
        env={"KUBECONFIG": str(kubeconfig)},
    ).start()
    try:
        operator.wait_for_output("modelplane operator started", timeout_s=120)
        yield port
    finally:
        operator.stop()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class DoomedReplica:
    """Answers 200 to every GET (so its /ready) until it dies; then the port is closed."""

    def __init__(self) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.alive = True

    def die(self) -> None:
        if self.alive:
            self.alive = False
            self.http.shutdown()
            self.http.server_close()
