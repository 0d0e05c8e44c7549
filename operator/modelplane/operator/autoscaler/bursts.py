"""Bursts: a jump in the arrival rate, and the capacity kept for ones that recur.

A model load takes longer than a spike takes to arrive: whatever comes in
above the ready capacity during one load time waits, whatever the policy
does once it has seen the spike. Two things help, and both live here:

* Seeing the jump itself, not its consequences: the fleet's arrival rate
  (from the replicas' request counters, or the gateway's held requests at
  zero) is compared with its mean over the last reaction time (the model
  load time the policy has measured). A rise by `BURST_FACTOR` that is not
  Poisson noise (`JUMP_SIGMAS` standard deviations of the count) is a burst,
  acted on before any replica's TTFT has had time to rise.
* Remembering bursts: each one is kept as (onset, peak arrival rate), and
  capacity for the highest peak is kept until an hour (`BURST_MEMORY_S`)
  has passed without a burst, so a burst that comes back lands on replicas
  that are already up. Bursts in this sense are rare (a jump of half again
  the load within one load time, far outside Poisson noise), so a smooth
  load never pays for it; a one-off pays an hour of its peak at most, and
  only for what the burst did not leave behind anyway.

Everything is pure and works on `PolicyState`, which stays small: the
rates of one load time and at most `MAX_BURSTS` bursts.
"""

from __future__ import annotations

import math
from dataclasses import replace

from modelplane.operator.autoscaler.state import PolicyState

BURST_FACTOR = 1.5  # arrivals (or the need) this many times the recent level: a burst
JUMP_SIGMAS = 4.0  # and above the recent level by this many standard deviations of the count
MIN_JUMP_REPLICAS = 0.5  # and by at least this share of one replica's capacity, when known
DEFAULT_LOAD_S = 60.0  # the reaction time until a model load has been measured
BURST_MEMORY_S = 3600.0  # a burst's peak is kept in capacity this long after the last burst
MAX_BURSTS = 16
MAX_RATES = 32
HELD_MIN_WINDOW_S = 5.0  # the held count is a rate over at least this long
LEVEL_S = 30.0  # the load level: mean arrival rate over this long (one window is noisy)


def horizon(state: PolicyState) -> float:
    """Seconds from asking for a replica to serving with it: the reaction time."""
    return state.load_s if state.load_s is not None else DEFAULT_LOAD_S


def learn_load_time(state: PolicyState, coming: int, now: float) -> PolicyState:
    """All replicas asked for are ready: the time since the ask is the load time."""
    if coming or state.loading_since is None:
        return state
    return replace(state, load_s=max(now - state.loading_since, 1.0), loading_since=None)


def held_rate(state: PolicyState, held: int | None, counted_at: float) -> float | None:
    """Requests/s arriving while none is ready: held since the wake-up, over its age
    when they were counted (the gateway counts when it writes its annotation)."""
    if held is None or state.woke_at is None:
        return None
    return held / max(counted_at - state.woke_at, HELD_MIN_WINDOW_S)


def note_rate(
    state: PolicyState, rate: float, now: float, window_s: float, capacity: float | None
) -> tuple[PolicyState, float | None]:
    """Record this decision's arrival rate; the recent mean it jumped from, if it did."""
    since = now - horizon(state)
    kept = tuple((t, r) for t, r in state.rates if t >= since)
    recent = [r for _, r in kept]
    state = replace(state, rates=(*kept, (now, rate))[-MAX_RATES:])
    before = recent
    if state.bursts and now - state.bursts[-1][0] <= horizon(state):
        # Still rising into the last burst: its peak is the best two-decision
        # mean, and the jump is measured from the level before it began.
        onset, peak = state.bursts[-1]
        both = (rate + recent[-1]) / 2 if recent else rate
        state = replace(state, bursts=(*state.bursts[:-1], (onset, max(peak, both))))
        before = [r for t, r in state.rates if since <= t < onset]
    if not before:
        return state, None
    reference = sum(before) / len(before)
    noise = JUMP_SIGMAS * math.sqrt(max(reference, 1.0 / window_s) / window_s)
    material = MIN_JUMP_REPLICAS * capacity if capacity is not None else 0.0
    jumped = rate >= BURST_FACTOR * reference and rate - reference >= max(noise, material)
    return state, reference if jumped else None


def level(state: PolicyState, now: float) -> float | None:
    """The mean arrival rate over the last `LEVEL_S` (the rates recorded up to now).

    One 10-second window of Poisson arrivals is off by a few standard
    deviations now and then; sizing on each would buy a replica for every
    unlucky window and keep it for scaleDownDelaySeconds. Real jumps are
    caught on the raw rate by `note_rate`.
    """
    recent = [r for t, r in state.rates if t > now - LEVEL_S]
    return sum(recent) / len(recent) if recent else None


def start_burst(
    state: PolicyState, now: float, delay: float, peak: float | None
) -> tuple[PolicyState, float]:
    """A burst: remember it (unless it is the last one, still rising) and hold for it.

    Returns the state and how long from now the burst reserve is held.
    """
    kept = tuple(b for b in state.bursts if b[0] >= now - BURST_MEMORY_S)
    if not kept or now - kept[-1][0] > horizon(state):
        kept = (*kept, (now, peak or 0.0))[-MAX_BURSTS:]
    # else: the last burst still rising; `note_rate` keeps its peak.
    hold = max(delay, BURST_MEMORY_S)
    until = max(state.burst_until or now, now + hold)
    return replace(state, bursts=kept, burst_until=until), hold


def reserve(state: PolicyState, now: float) -> float | None:
    """Arrivals (req/s) to keep capacity for: the highest remembered peak, while held."""
    if state.burst_until is None or now >= state.burst_until:
        return None
    peaks = [peak for onset, peak in state.bursts if onset >= now - BURST_MEMORY_S]
    return max(peaks, default=None)
