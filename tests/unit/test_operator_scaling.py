"""The autoscaler's wiring in the operator, as pure functions: plan, stored state, pods.

The restart cases run the real policy (`decide`) tick by tick, store its
state the way the operator does (only when `needs_storing`), and let a
"restarted operator" continue from the stored state with `resume`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from modelplane.api import contract
from modelplane.api.demand import DemandSignal, held_count
from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    AutoscalingTargets,
    Decision,
    PolicyState,
    ReplicaObservation,
    decide,
)
from modelplane.operator.autoscaler.controller import scrape_targets
from modelplane.operator.autoscaler.demand import answers_demand_now, held_demand, held_requests
from modelplane.operator.autoscaler.persistence import durable, needs_storing, resume
from modelplane.operator.autoscaler.plan import plan_autoscaling_off, plan_scaling
from modelplane.operator.kube.client import build_event
from modelplane.operator.reconcile.expectations import Expectations
from modelplane.operator.reconcile.pods import ObservedPod, observe_pod

BOUNDS = AutoscalingSpec(min_replicas=1, max_replicas=4)
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def decision(desired: int, *, limited: bool = False, reason: str = "why") -> Decision:
    return Decision(desired, "queueDepthPerReplica", reason, limited, PolicyState())


def limited_condition(status: str, reason: str, generation: int = 1) -> dict[str, Any]:
    return {"type": "ScalingLimited", "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": NOW, "observedGeneration": generation}  # fmt: skip


READY = {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "1/1",
         "lastTransitionTime": NOW, "observedGeneration": 1}  # fmt: skip
WITHIN = limited_condition("False", "DesiredWithinRange")
STEADY = {"scaleReason": "steady", "conditions": [READY, WITHIN]}


@pytest.mark.parametrize(
    ("decided", "current", "status", "replicas", "event", "written"),
    [
        # First decision: say why, and whether a bound holds it.
        (decision(1), 1, {}, None, None, {"scaleReason", "conditions"}),
        # Nothing new: nothing written.
        (decision(1), 1, STEADY, None, None, set()),
        # A different reason with the same count (numbers moved): still nothing.
        (decision(1, reason="other numbers"), 1, STEADY, None, None, set()),
        (decision(3), 1, STEADY, 3, "ScaledUp",
         {"lastScaleTime", "scaleReason", "conditions"}),  # desiredReplicas: the reconciler
        (decision(1), 3, STEADY, 1, "ScaledDown",
         {"lastScaleTime", "scaleReason", "conditions"}),  # desiredReplicas: the reconciler
        # A bound starts to hold: the condition turns, the count stays.
        (decision(4, limited=True), 4, {**STEADY, "desiredReplicas": 4}, None, None,
         {"conditions"}),
    ],
)  # fmt: skip
def test_scaling_plan(
    decided: Decision,
    current: int,
    status: dict[str, Any],
    replicas: int | None,
    event: str | None,
    written: set[str],
) -> None:
    plan = plan_scaling(decided, current_replicas=current, status=status, bounds=BOUNDS,
                        generation=1, now=LATER)  # fmt: skip
    assert plan.replicas == replicas
    assert (plan.event[0] if plan.event else None) == event
    assert set(plan.status) == written
    if plan.event:
        assert plan.event[1] == decided.reason == plan.status["scaleReason"]
        assert plan.direction == ("up" if event == "ScaledUp" else "down")
        assert plan.status["lastScaleTime"] == LATER
    # A scale writes spec.replicas, which makes generation 2; otherwise it stays 1.
    for condition in plan.status.get("conditions", []):
        scaled = condition["type"] == "ScalingLimited" and plan.replicas is not None
        assert condition["observedGeneration"] == (2 if scaled else 1)


@pytest.mark.parametrize(
    ("decided", "status", "reason", "message"),
    [
        (decision(4, limited=True, reason="capped"), "True", "TooManyReplicas", "capped"),
        (decision(1, limited=True, reason="held"), "True", "TooFewReplicas", "held"),
        (decision(2), "False", "DesiredWithinRange",
         "2 replica(s) wanted, within minReplicas 1 and maxReplicas 4"),
    ],
)  # fmt: skip
def test_scaling_limited_condition(
    decided: Decision, status: str, reason: str, message: str
) -> None:
    plan = plan_scaling(decided, current_replicas=3, status=STEADY, bounds=BOUNDS,
                        generation=2, now=LATER)  # fmt: skip
    ready, limited = plan.status["conditions"]
    assert ready == READY  # other writers' conditions untouched, in place
    assert (limited["status"], limited["reason"], limited["message"]) == (status, reason, message)
    # The count changes (3 -> 4, 1 or 2): the write of spec.replicas makes generation 3.
    assert limited["observedGeneration"] == 3
    # lastTransitionTime moves only when the status flips
    assert limited["lastTransitionTime"] == (NOW if status == "False" else LATER)


def test_scale_reason_follows_a_new_driver_but_not_new_numbers() -> None:
    same = plan_scaling(decision(2, reason="new numbers"), current_replicas=2, status=STEADY,
                        bounds=BOUNDS, generation=1, now=LATER)  # fmt: skip
    assert "scaleReason" not in same.status
    other = plan_scaling(decision(2, reason="no metrics"), current_replicas=2, status=STEADY,
                         bounds=BOUNDS, generation=1, now=LATER, driver_changed=True)  # fmt: skip
    assert other.status == {"scaleReason": "no metrics"}


def test_a_new_generation_refreshes_the_condition() -> None:
    plan = plan_scaling(decision(1), current_replicas=1, status=STEADY, bounds=BOUNDS,
                        generation=2, now=LATER)  # fmt: skip
    assert [c["observedGeneration"] for c in plan.status["conditions"]] == [1, 2]


def test_switching_autoscaling_off_removes_its_fields_once() -> None:
    status = {**STEADY, "lastScaleTime": NOW, "desiredReplicas": 2}
    assert plan_autoscaling_off(status) == {
        "scaleReason": None,
        "lastScaleTime": None,
        "conditions": [READY],
    }
    assert plan_autoscaling_off({"conditions": [READY], "desiredReplicas": 2}) == {}


# --- the stored state --------------------------------------------------------

SPEC = AutoscalingSpec(
    min_replicas=1,
    max_replicas=4,
    targets=AutoscalingTargets(queue_depth_per_replica=2),
    scale_down_delay_seconds=300,
)


def replicas(count: int, *, waiting: float = 0, running: float = 1) -> list[ReplicaObservation]:
    return [ReplicaObservation(f"r{i}", waiting=waiting, running=running) for i in range(count)]


class Operator:
    """The operator's loop around the policy: decide, apply, store when durable state changed."""

    def __init__(self, state: PolicyState, stored: PolicyState | None, current: int) -> None:
        self.state, self.stored, self.current = state, stored, current
        self.writes = 0

    def tick(self, now: float, **load: float) -> Decision:
        decided = decide(replicas(self.current, **load), self.current, SPEC, self.state, now)
        self.state, self.current = decided.state, decided.desired_replicas
        if needs_storing(self.state, self.stored):
            self.stored, self.writes = self.state, self.writes + 1
        return decided


