"""A cluster for `modelplane gateway --discovery kubernetes`: KMock's emulator, its objects.

No Kubernetes API server can run here, so the gateway process talks to
KMock's Kubernetes emulator (tests/support/kube_emulator.py) through a
kubeconfig, with the official client, exactly as in a cluster. The objects
are the ones the operator writes: an LLMDeployment, its model Service as
`build_service` makes it with the owner reference the reconciler adds, and
the EndpointSlice the endpoints controller would publish, here pointing at a
stub replica on 127.0.0.1.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders.service import build_service
from tests.support.kube_emulator import CLUSTER_RESOURCES, EmulatorThread, Kubectl, resource_info

if TYPE_CHECKING:
    from tests.integration.gateway.conftest import GatewayProcess

RESOURCES = {
    **CLUSTER_RESOURCES,
    "discovery.k8s.io/v1/endpointslices": resource_info("EndpointSlice"),
    "v1/secrets": resource_info("Secret"),
}


@dataclass
class Cluster:
    emulator: EmulatorThread
    kubectl: Kubectl
    kubeconfig: Path

    def gateway(self, tmp: Path, name: str, *flags: str) -> GatewayProcess:
        from tests.integration.gateway.conftest import GatewayProcess

        return GatewayProcess.with_args(
            tmp, name, "--discovery", "kubernetes", *flags,
            env={"KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip

    def llmdeployment(
        self,
        namespace: str,
        name: str,
        served_name: str,
        *,
        key_secret: str | None = None,
        created: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "model": {
                "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
                "servedName": served_name,
            },
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        }
        if key_secret is not None:
            spec["auth"] = {"apiKeySecretRef": {"name": key_secret}}
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if created is not None:
            metadata["creationTimestamp"] = created
        manifest = {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": metadata,
            "spec": spec,
        }
        return self.kubectl.create(contract.PLURAL, manifest)

    def model_service(self, llmd: dict[str, Any], replica_port: int) -> dict[str, Any]:
        """The operator's Service for `llmd` and a ready endpoint at 127.0.0.1:replica_port."""
        meta = llmd["metadata"]
        service = build_service(
            meta["name"], meta["namespace"], LLMDeploymentSpec.model_validate(llmd["spec"])
        )
        service["metadata"]["ownerReferences"] = [
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        created = self.kubectl.create("services", service)
        self.endpoints(meta["namespace"], service["metadata"]["name"], replica_port)
        return created

    def endpoints(self, namespace: str, service: str, port: int) -> dict[str, Any]:
        return self.kubectl.create(
            "endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-x7k2p",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": contract.SERVER_PORT_NAME, "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            },
        )

    def key_secret(self, namespace: str, name: str, text: str) -> dict[str, Any]:
        return self.kubectl.create(
            "secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"keys": base64.b64encode(text.encode()).decode()},
            },
        )

    def rotate_key(self, namespace: str, name: str, text: str) -> None:
        data = {"data": {"keys": base64.b64encode(text.encode()).decode()}}
        self.kubectl.patch("v1", "secrets", namespace, name, data)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmulatorThread(RESOURCES) as emulator:
        kubectl = Kubectl(emulator.url)
        try:
            yield Cluster(emulator, kubectl, emulator.write_kubeconfig(tmp_path / "kubeconfig"))
        finally:
            kubectl.close()
