"""Balancing decisions: least load, prefix affinity with bounded load, canary weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modelplane.gateway.routing.affinity import affinity_key
from modelplane.gateway.routing.balancing import (
    HashRing,
    bounded_load_pick,
    choose_track,
    least_loaded,
    load_bound,
    pick_upstream,
    stable_hash,
)
from modelplane.gateway.routing.routes import Routing, Track

A, B, C, D = (f"http://10.0.0.{i}:8000" for i in range(1, 5))


def conversation(n: int, turn: int = 1) -> dict[str, object]:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Conversation {n} starts here."},
    ]
    for t in range(1, turn):
        messages += [
            {"role": "assistant", "content": f"answer {t}"},
            {"role": "user", "content": f"follow-up {t}"},
        ]
    return {"model": "m", "messages": messages}


def key_of(n: int, turn: int = 1) -> int:
    key = affinity_key("/v1/chat/completions", conversation(n, turn))
    assert key is not None
    return stable_hash(key)


def test_least_loaded_picks_the_idlest_replica() -> None:
    assert least_loaded([A, B, C], {A: 3, B: 1, C: 2}, after=None) == B


def test_least_loaded_takes_turns_among_equals() -> None:
    loads = {A: 0, B: 0, C: 0}
    picks, previous = [], None
    for _ in range(6):
        previous = least_loaded([A, B, C], loads, after=previous)
        picks.append(previous)
    assert picks == [A, B, C, A, B, C]


def test_least_load_spreads_concurrent_requests_evenly() -> None:
    """Requests that stay in flight: each new one goes where the fewest are."""
    tracks = [Track("stable", 100, (A, B, C, D))]
    loads: Counter[str] = Counter()
    previous = None
    for turn in range(400):
        pick = pick_upstream(
            Routing.LEAST_LOAD, tracks, loads, key_hash=None, rand=0.5, turn=turn, previous=previous
        )
        assert pick is not None
        loads[pick.upstream] += 1
        previous = pick.upstream
    assert set(loads.values()) == {100}


def test_the_turns_of_one_conversation_share_a_key_and_others_differ() -> None:
    assert key_of(1, turn=1) == key_of(1, turn=2) == key_of(1, turn=5)
    assert len({key_of(n) for n in range(50)}) == 50


def test_completion_prompts_key_by_their_beginning() -> None:
    long = "x" * 5000
    assert affinity_key("/v1/completions", {"prompt": long + "a"}) == affinity_key(
        "/v1/completions", {"prompt": long + "b"}
    )
    assert affinity_key("/v1/embeddings", {"input": "hi"}) is None


def test_prefix_affinity_sends_every_turn_of_a_conversation_to_one_replica() -> None:
    ring = HashRing.build([A, B, C, D])
    idle: dict[str, int] = {}
    for n in range(40):
        homes = {bounded_load_pick(ring, key_of(n, turn), idle) for turn in range(1, 6)}
        assert len(homes) == 1


def test_prefix_affinity_spreads_conversations_over_replicas() -> None:
    ring = HashRing.build([A, B, C, D])
    homes = Counter(bounded_load_pick(ring, key_of(n), {}) for n in range(2000))
    assert set(homes) == {A, B, C, D}
    assert max(homes.values()) / min(homes.values()) < 1.35


def test_removing_a_replica_moves_only_its_own_conversations() -> None:
    before = HashRing.build([A, B, C, D])
    after = HashRing.build([A, B, C])
    moved = 0
    for n in range(1000):
        old = bounded_load_pick(before, key_of(n), {})
        new = bounded_load_pick(after, key_of(n), {})
        if old != D:
            assert new == old
        else:
            moved += 1
    assert 150 < moved < 350  # about a quarter lived on D


def test_the_ring_does_not_depend_on_discovery_order() -> None:
    assert HashRing.build([A, B, C]) == HashRing.build([C, A, B])


@pytest.mark.parametrize(
    ("total", "replicas", "factor", "bound"),
    [(0, 4, 1.25, 1), (7, 4, 1.25, 3), (99, 2, 1.25, 63)],
)
def test_load_bound_is_the_factor_times_the_mean_rounded_up(
    total: int, replicas: int, factor: float, bound: int
) -> None:
    assert load_bound(total, replicas, factor) == bound


def test_a_busy_home_spills_to_the_next_replica_on_the_ring() -> None:
    ring = HashRing.build([A, B, C, D])
    key = key_of(7)
    home = bounded_load_pick(ring, key, {})
    assert home is not None
    # The home holds 4 while the others are idle: bound = ceil(1.25 * 5 / 4) = 2.
    spill = bounded_load_pick(ring, key, {home: 4})
    assert spill is not None and spill != home
    # The spill target is stable too: the next owner clockwise, every time.
    assert bounded_load_pick(ring, key, {home: 4}) == spill


def test_bounded_load_keeps_every_replica_within_the_bound_under_a_hot_prefix() -> None:
    """Every request shares one prefix: plain consistent hashing would pile all on one replica."""
    ring = HashRing.build([A, B, C, D])
    loads: Counter[str] = Counter()
    for _ in range(100):
        pick = bounded_load_pick(ring, key_of(3), loads)
        assert pick is not None
        loads[pick] += 1
        assert max(loads.values()) <= load_bound(sum(loads.values()) - 1, 4, 1.25)
    # 100 in flight: none above 1.25 x the mean of 25, and the overflow reached every replica.
    assert max(loads.values()) == 32 and len(loads) == 4


def test_canary_weight_sets_its_share_of_traffic() -> None:
    tracks = [Track("stable", 90, (A, B)), Track("canary", 10, (C,))]
    rng = random.Random(7)
    chosen = Counter(
        t.name
        for t in (choose_track(tracks, key_hash=None, rand=rng.random()) for _ in range(10_000))
        if t is not None
    )
    assert 0.085 < chosen["canary"] / 10_000 < 0.115


def test_canary_choice_is_sticky_per_conversation() -> None:
    tracks = [Track("stable", 50, (A,)), Track("canary", 50, (B,))]
    for n in range(100):
        names = {
            choose_track(tracks, key_hash=key_of(n, turn), rand=random.random())
            for turn in range(1, 5)
        }
        assert len(names) == 1


def test_prefix_keys_split_by_canary_weight() -> None:
    tracks = [Track("stable", 80, (A,)), Track("canary", 20, (B,))]
    chosen = Counter(choose_track(tracks, key_hash=key_of(n), rand=0.0) for n in range(5000))
    assert 0.17 < chosen[tracks[1]] / 5000 < 0.23


def test_a_track_without_ready_replicas_gives_its_share_away() -> None:
    tracks = [Track("stable", 90, ()), Track("canary", 10, (C,))]
    assert {choose_track(tracks, key_hash=None, rand=r / 10).name for r in range(10)} == {"canary"}  # type: ignore[union-attr]


def test_zero_weight_track_serves_only_when_nothing_else_can() -> None:
    with_stable = [Track("stable", 100, (A,)), Track("canary", 0, (B,))]
    assert {choose_track(with_stable, key_hash=None, rand=r / 10).name for r in range(10)} == {  # type: ignore[union-attr]
        "stable"
    }
    stable_down = [Track("stable", 100, ()), Track("canary", 0, (B,))]
    pick = pick_upstream(Routing.LEAST_LOAD, stable_down, {}, key_hash=None, rand=0.3, turn=0)
    assert pick is not None and pick.upstream == B


def test_no_candidate_means_no_pick() -> None:
    empty = [Track("s", 100, ())]
    assert pick_upstream(Routing.PREFIX, empty, {}, key_hash=1, rand=0, turn=0) is None


def test_round_robin_ignores_load() -> None:
    tracks = [Track("stable", 100, (A, B))]
    picks = [
        pick_upstream(Routing.ROUND_ROBIN, tracks, {A: 50}, key_hash=None, rand=0, turn=t)
        for t in range(4)
    ]
    assert [p.upstream for p in picks if p] == [A, B, A, B]