NOW_S = 1_800_000_000.0


def test_a_steady_load_stores_the_state_once() -> None:
    op = Operator(PolicyState(), None, 2)
    for t in range(0, 200, 10):
        op.tick(NOW_S + t, waiting=1, running=3)
    assert op.writes == 1


def test_only_clock_driven_fields_are_not_durable() -> None:
    op = Operator(PolicyState(), None, 2)
    first = op.tick(NOW_S, running=3).state
    second = op.tick(NOW_S + 10, running=3).state
    assert first != second and durable(first) == durable(second)
    quiet = op.tick(NOW_S + 20, running=0).state  # activity stopped: its time is kept
    assert durable(quiet) != durable(second)


@pytest.mark.parametrize("downtime", [5.0, 120.0, 1000.0])
def test_a_restart_keeps_the_timer_and_never_scales_down_early(downtime: float) -> None:
    """3 replicas carrying one replica's load: scale-down is due after 300 s of history."""
    op = Operator(PolicyState(), None, 3)
    for t in range(0, 100, 10):
        op.tick(NOW_S + t, running=1)
    since = op.state.recording_since
    assert since == NOW_S and op.current == 3
    # The operator stops after +90 and a new one starts `downtime` seconds later.
    restarted = Operator(resume(op.stored or PolicyState(), NOW_S + 90 + downtime),
                         op.stored, op.current)  # fmt: skip
    first = NOW_S + 90 + downtime
    scaled_at = None
    for t in range(0, 600, 10):
        d = restarted.tick(first + t, running=1)
        if d.desired_replicas < 3:
            scaled_at = first + t
            break
    assert restarted.state.recording_since == since  # the timer went on
    assert scaled_at is not None and scaled_at >= NOW_S + 300  # never before it is due
    assert scaled_at <= max(NOW_S + 300, first) + 10  # and not a full delay after the restart


