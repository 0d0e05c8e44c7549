"""The autoscaling policy, behaviour by behaviour, as tables of situations and decisions.

Pure function tests: observations in (built as the collector builds them),
desired replicas, the driving target, the reason and the ScalingLimited flag
out. Timelines call the policy every 10 s, like the operator's timer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from modelplane.api.demand import demand_time
from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    AutoscalingTargets,
    Decision,
    PolicyState,
    ReplicaObservation,
    decide,
)
from tests.unit.autoscaler.builders import replica, ttft_window

NOW = 1_000_000.0
ALL_TARGETS = AutoscalingTargets(
    ttft_p95_seconds=1.0, queue_depth_per_replica=4, kv_cache_utilization=0.8, gpu_utilization=0.9
)
SPEC = AutoscalingSpec(min_replicas=1, max_replicas=8, targets=ALL_TARGETS)
KV_ONLY = AutoscalingSpec(
    min_replicas=1, max_replicas=8, targets=AutoscalingTargets(kv_cache_utilization=0.8)
)
SLOW = ttft_window(*[3.0] * 30)  # p95 far past a 1 s target
FAST = ttft_window(*[0.2] * 30)  # well under it


def fleet(n: int, **metrics: float) -> list[ReplicaObservation]:
    return [replica(f"r{i}", **metrics) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "observations", "state", "desired", "driver"),
    [
        (
            "KV cache over target: proportional",
            fleet(2, kv=0.9, running=10),
            PolicyState(),
            3,  # 2 x 0.9 / 0.8 = 2.25
            "kvCacheUtilization",
        ),
        (
            "queue over target, knee not yet known: proportional to what each replica holds",
            fleet(2, kv=0.3, running=10, waiting=20),
            PolicyState(),
            5,  # 2 x (10 + 20) / (10 + 4) = 4.3
            "queueDepthPerReplica",
        ),
        (
            "TTFT past the target, knee not yet known: doubles at most",
            [replica("r0", ttft=SLOW, running=5), replica("r1", ttft=SLOW, running=5)],
            PolicyState(),
            4,
            "ttftP95Seconds",
        ),
        (
            "knee known: arrivals over the learned per-replica rate",
            fleet(2, kv=0.2, running=8, arrived=8.0, finished=8.0),
            PolicyState(capacity_rps=5.0),
            4,  # 16 req/s / 5 = 3.2
            "ttftP95Seconds",
        ),
        (
            "GPU utilisation over target",
            fleet(2, kv=0.1, running=3, gpu=0.99),
            PolicyState(),
            3,  # 2 x 0.99 / 0.9 = 2.2
            "gpuUtilization",
        ),
        (
            "most demanding target wins: queue (5) over KV (3)",
            fleet(2, kv=0.9, running=10, waiting=20),
            PolicyState(),
            5,
            "queueDepthPerReplica",
        ),
    ],
)
def test_scales_up_at_once_to_the_most_demanding_target(
    case: str,
    observations: list[ReplicaObservation],
    state: PolicyState,
    desired: int,
    driver: str,
) -> None:
    decision = decide(observations, 2, SPEC, state, NOW)
    assert (decision.desired_replicas, decision.driver) == (desired, driver), case
    assert f"2 -> {desired}" in decision.reason
    assert not decision.limited


NEAR_KNEE = ttft_window(*[0.9] * 30)  # p95 past 80% of a 1 s target, within the target


@pytest.mark.parametrize(
    ("case", "observations", "current", "state", "capacity"),
    [
        (
            "fleet p95 past the target: all the way to 90% of what it finished",
            [replica(ttft=SLOW, running=40, finished=10.0)],
            1,
            PolicyState(),
            9.0,
        ),
        (
            "past the target again, at a lower rate: all the way down",
            [replica(ttft=SLOW, finished=6.0)],
            1,
            PolicyState(capacity_rps=9.0),
            5.4,
        ),
        (
            "past the knee, within the target: halfway (one window is noisy)",
            [replica(ttft=NEAR_KNEE, finished=6.0)],
            1,
            PolicyState(capacity_rps=9.0),
            (9.0 + 5.4) / 2,
        ),
        (
            "hot while a replica loads: the ready one carries more than its share",
            [replica(ttft=SLOW, finished=6.0), ReplicaObservation.still_loading("new")],
            2,
            PolicyState(capacity_rps=9.0),
            9.0,
        ),
        (
            "cool for one window only: nothing proven yet, no probe",
            [replica(ttft=FAST, finished=8.0)],
            1,
            PolicyState(capacity_rps=9.0),
            9.0,
        ),
        (
            "cool for 30 s and busy near the estimate: it creeps up",
            [replica(ttft=FAST, finished=8.0)],
            1,
            PolicyState(capacity_rps=9.0, cool_since=NOW - 30),
            9.0 * 1.05,
        ),
        (
            "but never past the rate at which the fleet last broke the target",
            [replica(ttft=FAST, finished=8.0)],
            1,
            PolicyState(capacity_rps=9.0, cool_since=NOW - 30, hot_rps=9.2),
            9.2,
        ),
        (
            "a KV cache near its target is no room to spare: no probe",
            [replica(ttft=FAST, finished=8.0, kv=0.7)],
            1,
            PolicyState(capacity_rps=9.0, cool_since=NOW - 30),
            9.0,
        ),
        (
            "one replica past the knee in a fleet well under it: its few first tokens are noise",
            [
                replica("r0", ttft=ttft_window(*[0.2] * 25, *[0.9] * 5), finished=3.0),
                replica("r1", ttft=ttft_window(*[0.2] * 200), finished=3.0),
            ],
            2,
            PolicyState(capacity_rps=9.0),
            9.0,
        ),
        (
            "cool and idle: it stays",
            [replica(ttft=FAST, finished=2.0)],
            1,
            PolicyState(capacity_rps=9.0, cool_since=NOW - 30),
            9.0,
        ),
    ],
)
def test_the_replicas_teach_the_policy_their_knee(
    case: str,
    observations: list[ReplicaObservation],
    current: int,
    state: PolicyState,
    capacity: float,
) -> None:
    decision = decide(observations, current, SPEC, state, NOW)
    assert decision.state.capacity_rps == pytest.approx(capacity), case


def test_a_breach_under_load_is_remembered_as_a_ceiling() -> None:
    """Offered 6 req/s and broke the target: 6 req/s is a ceiling from now on."""
    hot = [replica(ttft=SLOW, finished=6.0, arrived=6.0)]
    decision = decide(hot, 1, SPEC, PolicyState(capacity_rps=9.0), NOW)
    assert decision.state.capacity_rps == pytest.approx(5.4)  # 90% of what it finished
    assert decision.state.hot_rps == 6.0


@pytest.mark.parametrize(
    ("case", "hot", "state", "capacity"),
    [
        (
            "finishing 6 req/s with 1 new: the knee it had stays, no ceiling",
            replica(ttft=SLOW, finished=6.0, arrived=1.0),
            PolicyState(capacity_rps=9.0),
            9.0,
        ),
        (
            "200 waiting from a start from zero, 2 req/s new: a backlog, not the load",
            replica(ttft=SLOW, finished=2.0, arrived=2.0, waiting=200),
            PolicyState(capacity_rps=9.0),
            9.0,
        ),
        (
            "no knee yet: half of what it finishes at full batch, over the proven 2.4",
            replica(ttft=SLOW, finished=8.0, arrived=2.0, waiting=200),
            PolicyState(proven_rps=2.4),
            4.0,
        ),
        (
            "no knee yet, and half its completions under the proven level: none",
            replica(ttft=SLOW, finished=4.0, arrived=1.0, waiting=200),
            PolicyState(proven_rps=2.4),
            None,
        ),
    ],
)
def test_working_off_a_backlog_teaches_no_knee(
    case: str, hot: ReplicaObservation, state: PolicyState, capacity: float | None
) -> None:
    """Replicas that run hot only because of requests queued before the window (held
    through a start from zero, or left by a burst) say nothing of the load they carry:
    the knee is neither cut nor capped by them."""
    decision = decide([hot], 1, SPEC, state, NOW)
    assert decision.state.capacity_rps == (
        pytest.approx(capacity) if capacity is not None else None
    ), case
    assert decision.state.hot_rps is None, case


def test_a_queue_that_builds_within_the_window_is_the_load() -> None:
    """5 waiting on a replica offered 6 req/s for 10 s: the load outruns it, the knee drops."""
    hot = [replica(ttft=SLOW, finished=5.0, arrived=6.0, waiting=5)]
    state = PolicyState(capacity_rps=9.0, last_decision_at=NOW - 10)
    decision = decide(hot, 1, SPEC, state, NOW)
    assert decision.state.capacity_rps == pytest.approx(0.9 * 6.0)


def test_one_slow_prompt_is_not_a_knee() -> None:
    few = ttft_window(3.0, *[0.2] * 10)  # 11 first tokens: too few to judge
    decision = decide([replica(ttft=few, finished=1.1)], 1, SPEC, PolicyState(), NOW)
    assert decision.state.capacity_rps is None
    assert decision.desired_replicas == 1


@pytest.mark.parametrize(
    ("case", "arrived", "desired", "burst"),
    [
        ("need 1.4x the replicas asked for: a plain scale-up", 13.0, 3, False),
        ("need 4x: a burst, acted on at once and held", 40.0, 8, True),
    ],
)
def test_bursts_scale_at_once_and_hold_off_scale_down(
    case: str, arrived: float, desired: int, burst: bool
) -> None:
    observations = fleet(2, kv=0.2, running=10, arrived=arrived / 2, finished=4.0)
    state = PolicyState(capacity_rps=5.0)
    decision = decide(observations, 2, SPEC, state, NOW)
    assert decision.desired_replicas == desired, case
    assert ("burst" in decision.reason) is burst
    assert (decision.state.burst_until == NOW + 3600) is burst  # an hour's memory
    assert decision.state.bursts == (((NOW, arrived),) if burst else ())
    if burst:
        # Ten seconds later the spike is gone: capacity for its peak stays.
        calm = fleet(8, kv=0.05, running=1, arrived=0.5, finished=0.5)
        later = decide(calm, 8, SPEC, replace(decision.state, recording_since=0.0), NOW + 10)
        assert (later.desired_replicas, later.driver) == (8, "burst")
        assert "after a burst, capacity for 40.0 req/s (8 replicas)" in later.reason


def test_a_burst_that_comes_back_renews_the_hour() -> None:
    state = PolicyState(capacity_rps=5.0, bursts=((NOW - 1200, 30.0),), burst_until=NOW + 2400)
    spike = fleet(2, kv=0.2, running=10, arrived=20.0, finished=4.0)
    decision = decide(spike, 2, SPEC, state, NOW)
    assert decision.state.bursts == ((NOW - 1200, 30.0), (NOW, 40.0))
    assert decision.state.burst_until == NOW + 3600


@pytest.mark.parametrize(
    ("case", "arrived", "desired", "driver"),
    [
        ("need within what is loading: wait for it", 4.4, 4, "loading"),
        ("need grew past 1.25x what was asked for: add", 6.5, 7, "ttftP95Seconds"),
    ],
)
def test_loading_replicas_are_waited_for_unless_the_breach_grows(
    case: str, arrived: float, desired: int, driver: str
) -> None:
    # Scaled 1 -> 4 for a need of 4.0 a moment ago; one replica is ready.
    state = PolicyState(capacity_rps=1.0, scaled_for=4.0, last_scale_up_at=NOW - 10)
    observations = [
        replica("r0", kv=0.5, running=20, arrived=arrived, finished=1.0),
        *(ReplicaObservation.still_loading(f"new{i}") for i in range(3)),
    ]
    decision = decide(observations, 4, SPEC, state, NOW)
    assert (decision.desired_replicas, decision.driver) == (desired, driver), case


def test_loading_replicas_are_no_capacity_and_not_measured() -> None:
    observations = [ReplicaObservation.still_loading("a"), ReplicaObservation.still_loading("b")]
    decision = decide(observations, 2, SPEC, PolicyState(), NOW)
    assert (decision.desired_replicas, decision.driver) == (2, "loading")
    assert "none ready" in decision.reason


def run_timeline(
    spec: AutoscalingSpec,
    start: int,
    load: Callable[[float], list[ReplicaObservation]],
    ticks: int,
    state: PolicyState | None = None,
    start_at: float = NOW,
) -> tuple[list[tuple[float, Decision]], PolicyState]:
    """Decide every 10 s, applying each decision, as the operator's timer would."""
    replicas, state = start, state or PolicyState()
    history = []
    for i in range(ticks):
        now = start_at + 10 * i
        decision = decide(load(now)[:replicas] or [], replicas, spec, state, now)
        history.append((now, decision))
        replicas, state = decision.desired_replicas, decision.state
    return history, state


