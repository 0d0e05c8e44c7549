"""What the autoscaler knows about one replica, read from its Prometheus text.

A replica's `/metrics` is parsed with prometheus_client's own parser into a
`MetricsSnapshot` (gauges now, histograms as cumulative counts). Two
snapshots of the same replica give a `ReplicaObservation`: the gauges of the
newer one and the time-to-first-token histogram of the requests that got
their first token *between* the two scrapes, so a p95 reflects the window,
not the replica's lifetime.

vLLM renamed some metrics across versions (`vllm:gpu_cache_usage_perc`
became `vllm:kv_cache_usage_perc`); each signal lists the names it accepts,
newest first. The server's own `modelplane_requests_total` by status code is
read too (the canary analysis' error ratio; the policy does not use it). A
replica that could not be scraped, or is still loading, is an observation
too, so the policy can say what it did without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

WAITING_NAMES = ("vllm:num_requests_waiting",)
RUNNING_NAMES = ("vllm:num_requests_running",)
# Fractions in [0, 1] despite the "perc" in their names.
KV_CACHE_NAMES = (
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:cpu_cache_usage_perc",
)
# The engine's TTFT counts every request; the server's own counts streams only.
TTFT_NAMES = ("vllm:time_to_first_token_seconds", "modelplane_time_to_first_token_seconds")
# NVIDIA's DCGM exporter, in percent, when it shares the scrape (e.g. via Prometheus).
GPU_UTIL_NAMES = ("DCGM_FI_DEV_GPU_UTIL",)
# Requests the engine finished (a counter; the parser drops the `_total` suffix).
FINISHED_NAMES = ("vllm:request_success",)
# Requests the server answered, by HTTP status `code` (the canary analysis' error ratio).
REQUESTS_NAMES = ("modelplane_requests",)
SERVER_ERROR = 500  # codes from here on are the server's failures; 4xx are the client's


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts, Prometheus style: `counts[i]` observations <= `bounds[i]`."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear within the bucket holding rank q."""
        if self.total <= 0:
            return None
        rank = q * self.total
        lower, below = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower  # the highest finite bound is all a histogram can say
                inside = count - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, count
        return lower

    def minus(self, earlier: Histogram | None) -> Histogram:
        """Observations made after `earlier`; all of them if the counter was reset."""
        if earlier is None or earlier.bounds != self.bounds:
            return self
        delta = tuple(now - then for now, then in zip(self.counts, earlier.counts, strict=True))
        if any(d < 0 for d in delta):  # the replica restarted: its counts began again
            return self
        return Histogram(self.bounds, delta)

    @staticmethod
    def merge(histograms: Iterable[Histogram]) -> Histogram | None:
        """Sum of histograms with the same buckets (replicas of one model share them)."""
        merged: Histogram | None = None
        for h in histograms:
            if merged is None:
                merged = h
            elif h.bounds == merged.bounds:
                merged = Histogram(
                    merged.bounds,
                    tuple(a + b for a, b in zip(merged.counts, h.counts, strict=True)),
                )
        return merged


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape of one replica. None means the replica does not export that signal."""

    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float | None = None
    gpu_utilization: float | None = None
    ttft: Histogram | None = None
    finished: float | None = None  # requests completed since the engine started
    at: float | None = None  # when it was scraped (seconds, the policy's clock)
    found: frozenset[str] = field(default_factory=frozenset)  # metric names that were present
    requests: float | None = None  # requests the server answered since it started
    errors: float | None = None  # of those, answered with a 5xx status


@dataclass(frozen=True)
class ReplicaObservation:
    """One replica as the policy sees it for one decision."""

    name: str
    loading: bool = False  # not ready yet: not capacity, not measured
    error: str | None = None  # its metrics could not be read, and why
    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float | None = None
    gpu_utilization: float | None = None
    ttft: Histogram | None = None  # first tokens since the previous scrape
    finished_per_s: float | None = None  # requests completed per second since then
    arrived_per_s: float | None = None  # requests that came in per second since then
    requests: float | None = None  # requests the server answered since then
    errors: float | None = None  # of those, with a 5xx status

    @property
    def measured(self) -> bool:
        return not self.loading and self.error is None

    @classmethod
    def still_loading(cls, name: str) -> ReplicaObservation:
        return cls(name=name, loading=True)

    @classmethod
    def failed(cls, name: str, error: str) -> ReplicaObservation:
        return cls(name=name, error=error)


def _gauge(values: Mapping[str, list[float]], names: Sequence[str], combine: str) -> float | None:
    for name in names:
        found = values.get(name)
        if found:
            return sum(found) if combine == "sum" else sum(found) / len(found)
    return None


def _histogram(buckets: Mapping[str, dict[float, float]], names: Sequence[str]) -> Histogram | None:
    for name in names:
        by_bound = buckets.get(name)
        if by_bound:
            bounds = tuple(sorted(by_bound))
            return Histogram(bounds, tuple(by_bound[b] for b in bounds))
    return None


def parse_metrics(text: str, at: float | None = None) -> MetricsSnapshot:
    """Read the signals the policy uses out of a Prometheus text exposition.

    Series of one name with different labels (several engines or models in
    one server) are added up; utilisations are averaged instead.
    """
    gauges: dict[str, list[float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    wanted_gauges = {
        *WAITING_NAMES,
        *RUNNING_NAMES,
        *KV_CACHE_NAMES,
        *GPU_UTIL_NAMES,
        *FINISHED_NAMES,
    }
    wanted_histograms = set(TTFT_NAMES)
    answered = {"requests": 0.0, "errors": 0.0}
    requests_found = False
    for family in text_string_to_metric_families(text):
        if family.name in REQUESTS_NAMES:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    requests_found = True
                    answered["requests"] += sample.value
                    if _is_server_error(sample.labels.get("code", "")):
                        answered["errors"] += sample.value
        elif family.name in wanted_gauges:
            values = gauges.setdefault(family.name, [])
            values.extend(s.value for s in family.samples if not s.name.endswith("_created"))
        elif family.name in wanted_histograms:
            per_bound = buckets.setdefault(family.name, {})
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    per_bound[bound] = per_bound.get(bound, 0.0) + sample.value
    gpu_percent = _gauge(gauges, GPU_UTIL_NAMES, "mean")
    return MetricsSnapshot(
        waiting=_gauge(gauges, WAITING_NAMES, "sum") or 0.0,
        running=_gauge(gauges, RUNNING_NAMES, "sum") or 0.0,
        kv_cache_usage=_gauge(gauges, KV_CACHE_NAMES, "mean"),
        gpu_utilization=None if gpu_percent is None else gpu_percent / 100.0,
        ttft=_histogram(buckets, TTFT_NAMES),
        finished=_gauge(gauges, FINISHED_NAMES, "sum"),
        at=at,
        found=frozenset(gauges) | frozenset(buckets),
        requests=answered["requests"] if requests_found else None,
        errors=answered["errors"] if requests_found else None,
    )


def _is_server_error(code: str) -> bool:
    return code.isdigit() and int(code) >= SERVER_ERROR


def _counted_since(now: float | None, then: float | None) -> float | None:
    """A counter's increase; all of it if the counter started again (a restart)."""
    if now is None or then is None:
        return None
    return now - then if now >= then else now


