"""What the policy remembers between decisions, as a small JSON-able value.

The operator stores `PolicyState.to_dict()` on the LLMDeployment when it
changes and passes `PolicyState.from_dict(...)` back in, so a restarted
operator neither scales down early (the headroom history and its start
survive) nor forgets a pending scale-down timer. Anything unreadable becomes
a fresh state: the only cost is one more `scaleDownDelaySeconds` of waiting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

STATE_VERSION = 1


@dataclass(frozen=True)
class PolicyState:
    # Recent replica needs as (time, replicas), kept as a sliding-window maximum:
    # each entry is larger than every later one, so the first is the window's max.
    recent_needs: tuple[tuple[float, int], ...] = ()
    # Since when `recent_needs` has been recorded without a gap; scale-down needs
    # a full scaleDownDelaySeconds of history.
    recording_since: float | None = None
    last_decision_at: float | None = None
    # The need (in replicas, unrounded) the last scale-up was sized for, and when.
    # While those replicas load, more are added only if the need grows past it.
    scaled_for: float = 0.0
    last_scale_up_at: float | None = None
    # No scale-down below the burst reserve before this time (see bursts.py).
    burst_until: float | None = None
    # Recent bursts as (onset, peak arrivals req/s), the last hour at most:
    # recurring bursts keep capacity for their peak through the usual gap.
    bursts: tuple[tuple[float, float], ...] = ()
    # The fleet's arrival rate (req/s) at recent decisions, as (time, rate),
    # over one reaction time: what a jump in the load is measured against.
    # A sample per decision, so it is neither stored nor compared: a state
    # that differs only in it needs no write (the operator stores the state
    # when it changes), and after a restart a minute of new samples rebuilds it.
    rates: tuple[tuple[float, float], ...] = field(default=(), compare=False)
    # Seconds from asking for replicas to all of them ready, as last seen
    # (None: not seen yet), and since when replicas have been loading.
    load_s: float | None = None
    loading_since: float | None = None
    # When the gateway first held requests after the last scale-to-zero:
    # the held count over the time since is the demand's rate.
    woke_at: float | None = None
    # Last time any request was seen (running, waiting, first tokens, held demand).
    last_active_at: float | None = None
    # When the policy last scaled to zero; gateway demand newer than this wakes it.
    zero_since: float | None = None
    # Requests/s one replica takes before its TTFT p95 nears the target:
    # learned from the replicas themselves (see policy), None until first seen.
    capacity_rps: float | None = None
    # The highest request rate per replica carried with every replica well
    # under its targets for a while: a floor for scale-down while the knee is
    # unknown, and what the knee estimate may be probed past (see policy).
    proven_rps: float | None = None
    # Since when every replica has been well under its targets (None: the last
    # window was not): only a level carried that long proves anything.
    cool_since: float | None = None
    # The request rate per replica at which the fleet last broke its TTFT
    # target under steady load: the knee estimate is never probed past it.
    hot_rps: float | None = None
    version: int = field(default=STATE_VERSION)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recent_needs"] = [[t, n] for t, n in self.recent_needs]
        data["bursts"] = [[t, r] for t, r in self.bursts]
        del data["rates"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PolicyState:
        """The stored state, or a fresh one if it is missing, foreign or damaged."""
        if not data or data.get("version") != STATE_VERSION:
            return cls()
        try:
            return cls(
                recent_needs=tuple((float(t), int(n)) for t, n in data.get("recent_needs", ())),
                recording_since=_time(data.get("recording_since")),
                last_decision_at=_time(data.get("last_decision_at")),
                scaled_for=float(data.get("scaled_for", 0.0)),
                last_scale_up_at=_time(data.get("last_scale_up_at")),
                burst_until=_time(data.get("burst_until")),
                bursts=_pairs(data.get("bursts", ())),
                load_s=_positive(data.get("load_s")),
                loading_since=_time(data.get("loading_since")),
                woke_at=_time(data.get("woke_at")),
                last_active_at=_time(data.get("last_active_at")),
                zero_since=_time(data.get("zero_since")),
                capacity_rps=_positive(data.get("capacity_rps")),
                proven_rps=_positive(data.get("proven_rps")),
                cool_since=_time(data.get("cool_since")),
                hot_rps=_positive(data.get("hot_rps")),
            )
        except (TypeError, ValueError):
            return cls()

    @classmethod
    def from_json(cls, text: str | None) -> PolicyState:
        try:
            data = json.loads(text) if text else None
        except ValueError:
            return cls()
        return cls.from_dict(data if isinstance(data, dict) else None)

    def with_need(self, now: float, need: int, window_s: float) -> PolicyState:
        """Record this decision's need, dropping what fell out of the window."""
        kept = [(t, n) for t, n in self.recent_needs if t >= now - window_s and n > need]
        return replace(self, recent_needs=(*kept, (now, need)))

    def window_max(self) -> int | None:
        return self.recent_needs[0][1] if self.recent_needs else None


def _pairs(values: Any) -> tuple[tuple[float, float], ...]:
    pairs = tuple((float(a), float(b)) for a, b in values)
    if not all(math.isfinite(a) and math.isfinite(b) for a, b in pairs):
        raise ValueError("not a time series")
    return pairs


def _positive(value: Any) -> float | None:
    number = _time(value)
    if number is not None and number <= 0:
        raise ValueError("not a capacity")
    return number


def _time(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a time")
    return number
