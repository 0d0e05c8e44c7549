"""Session fixtures: the cluster (or a skip with the reason), the images, the installed chart.

The images are built from this checkout (the control-plane image, and the
CPU variant of the server image so no GPU is needed) and loaded into the kind
cluster; `MODELPLANE_E2E_SKIP_BUILD=1` reuses images already loaded. The
chart is installed with Helm, the gateway on, pulling nothing: every image
is the one just loaded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e.environment import REPO, Environment, detect, why_not_here
from e2e.kube import Kubectl, port_forward, run

OPERATOR_IMAGE = ("modelplane/operator", "e2e")
SERVER_IMAGE = ("modelplane/server", "cpu-e2e")
RELEASE = "modelplane"
RELEASE_NAMESPACE = "modelplane-e2e"
MODELS_NAMESPACE = "modelplane-e2e-models"
GATEWAY_SERVICE = "modelplane-gateway"  # <release>-gateway, the release name containing the chart's
SKIP_BUILD_ENV = "MODELPLANE_E2E_SKIP_BUILD"
E2E_DIR = REPO / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if E2E_DIR in item.path.parents]
    if not ours:
        return
    reason = why_not_here()
    if reason is not None:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=f"e2e: {reason}"))


def image(name: tuple[str, str]) -> str:
    return f"{name[0]}:{name[1]}"


def install_values() -> dict[str, Any]:
    return {
        "operator": {
            "image": {
                "repository": OPERATOR_IMAGE[0],
                "tag": OPERATOR_IMAGE[1],
                "pullPolicy": "Never",
            },
            "config": {"images": {"cpu": image(SERVER_IMAGE), "pullPolicy": "Never"}},
        },
        "gateway": {"enabled": True, "replicas": 1},
    }


@pytest.fixture(scope="session")
def environment() -> Environment:
    return detect()


@pytest.fixture(scope="session")
def kubectl(environment: Environment) -> Kubectl:
    path = environment.tools["kubectl"]
    assert path is not None
    return Kubectl(path)


@pytest.fixture(scope="session")
def images(environment: Environment) -> None:
    """Build the images from this checkout and load them into the kind cluster."""
    if os.environ.get(SKIP_BUILD_ENV) == "1":
        return
    docker, kind = environment.tools["docker"], environment.tools["kind"]
    assert docker is not None and kind is not None and environment.kind_cluster is not None
    builds = [
        (OPERATOR_IMAGE, ["-f", "Dockerfile.operator"]),
        (SERVER_IMAGE, ["-f", "Dockerfile.server", "--build-arg", "VARIANT=cpu"]),
    ]
    for name, args in builds:
        run([docker, "build", *args, "-t", image(name), str(REPO)], timeout=3600)
        run([kind, "load", "docker-image", image(name), "--name", environment.kind_cluster],
            timeout=1800)  # fmt: skip


@pytest.fixture(scope="session")
def release(environment: Environment, kubectl: Kubectl, images: None) -> Iterator[None]:
    """The chart installed (CRDs, operator, gateway); uninstalled afterwards."""
    helm = environment.tools["helm"]
    assert helm is not None
    chart = str(REPO / "charts" / "modelplane")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump(install_values(), values)
        values.flush()
        run([helm, "upgrade", "--install", RELEASE, chart, "--namespace", RELEASE_NAMESPACE,
             "--create-namespace", "-f", values.name, "--wait", "--timeout", "10m"],
            timeout=900)  # fmt: skip
    try:
        yield
    finally:
        run([helm, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait"], timeout=600)
        kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false")  # helm leaves it


@pytest.fixture(scope="session")
def models_namespace(release: None, kubectl: Kubectl) -> Iterator[str]:
    """Where the test's LLMDeployments live; deleted (with them) before the chart goes."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MODELS_NAMESPACE}}
    kubectl.apply(yaml.safe_dump(namespace))
    try:
        yield MODELS_NAMESPACE
    finally:
        kubectl("delete", "namespace", MODELS_NAMESPACE, "--wait=true", timeout=600)


@pytest.fixture(scope="session")
def gateway_url(release: None, kubectl: Kubectl) -> Iterator[str]:
    """The gateway's Service, forwarded to this machine."""
    with port_forward(kubectl, RELEASE_NAMESPACE, f"svc/{GATEWAY_SERVICE}", 8080) as url:
        yield url