def _before(now: float | None, then: float | None) -> float | None:
    """A counter's value at the earlier scrape of a replica that answered both.

    A labelled counter is exported only from its first increment (prometheus_client,
    vLLM and the server alike), so a series absent then and present now started at
    zero in between: the first request a fresh canary pod answers, its first 5xx,
    its first token. Reading it as "unknown" left a replica scraped before its first
    request unmeasured for good.
    """
    if then is None and now is not None:
        return 0.0
    return then


def observe(
    name: str, current: MetricsSnapshot, previous: MetricsSnapshot | None
) -> ReplicaObservation:
    """The observation of a ready replica from its latest scrape and the one before.

    Without an earlier scrape there is no window: no TTFT (a histogram over the
    replica's whole life says nothing about the last few seconds) and no rates.
    Series that appeared between the two scrapes count from zero (`_before`).
    """
    ttft = None
    if current.ttft is not None and previous is not None:
        ttft = current.ttft.minus(previous.ttft) if previous.ttft is not None else current.ttft
    finished_per_s = arrived_per_s = None
    finished_before = _before(current.finished, previous.finished) if previous else None
    if (
        previous is not None
        and current.at is not None
        and previous.at is not None
        and current.at > previous.at
        and current.finished is not None
        and finished_before is not None
        and current.finished >= finished_before  # else the engine restarted
    ):
        elapsed = current.at - previous.at
        finished_per_s = (current.finished - finished_before) / elapsed
        # Every request that came in has either finished or is still in the engine.
        inside = (current.running + current.waiting) - (previous.running + previous.waiting)
        arrived_per_s = max(0.0, finished_per_s + inside / elapsed)
    requests = errors = None
    if previous is not None:
        requests = _counted_since(current.requests, _before(current.requests, previous.requests))
        errors = _counted_since(current.errors, _before(current.errors, previous.errors))
    return ReplicaObservation(
        name=name,
        waiting=current.waiting,
        running=current.running,
        kv_cache_usage=current.kv_cache_usage,
        gpu_utilization=current.gpu_utilization,
        ttft=ttft,
        finished_per_s=finished_per_s,
        arrived_per_s=arrived_per_s,
        requests=requests,
        errors=errors,
    )
