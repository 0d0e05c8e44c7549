"""What the autoscaler decides from the gateway's scale-from-zero demand.

The demand Lease's format is `modelplane.api.demand` (the contract with the
gateway), read into a `DemandSignal`; here is what it means to the
autoscaler: whether a demand time counts (`held_demand`), whether a held
count belongs to the wake-up under way (`held_for_wake_up`,
`held_requests`), and whether a write of the Lease is demand to decide on at
once (`answers_demand_now`). Pure; the simulator in `bench/` uses the same
rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from modelplane.api.demand import DemandSignal, held_count
from modelplane.operator.autoscaler.observations import ReplicaObservation


class Pod(Protocol):
    @property
    def serving(self) -> bool: ...


def held_for_wake_up(
    demand_at: float | None, held: int | None, demand_counts: bool, woke_at: float | None
) -> tuple[int, float] | None:
    """The gateway's held count and when it was counted, when it belongs to the
    wake-up under way; else None.

    The gateway writes the count with the demand time in one patch, so the
    time says which wake-up the count is about. It counts when the demand
    itself does (`demand_counts`), and also while the replicas asked for by
    that wake-up load (the policy's `woke_at`, unset once one is ready): that
    is when the policy sizes the start with it.
    """
    if demand_at is None or held is None:
        return None
    if not demand_counts and (woke_at is None or demand_at < woke_at):
        return None
    return held, demand_at


def held_demand(
    signal: DemandSignal | None, current_replicas: int, last_scale_at: float | None, now: float
) -> float | None:
    """The gateway's scale-from-zero signal, while there is something to wake.

    The gateway renews its demand Lease while it holds requests and never
    deletes it. The policy counts demand newer than its own scale-to-zero
    rule's last firing as activity; but a model that started at zero, or went
    there by an ordinary scale-down, has no such time, so an old Lease
    would keep it at one replica for good, or wake it right after it went to
    zero. So the demand counts only while the count is zero
    (above zero, loading or serving replicas speak for the load), only if
    it is newer than the autoscaler's last change of the count, and only while
    the Lease is current (older than the gateway's hold, every request it was
    about has timed out).
    """
    if current_replicas > 0 or signal is None or signal.stale(now):
        return None
    demand = signal.requested_epoch()
    if demand is None or (last_scale_at is not None and demand <= last_scale_at):
        return None
    return demand


def held_requests(
    signal: DemandSignal | None, demand_counts: bool, woke_at: float | None
) -> tuple[int, float] | None:
    """The gateway's held count and when it was counted, when it belongs to the
    wake-up under way (`held_for_wake_up`). The count is the writing gateway
    replica's; with several replicas it is a lower bound.
    """
    if signal is None:
        return None
    return held_for_wake_up(
        signal.requested_epoch(), held_count(signal.held), demand_counts, woke_at
    )


def answers_demand_now(
    signal: DemandSignal | None, answered: str | None, pods: Sequence[Pod]
) -> bool:
    """Whether a write of the demand Lease is demand to decide on at once.

    Yes for a demand time not answered yet (`answered`: the last one decided on
    this way) while none of the model's pods serves: the model is at zero or all
    its replicas load, requests are held at the gateway, and the timer may be
    seconds away. Once a replica serves, its metrics speak for the load and the
    timer decides.
    """
    written = signal.requested_at if signal is not None else None
    if not written or written == answered:
        return False
    return not any(p.serving for p in pods)


def with_gateway_queue(
    observations: Sequence[ReplicaObservation], queued: int
) -> list[ReplicaObservation]:
    """The replicas' observations with the requests queued at the gateway added to their
    waiting, spread evenly over the measured ones: queued there, they are load the
    engines' own queues do not show. Nothing changes when none is queued or none measured."""
    measured = [o for o in observations if o.measured]
    if queued <= 0 or not measured:
        return list(observations)
    share = queued / len(measured)
    return [replace(o, waiting=o.waiting + share) if o.measured else o for o in observations]
