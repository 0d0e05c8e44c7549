"""What the gateway knows about each model: its serving tracks and their ready replicas.

Discovery (Kubernetes or a static file) produces a fresh `ModelRoute` per
model whenever something changes; the `RoutingTable` swaps the whole
mapping at once, so a request always sees one consistent picture, and wakes
requests that are held while a model has no ready replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Routing(StrEnum):
    """How a model's requests are spread over its replicas."""

    LEAST_LOAD = "least-load"  # fewest requests in flight through this gateway
    PREFIX = "prefix"  # consistent hash of the conversation prefix, with bounded load
    ROUND_ROBIN = "round-robin"  # for comparison in benchmarks; ignores load


@dataclass(frozen=True)
class Track:
    """One serving track of a model (stable, or a canary) and its ready replicas."""

    name: str
    weight: int  # 0..100: this track's share of the model's traffic
    upstreams: tuple[str, ...]  # base URLs of ready replicas, e.g. "http://10.0.0.7:8000"
    revision: str = ""


@dataclass(frozen=True)
class DemandTarget:
    """The LLMDeployment to wake when a request arrives for a model scaled to zero."""

    namespace: str
    name: str


@dataclass(frozen=True)
class ModelRoute:
    name: str
    tracks: tuple[Track, ...]
    routing: Routing = Routing.LEAST_LOAD
    demand: tuple[DemandTarget, ...] = ()
    # The key the gateway sends to this model's replicas (`Authorization: Bearer`): the
    # model's own, never the client's. None: the replicas are sent no credential.
    upstream_key: str | None = field(default=None, repr=False)
    # Why the model's key could not be read (the replicas would refuse a request
    # without it): its requests get a 503 until discovery reads the key.
    upstream_key_problem: str | None = None
    # The OpenAI paths the model serves (/v1/chat/completions, /v1/embeddings, ...), as
    # its replicas' `/ready` said; None until one has said (the chat page offers a model
    # it knows nothing of, and only chat models among those it knows).
    endpoints: frozenset[str] | None = None

    @property
    def ready(self) -> bool:
        return any(t.upstreams for t in self.tracks)

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(u for t in self.tracks for u in t.upstreams)


@dataclass
class RoutingTable:
    """The current routes, replaced whole by discovery; waiters wake on every change."""

    routes: Mapping[str, ModelRoute] = field(default_factory=dict)
    synced: bool = False  # discovery has delivered its first complete picture
    listeners: list[Callable[[Mapping[str, ModelRoute]], None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def replace(self, routes: Mapping[str, ModelRoute]) -> None:
        self.routes = dict(routes)
        self.synced = True
        for listener in self.listeners:
            listener(self.routes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self) -> None:
        """Return at the next `replace`."""
        await self._changed.wait()

    async def wait_until_ready(self, model: str, timeout_s: float) -> ModelRoute | None:
        """The model's route once it has a ready replica, or None after the timeout.

        Also None at once if the model disappears from the table while waiting.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    route = self.routes.get(model)
                    if route is None or route.ready:
                        return route
                    await self._changed.wait()
        except TimeoutError:
            return None
