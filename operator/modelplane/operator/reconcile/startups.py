"""Replica start-ups: each pod's scheduled -> ready time, counted once, and the latest one.

The reconciler observes each pod's start-up in the operator's histogram the
first time it sees the pod ready (once per pod per operator run: a restarted
operator counts the pods it finds ready once more, in its fresh histogram),
and writes the most recently ready pod's figure to
`status.lastReplicaStartupSeconds`.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelplane.operator.reconcile.pods import ObservedPod

OwnerKey = tuple[str, str]


def latest_startup(pods: Iterable[ObservedPod]) -> float | None:
    """The start-up of the pod that turned ready last, among those with one."""
    timed = [p for p in pods if p.ready_at is not None and p.startup_seconds is not None]
    if not timed:
        return None
    return max(timed, key=lambda p: (p.ready_at, p.name)).startup_seconds


class ReplicaStartups:
    """Which pods' start-ups were already counted, per LLMDeployment."""

    def __init__(self) -> None:
        self._counted: dict[OwnerKey, set[str]] = {}

    def newly_ready(self, key: OwnerKey, pods: Iterable[ObservedPod]) -> list[float]:
        """Start-ups not counted before; pods gone are forgotten, so the memory stays small."""
        pods = list(pods)
        counted = self._counted.setdefault(key, set())
        counted &= {p.name for p in pods}
        new = []
        for pod in pods:
            if pod.startup_seconds is not None and pod.name not in counted:
                counted.add(pod.name)
                new.append(pod.startup_seconds)
        return new

    def forget(self, key: OwnerKey) -> None:
        self._counted.pop(key, None)
