"""Where the server is in its life: loading, ready, draining, failed.

Readiness (`/ready`) and the gate in front of the engine both read this one
object; the drain on SIGTERM and the engine loader write it. `in_flight`
counts requests the engine is working on, and the time of the last one to
start or finish is kept, so a drain knows when the replica has gone quiet.
"""

from __future__ import annotations

import asyncio
import math
import time
from enum import StrEnum


class Phase(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.detail = "loading model weights"
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_activity = -math.inf  # time.monotonic() of the last start or finish

    def mark_ready(self) -> None:
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY
            self.detail = "ready"

    def mark_failed(self, reason: str) -> None:
        self.phase = Phase.FAILED
        self.detail = reason

    def start_drain(self) -> bool:
        """Turn readiness off; requests still arriving are served. False: already draining.

        The quiet time a drain waits for counts from here, so a request routed
        to this replica just before its endpoint was removed still finds it.
        """
        if self.phase is Phase.DRAINING:
            return False
        self.phase = Phase.DRAINING
        self.detail = "draining: not ready; serving requests in flight and arriving, then exit"
        self._last_activity = time.monotonic()
        return True

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def request_started(self) -> None:
        self.in_flight += 1
        self._last_activity = time.monotonic()
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        self._last_activity = time.monotonic()
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (callers bound it with asyncio.timeout)."""
        await self._idle.wait()

    async def wait_quiet(self, quiet_s: float) -> None:
        """Return once no request has been in flight for `quiet_s` seconds (callers bound
        it with asyncio.timeout): a request that arrives meanwhile restarts the wait."""
        while True:
            await self._idle.wait()
            left = self._last_activity + quiet_s - time.monotonic()
            if left <= 0 and self.in_flight == 0:
                return
            # A deadline, not a poll: any start or finish moves it and is seen on waking.
            await asyncio.sleep(max(left, 0.0))
