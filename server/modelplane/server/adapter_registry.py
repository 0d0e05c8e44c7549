"""The adapters this replica serves and their state, changed only through the admin API.

Each entry says where the adapter came from (`source`, `revision`) and
whether it is `loaded`, `loading` or `failed` (with the reason). Adapters
from the command line are loaded with the engine and entered as loaded.
A load is synchronous for its caller: `put` returns once the engine serves
the adapter (or raises `AdapterRequestError` with the status and reason,
leaving the entry `failed`). Changes run one at a time, so a reload (unload,
then load) is never interleaved with another change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from prometheus_client import Gauge

from modelplane.server.adapter_sources import SourceError, SourceRoots, fetch_adapter
from modelplane.server.adapters import AdapterError, name_problem, read_adapter_rank

log = logging.getLogger("modelplane.server.adapters")


class AdapterState(StrEnum):
    LOADED = "loaded"
    LOADING = "loading"
    FAILED = "failed"


class AdapterLoadError(Exception):
    """The engine refused an adapter; the message is its reason."""


class EngineAdapters(Protocol):
    """What the registry needs from a running engine."""

    async def load_adapter(self, name: str, path: Path) -> None:
        """Serve the adapter in `path` as model `name`; AdapterLoadError if refused."""
        ...

    async def unload_adapter(self, name: str) -> None: ...


class AdapterRequestError(Exception):
    """An admin request that cannot be done: the HTTP status and the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AdapterEntry:
    name: str
    source: str
    revision: str | None
    state: AdapterState
    error: str | None = None

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "revision": self.revision,
            "state": self.state.value,
            "error": self.error,
        }


class AdapterRegistry:
    def __init__(
        self,
        base_model: str,
        roots: SourceRoots,
        max_rank: int | None,
        loaded_gauge: Gauge | None = None,
    ) -> None:
        self.base_model = base_model
        self.roots = roots
        self.max_rank = max_rank  # None: the engine serves no LoRA
        self.engine: EngineAdapters | None = None
        self._entries: dict[str, AdapterEntry] = {}
        self._lock = asyncio.Lock()
        self._gauge = loaded_gauge

    def attach_engine(self, engine: EngineAdapters, loaded: dict[str, Path]) -> None:
        """The engine is up, serving the command line's adapters (name -> directory)."""
        self.engine = engine
        for name, path in loaded.items():
            self._entries[name] = AdapterEntry(
                name, f"file://{path}", None, AdapterState.LOADED, None
            )
            self._set_gauge(name, loaded=True)

    def entries(self) -> list[AdapterEntry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def loaded_names(self) -> list[str]:
        return [e.name for e in self.entries() if e.state is AdapterState.LOADED]

    async def put(self, name: str, source: str, revision: str | None) -> AdapterEntry:
        """Serve `source` as adapter `name`: a no-op when it already does, a reload when
        the source or revision changed."""
        problem = name_problem(name, self.base_model)
        if problem is not None:
            raise AdapterRequestError(400, problem)
        if self.max_rank is None:
            raise AdapterRequestError(
                409,
                "this server does not serve LoRA adapters: start it with --adapter, or set "
                "engine --max-loras or --max-lora-rank",
            )
        async with self._lock:
            engine = self.engine
            if engine is None:
                raise AdapterRequestError(503, "the model is still loading; retry when ready")
            entry = self._entries.get(name)
            if (
                entry is not None
                and entry.state is AdapterState.LOADED
                and (entry.source, entry.revision) == (source, revision)
            ):
                return entry
            if entry is not None and entry.state is AdapterState.LOADED:
                await engine.unload_adapter(name)
                self._set_gauge(name, loaded=False)
            entry = AdapterEntry(name, source, revision, AdapterState.LOADING)
            self._entries[name] = entry
            try:
                path = await asyncio.to_thread(fetch_adapter, source, revision, self.roots)
                rank = await asyncio.to_thread(read_adapter_rank, path)
                if rank > self.max_rank:
                    raise AdapterLoadError(
                        f"rank {rank} exceeds the engine's maxLoraRank {self.max_rank}; raise "
                        "engine.maxLoraRank (the pods restart)"
                    )
                await engine.load_adapter(name, path)
            except SourceError as err:
                raise self._failed(entry, err.status, str(err)) from err
            except (AdapterError, AdapterLoadError) as err:
                raise self._failed(entry, 422, str(err)) from err
            entry.state = AdapterState.LOADED
            self._set_gauge(name, loaded=True)
            log.info("adapter loaded", extra={"adapter": name, "source": source})
            return entry

    async def delete(self, name: str) -> None:
        """Stop serving adapter `name`; AdapterRequestError 404 when there is none."""
        async with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise AdapterRequestError(404, f"no adapter {name[:80]!r}")
            if entry.state is AdapterState.LOADED and self.engine is not None:
                await self.engine.unload_adapter(name)
            del self._entries[name]
            self._set_gauge(name, loaded=False)
            log.info("adapter unloaded", extra={"adapter": name})

    def _failed(self, entry: AdapterEntry, status: int, reason: str) -> AdapterRequestError:
        entry.state, entry.error = AdapterState.FAILED, reason
        log.warning("adapter failed", extra={"adapter": entry.name, "reason": reason})
        return AdapterRequestError(status, f"adapter {entry.name!r} was not loaded: {reason}")

    def _set_gauge(self, name: str, *, loaded: bool) -> None:
        """Only loaded adapters have a series, so its label set stays the adapters served."""
        if self._gauge is None:
            return
        if loaded:
            self._gauge.labels(name).set(1)
        else:
            with contextlib.suppress(KeyError):  # never loaded
                self._gauge.remove(name)
