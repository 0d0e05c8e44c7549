"""The policy against spikes that outrun a model load, as tables of situations and decisions.

Pure function tests like test_policy.py: a jump in the arrival rate is a
burst before any TTFT rises; a burst's peak keeps its capacity for an hour;
a start from zero is sized by the gateway's held requests; the model load
time is measured; a breach with the knee unknown is sized on what replicas
were seen to carry; one noisy window buys no replica; and the state stays
small enough for an annotation.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    AutoscalingTargets,
    PolicyState,
    ReplicaObservation,
    decide,
)
from modelplane.operator.autoscaler.bursts import MAX_BURSTS, MAX_RATES
from tests.unit.autoscaler.builders import replica, ttft_window

NOW = 1_000_000.0
SPEC = AutoscalingSpec(
    min_replicas=0,
    max_replicas=10,
    targets=AutoscalingTargets(
        ttft_p95_seconds=1.0, queue_depth_per_replica=4, kv_cache_utilization=0.8
    ),
)
FAST = ttft_window(*[0.2] * 30)


def fleet(n: int, arrived: float, **metrics: float) -> list[ReplicaObservation]:
    """n replicas well under the target, `arrived` req/s in all."""
    return [
        replica(f"r{i}", ttft=FAST, arrived=arrived / n, finished=arrived / n, **metrics)
        for i in range(n)
    ]


def history(*rates: float, **fields: object) -> PolicyState:
    """A policy that decided every 10 s and saw these arrival rates (req/s), oldest first."""
    times = [NOW - 10 * (len(rates) - i) for i in range(len(rates))]
    return replace(
        PolicyState(
            last_decision_at=NOW - 10,
            recording_since=NOW - 1000,
            last_active_at=NOW - 10,
            rates=tuple(zip(times, rates, strict=True)),
        ),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("case", "state", "arrived", "desired", "driver", "burst"),
    [
        (
            "3x in one window, knee unknown: the ready ones keep their backlog and new "
            "ones take what each carried before the jump (2 + 30 / 5)",
            history(10.0, 10.0, 10.0),
            30.0,
            8,
            "burst",
            True,
        ),
        (
            "2x that the learned capacity absorbs: no replica added, the burst remembered",
            history(10.0, 10.0, 10.0, capacity_rps=20.0),
            20.0,
            2,
            "ttftP95Seconds",
            True,
        ),
        (
            "one window 30% up is Poisson noise; sized on the 30 s level (11 req/s: "
            "2 replicas of 5.5, where 13 req/s alone would ask for 3)",
            history(10.0, 10.0, 10.0, capacity_rps=5.5),
            13.0,
            2,
            "ttftP95Seconds",
            False,
        ),
        (
            "4x of almost nothing is within the noise of a count (and 1 replica holds it)",
            history(0.1, 0.1, 0.1),
            0.4,
            1,
            "kvCacheUtilization",
            False,
        ),
    ],
)
def test_a_jump_in_the_arrivals_is_a_burst_before_ttft_rises(
    case: str, state: PolicyState, arrived: float, desired: int, driver: str, burst: bool
) -> None:
    decision = decide(fleet(2, arrived, kv=0.1, running=5), 2, SPEC, state, NOW)
    assert (decision.desired_replicas, decision.driver) == (desired, driver), case
    assert bool(decision.state.bursts) is burst, case
    assert (decision.state.burst_until == NOW + 3600) is burst, case


def test_the_ramp_of_a_burst_is_measured_from_the_level_before_it() -> None:
    """Ten seconds into a burst the reference is still the level before its onset."""
    state = history(10.0, 10.0, 10.0, 20.0, bursts=((NOW - 10, 20.0),), burst_until=NOW + 3590)
    decision = decide(fleet(5, 30.0, kv=0.1, running=5), 5, SPEC, state, NOW)
    assert decision.state.bursts == ((NOW - 10, 25.0),)  # peak: the best two-window mean
    assert "10.0 -> 30.0 req/s" in decision.reason


@pytest.mark.parametrize(
    ("case", "elapsed", "desired", "driver"),
    [
        ("half an hour after the burst: capacity for its peak is kept", 1800, 8, "burst"),
        ("an hour without a burst: down to what the load needs", 3700, 1, "ttftP95Seconds"),
    ],
)
def test_a_burst_keeps_capacity_for_its_peak_for_an_hour(
    case: str, elapsed: float, desired: int, driver: str
) -> None:
    state = PolicyState(
        capacity_rps=5.0,
        bursts=((NOW, 40.0),),
        burst_until=NOW + 3600,
        recording_since=NOW - 1000,
        last_decision_at=NOW + elapsed - 10,
    )
    decision = decide(fleet(8, 4.0, kv=0.05, running=1), 8, SPEC, state, NOW + elapsed)
    assert (decision.desired_replicas, decision.driver) == (desired, driver), case


def test_scale_to_zero_still_wins_over_a_burst_reserve() -> None:
    """minReplicas 0 and no request for scaleDownDelaySeconds: zero, reserve or not."""
    state = PolicyState(
        capacity_rps=5.0,
        bursts=((NOW - 900, 40.0),),
        burst_until=NOW + 2700,
        recording_since=NOW - 1000,
        last_decision_at=NOW - 10,
        last_active_at=NOW - 400,
    )
    idle = [replica(f"r{i}", kv=0.0, arrived=0.0, finished=0.0) for i in range(8)]
    assert decide(idle, 8, SPEC, state, NOW).desired_replicas == 0


@pytest.mark.parametrize(
    ("case", "held", "state", "desired", "driver"),
    [
        (
            "150 held in the 10 s since the wake-up, 5 req/s a replica: 3 at once",
            150,
            PolicyState(capacity_rps=5.0),
            3,
            "demand",
        ),
        (
            "knee unknown: sized on the proven rate (15 / 3 = 5)",
            150,
            PolicyState(proven_rps=3.0),
            5,
            "demand",
        ),
        ("nothing learned yet: wait for the first replica", 150, PolicyState(), 1, "loading"),
        (
            "held count unknown (an older caller): as before",
            None,
            PolicyState(capacity_rps=5.0),
            1,
            "loading",
        ),
    ],
)
def test_a_start_from_zero_is_sized_by_the_held_requests(
    case: str, held: int | None, state: PolicyState, desired: int, driver: str
) -> None:
    woke = replace(
        state, woke_at=NOW - 10, scaled_for=1.0, zero_since=NOW - 1000, last_decision_at=NOW - 10
    )
    loading = [ReplicaObservation.still_loading("r0")]
    decision = decide(loading, 1, SPEC, woke, NOW, demand_at=NOW - 10, held_requests=held)
    assert (decision.desired_replicas, decision.driver) == (desired, driver), case


def waking(**fields: float) -> PolicyState:
    """Woken from zero, one replica loading, 3 req/s a replica learned before."""
    state = PolicyState(
        capacity_rps=3.0, scaled_for=1.0, zero_since=NOW - 1000, last_decision_at=NOW - 10
    )
    return replace(state, **fields)  # type: ignore[arg-type]


def test_a_held_count_from_the_gateways_last_write_is_a_rate_over_its_own_age() -> None:
    """The annotation's count is as old as its write: 100 held 10 s after the wake-up,
    read 20 s later, is 10 req/s (4 replicas of 3), not 100 over 30 s (3.3 req/s, which
    the one replica loading nearly covers: it would wait)."""
    woke = waking(woke_at=NOW - 30)
    loading = [ReplicaObservation.still_loading("r0")]
    counted = decide(loading, 1, SPEC, woke, NOW, held_requests=100, held_at=NOW - 20)
    assert (counted.desired_replicas, counted.driver) == (4, "demand")
    as_if_now = decide(loading, 1, SPEC, woke, NOW, held_requests=100)
    assert (as_if_now.desired_replicas, as_if_now.driver) == (1, "loading")


def test_replicas_asked_for_while_all_load_stay_when_the_first_is_ready() -> None:
    """The first replica up takes every held request at once: its queue says one
    replica's worth, not the held rate. The others, asked for seconds ago on that
    rate, must load and be measured, not be cancelled for the scale-down window
    (recorded before the wake-up) says nothing bigger."""
    woke = waking(woke_at=NOW - 20, recording_since=NOW - 1000)
    loading = [ReplicaObservation.still_loading("r0")]
    sized = decide(loading, 1, SPEC, woke, NOW, held_requests=200, held_at=NOW)
    assert (sized.desired_replicas, sized.driver) == (4, "demand")  # 10 req/s over 3 each
    first_up = [replica("r0", waiting=150, running=50, kv=0.5)] + [
        ReplicaObservation.still_loading(f"r{i}") for i in range(1, 4)
    ]
    later = decide(first_up, 4, SPEC, sized.state, NOW + 10)
    assert later.desired_replicas == 4, later.reason


def test_the_wake_up_remembers_when_demand_began() -> None:
    state = PolicyState(zero_since=NOW - 1000, last_decision_at=NOW - 10)
    decision = decide([], 0, SPEC, state, NOW, demand_at=NOW - 2, held_requests=1)
    assert decision.desired_replicas == 1
    assert decision.state.woke_at == NOW - 2


def test_the_model_load_time_is_measured_from_the_last_ask() -> None:
    kv_only = SPEC.model_copy(
        update={"min_replicas": 1, "targets": AutoscalingTargets(kv_cache_utilization=0.8)}
    )
    asked = decide([replica(kv=0.9, running=10)], 1, kv_only, PolicyState(), NOW)
    assert (asked.desired_replicas, asked.state.loading_since) == (2, NOW)
    loading = [replica("r0", kv=0.5, running=5), ReplicaObservation.still_loading("r1")]
    waiting = decide(loading, 2, kv_only, asked.state, NOW + 10)
    assert waiting.state.load_s is None
    ready = decide(
        [replica("r0", kv=0.3), replica("r1", kv=0.3)], 2, kv_only, waiting.state, NOW + 40
    )
    assert (ready.state.load_s, ready.state.loading_since) == (40.0, None)


@pytest.mark.parametrize(
    ("case", "proven", "desired"),
    [
        ("2 replicas were seen to carry 3 req/s each comfortably: keep 2", 3.0, 2),
        ("nothing proven: the KV cache alone says 1", None, 1),
    ],
)
def test_while_the_knee_is_unknown_scale_down_keeps_what_carried_the_load(
    case: str, proven: float | None, desired: int
) -> None:
    state = PolicyState(proven_rps=proven, recording_since=NOW - 1000, last_decision_at=NOW - 10)
    observations = [
        replica(f"r{i}", kv=0.05, running=5, arrived=3.0, finished=3.0) for i in range(2)
    ]
    assert decide(observations, 2, SPEC, state, NOW).desired_replicas == desired, case


@pytest.mark.parametrize(
    ("case", "proven", "desired"),
    [
        ("proven 5 req/s for 8 arriving: the backlog stays where it is; hold 2", 5.0, 2),
        ("nothing proven: each replica holds what it runs plus 4 waiting", None, 9),
    ],
)
def test_a_queue_breach_with_the_knee_unknown_sizes_on_the_arrivals(
    case: str, proven: float | None, desired: int
) -> None:
    queue_only = SPEC.model_copy(update={"targets": AutoscalingTargets(queue_depth_per_replica=4)})
    state = PolicyState(proven_rps=proven)
    backlog = [
        replica(f"r{i}", kv=0.3, running=10, waiting=50, arrived=4.0, finished=4.0)
        for i in range(2)
    ]
    assert decide(backlog, 2, queue_only, state, NOW).desired_replicas == desired, case


def test_the_state_stays_small_enough_for_an_annotation() -> None:
    """Full to every cap, with long floats, it is still well under 8 KiB of JSON."""
    t = 1_795_500_000.123456789
    full = PolicyState(
        recent_needs=tuple((t + i / 7, 100 - i) for i in range(100)),
        recording_since=t,
        last_decision_at=t,
        scaled_for=123.456789012345,
        last_scale_up_at=t,
        burst_until=t,
        bursts=tuple((t + i / 3, 1234.56789012345 + i) for i in range(MAX_BURSTS)),
        rates=tuple((t + i / 3, 1234.56789012345 + i) for i in range(MAX_RATES)),
        load_s=123.456789012345,
        loading_since=t,
        woke_at=t,
        last_active_at=t,
        zero_since=t,
        capacity_rps=12.3456789012345,
        proven_rps=12.3456789012345,
    )
    assert len(full.to_json().encode()) < 8 * 1024
    assert PolicyState.from_json(full.to_json()) == full


def test_a_replica_new_since_the_last_scrape_leaves_the_fleets_rate_unknown() -> None:
    """The gateway sends a new, empty replica most of the traffic, but its first
    scrape has no rate yet: the old replica's trickle is no lull, and the next
    window's full rate is no jump."""
    state = history(10.0, 10.0, 10.0, capacity_rps=5.0)
    old = replica("r0", ttft=FAST, arrived=0.5, finished=3.0, kv=0.1, running=2)
    new = ReplicaObservation("r1", waiting=0, running=8, kv_cache_usage=0.1)
    first = decide([old, new], 2, SPEC, state, NOW)
    assert first.state.rates == state.rates  # nothing recorded for this window
    both = fleet(2, 10.0, kv=0.1, running=5)
    second = decide(both, first.desired_replicas, SPEC, first.state, NOW + 10)
    assert second.state.bursts == ()
    assert second.desired_replicas == 2
