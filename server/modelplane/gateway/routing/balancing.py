"""Balancing decisions as pure functions: which track, then which replica.

Nothing here touches the network or a clock. The caller passes the ready
candidates, the gateway's count of requests in flight per replica, and for
prefix affinity a 64-bit hash of the conversation prefix; randomness comes
in as a number, so every decision is reproducible in a test.

- Least load: the replica with the fewest requests in flight; ties go to
  the one after the previous pick, so idle replicas take turns.
- Prefix affinity: consistent hashing with bounded loads (Mirrokni, Thorup
  and Zadimoghaddam, 2018). The prefix hash picks a point on a ring of
  virtual nodes; walking clockwise, the first replica whose load stays
  within `load_factor` times the mean takes the request. The same
  conversation lands on the same replica (where its KV cache is) until that
  replica is busier than its fair share, and adding or removing a replica
  moves only the conversations that hashed to it.
- Tracks (canary): chosen by weight. With a prefix hash the choice is a
  deterministic function of the hash, so a conversation stays on one
  revision; without, the caller's random number decides.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from modelplane.gateway.routing.routes import Routing, Track

VIRTUAL_NODES = 160  # ring points per replica; spreads keys within a few percent
DEFAULT_LOAD_FACTOR = 1.25  # a replica may carry 25% more than the mean before spilling


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process (unlike `hash()`), so that
    several gateway replicas send a conversation to the same model replica."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def choose_track(tracks: Sequence[Track], *, key_hash: int | None, rand: float) -> Track | None:
    """The track to serve from, among tracks with at least one candidate replica.

    Weights are shares of 100; tracks with no candidate give up their share
    to the others. If every track with candidates has weight 0 (say, the
    stable track is down and the canary has not been given traffic yet),
    serving from a zero-weight track beats failing the request.
    """
    usable = [t for t in tracks if t.upstreams]
    if not usable:
        return None
    weighted = [t for t in usable if t.weight > 0] or usable
    weights = [t.weight if t.weight > 0 else 1 for t in weighted]
    total = sum(weights)
    # With a key, a different slice of the hash than the ring position uses,
    # so the track split and the replica choice are independent.
    fraction = ((key_hash >> 32) % 10_000) / 10_000 if key_hash is not None else rand
    point = fraction * total
    for track, weight in zip(weighted, weights, strict=True):
        if point < weight:
            return track
        point -= weight
    return weighted[-1]


def least_loaded(candidates: Sequence[str], loads: Mapping[str, int], after: str | None) -> str:
    """Fewest in flight; among equals, the first one after `after` in candidate order."""
    best = min(loads.get(c, 0) for c in candidates)
    tied = [c for c in candidates if loads.get(c, 0) == best]
    if after is not None and after in candidates and len(tied) > 1:
        start = candidates.index(after)
        ordered = [*candidates[start + 1 :], *candidates[: start + 1]]
        return next(c for c in ordered if c in tied)
    return tied[0]


def round_robin(candidates: Sequence[str], turn: int) -> str:
    return candidates[turn % len(candidates)]


@dataclass(frozen=True)
class HashRing:
    points: tuple[int, ...]
    owners: tuple[str, ...]  # owners[i] holds points[i]
    replicas: tuple[str, ...]

    @staticmethod
    def build(upstreams: Sequence[str], virtual_nodes: int = VIRTUAL_NODES) -> HashRing:
        return _ring(tuple(sorted(upstreams)), virtual_nodes)


@lru_cache(maxsize=256)
def _ring(upstreams: tuple[str, ...], virtual_nodes: int) -> HashRing:
    pairs = sorted(
        (stable_hash(f"{u}#{i}".encode()), u) for u in upstreams for i in range(virtual_nodes)
    )
    return HashRing(tuple(p for p, _ in pairs), tuple(u for _, u in pairs), upstreams)


def load_bound(total_load: int, replicas: int, load_factor: float) -> int:
    """Most requests one replica may hold, counting the one being placed."""
    return max(1, math.ceil(load_factor * (total_load + 1) / replicas))


def bounded_load_pick(
    ring: HashRing,
    key_hash: int,
    loads: Mapping[str, int],
    *,
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> str | None:
    """Walk the ring clockwise from the key to the first replica under the load bound."""
    owners = ring.replicas
    if not owners:
        return None
    bound = load_bound(sum(loads.get(o, 0) for o in owners), len(owners), load_factor)
    n = len(ring.points)
    start = bisect.bisect_left(ring.points, key_hash % (1 << 64))
    for step in range(n):
        owner = ring.owners[(start + step) % n]
        if loads.get(owner, 0) + 1 <= bound:
            return owner
    # Unreachable while the bound is at least the mean (some replica is under
    # it), but never fail a request over arithmetic.
    return min(owners, key=lambda o: loads.get(o, 0))


@dataclass(frozen=True)
class Pick:
    track: Track
    upstream: str


def pick_upstream(
    routing: Routing,
    tracks: Sequence[Track],
    loads: Mapping[str, int],
    *,
    key_hash: int | None,
    rand: float,
    turn: int,
    previous: str | None = None,
    load_factor: float = DEFAULT_LOAD_FACTOR,
) -> Pick | None:
    """The whole decision for one attempt. `tracks` hold only candidate replicas
    (ready, not ejected, not already tried for this request)."""
    affinity = key_hash if routing is Routing.PREFIX else None
    track = choose_track(tracks, key_hash=affinity, rand=rand)
    if track is None:
        return None
    candidates = track.upstreams
    if routing is Routing.PREFIX and key_hash is not None:
        # The ring is built over the track's candidates, so it changes when a
        # replica is ejected; conversations of healthy replicas do not move.
        chosen = bounded_load_pick(
            HashRing.build(candidates), key_hash, loads, load_factor=load_factor
        )
    elif routing is Routing.ROUND_ROBIN:
        chosen = round_robin(candidates, turn)
    else:
        chosen = least_loaded(candidates, loads, previous)
    return None if chosen is None else Pick(track, chosen)
