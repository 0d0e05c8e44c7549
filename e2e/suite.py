"""What the e2e suite installs, where, and how much room it needs: names and pure functions.

The chart is installed once per session as release `modelplane` in
`modelplane-e2e`, the gateway on and every image the one just built and
loaded into kind (pull policy Never). Test models live in
`modelplane-e2e-models`; `modelplane-e2e-elsewhere` is the "any other
namespace" that NetworkPolicy tests probe from.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from e2e.capacity import Need, Part, Resources
from e2e.environment import REPO
from e2e.in_cluster import TEST_POD_REQUESTS
from e2e.kube import Helm, Kubectl
from e2e.models import merged, sample
from modelplane.api import contract

CHART: Final = REPO / "charts" / "modelplane"
OPERATOR_IMAGE: Final = ("modelplane/operator", "e2e")
SERVER_IMAGE: Final = ("modelplane/server", "cpu-e2e")
RELEASE: Final = "modelplane"
RELEASE_NAMESPACE: Final = "modelplane-e2e"
MODELS_NAMESPACE: Final = "modelplane-e2e-models"
ELSEWHERE_NAMESPACE: Final = "modelplane-e2e-elsewhere"
OWN_NAMESPACES: Final = (RELEASE_NAMESPACE, MODELS_NAMESPACE, ELSEWHERE_NAMESPACE)
# A CPU replica's first start downloads the model and loads it: minutes, more
# than the gateway's default hold of 120 s, so a request held for a model at
# zero would be answered 503 before the replica is up.
HOLD_TIMEOUT_S: Final = 900
# The samples the tests apply; each replica requests what they ask.
SAMPLES_USED: Final = ("smollm2-cpu.yaml", "canary.yaml", "smollm2-scale-to-zero.yaml")
# Model replicas running at once at the suite's busiest: a rolling update or a
# scale to 2 of one model; a canary (one stable, one canary replica, promoted
# with maxSurge 0). The modules run one after another and each waits for its
# pods to be gone before the next starts.
PEAK_MODEL_REPLICAS: Final = 2


def image(name: tuple[str, str]) -> str:
    return f"{name[0]}:{name[1]}"


CONTROL_PLANE_IMAGE: Final = image(OPERATOR_IMAGE)


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
        "gateway": {"enabled": True, "replicas": 1, "holdTimeoutSeconds": HOLD_TIMEOUT_S},
    }


@dataclass(frozen=True)
class Release:
    """The installed chart: its name, namespace and the values it was installed with."""

    name: str
    namespace: str
    values: Mapping[str, Any] = field(default_factory=install_values)

    @property
    def fullname(self) -> str:
        """The chart's `modelplane.fullname` (no name overrides in these values)."""
        return self.name if "modelplane" in self.name else f"{self.name}-modelplane"

    @property
    def gateway_service(self) -> str:
        return f"{self.fullname}-gateway"

    @property
    def operator_deployment(self) -> str:
        return f"{self.fullname}-operator"

    @property
    def operator_selector(self) -> str:
        return (
            f"{contract.LABEL_INSTANCE}={self.name},"
            f"{contract.LABEL_COMPONENT}={contract.COMPONENT_OPERATOR}"
        )

    def with_values(self, values: Mapping[str, Any]) -> Release:
        return Release(self.name, self.namespace, values)


def install(helm: Helm, release: Release) -> None:
    """`helm upgrade --install` the chart of this checkout with the release's values."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump(dict(release.values), values)
        values.flush()
        helm.upgrade_install(release.name, str(CHART), release.namespace, values.name)


@contextlib.contextmanager
def namespace(kubectl: Kubectl, name: str) -> Iterator[str]:
    """A namespace for the session; deleted (with what is in it) afterwards."""
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl.apply(yaml.safe_dump(manifest))
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=600)


def _requests(values: Mapping[str, Any], component: str) -> Resources:
    return Resources.of(values.get(component, {}).get("resources", {}).get("requests"))


def chart_values(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The chart's values.yaml with `overrides` merged in, as Helm merges them."""
    defaults: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return merged(defaults, overrides)


def suite_need(values: Mapping[str, Any], samples: Mapping[str, Mapping[str, Any]]) -> Need:
    """What runs at once at the suite's busiest, from the chart values and the samples."""
    replicas = [Resources.of(s["spec"].get("resources", {})) for s in samples.values()]
    replica = Resources(max(r.cpu for r in replicas), max(r.memory for r in replicas))
    gateway = values.get("gateway", {})
    return Need(
        (
            Part("model replica", PEAK_MODEL_REPLICAS, replica),
            # A restarted operator's new pod starts while the old one stops.
            Part("operator", 2, _requests(values, "operator")),
            Part(
                "gateway",
                int(gateway.get("replicas", 1)) if gateway.get("enabled") else 0,
                _requests(values, "gateway"),
            ),
            Part("test pod", 3, Resources.of(TEST_POD_REQUESTS)),
        )
    )


def default_need() -> Need:
    return suite_need(chart_values(install_values()), {s: sample(s) for s in SAMPLES_USED})