def kv_load(
    busy_until: float, busy: float = 0.7, quiet: float = 0.25
) -> Callable[[float], list[ReplicaObservation]]:
    """Four replicas' worth of KV usage until `busy_until`, then headroom."""

    def load(now: float) -> list[ReplicaObservation]:
        level = busy if now < busy_until else quiet
        return fleet(8, kv=level, running=5)

    return load


def first_change(history: Sequence[tuple[float, Decision]], start: int) -> tuple[float, int]:
    return next((t, d.desired_replicas) for t, d in history if d.desired_replicas != start)


def test_scale_down_waits_for_sustained_headroom_and_keeps_what_the_load_needs() -> None:
    drop = NOW + 100
    history, _ = run_timeline(KV_ONLY, 4, kv_load(drop), ticks=60)
    when, to = first_change(history, 4)
    assert when - drop >= 300  # a full scaleDownDelaySeconds of headroom first
    assert when - drop <= 310
    assert to == 2  # 4 x 0.25 / 0.8 = 1.25 needs 2, not 1
    assert "the largest need of the last 300s" in dict(history)[when].reason


def test_one_busy_tick_restarts_the_scale_down_wait() -> None:
    drop, blip = NOW + 100, NOW + 250
    quiet = kv_load(drop)

    def load(now: float) -> list[ReplicaObservation]:
        return fleet(8, kv=0.7, running=5) if now == blip else quiet(now)

    history, _ = run_timeline(KV_ONLY, 4, load, ticks=70)
    when, _ = first_change(history, 4)
    assert when - blip >= 300


