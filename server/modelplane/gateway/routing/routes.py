"""What the gateway knows about each model: its serving tracks and their ready replicas.

Discovery (Kubernetes or a static file) produces a fresh `ModelRoute` per
model whenever something changes; the `RoutingTable` swaps the whole
mapping at once, so a request always sees one consistent picture, and wakes
requests that are held while a model has no ready replica (or, for a LoRA
adapter, while no replica has it loaded).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from modelplane.gateway.routing.adapters import AdapterIndex, index_adapters


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
    # The LoRA adapters configured for this model: a request naming one comes here.
    adapters: frozenset[str] = frozenset()
    # The adapters each replica (by URL) has loaded, as its `/ready` said; a replica
    # that said none is absent.
    loaded: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    # Requests one replica runs at once (`--max-num-seqs` in engine.extraArgs, or the static file's
    # `concurrency`); None: unknown, the gateway's --replica-concurrency applies.
    concurrency: int | None = None

    @property
    def ready(self) -> bool:
        return any(t.upstreams for t in self.tracks)

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(u for t in self.tracks for u in t.upstreams)

    def holds(self, upstream: str, adapter: str) -> bool:
        return adapter in self.loaded.get(upstream, ())

    def ready_for(self, adapter: str | None) -> bool:
        """A ready replica can serve the base model (None) or has `adapter` loaded."""
        if adapter is None:
            return self.ready
        return any(self.holds(u, adapter) for u in self.upstreams)

    def for_adapter(self, adapter: str) -> ModelRoute:
        """This route with only the replicas that hold `adapter`, in every track, balanced
        by consistent hashing with bounded load (`balancing.bounded_load_pick`): a replica
        without the adapter would answer 404, so it is never a candidate, and among the
        holders one takes the adapter's requests while its load stays within the bound."""
        tracks = tuple(
            dataclasses.replace(
                t, upstreams=tuple(u for u in t.upstreams if self.holds(u, adapter))
            )
            for t in self.tracks
        )
        return dataclasses.replace(self, tracks=tracks, routing=Routing.PREFIX)


@dataclass
class RoutingTable:
    """The current routes, replaced whole by discovery; waiters wake on every change."""

    routes: Mapping[str, ModelRoute] = field(default_factory=dict)
    adapters: AdapterIndex = field(default_factory=lambda: AdapterIndex({}))
    synced: bool = False  # discovery has delivered its first complete picture
    listeners: list[Callable[[Mapping[str, ModelRoute]], None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def replace(self, routes: Mapping[str, ModelRoute]) -> None:
        self.routes = dict(routes)
        self.adapters = index_adapters({n: r.adapters for n, r in self.routes.items()})
        self.synced = True
        for listener in self.listeners:
            listener(self.routes)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def resolve(self, name: str) -> tuple[ModelRoute, str | None] | None:
        """The route of a request's `model`, and the adapter when the name is one's."""
        route = self.routes.get(name)
        if route is not None:
            return route, None
        model = self.adapters.models.get(name)
        return None if model is None else (self.routes[model], name)

    def route_for(self, name: str) -> ModelRoute | None:
        resolved = self.resolve(name)
        return None if resolved is None else resolved[0]

    async def wait_changed(self) -> None:
        """Return at the next `replace`."""
        await self._changed.wait()

    async def wait_until_ready(
        self, model: str, timeout_s: float, adapter: str | None = None
    ) -> ModelRoute | None:
        """The model's route once it has a ready replica (with `adapter` loaded, if given),
        or None after the timeout.

        Also None at once if the model, or the adapter, disappears from the table while
        waiting.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    route = self.routes.get(model)
                    if route is None or (
                        adapter is not None and self.adapters.models.get(adapter) != model
                    ):
                        return None
                    if route.ready_for(adapter):
                        return route
                    await self._changed.wait()
        except TimeoutError:
            return None
