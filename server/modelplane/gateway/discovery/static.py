"""Static discovery: models and replica URLs from a YAML file, readiness by polling.

For one machine (local mode) or any setup without Kubernetes. Each
replica's `/ready` is polled; only replicas answering 200 take traffic, so
a model whose servers are still loading (or stopped) is held, not failed,
the same way a model scaled to zero is held in a cluster. The file is
re-read when it changes, so models can be added without a restart.

A model whose servers require an API key names a file holding it
(`upstreamApiKeyFile`, relative to this file's folder; its first key line
is sent as `Authorization: Bearer`). The client's own key is never sent.
The key file is re-read when it changes (a mounted Secret updates in place).
A replica running `modelplane serve` lists in its `/ready` answer the OpenAI
paths its model serves; the routes carry them (`/v1/models` shows them, and
the chat page offers only models that serve chat). A model's LoRA adapters are
listed by name (`adapters`); a request naming one goes to the model's replicas
whose `/ready` lists it as loaded, and is held while none does.

    models:
      smollm2:
        upstreams: [http://127.0.0.1:8001, http://127.0.0.1:8002]
        upstreamApiKeyFile: smollm2.key   # optional
        adapters: [sql-lora]              # optional: LoRA adapters served by these replicas
        concurrency: 8                    # optional: requests one replica runs at once; the
                                          # gateway queues what exceeds it by tenant weight
      llama:
        routing: prefix              # least-load (default) | prefix | round-robin
        tracks:                      # weighted split, e.g. a canary
          stable: {weight: 90, upstreams: [http://10.0.0.5:8000]}
          canary: {weight: 10, upstreams: [http://10.0.0.6:8000], revision: v2}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelplane.api.contract import TRACK_STABLE
from modelplane.gateway.config_files import ConfigError, read_yaml_model
from modelplane.gateway.credentials import read_key_file
from modelplane.gateway.routing.adapters import adapter_names, ready_adapters
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable, Track

log = logging.getLogger("modelplane.gateway.discovery")

# Of a replica's /ready answer: its list of loaded adapters may run to a few KiB.
READY_BODY_BYTES = 64 * 1024


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
    upstream_api_key_file: Path | None = Field(None, alias="upstreamApiKeyFile")
    adapters: list[str] = []
    # Requests one replica runs at once; past replicas x this the gateway queues by tenant.
    concurrency: Annotated[int, Field(ge=1, le=4096)] | None = None

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, names: list[str]) -> list[str]:
        checked = adapter_names(names)
        if checked.problems:
            raise ValueError("; ".join(checked.problems))
        return names

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
    """The file's models, their key files' paths taken from the file's folder."""
    config = read_yaml_model(path, StaticConfig)
    return StaticConfig(
        models={
            name: model.model_copy(
                update={"upstream_api_key_file": path.parent / model.upstream_api_key_file}
            )
            if model.upstream_api_key_file is not None
            else model
            for name, model in config.models.items()
        }
    )


def read_model_keys(config: StaticConfig) -> dict[str, str]:
    """Each model's upstream key, by model name; ConfigError naming the first that fails."""
    keys: dict[str, str] = {}
    for name, model in config.models.items():
        if model.upstream_api_key_file is not None:
            try:
                keys[name] = read_key_file(model.upstream_api_key_file)
            except ValueError as err:
                raise ConfigError(f"models.{name}.upstreamApiKeyFile: {err}") from err
    return keys