@pytest.mark.parametrize("gap", [10, 600], ids=["quick restart", "long outage"])
def test_state_survives_an_operator_restart(gap: int) -> None:
    """The stored state (JSON on the resource) keeps the scale-down timer; a long
    outage starts it over instead of scaling down on a single fresh sample."""
    drop = NOW + 100
    load = kv_load(drop)
    uninterrupted, _ = run_timeline(KV_ONLY, 4, load, ticks=60)
    before, state = run_timeline(KV_ONLY, 4, load, ticks=35)  # up to 50 s before it
    stored = json.loads(json.dumps(state.to_dict()))  # through the API server and back
    resumed_at = before[-1][0] + gap
    after, _ = run_timeline(
        KV_ONLY,
        before[-1][1].desired_replicas,
        load,
        ticks=40,
        state=PolicyState.from_dict(stored),
        start_at=resumed_at,
    )
    when, _ = first_change(after, 4)
    if gap == 10:
        assert when == first_change(uninterrupted, 4)[0] + gap - 10
    else:
        assert when - resumed_at >= 300


def test_a_lost_state_never_scales_down_early() -> None:
    history, _ = run_timeline(KV_ONLY, 4, kv_load(NOW - 1000), ticks=35)
    assert all(d.desired_replicas == 4 for _, d in history[:30])  # 300 s of its own history


