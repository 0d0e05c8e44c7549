"""An operator started before its CRD serves LLMDeployments once the CRD is there, unrestarted.

Watching chosen namespaces (the chart's operator.watchNamespaces), the
operator has no permission to watch CRDs, so kopf looks for the resources
it serves only as it starts: started before the CRD, it used to serve
nothing until restarted. `modelplane operator` now waits for the API first
(operator/modelplane/operator/api_wait.py).

The real command runs as a child process, as the image runs it, against
KMock's Kubernetes emulator (tests/support/kube_emulator.py). The emulator
starts without the LLMDeployment resource in its discovery documents, which
is how an API server looks before the CRD is created; adding the resource
to discovery is what the API server does once the CRD is established.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelplane.api import contract
from modelplane.operator.api_wait import WAITING
from tests.conftest import MODELPLANE, free_port
from tests.integration.operator.conftest import Cluster, wait_for
from tests.support.kube_emulator import CLUSTER_RESOURCES

LLMDEPLOYMENTS = f"{contract.API_VERSION}/{contract.PLURAL}"
NAMESPACE = "team-a"
SPEC = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}


@pytest.fixture
def cluster_resources() -> dict[str, Any]:
    """A cluster whose API server does not serve LLMDeployments yet."""
    return {k: v for k, v in CLUSTER_RESOURCES.items() if k != LLMDEPLOYMENTS}


@contextlib.contextmanager
def operator_process(cluster: Cluster, tmp_path: Path, health_port: int) -> Iterator[Any]:
    config = tmp_path / "operator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "namespaces": [NAMESPACE],
                "healthPort": health_port,
                "metricsPort": free_port(),
                "logFormat": "plain",
            }
        )
    )
    kubeconfig = cluster.emulator.write_kubeconfig(tmp_path / "kubeconfig")
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*MODELPLANE, "operator", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            start_new_session=True,
        )
        try:
            yield proc, log
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def alive(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_crd_created_after_the_operator_starts_is_served_without_a_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    health_port = free_port()
    with operator_process(cluster, tmp_path, health_port) as (proc, log):
        wait_for("the operator to say what it waits for", lambda: WAITING in log.read_text())
        # The kubelet's liveness probe passes while it waits: no restart loop.
        assert alive(health_port) and proc.poll() is None

        cluster.emulator.emulator.resources[LLMDEPLOYMENTS] = CLUSTER_RESOURCES[LLMDEPLOYMENTS]
        cluster.create_llmd("chat", SPEC, namespace=NAMESPACE)

        wait_for("the LLMDeployment served", lambda: cluster.status("chat", NAMESPACE).get("phase"))
        assert "chat" in cluster.objects("deployments", NAMESPACE)
        assert proc.poll() is None, log.read_text()[-3000:]  # the same process throughout
        assert "served after" in log.read_text()
        wait_for("kopf's own liveness endpoint", lambda: alive(health_port))
