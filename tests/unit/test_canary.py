"""The canary planner, one row per transition, and the canary's metrics from observations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from modelplane.api import contract
from modelplane.api.llmdeployment import (
    CanaryPhase,
    CanaryStatus,
    LLMDeploymentSpec,
    LLMDeploymentStatus,
    RolloutSpec,
)
from modelplane.operator.autoscaler import ReplicaObservation, observe, parse_metrics
from modelplane.operator.builders import BuildOptions, CanaryTrack, build_children
from modelplane.operator.canary.analysis import canary_metrics
from modelplane.operator.canary.plan import (
    CanaryMetrics,
    CanaryObserved,
    CanaryPlan,
    canary_replicas,
    canary_shares,
    plan_canary,
)
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.children_plan import plan_children
from modelplane.operator.reconcile.observed import (
    DeploymentCondition,
    ObservedChild,
    ObservedDeployment,
)
from modelplane.operator.reconcile.rollout import plan_rollout
from modelplane.operator.reconcile.status import Observation, compute_status
from tests.integration.operator.fake_pods import ModelServerMetrics

NOW = 1_800_000_000.0
T0 = "2027-01-15T08:00:00Z"  # NOW
RECENT = "2027-01-15T07:59:50Z"  # 10 s before NOW: within a step's 60 s
BEFORE = "2027-01-15T07:58:00Z"  # 120 s before NOW: a step's 60 s are over
CANARY = RolloutSpec.model_validate(
    {"strategy": "Canary", "canary": {"weight": 10, "steps": [10, 50, 100], "stepSeconds": 60,
                                      "maxErrorRate": 0.05, "maxTtftP95Seconds": 2}}
)  # fmt: skip
ROLLING = RolloutSpec()


def deployment(template: str, want: int = 4, ready: int = 4, updated: int | None = None,
               stalled: bool = False) -> ObservedDeployment:  # fmt: skip
    conditions = (DeploymentCondition("Progressing", "False", "ProgressDeadlineExceeded",
                                      "no progress in 1800s"),) if stalled else ()  # fmt: skip
    return ObservedDeployment(
        generation=2, observed_generation=2, spec_replicas=want, replicas=want,
        ready_replicas=ready, updated_replicas=want if updated is None else updated,
        available_replicas=ready, template_hash=template, revision="v1", conditions=conditions,
    )  # fmt: skip


def status(phase: CanaryPhase = CanaryPhase.PROGRESSING, *, step: int = 1, weight: int = 0,
           started: str | None = None, target: str = "new") -> CanaryStatus:  # fmt: skip
    return CanaryStatus(phase=phase, revision="v2", template_hash=target, step=step, steps=3,
                        weight=weight, step_started_at=started)  # fmt: skip


def seen(
    *,
    stable: str | None = "old",
    canary: ObservedDeployment | None = None,
    previous: CanaryStatus | None = None,
    served: str | None = "v1",
    complete: bool = False,
    on_target: bool = True,
) -> CanaryObserved:
    return CanaryObserved(
        target_revision="v2", target_hash="new",
        stable=deployment(stable) if stable else None, stable_rollout_complete=complete,
        served_revision=served, canary=canary, canary_on_target=on_target, previous=previous,
    )  # fmt: skip


HEALTHY = CanaryMetrics(requests=200, errors=1, ttft_p95_s=0.4, first_tokens=200)
ERRORS = CanaryMetrics(requests=200, errors=30, ttft_p95_s=0.4, first_tokens=200)
SLOW = CanaryMetrics(requests=200, errors=0, ttft_p95_s=3.5, first_tokens=200)
FEW = CanaryMetrics(requests=4, errors=4, ttft_p95_s=None, first_tokens=4)
READY_1 = deployment("canary-new", want=1, ready=1)
READY_2 = deployment("canary-new", want=2, ready=2)

# (case, observed, spec, metrics) -> (active, replicas, weight, pinned, phase, step,
#                                     step started now?, event reason)
ROWS: list[tuple[str, CanaryObserved, RolloutSpec, CanaryMetrics | None, tuple[Any, ...]]] = [
    ("rolling update: no canary", seen(), ROLLING, None,
     (False, 0, 0, False, None, None, None, None)),
    ("switched to rolling mid-canary: canary goes, stable rolls",
     seen(previous=status(step=2, weight=10, started=RECENT)), ROLLING, HEALTHY,
     (False, 0, 0, False, None, None, None, None)),
    ("first rollout: nothing served to protect", seen(served=None), CANARY, None,
     (False, 0, 0, False, None, None, None, None)),
    ("no stable Deployment yet", seen(stable=None), CANARY, None,
     (False, 0, 0, False, None, None, None, None)),
    ("stable already runs the spec", seen(stable="new"), CANARY, None,
     (False, 0, 0, False, None, None, None, None)),
    ("a new template: the canary starts, no traffic yet", seen(), CANARY, None,
     (True, 1, 0, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("its replica is ready: 10% goes to it", seen(canary=READY_1, previous=status()), CANARY,
     None, (True, 1, 10, True, CanaryPhase.PROGRESSING, 1, True, "CanaryStep")),
    ("a replica on another template is not ready",
     seen(canary=READY_1, previous=status(), on_target=False), CANARY, None,
     (True, 1, 0, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("analysing, no metrics yet: holds",
     seen(canary=READY_1, previous=status(weight=10, started=BEFORE)), CANARY, None,
     (True, 1, 10, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("analysing, healthy but the dwell is not over: holds",
     seen(canary=READY_1, previous=status(weight=10, started=RECENT)), CANARY, HEALTHY,
     (True, 1, 10, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("dwell over but too few requests to judge: holds",
     seen(canary=READY_1, previous=status(weight=10, started=BEFORE)), CANARY, FEW,
     (True, 1, 10, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("dwell over, healthy: step 2 starts its replicas, 10% holds",
     seen(canary=READY_1, previous=status(weight=10, started=BEFORE)), CANARY, HEALTHY,
     (True, 2, 10, True, CanaryPhase.PROGRESSING, 2, None, None)),
    ("step 2's replicas ready: 50%",
     seen(canary=READY_2, previous=status(step=2, weight=10)), CANARY, None,
     (True, 2, 50, True, CanaryPhase.PROGRESSING, 2, True, "CanaryStep")),
    ("errors over maxErrorRate: abort at once",
     seen(canary=READY_2, previous=status(step=2, weight=50, started=RECENT)), CANARY, ERRORS,
     (False, 0, 0, True, CanaryPhase.ABORTED, 2, False, "CanaryAborted")),
    ("TTFT p95 over maxTtftP95Seconds: abort",
     seen(canary=READY_2, previous=status(step=2, weight=50, started=RECENT)), CANARY, SLOW,
     (False, 0, 0, True, CanaryPhase.ABORTED, 2, False, "CanaryAborted")),
    ("canary replicas never ready (deadline): abort",
     seen(canary=deployment("canary-new", 1, 0, stalled=True), previous=status()), CANARY, None,
     (False, 0, 0, True, CanaryPhase.ABORTED, 1, None, "CanaryAborted")),
    ("aborted: stays aborted, stable pinned, until the spec changes",
     seen(previous=status(CanaryPhase.ABORTED, step=2)), CANARY, None,
     (False, 0, 0, True, CanaryPhase.ABORTED, 2, None, None)),
    ("aborted, then another template: a new canary",
     seen(previous=status(CanaryPhase.ABORTED, step=2, target="other")), CANARY, None,
     (True, 1, 0, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("the template changed mid-canary: start over",
     seen(canary=READY_2, previous=status(step=2, weight=50, started=RECENT, target="other"),
          on_target=False),
     CANARY, HEALTHY, (True, 1, 0, True, CanaryPhase.PROGRESSING, 1, False, None)),
    ("the spec went back to the stable's template: canary goes",
     seen(stable="new", previous=status(step=2, weight=50, started=RECENT)), CANARY, HEALTHY,
     (False, 0, 0, False, None, None, None, None)),
    ("last step passed: promote, the stable takes the template",
     seen(canary=deployment("canary-new"), previous=status(step=3, weight=100, started=BEFORE)),
     CANARY, HEALTHY, (True, 4, 100, False, CanaryPhase.PROMOTING, 3, None, "CanaryStep")),
    ("promoting, the stable not rolled yet",
     seen(previous=status(CanaryPhase.PROMOTING, step=3, weight=100, started=BEFORE)),
     CANARY, None, (True, 4, 100, False, CanaryPhase.PROMOTING, 3, None, None)),
    ("promoting, the stable rolling",
     seen(stable="new", previous=status(CanaryPhase.PROMOTING, step=3, weight=100,
                                        started=BEFORE)),
     CANARY, None, (True, 4, 100, False, CanaryPhase.PROMOTING, 3, None, None)),
    ("promoted: traffic back to stable, canary goes",
     seen(stable="new", complete=True,
          previous=status(CanaryPhase.PROMOTING, step=3, weight=100, started=BEFORE)),
     CANARY, None, (False, 0, 0, False, None, None, None, "CanaryPromoted")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "spec", "metrics", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_canary_transitions(
    observed: CanaryObserved,
    spec: RolloutSpec,
    metrics: CanaryMetrics | None,
    expected: tuple[Any, ...],
) -> None:
    plan = plan_canary(observed, spec, metrics, NOW)
    active, replicas, weight, pinned, phase, step, started_now, event = expected
    assert (plan.active, plan.replicas, plan.weight, plan.pin_stable) == (
        active, replicas, weight, pinned,
    )  # fmt: skip
    assert (plan.status.phase if plan.status else None) == phase
    assert (plan.status.step if plan.status else None) == step
    if started_now is not None:
        assert plan.status is not None
        assert (plan.status.step_started_at == T0) is started_now
    assert (plan.event[1] if plan.event else None) == event
    if plan.status is not None and plan.status.phase is not CanaryPhase.ABORTED:
        assert plan.message.startswith(("canary step", "promoting revision v2"))


def test_the_progressing_message_names_the_step_and_weight() -> None:
    plan = plan_canary(seen(canary=READY_2, previous=status(step=2, weight=10)), CANARY, None, NOW)
    assert plan.message == "canary step 2/3: 50% of traffic to revision v2"


@pytest.mark.parametrize(
    ("metrics", "numbers"),
    [
        (ERRORS, "error ratio 0.150 (30 of 200 requests answered 5xx) exceeds maxErrorRate 0.05"),
        (SLOW, "TTFT p95 3.50s over 200 first tokens exceeds maxTtftP95Seconds 2"),
    ],
)
def test_an_abort_says_what_was_measured(metrics: CanaryMetrics, numbers: str) -> None:
    observed = seen(canary=READY_2, previous=status(step=2, weight=50, started=RECENT))
    plan = plan_canary(observed, CANARY, metrics, NOW)
    assert plan.status is not None and plan.status.message == plan.message
    assert plan.message == (
        f"canary of revision v2 aborted at step 2/3 (50% of traffic): {numbers}; "
        "all traffic is back on revision v1"
    )
    assert plan.event == ("Warning", "CanaryAborted", plan.message)


def test_a_steady_step_plans_the_same_status_every_time() -> None:
    """Nothing changes while a step dwells: the reconciler then writes nothing."""
    observed = seen(canary=READY_1, previous=status(weight=10, started=RECENT))
    first = plan_canary(observed, CANARY, HEALTHY, NOW)
    again = plan_canary(replace(observed, previous=first.status), CANARY, HEALTHY, NOW + 10)
    assert again == replace(first, event=None) and first.event is None


@pytest.mark.parametrize(
    ("weight", "steps", "shares"),
    [(10, [10, 50, 100], [10, 50, 100]), (5, [10, 50, 100], [5, 10, 50, 100]),
     (20, [10, 50, 100], [20, 50, 100]), (50, [100], [50, 100])],
)  # fmt: skip
def test_shares(weight: int, steps: list[int], shares: list[int]) -> None:
    spec = RolloutSpec.model_validate({"canary": {"weight": weight, "steps": steps}})
    assert canary_shares(spec.canary) == shares


@pytest.mark.parametrize(("stable", "weight", "replicas"), [(4, 10, 1), (4, 50, 2), (3, 50, 2),
                                                           (4, 100, 4), (0, 10, 1)])  # fmt: skip
def test_canary_replicas(stable: int, weight: int, replicas: int) -> None:
    assert canary_replicas(stable, weight) == replicas


def test_canary_metrics_add_the_pods_windows_up() -> None:
    """Two pods scraped twice: the requests, 5xx answers and first tokens in between."""

    def window(served: int, failed: int, ttft: float) -> ReplicaObservation:
        pod = ModelServerMetrics()
        pod.serve(3)
        before = parse_metrics(pod.text().decode(), at=0.0)
        pod.serve(served, ttft=ttft)
        pod.serve(failed, code=503)
        pod.serve(2, code=400)  # the client's fault, not the canary's
        return observe("p", parse_metrics(pod.text().decode(), at=10.0), before)

    metrics = canary_metrics([window(30, 2, 0.3), window(10, 0, 3.0),
                              ReplicaObservation.failed("gone", "HTTP 500")], 20)  # fmt: skip
    assert (metrics.requests, metrics.errors, metrics.first_tokens) == (46, 2, 40)
    assert metrics.error_ratio == pytest.approx(2 / 46)
    assert metrics.ttft_p95_s is not None and 2.5 < metrics.ttft_p95_s <= 5.0
    few = canary_metrics([window(5, 0, 0.3)], 20)
    assert few.ttft_p95_s is None and few.requests == 7


def test_a_plan_without_a_canary_is_the_default() -> None:
    assert plan_canary(seen(), ROLLING, None, NOW) == CanaryPlan()


# --- the children and the status a canary plan makes ------------------------------------


def test_the_canary_track_is_built_beside_the_stable_one() -> None:
    spec = LLMDeploymentSpec.model_validate({"model": {"source": "hf://o/m", "revision": "v2"}})
    children = build_children("chat", "llm", spec, OperatorConfig(), BuildOptions(
        replicas=4, canary=CanaryTrack(replicas=2, weight=50), stable_revision="v1"))  # fmt: skip
    by_key = {(c["kind"], c["metadata"]["name"]): c for c in children}
    stable, canary = by_key["Service", "chat"], by_key["Service", "chat-canary"]
    annotations = contract.ANNOTATION_TRAFFIC_WEIGHT, contract.ANNOTATION_REVISION
    assert [stable["metadata"]["annotations"][a] for a in annotations] == ["50", "v1"]
    assert [canary["metadata"]["annotations"][a] for a in annotations] == ["50", "v2"]
    assert canary["spec"]["selector"] == {contract.LABEL_LLMDEPLOYMENT: "chat",
                                          contract.LABEL_TRACK: "canary"}  # fmt: skip
    deployment = by_key["Deployment", "chat-canary"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["metadata"]["labels"][contract.LABEL_TRACK] == "canary"
    (config,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    ]
    assert config["configMap"]["name"] == "chat-canary-server-config"
    assert ("ConfigMap", "chat-canary-server-config") in by_key
    assert by_key["Deployment", "chat"]["spec"]["replicas"] == 4
    # Each track's pods have their own disruption budget: drains take one of each at a time.
    budgets = {n: by_key["PodDisruptionBudget", n]["spec"] for n in ("chat", "chat-canary")}
    assert {n: b["selector"]["matchLabels"][contract.LABEL_TRACK] for n, b in budgets.items()} == {
        "chat": "stable", "chat-canary": "canary"}  # fmt: skip
    assert budgets["chat-canary"]["maxUnavailable"] == 1
    for manifest in children:
        if manifest["metadata"]["name"].startswith("chat-canary"):
            kubernetes_validate.validate(
                manifest, kubernetes_validate.latest_version(), strict=True
            )


def test_a_pinned_stable_track_is_neither_applied_nor_deleted() -> None:
    def observed(kind: str, name: str) -> ObservedChild:
        return ObservedChild(kind, name, "old-hash")

    keys = [("Deployment", "chat"), ("ConfigMap", "chat-server-config"),
            ("Deployment", "chat-canary"), ("Service", "chat-canary"),
            ("ConfigMap", "chat-canary-server-config"),
            ("PodDisruptionBudget", "chat-canary")]  # fmt: skip
    running = {k: observed(*k) for k in keys}
    desired = [{"kind": "Deployment", "metadata": {"name": "chat", "annotations": {}},
                "spec": {"replicas": 2}}]  # fmt: skip
    pinned = {("Deployment", "chat"), ("ConfigMap", "chat-server-config")}
    plan = plan_children(desired, running, keep=pinned)
    assert plan.apply == [] and plan.rescale == {}
    # The canary goes traffic first: its Service, then its pods, then their settings/budget.
    assert plan.delete == [("Service", "chat-canary"), ("Deployment", "chat-canary"),
                           ("ConfigMap", "chat-canary-server-config"),
                           ("PodDisruptionBudget", "chat-canary")]  # fmt: skip


@pytest.mark.parametrize(
    ("plan", "phase", "progressing", "degraded"),
    [
        (plan_canary(seen(canary=READY_2, previous=status(step=2, weight=10)), CANARY, None, NOW),
         "Progressing", ("True", "CanaryProgressing"), ("False", "AsDesired")),
        (plan_canary(seen(canary=READY_2, previous=status(step=2, weight=50, started=RECENT)),
                     CANARY, ERRORS, NOW),
         "Degraded", ("False", "CanaryAborted"), ("True", "CanaryAborted")),
        (plan_canary(seen(previous=status(CanaryPhase.PROMOTING, step=3, weight=100,
                                          started=BEFORE)), CANARY, None, NOW),
         "Progressing", ("True", "CanaryPromoting"), ("False", "AsDesired")),
    ],
)  # fmt: skip
def test_status_while_a_canary_runs(
    plan: CanaryPlan, phase: str, progressing: tuple[str, str], degraded: tuple[str, str]
) -> None:
    stable = deployment("old")
    rollout = plan_rollout(target_revision="v2", target_template_hash="new", deployment=stable,
                           served_revision="v1")  # fmt: skip
    previous = LLMDeploymentStatus(served_revision="v1")
    result = compute_status(Observation(name="chat", namespace="llm", generation=2, now=T0,
                                        deployment=stable, rollout=rollout, canary=plan,
                                        previous=previous))  # fmt: skip
    found = {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}
    assert result["phase"] == phase and result["servedRevision"] == "v1"
    assert (found["Progressing"], found["Degraded"]) == (progressing, degraded)
    assert found["Ready"] == ("True", "ReplicasReady")
    assert plan.status is not None and result["canary"]["phase"] == plan.status.phase.value