@pytest.mark.parametrize(
    "stored",
    [
        None,
        {},
        {"version": 99},
        {"version": 1, "recent_needs": "garbage"},
        {"version": 1, "capacity_rps": -1},
        {"version": 1, "bursts": [[1.0, "nan"]]},
        {"version": 1, "hot_rps": 0},
        {"version": 1, "cool_since": "soon"},
    ],
)
def test_unreadable_state_is_a_fresh_one(stored: dict[str, object] | None) -> None:
    assert PolicyState.from_dict(stored) == PolicyState()


def test_state_is_json_and_round_trips() -> None:
    state = PolicyState(
        recent_needs=((NOW - 20, 5), (NOW, 3)),
        recording_since=NOW - 400,
        last_decision_at=NOW,
        scaled_for=4.5,
        burst_until=NOW + 30,
        bursts=((NOW - 900, 30.5), (NOW - 100, 41.25)),
        load_s=31.5,
        loading_since=NOW - 5,
        woke_at=NOW - 60,
        capacity_rps=7.5,
        proven_rps=4.25,
        cool_since=NOW - 40,
        hot_rps=9.5,
        zero_since=None,
    )
    assert PolicyState.from_json(state.to_json()) == state


def test_the_arrival_samples_are_neither_stored_nor_compared() -> None:
    """A sample per decision: storing them would make every tick an API write."""
    state = PolicyState(capacity_rps=7.5, rates=((NOW - 10, 12.5), (NOW, 13.0)))
    assert "rates" not in state.to_dict()
    assert PolicyState.from_json(state.to_json()).rates == ()
    assert replace(state, rates=()) == state


