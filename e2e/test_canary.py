"""Canary rollouts on a real cluster: promoted step by step, resumed after an operator
restart, aborted on a breach, each while clients call the model through the gateway
without a single failed request.

The canary sample (manifests/samples/canary.yaml) runs with one stable
replica and two shares (50%, then 100%), promoted with `maxSurge: 0` so that
at most two replicas run at once. Each change of `spec.engine.maxModelLen`
is a new pod template and so a new canary (no download of another revision
needed). The abort is provoked with a TTFT bound no CPU replica can meet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import pytest

from e2e import models
from e2e.clients import ClientLoop
from e2e.kube import Kubectl, wait_until
from e2e.models import LOAD_TIMEOUT, Model
from e2e.suite import Release
from modelplane.api import contract

MANIFEST: Final = models.merged(
    models.sample("canary.yaml"),
    {
        "spec": {
            "replicas": 1,
            "rollout": {
                "maxSurge": 0,
                "maxUnavailable": 1,
                "canary": {
                    "weight": 50,
                    "steps": [50, 100],
                    "stepSeconds": 30,
                    "maxTtftP95Seconds": 30,
                },
            },
        }
    },
)
ROLLOUT_TIMEOUT: Final = 2 * LOAD_TIMEOUT  # a canary replica loads, then the stable one


@pytest.fixture(scope="module")
def model(models_namespace: str, kubectl: Kubectl) -> Iterator[Model]:
    """The canary sample, Ready on its first template (a first rollout needs no canary)."""
    with models.deployed(kubectl, models_namespace, MANIFEST) as applied:
        yield applied


def canary_of(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    found: dict[str, Any] = models.status(kubectl, model).get("canary") or {}
    return found


def weights(kubectl: Kubectl, model: Model) -> tuple[int | None, int | None]:
    """The traffic-weight annotations of the stable and the canary Service (None: absent)."""
    found: list[int | None] = []
    for name in (model.name, f"{model.name}-canary"):
        out = kubectl(
            "get", "service", name, "-n", model.namespace, "--ignore-not-found", "-o", "json"
        )
        if not out.strip():
            found.append(None)
            continue
        annotations = json.loads(out)["metadata"].get("annotations", {})
        value = annotations.get(contract.ANNOTATION_TRAFFIC_WEIGHT)
        found.append(int(value) if value is not None else None)
    return found[0], found[1]


def canary_gone(kubectl: Kubectl, model: Model) -> bool:
    name = f"{model.name}-canary"
    return not models.exists(kubectl, "deployment", name, model.namespace) and not models.exists(
        kubectl, "service", name, model.namespace
    )


class Promotion:
    """Watches a canary through to its promotion, recording what it passes through."""

    def __init__(self, kubectl: Kubectl, model: Model) -> None:
        self.kubectl, self.model = kubectl, model
        self.target: str | None = None  # the template hash the canary brings
        self.shares: list[int] = []  # each share once, in the order it took effect
        self.splits: set[tuple[int | None, int | None]] = set()  # (stable, canary) weights

    def check(self) -> bool:
        canary = canary_of(self.kubectl, self.model)
        if canary:
            if canary.get("phase") == "Aborted":
                raise AssertionError(f"the canary was aborted: {canary.get('message')}")
            self.target = canary["templateHash"]
            if canary.get("stepStartedAt") and canary.get("phase") == "Progressing":
                if not self.shares or self.shares[-1] != canary["weight"]:
                    self.shares.append(canary["weight"])
                self.splits.add(weights(self.kubectl, self.model))
            return False
        return (
            self.target is not None
            and models.template_hash(self.kubectl, self.model) == self.target
            and models.ready(self.kubectl, self.model, 1)
            and canary_gone(self.kubectl, self.model)
        )


def test_a_canary_takes_each_share_then_is_promoted(
    model: Model, kubectl: Kubectl, gateway_url: str
) -> None:
    before = models.template_hash(kubectl, model)
    promotion = Promotion(kubectl, model)
    with ClientLoop(gateway_url, model.served_name) as loop:
        loop.wait_for_answers(3)
        models.patch(kubectl, model, {"spec": {"engine": {"maxModelLen": 2048}}})
        wait_until("the canary promoted", promotion.check, timeout=ROLLOUT_TIMEOUT)
        loop.wait_for_answers(3)
    loop.assert_no_failure()
    assert promotion.target is not None and promotion.target != before
    assert promotion.shares == [50, 100]
    assert {(50, 50), (0, 100)} <= promotion.splits, promotion.splits
    assert weights(kubectl, model) == (100, None)
    assert models.pod_template_hashes(kubectl, model) == {promotion.target}
    assert models.events(kubectl, model, "CanaryPromoted"), "no CanaryPromoted event"


def operator_pods(kubectl: Kubectl, release: Release) -> list[dict[str, Any]]:
    return kubectl.items("pods", "-n", release.namespace, "-l", release.operator_selector)


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_an_operator_restart_in_the_middle_of_a_step_resumes_it(
    model: Model, kubectl: Kubectl, gateway_url: str, release: Release
) -> None:
    """The operator's pod is deleted while step 1 is analysed: its successor carries on
    from status.canary (same step start, same canary Deployment) to the promotion."""
    canary_deployment = f"{model.name}-canary"
    promotion = Promotion(kubectl, model)
    with ClientLoop(gateway_url, model.served_name) as loop:
        loop.wait_for_answers(3)
        changes = {"engine": {"maxModelLen": 3072}, "rollout": {"canary": {"stepSeconds": 120}}}
        models.patch(kubectl, model, {"spec": changes})

        def analysing_step_one() -> dict[str, Any] | None:
            canary = canary_of(kubectl, model)
            analysing = canary.get("phase") == "Progressing" and canary.get("stepStartedAt")
            return canary if analysing and canary.get("step") == 1 else None

        during = wait_until("step 1 analysed", analysing_step_one, timeout=LOAD_TIMEOUT)
        uid = kubectl.json("get", "deployment", canary_deployment, "-n", model.namespace)[
            "metadata"
        ]["uid"]
        old = {p["metadata"]["name"] for p in operator_pods(kubectl, release)}
        kubectl(
            "delete",
            "pod",
            "-n",
            release.namespace,
            "-l",
            release.operator_selector,
            "--wait=false",
        )
        wait_until(
            "a new operator pod ready",
            lambda: any(
                is_ready(p) and p["metadata"]["name"] not in old
                for p in operator_pods(kubectl, release)
            ),
            timeout=300,
        )

        def resumed_and_promoted() -> bool:
            canary = canary_of(kubectl, model)
            if canary.get("step") == 1 and canary.get("stepStartedAt"):
                assert canary["stepStartedAt"] == during["stepStartedAt"], (
                    f"step 1 started again after the restart: {during} became {canary}"
                )
            deployment = kubectl(
                "get",
                "deployment",
                canary_deployment,
                "-n",
                model.namespace,
                "--ignore-not-found",
                "-o",
                "jsonpath={.metadata.uid}",
            )
            assert deployment.strip() in ("", uid), "the canary Deployment was replaced"
            return promotion.check()

        wait_until(
            "the canary promoted after the restart", resumed_and_promoted, timeout=ROLLOUT_TIMEOUT
        )
        loop.wait_for_answers(3)
    loop.assert_no_failure()
    assert promotion.shares[-1] == 100
    assert models.pod_template_hashes(kubectl, model) == {promotion.target}


def test_a_canary_that_breaches_its_ttft_bound_is_aborted(
    model: Model, kubectl: Kubectl, gateway_url: str
) -> None:
    stable = models.template_hash(kubectl, model)
    served = models.status(kubectl, model).get("servedRevision")
    with ClientLoop(gateway_url, model.served_name) as loop:
        loop.wait_for_answers(3)
        changes = {
            "engine": {"maxModelLen": 2560},
            "rollout": {"canary": {"maxTtftP95Seconds": 0.001}},
        }
        models.patch(kubectl, model, {"spec": changes})

        def aborted() -> dict[str, Any] | None:
            status = models.status(kubectl, model)
            degraded = models.condition(status, "Degraded")
            return status if degraded.get("reason") == "CanaryAborted" else None

        status = wait_until("the canary aborted", aborted, timeout=LOAD_TIMEOUT)
        wait_until("the canary's children gone", lambda: canary_gone(kubectl, model), timeout=300)
        loop.wait_for_answers(3)
    loop.assert_no_failure()
    assert status["phase"] == "Degraded"
    assert "maxTtftP95Seconds" in models.condition(status, "Degraded")["message"]
    assert status.get("servedRevision") == served
    assert models.template_hash(kubectl, model) == stable
    assert models.pod_template_hashes(kubectl, model) == {stable}
    assert weights(kubectl, model) == (100, None)
    warnings = [e for e in models.events(kubectl, model, "CanaryAborted") if e["type"] == "Warning"]
    assert warnings, "no Warning event CanaryAborted"
