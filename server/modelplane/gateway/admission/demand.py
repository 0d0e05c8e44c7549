"""When to tell the autoscaler that a model scaled to zero is wanted.

Every held request wants the model, but one signal per model per interval
is enough: the annotation only has to be newer than the autoscaler's last
scale-to-zero, and patching the resource on every request would load the
API server exactly when traffic arrives. The default interval is short (2 s)
because the held count written with each signal is how the autoscaler
measures the arrival rate while the first replica loads: the sooner it has a
second count, the sooner it asks for every replica the load needs. Signals
happen only while requests are held (a cold start), so the cost is a few
patches per start. What the patch holds is `modelplane.api.demand`.
"""

from __future__ import annotations

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