def idle(now: float) -> list[ReplicaObservation]:
    return fleet(2, kv=0.0, running=0)


@pytest.mark.parametrize(
    ("min_replicas", "desired", "driver", "limited"),
    [(0, 0, "idle", False), (1, 1, "kvCacheUtilization", True)],
)
def test_scale_to_zero_after_idle_only_when_allowed(
    min_replicas: int, desired: int, driver: str, limited: bool
) -> None:
    spec = KV_ONLY.model_copy(update={"min_replicas": min_replicas})
    history, state = run_timeline(spec, 1, idle, ticks=32)
    final = history[-1][1]
    assert (final.desired_replicas, final.driver, final.limited) == (desired, driver, limited)
    assert all(d.desired_replicas == 1 for _, d in history[:29])  # not before 300 s idle
    if desired == 0:
        assert state.zero_since == first_change(history, 1)[0]
    else:
        assert "held at minReplicas 1" in final.reason


TO_ZERO = KV_ONLY.model_copy(update={"min_replicas": 0})


@pytest.mark.parametrize(
    ("case", "state", "demand_at", "desired", "zero_since"),
    [
        (
            "the gateway holds requests since after the scale-to-zero",
            PolicyState(zero_since=NOW - 1000, last_decision_at=NOW - 10),
            NOW - 5,
            1,
            NOW - 1000,
        ),
        (
            "demand recorded before the scale-to-zero is old news",
            PolicyState(zero_since=NOW - 1000, last_decision_at=NOW - 10),
            NOW - 2000,
            0,
            NOW - 1000,
        ),
        (
            "no demand recorded",
            PolicyState(zero_since=NOW - 1000, last_decision_at=NOW - 10),
            None,
            0,
            NOW - 1000,
        ),
        (
            "zero_since unset (found at zero): demand since the last decision wakes it",
            PolicyState(last_decision_at=NOW - 10),
            NOW - 5,
            1,
            None,
        ),
        (
            "zero_since unset: demand older than the last decision was there before; "
            "at zero from now on",
            PolicyState(last_decision_at=NOW - 10),
            NOW - 500,
            0,
            NOW,
        ),
        (
            "no decision yet (a lost state): the annotation may be new, so it wakes",
            PolicyState(),
            NOW - 500,
            1,
            None,
        ),
        ("no decision yet and no demand: at zero from now on", PolicyState(), None, 0, NOW),
    ],
)
def test_scale_from_zero_on_held_demand(
    case: str,
    state: PolicyState,
    demand_at: float | None,
    desired: int,
    zero_since: float | None,
) -> None:
    decision = decide([], 0, TO_ZERO, state, NOW, demand_at=demand_at)
    assert decision.desired_replicas == desired, case
    assert decision.driver == ("demand" if desired else "idle"), case
    assert decision.state.zero_since == zero_since, case


def run_with_demand(
    start: int,
    ready_from: float,
    demand_at: float | None,
    ticks: int,
    state: PolicyState,
    start_at: float = NOW,
) -> tuple[list[tuple[float, Decision]], PolicyState]:
    """Every 10 s, with the gateway's annotation passed as it stands (never removed).

    Replicas load until `ready_from`, then serve nothing (the held requests
    went away): idle, with an empty KV cache.
    """
    replicas, history = start, []
    for i in range(ticks):
        now = start_at + 10 * i
        observations = [
            ReplicaObservation.still_loading(f"r{j}")
            if now < ready_from
            else replica(f"r{j}", kv=0.0, arrived=0.0, finished=0.0)
            for j in range(replicas)
        ]
        decision = decide(observations, replicas, TO_ZERO, state, now, demand_at=demand_at)
        history.append((now, decision))
        replicas, state = decision.desired_replicas, decision.state
    return history, state


