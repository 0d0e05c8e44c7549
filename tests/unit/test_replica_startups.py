"""A pod's scheduled -> ready time, counted once per pod, and the latest one for status."""

from __future__ import annotations

from typing import Any

from modelplane.operator.reconcile.pods import observe_pod, scheduled_to_ready
from modelplane.operator.reconcile.startups import ReplicaStartups, latest_startup


def pod(name: str, scheduled: str | None, ready: str | None) -> dict[str, Any]:
    conditions = []
    if scheduled:
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}
        )
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ready})
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def test_start_up_runs_from_scheduling_to_readiness() -> None:
    observed = observe_pod(pod("a", "2026-12-06T07:00:00Z", "2026-12-06T07:01:45Z"))
    assert observed.ready and observed.startup_seconds == 105


def test_no_start_up_until_ready_or_with_unreadable_times() -> None:
    assert observe_pod(pod("a", "2026-12-06T07:00:00Z", None)).startup_seconds is None
    assert scheduled_to_ready([{"type": "Ready", "status": "True"}]) is None
    not_ready = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T07:00:00Z"},
        {"type": "Ready", "status": "False", "lastTransitionTime": "2026-12-06T07:00:09Z"},
    ]
    assert scheduled_to_ready(not_ready) is None
    garbled = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "yesterday"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T07:00:09Z"},
    ]
    assert scheduled_to_ready(garbled) is None


def test_each_pod_is_counted_once_and_the_latest_ready_one_is_reported() -> None:
    first = observe_pod(pod("a", "2026-12-06T07:00:00Z", "2026-12-06T07:01:00Z"))
    second = observe_pod(pod("b", "2026-12-06T07:02:00Z", "2026-12-06T07:02:20Z"))
    loading = observe_pod(pod("c", "2026-12-06T07:03:00Z", None))
    startups = ReplicaStartups()
    key = ("default", "chat")
    assert startups.newly_ready(key, [first, loading]) == [60]
    assert startups.newly_ready(key, [first, second, loading]) == [20]
    assert startups.newly_ready(key, [first, second, loading]) == []
    assert latest_startup([first, second, loading]) == 20
    assert latest_startup([loading]) is None
