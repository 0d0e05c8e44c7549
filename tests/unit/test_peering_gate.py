"""The peering rule the operator's own loops follow: kopf's, as tables, and checked against kopf.

Times are fixed (NOW) for the table; the cross-check runs kopf's own
peering event processing on the same objects, with times relative to the
real clock (kopf reads it), far from any record's deadline.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._core.engines.peering import Identity, process_peering_event

from modelplane.operator.kube.peering import (
    Activity,
    combine,
    decide_activity,
    peer_records,
    peering_paths,
)

NOW = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)
ME = "operator-7f9c-a"
PRIORITY = 100


def record(priority: int | None = None, seen_ago: float = 0, lifetime: int | None = 60,
           now: datetime = NOW) -> dict[str, Any]:  # fmt: skip
    """A keep-alive as kopf writes it (`Peer.as_dict`), `seen_ago` seconds old."""
    out: dict[str, Any] = {"lastseen": (now - timedelta(seconds=seen_ago)).isoformat()}
    if priority is not None:
        out["priority"] = priority
    if lifetime is not None:
        out["lifetime"] = lifetime
    return out


MINE = record(PRIORITY)

CASES: dict[str, tuple[dict[str, Any] | None, bool, str]] = {
    # name: (status, active, a phrase of the reason)
    "alone": ({ME: MINE}, True, "highest priority (100)"),
    "no status at all": (None, False, "is missing"),
    "own record missing": ({"other": record(50)}, False, "is missing"),
    "own record expired": ({ME: record(PRIORITY, seen_ago=61)}, False, "is expired"),
    "own record at its deadline": ({ME: record(PRIORITY, seen_ago=60)}, False, "is expired"),
    "a lower live peer": ({ME: MINE, "b": record(50)}, True, "highest"),
    "a higher live peer": ({ME: MINE, "b": record(200)}, False, "b has a higher priority (200)"),
    "the highest of two higher": (
        {ME: MINE, "b": record(200), "c": record(300)}, False, "c has a higher priority (300)"),
    "a higher peer, expired": ({ME: MINE, "b": record(200, seen_ago=61)}, True, "highest"),
    "a higher peer just alive": ({ME: MINE, "b": record(200, seen_ago=59)}, False, "higher"),
    "a higher peer, long lifetime": (
        {ME: MINE, "b": record(200, seen_ago=500, lifetime=600)}, False, "higher"),
    "a tie pauses (kopf pauses both)": (
        {ME: MINE, "b": record(PRIORITY)}, False, "b has the same priority (100)"),
    "a tie, expired": ({ME: MINE, "b": record(PRIORITY, seen_ago=120)}, True, "highest"),
    # kopf allows no clock skew: a peer whose clock runs ahead stays live that much longer,
    "a peer's clock 30 s ahead": ({ME: MINE, "b": record(200, seen_ago=-30)}, False, "higher"),
    # and one whose clock runs behind by more than its lifetime looks dead, in kopf too.
    "a peer's clock 90 s behind": ({ME: MINE, "b": record(200, seen_ago=90)}, True, "highest"),
    # kopf's defaults for fields a record leaves out:
    "no lastseen: seen now": ({ME: MINE, "b": {"priority": 200}}, False, "higher"),
    "no lifetime: 60 s": ({ME: MINE, "b": record(200, seen_ago=59, lifetime=None)}, False, "hig"),
    "no lifetime, 61 s old": ({ME: MINE, "b": record(200, seen_ago=61, lifetime=None)}, True, ""),
    "no priority: 0": ({ME: MINE, "b": record(None)}, True, "highest"),
    "a zone-less time is UTC": (
        {ME: MINE, "b": {"priority": 200, "lastseen": "2027-01-15T07:59:30"}}, False, "higher"),
    "a Z time": ({ME: MINE, "b": {"priority": 200, "lastseen": "2027-01-15T07:58:30Z"}}, True, ""),
    # Records kopf could not read either are left out, not guessed at.
    "a malformed record": ({ME: MINE, "b": {"priority": 200, "lastseen": "soon"}}, True, ""),
    "a record being removed": ({ME: MINE, "b": None}, True, "highest"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_activity_follows_kopfs_peering_rule(case: str) -> None:
    status, active, reason = CASES[case]
    activity = decide_activity(status, ME, PRIORITY, NOW)
    assert activity.active is active
    assert reason in activity.reason


# Statuses whose records are far from their deadlines, relative to the real clock.
LIVE_STATUSES: list[dict[str, Any]] = [
    {"b": {"priority": 50}},
    {"b": {"priority": 200}},
    {"b": {"priority": PRIORITY}},
    {"b": {"priority": 200, "lifetime": 1, "seen_ago": 3600}},
    {"b": {"priority": 50}, "c": {"priority": 300, "lifetime": 600, "seen_ago": 300}},
    {"b": {"priority": PRIORITY, "lifetime": 60, "seen_ago": 120}, "c": {"priority": 7}},
    {"b": {"priority": 100, "lifetime": 60, "seen_ago": -120}},  # clock ahead
]


def kopf_pauses(status: dict[str, Any], priority: int) -> bool:
    """kopf's own verdict: its peering event processing, on the same object."""
    settings = kopf.OperatorSettings()
    settings.peering.name, settings.peering.priority = "mp", priority
    conflicts = aiotoggles.Toggle()
    # Already set: kopf does not sleep until the blocking records expire (nor touch then).
    pressure = asyncio.Event()
    pressure.set()
    event: Any = {"type": "MODIFIED", "object": {"metadata": {"name": "mp"}, "status": status}}
    nowhere: Any = None  # where kopf would write: never, with autoclean off and no sleep
    asyncio.run(
        process_peering_event(
            raw_event=event, namespace=nowhere, resource=nowhere, identity=Identity(ME),
            settings=settings, autoclean=False, stream_pressure=pressure,
            conflicts_found=conflicts,
        )
    )  # fmt: skip
    return conflicts.is_on()


@pytest.mark.parametrize("others", LIVE_STATUSES)
def test_the_same_verdict_as_kopf_whenever_our_own_record_is_live(others: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    status = {
        name: record(info["priority"], info.get("seen_ago", 0), info.get("lifetime", 60), now)
        for name, info in others.items()
    }
    status[ME] = record(PRIORITY, now=now)
    activity = decide_activity(status, ME, PRIORITY, datetime.now(UTC))
    assert activity.active is not kopf_pauses(status, PRIORITY)


def test_records_are_read_as_kopf_reads_them() -> None:
    (b,) = peer_records({"b": {"priority": "7", "lifetime": "30"}}, NOW)
    assert (b.identity, b.priority, b.expires) == ("b", 7, NOW + timedelta(seconds=30))


def test_a_namespaced_operator_is_active_only_where_every_peering_says_so() -> None:
    go, stop = Activity(True, "highest"), Activity(False, "b has a higher priority (200)")
    assert combine([go, go]) == go
    assert combine([go, stop, Activity(False, "later")]) == stop


def test_the_peering_object_kopf_uses() -> None:
    assert peering_paths("mp", []) == ["/apis/kopf.dev/v1/clusterkopfpeerings/mp"]
    assert peering_paths("mp", ["a", "b"]) == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings/mp",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings/mp",
    ]