@pytest.mark.parametrize(
    ("case", "start", "state"),
    [
        (
            "woken from a known zero; its requests went away while it loaded",
            0,
            PolicyState(zero_since=NOW - 1000, last_decision_at=NOW - 10),
        ),
        ("woken with no state at all (started at zero, or the state was lost)", 0, PolicyState()),
        (
            "serving when the annotation was written, then idle",
            1,
            PolicyState(last_decision_at=NOW - 10, recording_since=NOW - 1000),
        ),
    ],
)
def test_the_annotation_that_woke_a_model_neither_keeps_it_up_nor_wakes_it_again(
    case: str, start: int, state: PolicyState
) -> None:
    """The gateway's annotation stays on the resource; the policy sees it every tick."""
    demand = NOW - 5
    history, state = run_with_demand(start, NOW + 60, demand, ticks=60, state=state)
    assert history[0][1].desired_replicas == 1, case
    went, _ = first_change(history[1:], 1)
    # Zero by the idle rule only, a full scaleDownDelaySeconds after the last activity
    # (the wake-up), never by an ordinary scale-down before it; and it says when.
    assert went - NOW >= 300, case
    assert dict(history)[went].driver == "idle", case
    assert state.zero_since == went, case
    assert all(d.desired_replicas == 0 for t, d in history if t >= went), case
    # The old annotation wakes nothing; a newer one does.
    later = went + 600
    for demand_at, desired in ((demand, 0), (went - 1, 0), (went + 5, 1)):
        woken = decide([], 0, TO_ZERO, state, later, demand_at=demand_at)
        assert woken.desired_replicas == desired, (case, demand_at)


@pytest.mark.parametrize(
    ("spec", "observations", "current", "desired", "text"),
    [
        (
            KV_ONLY,
            fleet(8, kv=1.0, running=50, waiting=0),
            8,
            8,
            "capped at maxReplicas 8 (wanted 10)",
        ),
        (
            KV_ONLY.model_copy(update={"min_replicas": 3}),
            fleet(3, kv=0.05, running=1),
            3,
            3,
            "held at minReplicas 3",
        ),
    ],
)
def test_bounds_clamp_and_say_so(
    spec: AutoscalingSpec,
    observations: list[ReplicaObservation],
    current: int,
    desired: int,
    text: str,
) -> None:
    state = PolicyState(recording_since=NOW - 1000, last_decision_at=NOW - 10)
    decision = decide(observations, current, spec, state, NOW)
    assert decision.desired_replicas == desired
    assert decision.limited
    assert text in decision.reason


def test_a_failed_scrape_does_not_block_scaling() -> None:
    observations = [
        ReplicaObservation.failed("r0", "no answer within 2s"),
        replica("r1", kv=0.9, running=10),
        replica("r2", kv=0.9, running=10),
    ]
    decision = decide(observations, 3, KV_ONLY, PolicyState(), NOW)
    assert decision.desired_replicas == 4  # 3 x 0.9 / 0.8 = 3.4: r1, r2 stand for r0
    assert "left out r0 (no answer within 2s)" in decision.reason
    assert "the 2 other(s)" in decision.reason


def test_without_any_metrics_it_holds() -> None:
    observations = [ReplicaObservation.failed(f"r{i}", "connection refused") for i in range(3)]
    decision = decide(observations, 3, KV_ONLY, PolicyState(), NOW)
    assert (decision.desired_replicas, decision.driver) == (3, "noMetrics")
    assert "r1: connection refused" in decision.reason


def test_requests_waiting_block_a_scale_down() -> None:
    state = PolicyState(recording_since=NOW - 1000, last_decision_at=NOW - 10)
    waiting = fleet(4, kv=0.05, running=2, waiting=1)
    assert decide(waiting, 4, SPEC, state, NOW).desired_replicas == 4
    assert decide(fleet(4, kv=0.05, running=2), 4, SPEC, state, NOW).desired_replicas == 1


@pytest.mark.parametrize(
    ("annotation", "seconds"),
    [
        ("2026-11-24T06:00:00Z", 1795500000.0),
        ("2026-11-24T07:00:00+01:00", 1795500000.0),
        ("2026-11-24T06:00:00", None),  # no zone: not comparable
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_the_gateways_demand_annotation_reads_as_a_time(
    annotation: str | None, seconds: float | None
) -> None:
    assert demand_time(annotation) == seconds
