"""The scale-from-zero demand contract between the gateway and the operator, in one place.

While a model has no ready replica the gateway holds its requests and, at most
every couple of seconds per model (`gateway.admission.demand.DemandThrottle`),
renews a `coordination.k8s.io/v1` Lease in the LLMDeployment's namespace
(`demand_lease_name`, owned by the LLMDeployment, labelled by
`demand_lease_labels`):

- `spec.renewTime`: when it held a request (Kubernetes' MicroTime, RFC 3339
  UTC with microseconds). The autoscaler counts a time newer than its last
  change of the count, while the count is zero, as demand for a replica;
- `spec.leaseDurationSeconds`: how long the gateway holds a request; demand
  older than that is stale (every request it was about has timed out);
- `spec.holderIdentity`: which gateway replica wrote it;
- the annotation `modelplane.io/scale-from-zero-held-requests`: how many
  requests that gateway replica held then (a decimal integer; with several
  gateway replicas the last write wins, a lower bound). Over the time since
  the wake-up it is the arrival rate that sizes the start.

A Lease, not an annotation on the LLMDeployment: writing the LLMDeployment
would need `patch` on it, and whoever holds that can set `engine.image` and
have any pod run. The gateway may write Leases only, and touches only the ones
labelled as its own (`is_demand_lease`).

The operator reads a Lease with `demand_signal`, and `demand_time` and
`held_count` turn anything unreadable into "no demand" / "unknown": a bad
Lease must neither wake a model nor fail a tick. What the autoscaler decides
from them is in `modelplane.operator.autoscaler.demand`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from modelplane.api import contract

LEASE_API_VERSION: Final = "coordination.k8s.io/v1"
LEASE_GROUP: Final = "coordination.k8s.io"
LEASE_VERSION: Final = "v1"
LEASE_PLURAL: Final = "leases"
LEASE_KIND: Final = "Lease"
DEMAND_HELD: Final = contract.ANNOTATION_DEMAND_HELD
GATEWAY_QUEUED: Final = contract.ANNOTATION_GATEWAY_QUEUED
# A queued count older than this is no longer demand: the gateway rewrites it every few
# seconds while requests wait, and once more when its queue empties.
QUEUED_MAX_AGE_S: Final = 30.0
# The Lease's own labels: the operator lists and watches by them (server-side), and
# the gateway writes no Lease that lacks them.
COMPONENT_DEMAND: Final = "scale-from-zero-demand"
MANAGED_BY_GATEWAY: Final = "modelplane-gateway"
# Label -> required value; None: present, with any value (the LLMDeployment's name).
DEMAND_LEASE_SELECTOR: Final[Mapping[str, str | None]] = {
    contract.LABEL_PART_OF: contract.PART_OF,
    contract.LABEL_COMPONENT: COMPONENT_DEMAND,
    contract.LABEL_LLMDEPLOYMENT: None,
}
LEASE_SUFFIX: Final = "-scale-from-zero"
MAX_NAME: Final = 253  # a Lease's name is a DNS subdomain


def demand_lease_name(llmdeployment: str) -> str:
    """`<name>-scale-from-zero`, shortened with a hash when that is too long for a name."""
    name = f"{llmdeployment}{LEASE_SUFFIX}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(llmdeployment.encode()).hexdigest()[:10]
    keep = MAX_NAME - len(LEASE_SUFFIX) - len(digest) - 1
    return f"{llmdeployment[:keep].rstrip('.-')}-{digest}{LEASE_SUFFIX}"


def demand_lease_labels(llmdeployment: str) -> dict[str, str]:
    return {
        contract.LABEL_PART_OF: contract.PART_OF,
        contract.LABEL_COMPONENT: COMPONENT_DEMAND,
        contract.LABEL_MANAGED_BY: MANAGED_BY_GATEWAY,
        contract.LABEL_LLMDEPLOYMENT: llmdeployment,
    }


def demand_stamp(now: dt.datetime | None = None) -> str:
    """UTC now as RFC 3339 with microseconds and a `Z` (Kubernetes' MicroTime format).

    Whole seconds would do to order demand against a scale, but the autoscaler
    also divides the held count by the time since the wake-up, a few seconds.
    """
    moment = now or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def demand_renewal(
    held: int, holder: str, hold_seconds: float, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The part of a demand Lease the gateway writes on every signal (a merge patch)."""
    return {
        "metadata": {"annotations": {DEMAND_HELD: str(held)}},
        "spec": {
            "holderIdentity": holder,
            "renewTime": demand_stamp(now),
            "leaseDurationSeconds": max(1, round(hold_seconds)),
        },
    }


def demand_lease(
    namespace: str,
    llmdeployment: str,
    owner_uid: str,
    held: int,
    holder: str,
    hold_seconds: float,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A new demand Lease, owned by its LLMDeployment (deleted with it)."""
    renewal = demand_renewal(held, holder, hold_seconds, now)
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": LEASE_KIND,
        "metadata": {
            "name": demand_lease_name(llmdeployment),
            "namespace": namespace,
            "labels": demand_lease_labels(llmdeployment),
            "annotations": renewal["metadata"]["annotations"],
            "ownerReferences": [
                {
                    "apiVersion": contract.API_VERSION,
                    "kind": contract.KIND,
                    "name": llmdeployment,
                    "uid": owner_uid,
                }
            ],
        },
        "spec": renewal["spec"],
    }


def is_demand_lease(lease: Mapping[str, Any], llmdeployment: str) -> bool:
    """Whether a Lease is the gateway's demand Lease of this LLMDeployment (anything else,
    another controller's Lease of the same name included, is left alone)."""
    labels = (lease.get("metadata") or {}).get("labels") or {}
    wanted = demand_lease_labels(llmdeployment)
    return all(labels.get(key) == value for key, value in wanted.items())


@dataclass(frozen=True)
class DemandSignal:
    """What one demand Lease says, as written (read with `demand_time` and `held_count`)."""

    requested_at: str | None  # spec.renewTime
    held: str | None  # the held-requests annotation
    lease_seconds: int | None = None  # spec.leaseDurationSeconds: how long the demand stands
    queued: str | None = None  # the gateway-queued-requests annotation ("COUNT@TIME")

    def requested_epoch(self) -> float | None:
        return demand_time(self.requested_at)

    def stale(self, now: float) -> bool:
        """Whether every request the demand was about has timed out at the gateway."""
        at = self.requested_epoch()
        if at is None or self.lease_seconds is None:
            return False
        return now > at + self.lease_seconds


def demand_signal(lease: Mapping[str, Any]) -> DemandSignal:
    """The demand a Lease records (anything missing reads as None)."""
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    seconds = spec.get("leaseDurationSeconds")
    renew = spec.get("renewTime")
    held = annotations.get(DEMAND_HELD)
    queued = annotations.get(GATEWAY_QUEUED)
    return DemandSignal(
        requested_at=renew if isinstance(renew, str) else None,
        held=held if isinstance(held, str) else None,
        lease_seconds=seconds if isinstance(seconds, int) and seconds > 0 else None,
        queued=queued if isinstance(queued, str) else None,
    )


def queued_renewal(queued: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """The merge patch a gateway writes for requests it queues (0 once its queue empties)."""
    return {"metadata": {"annotations": {GATEWAY_QUEUED: f"{max(0, queued)}@{demand_stamp(now)}"}}}


def queued_count(annotation: str | None, now: float, max_age_s: float = QUEUED_MAX_AGE_S) -> int:
    """Requests queued at the gateway (the writing replica's; a lower bound with several),
    0 when unknown, unreadable or older than `max_age_s`: a stale count is no demand."""
    if not annotation or len(annotation) > 64:
        return 0
    count, _, stamp = annotation.partition("@")
    at = demand_time(stamp)
    if not count.isdecimal() or at is None or not (now - max_age_s <= at <= now + max_age_s):
        return 0
    return int(count)


def demand_time(stamp: str | None) -> float | None:
    """The gateway's demand time (RFC 3339) as epoch seconds, for `decide`.

    Anything unreadable counts as no demand: a bad Lease must not wake a model.
    """
    if not stamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # no zone, no way to compare it with the policy's clock
    return moment.timestamp()


def held_count(annotation: str | None) -> int | None:
    """The gateway's held-requests annotation (a count), for `decide`'s `held_requests`.

    Anything that is not a non-negative decimal integer counts as unknown: a
    bad annotation must neither size a start nor fail the tick.
    """
    if annotation is None:
        return None
    text = annotation.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 9:
        return None
    return int(text)
