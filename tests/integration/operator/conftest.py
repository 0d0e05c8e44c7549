"""The operator under `kopf.testing.KopfRunner`, against KMock's Kubernetes emulator.

No Kubernetes API server can run here, so the cluster is KMock's emulator
(tests/support/kube_emulator.py says what it adds). The operator runs exactly as
`modelplane operator` runs it: kopf's CLI with `kopf_args(config)`, the
config file passed through MODELPLANE_OPERATOR_CONFIG, credentials from a
kubeconfig through the operator's `@kopf.on.login` handler. Every API call
the operator makes is checked against the RBAC rules the chart installs, at
the end of every test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelplane.api import contract
from modelplane.gateway.discovery.demand_leases import DemandLeases
from modelplane.gateway.routing.routes import DemandTarget
from modelplane.operator.config import CONFIG_ENV, OperatorConfig
from modelplane.operator.kube.client import USER_AGENT
from modelplane.operator.operator_command import kopf_args
from tests.conftest import free_port
from tests.integration.operator.fake_pods import FakePods
from tests.support.kube_emulator import CLUSTER_RESOURCES, HARNESS_AGENT, EmulatorThread, Kubectl
from tests.support.rbac_check import GATEWAY_RULES_FILE, disallowed_calls, load_rules

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The gateway's demand writer, played by the tests: its calls are not the operator's.
GATEWAY_AGENT = "modelplane-tests/gateway"
GATEWAY_RULES = load_rules(GATEWAY_RULES_FILE)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, IndexError, StopIteration, AssertionError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last seen: {last!r}")


@dataclass
class Operator:
    runner: KopfRunner
    metrics_port: int

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def reconciles(self) -> float:
        return sum(
            self.metric("modelplane_operator_reconcile_total", result=result) or 0
            for result in ("ok", "error", "invalid")
        )


class Cluster:
    """The emulated cluster, with the test's kubectl and views of what the operator did."""

    def __init__(self, emulator: EmulatorThread) -> None:
        self.emulator = emulator
        self.kubectl = Kubectl(emulator.url)
        configuration = client.Configuration()
        configuration.host = emulator.url
        self._gateway_api = client.ApiClient(configuration)
        self._gateway_api.user_agent = GATEWAY_AGENT

    def objects(self, plural: str, namespace: str = "default") -> dict[str, dict[str, Any]]:
        found = {}
        for (resource, ns, name), obj in self.emulator.emulator.objects.items():
            if resource.plural == plural and ns == namespace and not obj.deleted:
                found[name] = obj.raw
        return found

    def llmd(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.objects(contract.PLURAL, namespace)[name]

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        status: dict[str, Any] = self.llmd(name, namespace).get("status", {})
        return status

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return next(c for c in self.status(name).get("conditions", []) if c["type"] == type_)

    def operator_requests(self) -> list[Any]:
        return [
            r
            for r in self.emulator.requests()
            if r.headers.get("User-Agent", "") not in (HARNESS_AGENT, GATEWAY_AGENT)
        ]

    def gateway_requests(self) -> list[Any]:
        return [r for r in self.emulator.requests() if r.headers.get("User-Agent") == GATEWAY_AGENT]

    def hold_requests(
        self, name: str, held: int, at: datetime | None = None, namespace: str = "default"
    ) -> None:
        """Play the gateway holding `held` requests for the model at zero: its own demand
        writer renews (or creates) the LLMDeployment's demand Lease, stamped `at`."""
        writer = DemandLeases(
            lambda: self._gateway_api,
            hold_seconds=120,
            holder="gateway-0",
            clock=lambda: at or datetime.now(UTC),
        )
        writer.write(DemandTarget(namespace, name), held)

    def operator_writes(self, since: int = 0) -> list[str]:
        return [
            f"{r.method.value} {r.url.path}"
            for r in self.operator_requests()[since:]
            if r.method.value in WRITE_METHODS
        ]

    def create_llmd(self, name: str, spec: dict[str, Any], namespace: str = "default") -> None:
        self.kubectl.create(
            contract.PLURAL,
            {
                "apiVersion": contract.API_VERSION,
                "kind": contract.KIND,
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            },
        )

    def patch_llmd(self, name: str, spec: dict[str, Any], namespace: str = "default") -> None:
        self.kubectl.patch(contract.API_VERSION, contract.PLURAL, namespace, name, {"spec": spec})

    def annotate_llmd(self, name: str, annotations: dict[str, str | None]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self.kubectl.patch(contract.API_VERSION, contract.PLURAL, "default", name, body)

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        """Events about the LLMDeployment `name` (of one reason), oldest first."""
        found = [
            e
            for e in self.objects("events").values()
            if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == contract.KIND
            and (reason is None or e["reason"] == reason)
        ]
        return sorted(found, key=lambda e: str(e.get("eventTime", "")))

    def report_deployment(self, name: str, namespace: str = "default", **status: int) -> None:
        """Play the Deployment controller: report replica counts for the current generation."""
        deployment = self.objects("deployments", namespace)[name]
        body = {"observedGeneration": deployment["metadata"]["generation"], **status}
        self.kubectl.patch(
            "apps/v1", "deployments", namespace, name, {"status": body}, subresource="status"
        )


@pytest.fixture
def cluster_resources() -> dict[str, Any]:
    """The API resources the emulated cluster serves (a module may override this)."""
    return dict(CLUSTER_RESOURCES)


@pytest.fixture
def cluster(cluster_resources: dict[str, Any]) -> Iterator[Cluster]:
    with EmulatorThread(cluster_resources) as emulator:
        cluster = Cluster(emulator)
        yield cluster
        cluster.kubectl.close()
        cluster._gateway_api.close()  # type: ignore[no-untyped-call]
        gateway = [(r.method.value, r.url.path, dict(r.params)) for r in cluster.gateway_requests()]
        refused = disallowed_calls(gateway, GATEWAY_RULES)
        assert not refused, "API calls the gateway's RBAC rules do not allow:\n" + "\n".join(
            map(str, refused)
        )
        calls = [(r.method.value, r.url.path, dict(r.params)) for r in cluster.operator_requests()]
        refused = disallowed_calls(calls, load_rules())
        assert not refused, "API calls the operator's RBAC rules do not allow:\n" + "\n".join(
            map(str, refused)
        )
        agents = {r.headers.get("User-Agent", "") for r in cluster.operator_requests()}
        assert {agent.split("/")[0] for agent in agents} <= {USER_AGENT.split("/")[0], "kopf"}


@pytest.fixture
def fake_pods(cluster: Cluster) -> Iterator[FakePods]:
    """Model-server pods with real /metrics endpoints (see fake_pods.py)."""
    pods = FakePods(cluster.kubectl)
    yield pods
    pods.close()


OperatorFactory = Callable[..., Any]


@pytest.fixture
def run_operator(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> OperatorFactory:
    """`with run_operator(**config) as op:` runs the operator for the block."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.emulator.write_kubeconfig(tmp_path / "kube")))

    @contextmanager
    def start(**settings: Any) -> Iterator[Operator]:
        values = {"metricsPort": free_port(), "healthPort": None, "logFormat": "plain", **settings}
        config_path = tmp_path / "operator.yaml"
        config_path.write_text(yaml.safe_dump(values))
        monkeypatch.setenv(CONFIG_ENV, str(config_path))
        config = OperatorConfig.model_validate(values)
        with KopfRunner(kopf_args(config, verbose=True), timeout=30) as runner:
            operator = Operator(runner, config.metrics_port)
            wait_for("the operator's metrics endpoint", lambda: _metrics_up(operator))
            yield operator
        assert runner.exception is None, runner.output[-4000:]

    return start


def _metrics_up(operator: Operator) -> bool:
    try:
        operator.metrics()
    except httpx.TransportError:
        return False
    return True
