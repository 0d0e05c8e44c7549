"""Learned headroom: spare capacity where demand has outrun the fleet, none where it has not.

Pure function tests like test_policy.py: the same steady load is sized with
no spare on a fleet that was never outrun, and with spare on one that was
(a TTFT breach under steady load, or arrivals that jumped past the ready
replicas); surprises an hour old no longer count; a breach while replicas
load, or a start from zero, is no surprise; the memory survives the
annotation round trip and stays bounded.
"""

from __future__ import annotations

from dataclasses import replace

from modelplane.operator.autoscaler import PolicyState, decide
from modelplane.operator.autoscaler.headroom import (
    HEADROOM_PER_SURPRISE,
    MAX_HEADROOM,
    MAX_SURPRISES,
    SURPRISE_MEMORY_S,
    headroom,
    note_surprise,
)
from tests.unit.autoscaler.builders import replica, ttft_window
from tests.unit.autoscaler.test_policy_bursts import NOW, SPEC, fleet, history

SLOW = ttft_window(*[1.5] * 30)  # every first token past the 1 s target


def steady(surprises: tuple[float, ...] = ()) -> PolicyState:
    """Two replicas that each take 5 req/s (learned), carrying 9.2 req/s for a while."""
    return history(9.2, 9.2, 9.2, 9.2, capacity_rps=5.0, surprises=surprises)


def test_a_fleet_never_outrun_keeps_no_spare_replica() -> None:
    made = decide(fleet(2, 9.2), 2, SPEC, steady(), NOW)
    assert made.desired_replicas == 2  # 9.2 / 5 = 1.84
    assert "over the arrivals" not in made.reason


def test_a_fleet_outrun_twice_in_the_hour_sizes_over_the_arrivals_and_says_why() -> None:
    made = decide(fleet(2, 9.2), 2, SPEC, steady((NOW - 1800, NOW - 600)), NOW)
    assert made.desired_replicas == 3  # 9.2 x 1.3 / 5 = 2.4
    assert "sized 30% over the arrivals" in made.reason
    assert "2 time(s) in the last hour" in made.reason


def test_surprises_older_than_the_memory_no_longer_count() -> None:
    old = (NOW - SURPRISE_MEMORY_S - 60, NOW - SURPRISE_MEMORY_S - 10)
    made = decide(fleet(2, 9.2), 2, SPEC, steady(old), NOW)
    assert made.desired_replicas == 2
    assert made.state.surprises == ()


def test_a_steady_breach_is_a_surprise_remembered_in_the_state() -> None:
    hot = [replica(f"r{i}", ttft=SLOW, arrived=4.6, finished=4.6) for i in range(2)]
    made = decide(hot, 2, SPEC, steady(), NOW)
    assert made.state.surprises == (NOW,)
    assert made.desired_replicas >= 3


def test_a_breach_while_replicas_load_is_no_surprise() -> None:
    hot = [replica(f"r{i}", ttft=SLOW, arrived=4.6, finished=4.6) for i in range(2)]
    made = decide(hot, 3, SPEC, steady(), NOW)  # the third is loading
    assert made.state.surprises == ()


def test_a_jump_past_the_ready_replicas_is_a_surprise() -> None:
    state = history(6.0, 6.0, 6.0, 6.0, capacity_rps=5.0)
    made = decide(fleet(2, 18.0), 2, SPEC, state, NOW)
    assert made.state.surprises == (NOW,)


def test_a_start_from_zero_is_no_surprise() -> None:
    state = PolicyState(last_decision_at=NOW - 10, zero_since=NOW - 900)
    made = decide([], 0, SPEC, state, NOW, demand_at=NOW - 1)
    assert made.desired_replicas == 1
    assert made.state.surprises == ()


def test_one_surprise_still_rising_counts_once_and_the_memory_is_bounded() -> None:
    state = PolicyState(load_s=60.0)
    state = note_surprise(note_surprise(state, NOW), NOW + 30)  # within one load time
    assert state.surprises == (NOW,)
    for i in range(1, 20):
        state = note_surprise(state, NOW + 120 * i)
    assert len(state.surprises) == MAX_SURPRISES
    assert headroom(state, NOW + 120 * 19) == MAX_HEADROOM
    assert headroom(replace(state, surprises=(NOW,)), NOW) == HEADROOM_PER_SURPRISE


def test_the_surprises_survive_the_annotation_and_bad_ones_reset_the_state() -> None:
    state = PolicyState(surprises=(NOW - 100, NOW))
    assert PolicyState.from_json(state.to_json()) == state
    damaged = state.to_dict() | {"surprises": ["soon"]}
    assert PolicyState.from_dict(damaged) == PolicyState()
