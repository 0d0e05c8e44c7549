"""Whether this operator replica is the active one, for the loops kopf does not pause.

With `--peering NAME` kopf pauses its own handlers while another replica with
a higher (or the same) priority keeps its record alive in the peering
object. The resync loop and the measuring loop (autoscaler, canary analysis)
are the operator's own tasks, not kopf handlers: kopf cannot pause them, and
two replicas would both scale and patch. So each tick of each loop asks
`ActivityGate.active()`: standalone, the answer is always yes and costs
nothing; peered, `PeeringGate` reads the peering object(s) once and decides
with `decide_activity`, kopf's own rule (`kopf._core.engines.peering`):

- the object's `status` holds one record per replica, keyed by its identity
  (`POD_ID`): `{priority, lifetime, lastseen}`. A record is live until
  `lastseen + lifetime`, read as kopf reads it (lifetime 60 s when absent, a
  record without `lastseen` counts as seen now, a time without a zone is UTC).
  kopf allows no clock skew between replicas, so neither does this: both
  must agree on when a record expires;
- another live record with a higher priority pauses this replica; one with
  the same priority pauses it too (kopf pauses every replica of a tie; its
  exception for sharded operators does not apply, Modelplane does not shard);
- stricter than kopf: this replica's own record must be there and live,
  otherwise the others cannot know about it (before its first keep-alive,
  after the object was recreated) and may be working themselves.

A namespaced operator has a KopfPeering in each watched namespace; it is
active only if active in every one (kopf pauses on a conflict in any). A
peering object that cannot be read pauses for that tick: not knowing is not
permission. Each change between active and paused is logged once, with why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from modelplane.operator.kube.client import KubeApi

log = logging.getLogger(__name__)

KOPF_DEFAULT_LIFETIME: Final = 60  # seconds, for a record that does not say
POD_ID_ENV: Final = "POD_ID"  # where kopf takes this replica's identity from
PEERING_API: Final = "/apis/kopf.dev/v1"


@dataclass(frozen=True)
class PeerRecord:
    identity: str
    priority: int
    expires: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires  # kopf: dead once `deadline <= now`


def _moment(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def peer_records(status: Mapping[str, Any] | None, now: datetime) -> list[PeerRecord]:
    """The records in a peering object's status; malformed ones are left out."""
    records = []
    for identity, record in (status or {}).items():
        if not isinstance(record, Mapping):
            continue  # e.g. a record being removed (null)
        try:
            priority = int(record.get("priority", 0))
            lifetime = int(record.get("lifetime", KOPF_DEFAULT_LIFETIME))
            seen = _moment(record.get("lastseen"), now)
        except (TypeError, ValueError, OverflowError):
            continue
        records.append(PeerRecord(str(identity), priority, seen + timedelta(seconds=lifetime)))
    return records


@dataclass(frozen=True)
class Activity:
    active: bool
    reason: str


def decide_activity(
    status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime
) -> Activity:
    """Active iff this replica's record is live and no other live one has priority >= ours."""
    records = peer_records(status, now)
    own = next((r for r in records if r.identity == identity), None)
    if own is None or not own.live(now):
        state = "missing" if own is None else "expired"
        return Activity(False, f"this replica's record ({identity}) is {state}")
    others = [r for r in records if r.identity != identity and r.live(now)]
    higher = sorted((r for r in others if r.priority > priority), key=lambda r: -r.priority)
    if higher:
        return Activity(False, f"{higher[0].identity} has a higher priority ({higher[0].priority})")
    tied = sorted(r.identity for r in others if r.priority == priority)
    if tied:
        return Activity(
            False, f"{', '.join(tied)} has the same priority ({priority}): kopf pauses a tie"
        )
    return Activity(True, f"this replica ({identity}) has the highest priority ({priority})")


def combine(activities: Iterable[Activity]) -> Activity:
    """Active where every peering object says so; else the first reason to pause."""
    checked = list(activities)
    paused = [a for a in checked if not a.active]
    return paused[0] if paused else checked[0]


def peering_paths(name: str, namespaces: Sequence[str]) -> list[str]:
    """The peering object kopf uses: cluster-wide without namespaces, else one in each."""
    if not namespaces:
        return [f"{PEERING_API}/clusterkopfpeerings/{name}"]
    return [f"{PEERING_API}/namespaces/{ns}/kopfpeerings/{name}" for ns in namespaces]


class ActivityGate(Protocol):
    async def active(self) -> bool:
        """Whether the operator's own loops may work this tick."""
        ...


class Standalone:
    """No peers: always active, and nothing to read."""

    async def active(self) -> bool:
        return True


class PeeringGate:
    """kopf's peering rule, read from the peering object(s) on every call."""

    def __init__(
        self,
        api: KubeApi,
        paths: Sequence[str],
        identity: str,
        priority: int,
        *,
        on_resume: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._paths = list(paths)
        self._identity = identity
        self._priority = priority
        self._on_resume = on_resume
        self._clock = clock
        self._active: bool | None = None  # None: not decided yet
        self._lock = asyncio.Lock()

    async def active(self) -> bool:
        # One caller at a time, so that each transition is seen (and logged) once.
        async with self._lock:
            activity = await asyncio.to_thread(self._read)
            if activity.active != self._active:
                if activity.active:
                    log.info("operator loops active: %s", activity.reason)
                    if self._active is False and self._on_resume is not None:
                        self._on_resume()
                else:
                    log.info("operator loops paused: %s", activity.reason)
                self._active = activity.active
            return activity.active

    def _read(self) -> Activity:
        activities = []
        for path in self._paths:
            try:
                body = self._api.request("GET", path)
            except Exception as err:  # any failure (HTTP, connection, body): not known active
                activities.append(Activity(False, f"cannot read {path}: {err}"))
                continue
            status = body.get("status")
            activities.append(
                decide_activity(
                    status if isinstance(status, Mapping) else None,
                    self._identity,
                    self._priority,
                    self._clock(),
                )
            )
        return combine(activities)


def activity_gate(
    api: KubeApi,
    *,
    peering: str | None,
    priority: int,
    namespaces: Sequence[str],
    identity: str | None,
    on_resume: Callable[[], None] | None = None,
) -> ActivityGate:
    """Standalone without `peering`; else the gate on that peering object, as `identity`
    (kopf's own: $POD_ID, which `modelplane operator` and the chart always set)."""
    if peering is None:
        return Standalone()
    if not identity:
        raise ValueError(
            "peering needs this replica's identity in POD_ID (kopf records it under that "
            "name); run `modelplane operator --peering`, which sets it, or set POD_ID"
        )
    return PeeringGate(
        api, peering_paths(peering, namespaces), identity, priority, on_resume=on_resume
    )
