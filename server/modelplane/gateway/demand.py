"""When to tell the autoscaler that a model scaled to zero is wanted.

Every held request wants the model, but one signal per model per interval
is enough: the annotation only has to be newer than the autoscaler's last
scale-to-zero, and patching the resource on every request would load the
API server exactly when traffic arrives. The default interval is short (2 s)
because the held count written with each signal is how the autoscaler
measures the arrival rate while the first replica loads: the sooner it has a
second count, the sooner it asks for every replica the load needs. Signals
happen only while requests are held (a cold start), so the cost is a few
patches per start.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class DemandThrottle:
    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)

    def should_signal(self, model: str) -> bool:
        now = self.clock()
        last = self._last.get(model)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[model] = now
        return True


def rfc3339_now() -> str:
    """UTC now as RFC 3339 with microseconds and a `Z` (Kubernetes' MicroTime format).

    Whole seconds would do to order demand against a scale, but the autoscaler
    also divides the held count by the time since the wake-up, a few seconds.
    """
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
