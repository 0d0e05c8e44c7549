"""Scrape the replicas' `/metrics` concurrently: the autoscaler's only I/O.

The operator's timer lists the model's pods, calls `collect` with the ready
ones (and the loading ones, which are not scraped), and passes the result's
observations to `decide`. The snapshots come back too: the next `collect`
needs them to turn counters and histograms into per-window rates and a TTFT
p95 of the window. They live in the operator's memory; after a restart the
first tick has no window (no TTFT, no rates) and the policy falls back to
the other signals for that one decision.

A replica that does not answer in time, answers with an error, or answers
with something that is not Prometheus text becomes a failed observation
carrying the reason; the others are unaffected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from modelplane.operator.autoscaler.observations import (
    MetricsSnapshot,
    ReplicaObservation,
    observe,
    parse_metrics,
)

DEFAULT_TIMEOUT_S = 2.0  # the whole scrape of one pod, connect to last byte
# vLLM's /metrics with the server's own is about 60 KiB (tests/unit/autoscaler/data/): a
# hundred times that leaves room for many LoRA adapters and label sets.
MAX_METRICS_BYTES = 8 * 2**20


@dataclass(frozen=True)
class ScrapeTarget:
    name: str  # the pod's name: what reasons and events call it
    url: str  # its metrics URL, e.g. http://10.1.2.3:8000/metrics
    ready: bool = True  # not ready: still loading, not scraped


@dataclass(frozen=True)
class Collection:
    observations: list[ReplicaObservation]
    snapshots: dict[str, MetricsSnapshot] = field(default_factory=dict)  # keep for next time


async def collect(
    targets: Sequence[ScrapeTarget],
    previous: Mapping[str, MetricsSnapshot],
    client: httpx.AsyncClient | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clock: Callable[[], float] = time.time,
) -> Collection:
    """Observe every target: ready ones scraped at once, loading ones as loading."""
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    try:
        ready = [t for t in targets if t.ready]
        results = await asyncio.gather(*(_scrape(http, t, timeout_s, clock) for t in ready))
    finally:
        if own_client:
            await http.aclose()
    observations: list[ReplicaObservation] = []
    snapshots: dict[str, MetricsSnapshot] = {}
    for target, result in zip(ready, results, strict=True):
        if isinstance(result, str):
            observations.append(ReplicaObservation.failed(target.name, result))
        else:
            snapshots[target.name] = result
            observations.append(observe(target.name, result, previous.get(target.name)))
    observations.extend(ReplicaObservation.still_loading(t.name) for t in targets if not t.ready)
    return Collection(observations, snapshots)


async def _scrape(
    http: httpx.AsyncClient,
    target: ScrapeTarget,
    timeout_s: float,
    clock: Callable[[], float],
    max_bytes: int = MAX_METRICS_BYTES,
) -> MetricsSnapshot | str:
    """The replica's snapshot, or why there is none.

    Bounded in total time (httpx's timeouts are per phase: a pod that trickles a
    byte at a time would hold the tick for as long as it likes) and in size (a
    pod that answers without end would fill the operator's memory).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream("GET", target.url, timeout=timeout_s) as response:
                if response.status_code != 200:
                    return f"{target.url} answered HTTP {response.status_code}"
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        return f"{target.url} sent more than {max_bytes // 2**20} MiB of metrics"
                    chunks.append(chunk)
    except (TimeoutError, httpx.TimeoutException):
        return f"no answer from {target.url} within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"cannot reach {target.url}: {type(exc).__name__}"
    try:
        snapshot = parse_metrics(b"".join(chunks).decode("utf-8", "replace"), at=clock())
    except ValueError as exc:
        return f"{target.url} sent unreadable metrics: {exc}"
    if not snapshot.found:
        return f"{target.url} exports no vLLM metrics"
    return snapshot
