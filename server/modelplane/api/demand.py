"""The scale-from-zero demand contract between the gateway and the operator, in one place.

While a model has no ready replica the gateway holds its requests and, at most
every couple of seconds per model (`gateway.demand.DemandThrottle`), patches
two annotations onto the LLMDeployment in one merge patch
(`demand_annotations`):

- `modelplane.io/scale-from-zero-requested-at`: when it held a request, RFC
  3339 UTC with microseconds (Kubernetes' MicroTime form). The autoscaler
  counts a time newer than its last change of the count, while the count is
  zero, as demand for a replica;
- `modelplane.io/scale-from-zero-held-requests`: how many requests that
  gateway replica held then (a decimal integer; with several gateway replicas
  the last write wins, a lower bound). Over the time since the wake-up it is
  the arrival rate that sizes the start.

The operator reads them with `demand_time` and `held_count`, which turn
anything unreadable into "no demand" / "unknown": a bad annotation must
neither wake a model nor fail a tick. What the autoscaler decides from them is
in `modelplane.operator.autoscaler.demand`.
"""

from __future__ import annotations

import datetime as dt

from modelplane.api import contract

DEMAND_AT = contract.ANNOTATION_DEMAND_AT
DEMAND_HELD = contract.ANNOTATION_DEMAND_HELD


def demand_stamp(now: dt.datetime | None = None) -> str:
    """UTC now as RFC 3339 with microseconds and a `Z` (Kubernetes' MicroTime format).

    Whole seconds would do to order demand against a scale, but the autoscaler
    also divides the held count by the time since the wake-up, a few seconds.
    """
    moment = now or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def demand_annotations(held: int, now: dt.datetime | None = None) -> dict[str, str]:
    """The gateway's patch: when it held a request, and how many it holds."""
    return {DEMAND_AT: demand_stamp(now), DEMAND_HELD: str(held)}


def demand_time(annotation: str | None) -> float | None:
    """The gateway's scale-from-zero annotation (RFC 3339) as epoch seconds, for `decide`.

    Anything unreadable counts as no demand: a bad annotation must not wake a model.
    """
    if not annotation:
        return None
    try:
        moment = dt.datetime.fromisoformat(annotation.strip())
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
