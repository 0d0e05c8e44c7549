"""Scale from zero through the gateway, with the model's NetworkPolicy enforced by the CNI.

The scale-to-zero sample (manifests/samples/smollm2-scale-to-zero.yaml),
started at zero replicas, waits with no pod. A request through the gateway
is held while the operator, woken by the gateway's demand annotation, starts
a replica, and then answered. With the replica up, the model's
NetworkPolicy is probed from pods in the cluster: its own namespace, the
operator and the gateway in the release namespace get through; a pod in any
other namespace does not, even one carrying the gateway's labels. Left idle,
the model goes back to zero, which the autoscaler only decides on metrics it
read from the replica: the operator gets through the policy too.

The module first checks that the cluster enforces NetworkPolicy at all (a
pod behind a deny-all policy must stop answering) and skips, saying so, where
it does not: kind has enforced it since v0.24.0 (kindnetd's network policy
controller) unless `networking.disableNetworkPolicies` is set.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Final

import pytest
import yaml

from e2e import models
from e2e.clients import QUESTION, client
from e2e.in_cluster import Probe, listener_pod, pod_phase, run_probes
from e2e.kube import Kubectl, wait_until
from e2e.models import LOAD_TIMEOUT, Model
from e2e.suite import CONTROL_PLANE_IMAGE, HOLD_TIMEOUT_S, Release
from modelplane.api import contract
from modelplane.api.demand import demand_lease_name

SCALE_DOWN_DELAY_S: Final = 180
MANIFEST: Final = models.merged(
    models.sample("smollm2-scale-to-zero.yaml"),
    {
        "spec": {
            "replicas": 0,  # start at zero
            "autoscaling": {"maxReplicas": 1, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S},
        }
    },
)
LISTENER_PORT: Final = 8000
LISTENER_LABELS: Final = {"app.kubernetes.io/name": "modelplane-e2e-listener"}


def _connected(kubectl: Kubectl, probe: Probe) -> bool:
    return run_probes(kubectl, CONTROL_PLANE_IMAGE, [probe])[probe.name] == "connected"


def enforcement_problem(kubectl: Kubectl, elsewhere: str, models_namespace: str) -> str | None:
    """None when a deny-all NetworkPolicy stops connections to a pod on this cluster, else
    why the NetworkPolicy tests cannot show anything here."""
    listener = listener_pod(
        "e2e-listener", elsewhere, CONTROL_PLANE_IMAGE, LISTENER_PORT, LISTENER_LABELS
    )
    deny_all = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "e2e-deny-all", "namespace": elsewhere},
        "spec": {"podSelector": {"matchLabels": LISTENER_LABELS}, "policyTypes": ["Ingress"]},
    }
    name = listener["metadata"]["name"]
    kubectl.apply(yaml.safe_dump(listener), elsewhere)
    try:
        wait_until(
            "the listener pod running",
            lambda: pod_phase(kubectl, name, elsewhere) == "Running",
            timeout=180,
        )
        ip = kubectl.json("get", "pod", name, "-n", elsewhere)["status"]["podIP"]
        probe = Probe("e2e-probe-listener", models_namespace, ip, LISTENER_PORT, {})
        connected = functools.partial(_connected, kubectl, probe)
        wait_until("the listener reachable before any policy", connected, timeout=180, every=1)
        kubectl.apply(yaml.safe_dump(deny_all), elsewhere)
        seen: list[bool] = []

        def denied() -> bool:
            seen.append(connected())
            return not seen[-1]

        try:
            wait_until("the deny-all policy to take effect", denied, timeout=90, every=1)
        except AssertionError:
            if not seen or not all(seen):
                raise  # the probes themselves failed: that is no verdict on the CNI
            return (
                "this cluster does not enforce NetworkPolicy (a pod behind a deny-all policy "
                "still accepts connections); kind enforces it since v0.24.0 unless "
                "networking.disableNetworkPolicies is set, as do Calico and Cilium"
            )
        return None
    finally:
        kubectl("delete", "networkpolicy", "e2e-deny-all", "-n", elsewhere, "--ignore-not-found")
        kubectl("delete", "pod", name, "-n", elsewhere, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def network_policy_enforced(
    kubectl: Kubectl, elsewhere_namespace: str, models_namespace: str
) -> None:
    """Skip the module, saying why, unless this cluster enforces NetworkPolicy."""
    problem = enforcement_problem(kubectl, elsewhere_namespace, models_namespace)
    if problem is not None:
        pytest.skip(f"e2e: {problem}")


@pytest.fixture(scope="module")
def model(
    models_namespace: str, kubectl: Kubectl, network_policy_enforced: None
) -> Iterator[Model]:
    """The scale-to-zero sample at zero replicas (phase Ready: the gateway starts one)."""
    with models.deployed(kubectl, models_namespace, MANIFEST, replicas=0) as applied:
        yield applied


def test_at_zero_it_runs_no_pod_behind_its_network_policy(model: Model, kubectl: Kubectl) -> None:
    assert models.pods(kubectl, model) == []
    deployment = kubectl.json("get", "deployment", model.name, "-n", model.namespace)
    assert deployment["spec"]["replicas"] == 0
    policy = kubectl.json("get", "networkpolicy", model.name, "-n", model.namespace)
    selects = policy["spec"]["podSelector"].get("matchLabels", {})
    assert selects.get(contract.LABEL_LLMDEPLOYMENT) == model.name
    assert "Ingress" in policy["spec"]["policyTypes"]


def ask(gateway_url: str, model: Model) -> str:
    """One chat completion through the gateway, held as long as the gateway holds."""
    openai = client(gateway_url, timeout=HOLD_TIMEOUT_S + 60)
    reply = openai.chat.completions.create(
        model=model.served_name, messages=QUESTION, max_tokens=8, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_a_request_through_the_gateway_starts_a_replica_and_is_answered(
    model: Model, kubectl: Kubectl, gateway_url: str
) -> None:
    listed = client(gateway_url).models.list
    wait_until(
        "the gateway to list the model at zero",
        lambda: model.served_name in [m.id for m in listed()],
        timeout=120,
    )
    assert ask(gateway_url, model).strip()
    body = models.resource(kubectl, model)
    # The gateway recorded the demand in the model's Lease, not on the LLMDeployment.
    lease = kubectl.json("get", "lease", demand_lease_name(model.name), "-n", model.namespace)
    assert lease["spec"]["renewTime"]
    assert lease["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert body["spec"]["replicas"] == 1
    wait_until(
        "1 ready replica",
        functools.partial(models.ready, kubectl, model, 1),
        timeout=LOAD_TIMEOUT,
        every=5,
    )
    assert models.events(kubectl, model, "ScaledUp"), "no ScaledUp event for the scale from zero"


def _labels_of(kubectl: Kubectl, namespace: str, selector: str) -> dict[str, str]:
    found = kubectl.items("pods", "-n", namespace, "-l", selector)
    assert found, f"no pod matches {selector} in {namespace}"
    labels: dict[str, str] = found[0]["metadata"]["labels"]
    return labels


def test_its_network_policy_admits_the_namespace_operator_and_gateway_only(
    model: Model,
    kubectl: Kubectl,
    release: Release,
    elsewhere_namespace: str,
    gateway_url: str,
) -> None:
    """Probe pods carry the real operator's and gateway's labels (read from their pods)."""
    assert ask(gateway_url, model).strip()  # up (again), whatever the idle timer did
    wait_until(
        "1 ready replica",
        functools.partial(models.ready, kubectl, model, 1),
        timeout=LOAD_TIMEOUT,
        every=5,
    )
    ip = models.pods(kubectl, model)[0]["status"]["podIP"]
    operator = _labels_of(kubectl, release.namespace, release.operator_selector)
    gateway_selector = (
        f"{contract.LABEL_INSTANCE}={release.name},"
        f"{contract.LABEL_COMPONENT}={contract.COMPONENT_GATEWAY}"
    )
    gateway = _labels_of(kubectl, release.namespace, gateway_selector)
    port = contract.SERVER_PORT
    expected: dict[str, tuple[Probe, bool]] = {
        "e2e-probe-same-namespace": (
            Probe("e2e-probe-same-namespace", model.namespace, ip, port, {}),
            True,
        ),
        "e2e-probe-operator": (
            Probe("e2e-probe-operator", release.namespace, ip, port, operator),
            True,
        ),
        "e2e-probe-gateway": (
            Probe("e2e-probe-gateway", release.namespace, ip, port, gateway),
            True,
        ),
        "e2e-probe-elsewhere": (
            Probe("e2e-probe-elsewhere", elsewhere_namespace, ip, port, {}),
            False,
        ),
        "e2e-probe-gateway-elsewhere": (
            Probe("e2e-probe-gateway-elsewhere", elsewhere_namespace, ip, port, gateway),
            False,
        ),
    }
    verdicts = run_probes(kubectl, CONTROL_PLANE_IMAGE, [p for p, _ in expected.values()])
    wrong = {
        name: f"{verdicts[name]} (expected {'a connection' if allowed else 'none'})"
        for name, (_, allowed) in expected.items()
        if (verdicts[name] == "connected") != allowed
    }
    assert wrong == {}, f"the model's NetworkPolicy let the wrong pods through: {wrong}"


def test_left_idle_it_returns_to_zero_on_metrics_read_from_its_replica(
    model: Model, kubectl: Kubectl
) -> None:
    """Scaling to zero needs a measurement of no requests; a replica whose /metrics the
    operator cannot reach holds its count and says so in scaleReason."""

    def at_zero() -> dict[str, Any] | None:
        body = models.resource(kubectl, model)
        reason = body.get("status", {}).get("scaleReason", "")
        if "no metrics from any ready replica" in reason:
            raise AssertionError(f"the operator cannot read the replica's metrics: {reason}")
        if body["spec"]["replicas"] == 0 and models.pods(kubectl, model) == []:
            return body
        return None

    body = wait_until("the model back at zero", at_zero, timeout=SCALE_DOWN_DELAY_S + 600, every=5)
    assert "no requests" in body["status"].get("scaleReason", "")
    assert models.events(kubectl, model, "ScaledDown"), "no ScaledDown event for the scale to zero"
