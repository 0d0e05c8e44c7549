"""Replica metrics from Prometheus instead of the pods: the operator's `prometheusUrl` path.

Where Prometheus already scrapes the model servers (the chart's PodMonitor
labels each series with the pod's `namespace` and `pod`), the operator asks
it instead of opening a connection to every pod. One range query per
LLMDeployment returns the raw samples of the last `window_s` seconds of
every series the policy reads; for each pod, the oldest and the newest
scrape in that range become two `MetricsSnapshot`s, read by the same parser
as a direct scrape (the samples are written back as Prometheus text), and
`observe` turns them into the observation. So the window is Prometheus'
own history: it exists on the first tick after an operator restart, and
ticks between two of Prometheus' scrapes still see a full window.

A pod Prometheus has no samples for (not scraped yet, or the PodMonitor
does not select it) is a failed observation saying so, as is every ready
pod when Prometheus cannot be asked; the policy leaves them out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import httpx

from modelplane.operator.autoscaler.collector import DEFAULT_TIMEOUT_S, Collection, ScrapeTarget
from modelplane.operator.autoscaler.observations import (
    FINISHED_NAMES,
    GPU_UTIL_NAMES,
    KV_CACHE_NAMES,
    REQUESTS_NAMES,
    RUNNING_NAMES,
    TTFT_NAMES,
    WAITING_NAMES,
    MetricsSnapshot,
    ReplicaObservation,
    observe,
    parse_metrics,
)

POD_LABEL: Final = "pod"
NAMESPACE_LABEL: Final = "namespace"
GAUGES: Final = (*WAITING_NAMES, *RUNNING_NAMES, *KV_CACHE_NAMES, *GPU_UTIL_NAMES)
COUNTERS: Final = tuple(f"{name}_total" for name in (*FINISHED_NAMES, *REQUESTS_NAMES))
BUCKETS: Final = tuple(f"{name}_bucket" for name in TTFT_NAMES)

Sample = tuple[str, dict[str, str], float]  # (series name, labels, value)


def _quote(value: str) -> str:
    """A PromQL / exposition string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _regex_alternatives(values: Iterable[str]) -> str:
    special = set(r"\.+*?()|[]{}^$")
    return "|".join("".join(f"\\{c}" if c in special else c for c in v) for v in values)


def range_query(namespace: str, pods: Sequence[str], window_s: float) -> str:
    """Every series the policy reads, for these pods, over the last `window_s` seconds."""
    names = _regex_alternatives((*GAUGES, *COUNTERS, *BUCKETS))
    return (
        f"{{__name__=~{_quote(names)},{NAMESPACE_LABEL}={_quote(namespace)},"
        f"{POD_LABEL}=~{_quote(_regex_alternatives(pods))}}}[{max(1, math.ceil(window_s))}s]"
    )


def exposition(samples: Iterable[Sample]) -> str:
    """Samples as Prometheus text, typed as their exporters declare them."""
    families: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, labels, value in samples:
        if name in BUCKETS:
            family, kind = name.removesuffix("_bucket"), "histogram"
        elif name in COUNTERS:
            family, kind = name, "counter"
        else:
            family, kind = name, "gauge"
        rendered = ",".join(f"{k}={_quote(v)}" for k, v in sorted(labels.items()))
        families[family, kind].append(f"{name}{{{rendered}}} {value!r}")
    lines: list[str] = []
    for (family, kind), series in families.items():
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(series)
    return "\n".join(lines) + "\n"


def snapshots_from_matrix(result: Sequence[Mapping[str, Any]]) -> dict[str, list[MetricsSnapshot]]:
    """Per pod, a snapshot per scrape time in the range (oldest first)."""
    by_pod: dict[str, dict[float, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for series in result:
        metric = dict(series.get("metric") or {})
        name = metric.pop("__name__", "")
        pod = metric.get(POD_LABEL)
        if not name or not pod:
            continue
        for at, value in series.get("values") or []:
            by_pod[pod][float(at)].append((name, metric, float(value)))
    return {
        pod: [parse_metrics(exposition(samples), at=at) for at, samples in sorted(scrapes.items())]
        for pod, scrapes in by_pod.items()
    }


async def collect_from_prometheus(
    prometheus_url: str,
    namespace: str,
    targets: Sequence[ScrapeTarget],
    *,
    window_s: float,
    client: httpx.AsyncClient | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Collection:
    """Observe every target from Prometheus: ready ones measured, loading ones as loading."""
    ready = [t for t in targets if t.ready]
    loading = [ReplicaObservation.still_loading(t.name) for t in targets if not t.ready]
    if not ready:
        return Collection(loading)
    url = f"{prometheus_url.rstrip('/')}/api/v1/query"
    query = range_query(namespace, [t.name for t in ready], window_s)
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    try:
        answer = await _ask(http, url, query, timeout_s)
    finally:
        if own_client:
            await http.aclose()
    if isinstance(answer, str):
        return Collection([ReplicaObservation.failed(t.name, answer) for t in ready] + loading)
    scrapes = snapshots_from_matrix(answer)
    observations: list[ReplicaObservation] = []
    latest: dict[str, MetricsSnapshot] = {}
    for target in ready:
        found = [s for s in scrapes.get(target.name, []) if s.found]
        if not found:
            observations.append(
                ReplicaObservation.failed(
                    target.name,
                    f"Prometheus has no vLLM samples of pod {target.name} in the last "
                    f"{window_s:g}s",
                )
            )
            continue
        latest[target.name] = found[-1]
        earliest = found[0] if len(found) > 1 else None
        observations.append(observe(target.name, found[-1], earliest))
    return Collection(observations + loading, latest)


async def _ask(
    http: httpx.AsyncClient, url: str, query: str, timeout_s: float
) -> list[dict[str, Any]] | str:
    """The range query's result, or why there is none."""
    try:
        response = await http.get(url, params={"query": query}, timeout=timeout_s)
    except httpx.TimeoutException:
        return f"no answer from Prometheus at {url} within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"cannot reach Prometheus at {url}: {type(exc).__name__}"
    try:
        body = response.json()
    except ValueError:
        return f"Prometheus at {url} answered HTTP {response.status_code} without JSON"
    if response.status_code != 200 or body.get("status") != "success":
        return f"Prometheus at {url} refused the query: {body.get('error', response.status_code)}"
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        return f"Prometheus at {url} answered a {data.get('resultType')}, not a range"
    result: list[dict[str, Any]] = data.get("result") or []
    return result
