"""Which LoRA adapters each replica has loaded, for Kubernetes discovery.

EndpointSlices say which replicas are ready, not what they hold; each replica's
`/ready` answer lists its loaded adapters (`"adapters": [...]`). The probe asks
the replicas of models that have adapters configured (no others: a model
without adapters needs no polling) every `interval_s`, and at once when the
set of replicas changes, so a replica that just became ready, or just loaded
an adapter, takes that adapter's requests within one interval. A replica that
does not answer keeps what it said last (a busy replica still holds its
adapters; one that is gone leaves the EndpointSlice, and then the probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from typing import Final

import aiohttp

from modelplane.gateway.routing.adapters import ready_adapters

INTERVAL_S: Final = 2.0
TIMEOUT_S: Final = 2.0
READY_BODY_BYTES: Final = 64 * 1024

Loaded = dict[str, frozenset[str]]  # replica URL -> the adapters it has loaded


class AdapterProbe:
    def __init__(
        self,
        on_change: Callable[[Loaded], None],
        *,
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.on_change = on_change
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.targets: frozenset[str] = frozenset()
        self.loaded: Loaded = {}
        self._wake = asyncio.Event()

    def watch(self, upstreams: Iterable[str]) -> None:
        """Probe these replicas from now on; at once if any is new."""
        targets = frozenset(upstreams)
        if targets != self.targets:
            fresh = targets - self.targets
            self.targets = targets
            if fresh:
                self._wake.set()
            elif set(self.loaded) - targets:
                self._publish({u: a for u, a in self.loaded.items() if u in targets})

    def _publish(self, loaded: Loaded) -> None:
        if loaded != self.loaded:
            self.loaded = loaded
            self.on_change(dict(loaded))

    async def _probe(self, session: aiohttp.ClientSession, upstream: str) -> frozenset[str] | None:
        try:
            async with session.get(f"{upstream}/ready", allow_redirects=False) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(READY_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            return None
        try:
            return ready_adapters(json.loads(body))
        except ValueError:
            return frozenset()

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        targets = sorted(self.targets)
        answers = await asyncio.gather(*(self._probe(session, u) for u in targets))
        current = self.targets  # the targets may have changed while probing
        loaded: Loaded = {}
        for upstream, answer in zip(targets, answers, strict=True):
            if upstream not in current:
                continue
            held = answer if answer is not None else self.loaded.get(upstream)
            if held:
                loaded[upstream] = held
        self._publish(loaded)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._wake.clear()
                if self.targets:
                    await self.poll_once(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
