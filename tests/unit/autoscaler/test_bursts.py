"""bursts.py on its own: each pure function as a table of states and answers.

test_policy_bursts.py drives the same rules through `decide`; here each one
is pinned down alone: what counts as a jump in the arrival rate, the level
the fleet is sized on, what a burst remembers and for how long, the rate of
held requests, and the measured model load time.
"""

from __future__ import annotations

import pytest

from modelplane.operator.autoscaler import PolicyState
from modelplane.operator.autoscaler.bursts import (
    BURST_MEMORY_S,
    DEFAULT_LOAD_S,
    MAX_BURSTS,
    held_rate,
    horizon,
    learn_load_time,
    level,
    note_rate,
    reserve,
    start_burst,
)

NOW = 1_000_000.0


def rates(*values: float) -> tuple[tuple[float, float], ...]:
    """Arrival rates seen every 10 s up to 10 s ago, oldest first."""
    return tuple((NOW - 10 * (len(values) - i), r) for i, r in enumerate(values))


@pytest.mark.parametrize(
    ("case", "state", "rate", "capacity", "jumped_from"),
    [
        ("3x in one window", PolicyState(rates=rates(10, 10, 10)), 30.0, None, 10.0),
        ("1.4x is growth, not a burst", PolicyState(rates=rates(10, 10, 10)), 14.0, None, None),
        (
            "4x of almost nothing is within the Poisson noise of a count",
            PolicyState(rates=rates(0.1, 0.1, 0.1)),
            0.4,
            None,
            None,
        ),
        (
            "2x, but less than half a replica's capacity more: not material",
            PolicyState(rates=rates(2, 2, 2)),
            4.5,
            10.0,
            None,
        ),
        ("no history: nothing to jump from", PolicyState(), 30.0, None, None),
        (
            "only rates older than one load time count",
            PolicyState(rates=((NOW - 100, 1.0), *rates(10, 10))),
            14.0,
            None,
            None,
        ),
        (
            "still rising into a burst: measured from the level before its onset",
            PolicyState(rates=rates(10, 10, 25), bursts=((NOW - 10, 25.0),)),
            30.0,
            None,
            10.0,
        ),
    ],
)
def test_a_jump_is_measured_against_the_last_load_time(
    case: str, state: PolicyState, rate: float, capacity: float | None, jumped_from: float | None
) -> None:
    after, reference = note_rate(state, rate, NOW, 10.0, capacity)
    assert reference == (pytest.approx(jumped_from) if jumped_from else None), case
    assert after.rates[-1] == (NOW, rate), case


def test_a_rising_burst_keeps_its_best_two_window_peak() -> None:
    state = PolicyState(rates=rates(10, 10, 20), bursts=((NOW - 10, 20.0),))
    after, _ = note_rate(state, 30.0, NOW, 10.0, None)
    assert after.bursts == ((NOW - 10, 25.0),)  # (20 + 30) / 2
    calmer, _ = note_rate(after, 12.0, NOW + 10, 10.0, None)
    assert calmer.bursts == ((NOW - 10, 25.0),)  # a falling window lowers nothing


@pytest.mark.parametrize(
    ("case", "state", "expected"),
    [
        ("the mean of the samples younger than 30 s", PolicyState(rates=rates(99, 10, 20)), 15.0),
        ("nothing recorded", PolicyState(), None),
        ("all older than 30 s", PolicyState(rates=((NOW - 60, 5.0),)), None),
    ],
)
def test_the_level_is_the_mean_of_the_last_half_minute(
    case: str, state: PolicyState, expected: float | None
) -> None:
    assert level(state, NOW) == expected, case


@pytest.mark.parametrize(
    ("case", "bursts", "bursts_after"),
    [
        ("a first burst is remembered", (), ((NOW, 30.0),)),
        (
            "one more than a load time after the last: a new burst",
            ((NOW - 600, 20.0),),
            ((NOW - 600, 20.0), (NOW, 30.0)),
        ),
        (
            "within a load time of the last: the same burst, still rising",
            ((NOW - 30, 20.0),),
            ((NOW - 30, 20.0),),
        ),
        (
            "bursts older than the memory are forgotten",
            ((NOW - BURST_MEMORY_S - 1, 50.0),),
            ((NOW, 30.0),),
        ),
        (
            "at most MAX_BURSTS are kept, the newest",
            tuple((NOW - 3000 + 100 * i, 10.0) for i in range(MAX_BURSTS)),
            (*((NOW - 3000 + 100 * i, 10.0) for i in range(1, MAX_BURSTS)), (NOW, 30.0)),
        ),
    ],
)
def test_a_burst_is_remembered_with_its_peak_and_held_an_hour(
    case: str,
    bursts: tuple[tuple[float, float], ...],
    bursts_after: tuple[tuple[float, float], ...],
) -> None:
    state, hold = start_burst(PolicyState(bursts=bursts), NOW, 300.0, 30.0)
    assert state.bursts == bursts_after, case
    assert hold == BURST_MEMORY_S
    assert state.burst_until == NOW + BURST_MEMORY_S


@pytest.mark.parametrize(
    ("case", "state", "kept"),
    [
        (
            "while held: the highest peak of the last hour",
            PolicyState(bursts=((NOW - 1200, 40.0), (NOW - 100, 25.0)), burst_until=NOW + 10),
            40.0,
        ),
        (
            "a peak older than the memory no longer counts",
            PolicyState(
                bursts=((NOW - BURST_MEMORY_S - 5, 90.0), (NOW - 100, 25.0)), burst_until=NOW + 10
            ),
            25.0,
        ),
        (
            "the hold is over",
            PolicyState(bursts=((NOW - 100, 25.0),), burst_until=NOW),
            None,
        ),
        ("never a burst", PolicyState(), None),
    ],
)
def test_the_reserve_is_the_remembered_peak_while_held(
    case: str, state: PolicyState, kept: float | None
) -> None:
    assert reserve(state, NOW) == kept, case


@pytest.mark.parametrize(
    ("case", "held", "woke_at", "counted_at", "rate"),
    [
        ("100 held over the 20 s since the wake-up", 100, NOW - 20, NOW, 5.0),
        ("a wake-up a moment ago counts as at least 5 s", 10, NOW - 1, NOW, 2.0),
        ("counted 10 s after the wake-up (an annotation read later)", 50, NOW - 30, NOW - 20, 5.0),
        ("held count unknown", None, NOW - 20, NOW, None),
        ("not woken from zero", 100, None, NOW, None),
    ],
)
def test_held_requests_over_the_time_since_the_wake_up_are_the_demand(
    case: str, held: int | None, woke_at: float | None, counted_at: float, rate: float | None
) -> None:
    assert held_rate(PolicyState(woke_at=woke_at), held, counted_at) == rate, case


@pytest.mark.parametrize(
    ("case", "state", "coming", "load_s", "loading_since"),
    [
        (
            "all asked-for replicas ready: the load time is measured",
            PolicyState(loading_since=NOW - 42),
            0,
            42.0,
            None,
        ),
        (
            "some still loading: not yet",
            PolicyState(loading_since=NOW - 42),
            1,
            None,
            NOW - 42,
        ),
        ("nothing was asked for", PolicyState(load_s=30.0), 0, 30.0, None),
    ],
)
def test_the_model_load_time_is_learned(
    case: str, state: PolicyState, coming: int, load_s: float | None, loading_since: float | None
) -> None:
    learned = learn_load_time(state, coming, NOW)
    assert (learned.load_s, learned.loading_since) == (load_s, loading_since), case
    assert horizon(learned) == (load_s if load_s is not None else DEFAULT_LOAD_S), case
