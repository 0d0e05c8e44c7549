"""When to tell the autoscaler that a model scaled to zero is wanted.

Every held request wants the model, but one signal per model per interval
is enough: the annotation only has to be newer than the autoscaler's last
scale-to-zero, and patching the resource on every request would load the
API server exactly when traffic arrives.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class DemandThrottle:
    interval_s: float = 10.0
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
    """UTC now as RFC 3339 with a `Z`, the format Kubernetes uses for timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
