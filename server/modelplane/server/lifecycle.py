"""Where the server is in its life: loading, ready, draining, failed.

Readiness (`/ready`) and the gate in front of the engine both read this one
object; the drain on SIGTERM and the engine loader write it. `in_flight`
counts requests the engine is working on, so a drain knows when it is done.
"""

from __future__ import annotations

import asyncio
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

    def mark_ready(self) -> None:
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY
            self.detail = "ready"

    def mark_failed(self, reason: str) -> None:
        self.phase = Phase.FAILED
        self.detail = reason

    def start_drain(self) -> bool:
        """Stop taking new work. Returns False when a drain had already begun."""
        if self.phase is Phase.DRAINING:
            return False
        self.phase = Phase.DRAINING
        self.detail = "draining: finishing in-flight requests before exit"
        return True

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (callers bound it with asyncio.timeout)."""
        await self._idle.wait()