def test_a_long_downtime_does_not_forget_the_last_need() -> None:
    """The need stored last held until the old operator stopped: it still counts."""
    op = Operator(PolicyState(), None, 2)
    for t in range(0, 400, 10):
        op.tick(NOW_S + t, waiting=1, running=2)  # both replicas needed
    assert op.current == 2 and op.writes == 1
    now = NOW_S + 390 + 1000  # restarted long after; the load fell meanwhile
    restarted = Operator(resume(op.stored or PolicyState(), now), op.stored, 2)
    assert restarted.tick(now, running=1).desired_replicas == 2
    for t in range(10, 310, 10):  # the need of 2 (padded to 3) stays in the window
        assert restarted.tick(now + t, running=1).desired_replicas == 2, t
    assert restarted.tick(now + 310, running=1).desired_replicas == 1


def test_a_restart_does_not_scale_to_zero_a_model_that_was_just_busy() -> None:
    spec = SPEC.model_copy(update={"min_replicas": 0, "scale_down_delay_seconds": 60})
    state = PolicyState()
    stored = None
    for t in range(0, 300, 10):  # busy for five minutes, stored once
        state = decide(replicas(1, running=2), 1, spec, state, NOW_S + t).state
        if needs_storing(state, stored):
            stored = state
    assert stored is not None and stored.last_active_at == NOW_S  # stale: written at the start
    now = NOW_S + 300  # restarted; the load has just stopped
    after = decide(replicas(1, running=0), 1, spec, resume(stored, now), now)
    assert after.desired_replicas == 1


# --- pods ------------------------------------------------------------------------


