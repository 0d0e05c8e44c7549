"""Storing the autoscaling policy's state on the resource without a write every tick.

The policy returns a new `PolicyState` every decision, and three of its
fields move with the clock alone: `last_decision_at`, the time of the
newest entry of `recent_needs` (always the current need, re-recorded each
tick) and, while requests flow, `last_active_at`. Writing the annotation
for those would make every tick of every autoscaled resource an API write.
So the operator stores the state only when its *durable* part changes (a
need moves, a scale, a burst, a learned capacity, activity starting or
stopping), which for a steady resource is never.

After a restart the stored state is exact except for those clock-driven
fields, which held their stored values until the previous operator's last
tick. `resume` sets them to now, so the history continues through the
restart: the scale-down timer (`recording_since`) and the window of needs
survive, and neither the policy's history-gap rule nor a stale activity
time can trigger an early scale-down or scale-to-zero. The price is that
the minutes no operator ran count as what was stored.
"""

from __future__ import annotations

from dataclasses import replace

from modelplane.operator.autoscaler import PolicyState

ACTIVE: float = -1.0  # stands for "active at the latest decision" in the durable form


def _active(state: PolicyState) -> bool:
    return (
        state.last_active_at is not None
        and state.last_decision_at is not None
        and state.last_active_at >= state.last_decision_at
    )


def durable(state: PolicyState) -> PolicyState:
    """`state` without what changes with the clock alone (for comparisons)."""
    needs = state.recent_needs
    if needs:
        needs = (*needs[:-1], (0.0, needs[-1][1]))
    return replace(
        state,
        last_decision_at=None,
        recent_needs=needs,
        last_active_at=ACTIVE if _active(state) else state.last_active_at,
    )


def needs_storing(state: PolicyState, stored: PolicyState | None) -> bool:
    """Whether the annotation must be (re)written to hold `state`."""
    return stored is None or durable(state) != durable(stored)


def resume(stored: PolicyState, now: float) -> PolicyState:
    """The stored state continued to `now` by a restarted operator."""
    if stored.last_decision_at is None:
        return stored
    needs = stored.recent_needs
    if needs:
        needs = (*needs[:-1], (now, needs[-1][1]))
    return replace(
        stored,
        last_decision_at=now,
        recent_needs=needs,
        last_active_at=now if _active(stored) else stored.last_active_at,
    )
