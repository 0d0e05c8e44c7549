"""Session fixtures: the cluster (or a skip with the reason), room on it, the images, the chart.

The chain, each fixture taking the one before:

    access -> environment -> kubectl, helm -> capacity -> images -> release
        -> models_namespace, elsewhere_namespace, gateway_url (per module)

`capacity` runs before anything is built or installed and skips the suite,
saying what is missing, when the kind nodes cannot hold it. The images are
built from this checkout (the control-plane image, and the CPU variant of
the server image so no GPU is needed) and loaded into the kind cluster;
`MODELPLANE_E2E_SKIP_BUILD=1` reuses images already loaded. Every command
goes through the `ClusterAccess` in pytest's stash (e2e/access.py), which
tests/unit/test_e2e_fixtures.py replaces with a fake cluster to check this
wiring on every `make test`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.access import ClusterAccess, access_of
from e2e.capacity import capacity_problem, free_per_node
from e2e.environment import REPO, Environment
from e2e.kube import Helm, Kubectl
from e2e.suite import (
    ELSEWHERE_NAMESPACE,
    MODELS_NAMESPACE,
    OPERATOR_IMAGE,
    OWN_NAMESPACES,
    RELEASE,
    RELEASE_NAMESPACE,
    SERVER_IMAGE,
    Release,
    default_need,
    image,
    install,
    namespace,
)

SKIP_BUILD_ENV = "MODELPLANE_E2E_SKIP_BUILD"
E2E_DIR = REPO / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if E2E_DIR in item.path.parents]
    if not ours:
        return
    reason = access_of(config).why_not_here()
    if reason is not None:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=f"e2e: {reason}"))


@pytest.fixture(scope="session")
def access(request: pytest.FixtureRequest) -> ClusterAccess:
    return access_of(request.config)


@pytest.fixture(scope="session")
def environment(access: ClusterAccess) -> Environment:
    return access.detect()


def _tool(environment: Environment, name: str) -> str:
    path = environment.tools.get(name)
    assert path is not None, f"{name} not found (the skip check should have said so)"
    return path


@pytest.fixture(scope="session")
def kubectl(environment: Environment, access: ClusterAccess) -> Kubectl:
    return Kubectl(_tool(environment, "kubectl"), access.runner)


@pytest.fixture(scope="session")
def helm(environment: Environment, access: ClusterAccess) -> Helm:
    return Helm(_tool(environment, "helm"), access.runner)


@pytest.fixture(scope="session")
def capacity(kubectl: Kubectl) -> None:
    """Skip the suite, saying what it needs, when the nodes cannot hold it."""
    nodes = kubectl.items("nodes")
    pods = kubectl.items("pods", "--all-namespaces")
    problem = capacity_problem(free_per_node(nodes, pods, OWN_NAMESPACES), default_need())
    if problem is not None:
        pytest.skip(f"e2e: {problem}")


@pytest.fixture(scope="session")
def images(environment: Environment, access: ClusterAccess, capacity: None) -> None:
    """Build the images from this checkout and load them into the kind cluster."""
    if os.environ.get(SKIP_BUILD_ENV) == "1":
        return
    docker, kind = _tool(environment, "docker"), _tool(environment, "kind")
    assert environment.kind_cluster is not None
    builds = [
        (OPERATOR_IMAGE, ["-f", "Dockerfile.operator"]),
        (SERVER_IMAGE, ["-f", "Dockerfile.server", "--build-arg", "VARIANT=cpu"]),
    ]
    for name, args in builds:
        access.runner([docker, "build", *args, "-t", image(name), str(REPO)], timeout=3600)
        access.runner(
            [kind, "load", "docker-image", image(name), "--name", environment.kind_cluster],
            timeout=1800,
        )


@pytest.fixture(scope="session")
def release(helm: Helm, kubectl: Kubectl, images: None) -> Iterator[Release]:
    """The chart installed (CRDs, operator, gateway); uninstalled afterwards."""
    installed = Release(RELEASE, RELEASE_NAMESPACE)
    install(helm, installed)
    try:
        yield installed
    finally:
        helm("uninstall", installed.name, "--namespace", installed.namespace, "--wait", timeout=600)
        # Helm leaves the namespace it created.
        kubectl("delete", "namespace", installed.namespace, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="session")
def models_namespace(release: Release, kubectl: Kubectl) -> Iterator[str]:
    """Where the tests' LLMDeployments live; deleted (with them) before the chart goes."""
    with namespace(kubectl, MODELS_NAMESPACE) as name:
        yield name


@pytest.fixture(scope="session")
def elsewhere_namespace(release: Release, kubectl: Kubectl) -> Iterator[str]:
    """A namespace that is neither the release's nor the models': NetworkPolicy's outside."""
    with namespace(kubectl, ELSEWHERE_NAMESPACE) as name:
        yield name


@pytest.fixture(scope="module")
def gateway_url(release: Release, kubectl: Kubectl, access: ClusterAccess) -> Iterator[str]:
    """The gateway's Service, forwarded to this machine (per module: a forward ends with
    the gateway pod it picked)."""
    with access.port_forward(
        kubectl, release.namespace, f"svc/{release.gateway_service}", 8080
    ) as url:
        yield url
