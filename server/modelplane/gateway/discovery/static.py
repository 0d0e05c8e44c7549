"""Static discovery: models and replica URLs from a YAML file, readiness by polling.

For one machine (local mode) or any setup without Kubernetes. Each
replica's `/ready` is polled; only replicas answering 200 take traffic, so
a model whose servers are still loading (or stopped) is held, not failed,
the same way a model scaled to zero is held in a cluster. The file is
re-read when it changes, so models can be added without a restart.

    models:
      smollm2:
        upstreams: [http://127.0.0.1:8001, http://127.0.0.1:8002]
      llama:
        routing: prefix              # least-load (default) | prefix | round-robin
        tracks:                      # weighted split, e.g. a canary
          stable: {weight: 90, upstreams: [http://10.0.0.5:8000]}
          canary: {weight: 10, upstreams: [http://10.0.0.6:8000], revision: v2}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelplane.api.contract import TRACK_STABLE
from modelplane.gateway.config_files import ConfigError, read_yaml_model
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable, Track

log = logging.getLogger("modelplane.gateway.discovery")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Url = Annotated[str, Field(pattern=r"^https?://[^/\s]+/?$")]


class StaticTrack(_Strict):
    weight: Annotated[int, Field(ge=0, le=100)] = 100
    revision: str = ""
    upstreams: list[Url]


class StaticModel(_Strict):
    routing: Routing = Routing.LEAST_LOAD
    upstreams: list[Url] = []
    tracks: dict[str, StaticTrack] = {}

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if bool(self.upstreams) == bool(self.tracks):
            raise ValueError("give either 'upstreams' or 'tracks'")
        return self

    def all_tracks(self) -> dict[str, StaticTrack]:
        return self.tracks or {TRACK_STABLE: StaticTrack(upstreams=self.upstreams)}


class StaticConfig(_Strict):
    models: dict[str, StaticModel]

    def upstreams(self) -> set[str]:
        return {
            _base(u) for m in self.models.values() for t in m.all_tracks().values()
            for u in t.upstreams
        }  # fmt: skip


def _base(url: str) -> str:
    return url.rstrip("/")


def load_static_config(path: Path) -> StaticConfig:
    return read_yaml_model(path, StaticConfig)


def routes_from_static(config: StaticConfig, ready: Iterable[str]) -> dict[str, ModelRoute]:
    """The routing table for this file, keeping only the replicas seen ready."""
    ready_set = set(ready)
    return {
        name: ModelRoute(
            name=name,
            routing=model.routing,
            tracks=tuple(
                Track(
                    name=track_name,
                    weight=track.weight,
                    upstreams=tuple(_base(u) for u in track.upstreams if _base(u) in ready_set),
                    revision=track.revision,
                )
                for track_name, track in model.all_tracks().items()
            ),
        )
        for name, model in config.models.items()
    }


class StaticDiscovery:
    """Polls every replica's `/ready` and publishes the routes that result."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        path: Path | None = None,
        config: StaticConfig | None = None,
        interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        if (path is None) == (config is None):
            raise ValueError("give either a config file path or a config")
        self.table = table
        self.path = path
        if config is None:
            assert path is not None
            config = load_static_config(path)
        self.config = config
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self._mtime = self._file_mtime()
        self._ready: frozenset[str] | None = None

    def _file_mtime(self) -> float | None:
        if self.path is None:
            return None
        with contextlib.suppress(OSError):
            return self.path.stat().st_mtime
        return None

    def _reload_if_changed(self) -> bool:
        mtime = self._file_mtime()
        if self.path is None or mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self.config = load_static_config(self.path)
        except ConfigError as err:
            log.error("keeping the previous routes: %s", err)
            return False
        log.info("reloaded %s", self.path, extra={"models": sorted(self.config.models)})
        return True

    async def _probe(self, session: aiohttp.ClientSession, upstream: str) -> bool:
        try:
            async with session.get(f"{upstream}/ready") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        changed = self._reload_if_changed()
        upstreams = sorted(self.config.upstreams())
        results = await asyncio.gather(*(self._probe(session, u) for u in upstreams))
        ready = frozenset(u for u, ok in zip(upstreams, results, strict=True) if ok)
        if changed or ready != self._ready or not self.table.synced:
            for upstream in sorted(ready.symmetric_difference(self._ready or frozenset())):
                state = "ready" if upstream in ready else "not ready"
                log.info("replica %s is %s", upstream, state, extra={"upstream": upstream})
            self._ready = ready
            self.table.replace(routes_from_static(self.config, ready))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.poll_once(session)
                await asyncio.sleep(self.interval_s)
