"""Headroom: spare capacity kept where the load has outrun the fleet, dropped where it has not.

A replica takes a model load to start (a minute or more), so a load that
rises faster than that, or a capacity estimate probed up to an engine's
cliff, is served late however quickly the policy reacts. Keeping spare
replicas everywhere pays for that on every smooth load too; keeping none
pays for it on every bursty one. So the policy learns which load it has,
from what it has seen:

* A *surprise* is a decision at which demand went past the fleet's
  capacity: with no replica loading, the fleet's TTFT p95 broke its target
  (steady load, yet not enough replicas), or the arrivals jumped past what
  the ready replicas carry. Surprises within one load time of each other
  are one (a burst still rising, a breach that lasts).
* The headroom is `HEADROOM_PER_SURPRISE` of the arrival level for each
  surprise in the last `SURPRISE_MEMORY_S`, at most `MAX_HEADROOM`: the
  policy sizes the fleet on the level times (1 + headroom). A load that has
  never outrun the fleet, or not for an hour, gets none; one that keeps
  doing it gets up to half again its level.

A scale from zero is not a surprise (nothing was there to outrun), and
neither is a breach while replicas load (the fleet is already growing).
Pure functions on `PolicyState`, which keeps at most `MAX_SURPRISES` times.
"""

from __future__ import annotations

from dataclasses import replace

from modelplane.operator.autoscaler.bursts import horizon
from modelplane.operator.autoscaler.state import PolicyState

SURPRISE_MEMORY_S = 3600.0  # a surprise counts towards the headroom this long
HEADROOM_PER_SURPRISE = 0.15  # of the arrival level, per surprise remembered
MAX_HEADROOM = 0.5
MAX_SURPRISES = 8


def note_surprise(state: PolicyState, now: float) -> PolicyState:
    """Remember that demand went past capacity at `now` (unless it is the last one still)."""
    kept = recent_surprises(state, now)
    if kept and now - kept[-1] <= horizon(state):
        return replace(state, surprises=kept)
    return replace(state, surprises=(*kept, now)[-MAX_SURPRISES:])


def recent_surprises(state: PolicyState, now: float) -> tuple[float, ...]:
    return tuple(t for t in state.surprises if now - SURPRISE_MEMORY_S <= t <= now)


def headroom(state: PolicyState, now: float) -> float:
    """The share of the arrival level to keep spare: learned from recent surprises."""
    return min(MAX_HEADROOM, HEADROOM_PER_SURPRISE * len(recent_surprises(state, now)))