def routes_from_static(
    config: StaticConfig,
    ready: Iterable[str],
    keys: Mapping[str, str] | None = None,
    endpoints: Mapping[str, frozenset[str]] | None = None,
    loaded: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, ModelRoute]:
    """The routing table for this file, keeping only the replicas seen ready.

    `keys`: each model's upstream key; a model whose file names a key file
    but has no key here gets a 503 for its requests (its replicas would refuse them).
    `endpoints`: the paths each replica (by URL) said it serves, kept while it is not
    ready (a replica stopped or scaled down serves the same model when it is back).
    `loaded`: the adapters each replica (by URL) said it has loaded, when it was last ready.
    """
    ready_set = set(ready)
    keys = keys or {}
    endpoints = endpoints or {}
    loaded = loaded or {}
    return {
        name: ModelRoute(
            name=name,
            routing=model.routing,
            endpoints=_model_endpoints(model, endpoints),
            adapters=frozenset(model.adapters),
            loaded=_model_loaded(model, ready_set, loaded),
            concurrency=model.concurrency,
            upstream_key=keys.get(name),
            upstream_key_problem=(
                f"no key read from {model.upstream_api_key_file}"
                if model.upstream_api_key_file is not None and name not in keys
                else None
            ),
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


def _model_endpoints(
    model: StaticModel, endpoints: Mapping[str, frozenset[str]]
) -> frozenset[str] | None:
    """What the model's replicas said they serve, together; None if none has said."""
    said = [
        endpoints[_base(u)]
        for track in model.all_tracks().values()
        for u in track.upstreams
        if _base(u) in endpoints
    ]
    return frozenset().union(*said) if said else None


def _model_loaded(
    model: StaticModel, ready: set[str], loaded: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """The model's adapters each of its ready replicas has loaded (those with any)."""
    wanted = frozenset(model.adapters)
    held = {
        _base(u): loaded.get(_base(u), frozenset()) & wanted
        for track in model.all_tracks().values()
        for u in track.upstreams
        if _base(u) in ready
    }
    return {u: names for u, names in held.items() if names}


def ready_endpoints(body: bytes) -> frozenset[str] | None:
    """The paths a replica's `/ready` answer lists (`modelplane serve` lists them once
    loaded); None for an answer without them (another server, or an older one)."""
    try:
        listed = json.loads(body).get("endpoints")
    except (ValueError, AttributeError):
        return None
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        return None
    return frozenset(p for p in listed if p.startswith("/v1/") and len(p) < 64)


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
        self._endpoints: dict[str, frozenset[str]] = {}  # by replica URL, as its /ready said
        self._said: dict[str, frozenset[str]] = {}  # those of the file's replicas, published
        self._loaded: dict[str, frozenset[str]] = {}  # adapters, by replica URL, as /ready said
        self._published_loaded: dict[str, frozenset[str]] = {}
        self._keys = read_model_keys(config)  # at start, an unreadable key is a config error
        self._key_stamps = self._key_file_stamps()

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

    def _key_file_stamps(self) -> dict[Path, float | None]:
        stamps: dict[Path, float | None] = {}
        for model in self.config.models.values():
            if model.upstream_api_key_file is not None:
                stamps[model.upstream_api_key_file] = _mtime(model.upstream_api_key_file)
        return stamps

    def _reload_keys_if_changed(self, config_changed: bool) -> bool:
        """Read the key files again if the config or any key file changed. A key that
        cannot be read keeps its model's previous key (rotating a Secret swaps the file
        whole; a key file being written is read again at the next poll)."""
        stamps = self._key_file_stamps()
        if not config_changed and stamps == self._key_stamps:
            return False
        self._key_stamps = stamps
        keys: dict[str, str] = {}
        for name, model in self.config.models.items():
            if model.upstream_api_key_file is None:
                continue
            try:
                keys[name] = read_key_file(model.upstream_api_key_file)
            except ValueError as err:
                log.error("model %s: %s", name, err, extra={"model": name})
                if name in self._keys:
                    keys[name] = self._keys[name]
        changed = keys != self._keys
        if changed:
            log.info("read the upstream API keys again", extra={"models": sorted(keys)})
        self._keys = keys
        return changed

    async def _probe(self, session: aiohttp.ClientSession, upstream: str) -> bool:
        try:
            async with session.get(f"{upstream}/ready") as response:
                if response.status != 200:
                    return False
                body = await response.content.read(READY_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            return False
        served = ready_endpoints(body)
        if served is not None:
            self._endpoints[upstream] = served
        try:
            state = json.loads(body)
        except ValueError:
            state = None
        self._loaded[upstream] = ready_adapters(state)
        return True

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        changed = self._reload_if_changed()
        changed = self._reload_keys_if_changed(changed) or changed
        upstreams = sorted(self.config.upstreams())
        results = await asyncio.gather(*(self._probe(session, u) for u in upstreams))
        ready = frozenset(u for u, ok in zip(upstreams, results, strict=True) if ok)
        # Only the file's replicas: one removed from it is forgotten.
        said = self._endpoints = {u: e for u, e in self._endpoints.items() if u in upstreams}
        loaded = self._loaded = {u: a for u, a in self._loaded.items() if u in upstreams}
        changed = changed or said != self._said or loaded != self._published_loaded
        self._said = dict(said)
        self._published_loaded = dict(loaded)
        if changed or ready != self._ready or not self.table.synced:
            for upstream in sorted(ready.symmetric_difference(self._ready or frozenset())):
                state = "ready" if upstream in ready else "not ready"
                log.info("replica %s is %s", upstream, state, extra={"upstream": upstream})
            self._ready = ready
            self.table.replace(routes_from_static(self.config, ready, self._keys, said, loaded))

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.probe_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.poll_once(session)
                await asyncio.sleep(self.interval_s)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None