def pod_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat-7d9-x", "labels": {contract.LABEL_TRACK: "canary"}},
        "spec": {"containers": [{"name": "server", "ports": [
            {"name": "metrics-other", "containerPort": 9000},
            {"name": "http", "containerPort": 8000},
        ]}]},
        "status": status,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "ready", "url"),
    [
        ({}, False, None),  # pending: no address yet
        ({"podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "False"}]},
         False, "http://10.1.2.3:8000/metrics"),
        ({"podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "True"}]},
         True, "http://10.1.2.3:8000/metrics"),
        ({"podIP": "fd00::5", "conditions": [{"type": "Ready", "status": "True"}]},
         True, "http://[fd00::5]:8000/metrics"),
    ],
)  # fmt: skip
def test_observed_pod(status: dict[str, Any], ready: bool, url: str | None) -> None:
    pod = observe_pod(pod_body(**status))
    assert (pod.serving, pod.metrics_url, pod.track) == (ready, url, "canary")


def test_a_pod_without_a_named_port_is_scraped_on_the_server_port() -> None:
    pod = observe_pod({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.1"}})
    assert pod.metrics_url == f"http://10.0.0.1:{contract.SERVER_PORT}/metrics"
    assert pod.track == contract.TRACK_STABLE


def test_scrape_targets_take_one_track_and_skip_terminating_pods() -> None:
    def pod(name: str, track: str, *, ready: bool = True, gone: bool = False) -> ObservedPod:
        return ObservedPod(name, track, "10.0.0.1", 8000, ready, gone)

    pods = [pod("a", "stable"), pod("b", "stable", ready=False), pod("c", "stable", gone=True),
            pod("d", "canary")]  # fmt: skip
    targets = scrape_targets(pods, "stable")
    assert [(t.name, t.ready) for t in targets] == [("a", True), ("b", False)]


def test_held_demand_counts_at_zero_when_newer_than_the_last_scale() -> None:
    held = DemandSignal("2026-01-01T00:00:00+00:00", None, lease_seconds=120)
    at = 1767225600.0
    now = at + 1
    assert held_demand(held, 0, None, now) == at  # created at zero: any demand wakes it
    assert held_demand(held, 0, at - 60, now) == at  # held after it went to zero
    assert held_demand(held, 0, at + 60, now) is None  # held before: already answered
    assert held_demand(held, 1, None, now) is None  # replicas run: they speak for the load
    assert held_demand(held, 0, None, at + 121) is None  # every held request timed out
    assert held_demand(DemandSignal(None, None), 0, None, now) is None
    assert held_demand(None, 0, None, now) is None  # no Lease yet


def test_a_demand_write_is_decided_at_once_only_while_no_replica_serves() -> None:
    written = DemandSignal("2026-01-01T00:00:02.500000Z", "1")
    loading = ObservedPod("a", "stable", None, 8000, False, False)
    serving = ObservedPod("b", "stable", "10.0.0.2", 8000, True, False)
    leaving = ObservedPod("c", "stable", "10.0.0.3", 8000, True, True)
    assert answers_demand_now(written, None, [])  # at zero
    assert answers_demand_now(written, None, [loading, leaving])  # waking: none serves
    assert answers_demand_now(written, "2026-01-01T00:00:00.100000Z", [loading])  # a new write
    assert not answers_demand_now(written, written.requested_at, [])  # answered
    assert not answers_demand_now(written, None, [loading, serving])  # its metrics decide
    assert not answers_demand_now(DemandSignal(None, None), None, [])  # a Lease with no time
    assert not answers_demand_now(None, None, [])


AT_TEXT, AT_EPOCH = "2026-01-01T00:00:00Z", 1767225600.0


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("7", 7),
        (" 12\n", 12),
        ("0", 0),
        (None, None),
        ("", None),
        ("-3", None),
        ("2.5", None),
        ("many", None),
        ("\u0663", None),  # a digit, but not an ASCII one
        ("1" * 40, None),  # no count a gateway holds
    ],
)
def test_the_held_count_annotation_reads_as_a_count_or_unknown(
    text: str | None, count: int | None
) -> None:
    assert held_count(text) == count


@pytest.mark.parametrize(
    ("case", "signal", "demand_counts", "woke_at", "held"),
    [
        ("the demand wakes the model now", DemandSignal(AT_TEXT, "4"), True, None, (4, AT_EPOCH)),
        (
            "written during the wake-up under way",
            DemandSignal(AT_TEXT, "9"),
            False,
            AT_EPOCH - 3,
            (9, AT_EPOCH),
        ),
        (
            "written at the wake-up itself",
            DemandSignal(AT_TEXT, "1"),
            False,
            AT_EPOCH,
            (1, AT_EPOCH),
        ),
        ("from an earlier wake-up", DemandSignal(AT_TEXT, "9"), False, AT_EPOCH + 60, None),
        ("no wake-up under way (replicas ready)", DemandSignal(AT_TEXT, "9"), False, None, None),
        ("a count without a readable time", DemandSignal("yesterday", "9"), True, None, None),
        ("a time, no count", DemandSignal(AT_TEXT, None), True, None, None),
        ("a garbled count", DemandSignal(AT_TEXT, "lots"), True, None, None),
        ("no Lease", None, True, None, None),
    ],
)
def test_the_held_count_goes_to_the_policy_only_for_the_wake_up_it_belongs_to(
    case: str,
    signal: DemandSignal | None,
    demand_counts: bool,
    woke_at: float | None,
    held: tuple[int, float] | None,
) -> None:
    assert held_requests(signal, demand_counts, woke_at) == held, case


# --- what goes to the API ---------------------------------------------------------


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_the_scaling_event_is_a_valid_core_event(version: str) -> None:
    llmd = {"apiVersion": contract.API_VERSION, "kind": contract.KIND,
            "metadata": {"name": "chat", "namespace": "llm", "uid": "u-1"}}  # fmt: skip
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    event = build_event(llmd, "Normal", "ScaledUp", "1 -> 3: " + "x" * 2000, at)
    kubernetes_validate.validate(event, version, strict=True)
    involved = {"apiVersion": contract.API_VERSION, "kind": contract.KIND, "name": "chat",
                "namespace": "llm", "uid": "u-1"}  # fmt: skip
    assert event["involvedObject"] == involved
    assert event["eventTime"] == "2026-01-02T03:04:05.678901Z"
    assert event["lastTimestamp"] == "2026-01-02T03:04:05Z"
    assert len(event["message"]) == 1024 and event["message"].endswith("...")


def test_status_writes_of_the_reconciler_and_the_autoscaler_overlay_together() -> None:
    expect = Expectations(clock=lambda: 0.0)
    expect.expect_status(OWNER, {"phase": "Ready", "conditions": ["a"]})
    expect.expect_status(OWNER, {"scaleReason": "r", "conditions": ["a", "limited"]})
    seen = {"phase": "Loading", "conditions": []}
    assert expect.status(OWNER, seen) == {
        "phase": "Ready", "scaleReason": "r", "conditions": ["a", "limited"],
    }  # fmt: skip
    assert expect.status(OWNER, {"phase": "Ready", "scaleReason": "r",
                                 "conditions": ["a", "limited"]})["phase"] == "Ready"  # fmt: skip


OWNER = ("llm", "chat")
