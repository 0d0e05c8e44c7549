"""Reading a replica's /metrics: vLLM's metric names old and new, windows between scrapes.

The exposition text is produced by prometheus_client itself (the library
vLLM exports with), so the parser sees the real format, including the
`_total`/`_created` samples and cumulative histogram buckets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelplane.operator.autoscaler import Histogram as Buckets
from modelplane.operator.autoscaler import MetricsSnapshot, observe, parse_metrics
from modelplane.server.metrics import ServerMetrics
from tests.unit.autoscaler.builders import TTFT_BOUNDS

TTFT = TTFT_BOUNDS[:-1]  # prometheus_client adds +Inf itself


def exposition(
    *,
    kv_name: str = "vllm:kv_cache_usage_perc",
    waiting: float = 3,
    running: float = 12,
    kv: float = 0.42,
    finished: int = 100,
    first_tokens: tuple[float, ...] = (),
    engines: int = 1,
    dcgm: float | None = None,
) -> str:
    """A server's /metrics as vLLM writes it (one label set per engine)."""
    registry = CollectorRegistry()
    labels = ("model_name", "engine")
    gauges = {
        "vllm:num_requests_waiting": waiting,
        "vllm:num_requests_running": running,
        kv_name: kv,
    }
    made = {name: Gauge(name, name, labels, registry=registry) for name in gauges}
    done = Counter(
        "vllm:request_success", "finished", (*labels, "finished_reason"), registry=registry
    )
    ttft = Histogram(
        "vllm:time_to_first_token_seconds", "ttft", labels, buckets=TTFT, registry=registry
    )
    for engine in range(engines):
        for name, value in gauges.items():
            made[name].labels("m", str(engine)).set(value)
        done.labels("m", str(engine), "stop").inc(finished * 0.75)
        done.labels("m", str(engine), "length").inc(finished * 0.25)
        for seconds in first_tokens:
            ttft.labels("m", str(engine)).observe(seconds)
    if dcgm is not None:
        Gauge("DCGM_FI_DEV_GPU_UTIL", "util", ("gpu",), registry=registry).labels("0").set(dcgm)
    return generate_latest(registry).decode()


@pytest.mark.parametrize(
    "kv_name",
    ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc"],
    ids=["vLLM >= 0.10 name", "older GPU name", "older CPU name"],
)
def test_reads_the_gauges_under_old_and_new_names(kv_name: str) -> None:
    snapshot = parse_metrics(exposition(kv_name=kv_name, kv=0.42), at=5.0)
    assert (snapshot.waiting, snapshot.running, snapshot.kv_cache_usage) == (3, 12, 0.42)
    assert snapshot.finished == 100  # stop + length, not the _created timestamps
    assert snapshot.at == 5.0
    assert kv_name in snapshot.found


def test_several_engines_add_up_and_utilisations_average() -> None:
    snapshot = parse_metrics(exposition(engines=2, kv=0.5, first_tokens=(0.1,), dcgm=87))
    assert (snapshot.waiting, snapshot.running, snapshot.finished) == (6, 24, 200)
    assert snapshot.kv_cache_usage == 0.5
    assert snapshot.gpu_utilization == pytest.approx(0.87)
    assert snapshot.ttft is not None and snapshot.ttft.total == 2


def test_text_without_vllm_metrics_reads_as_nothing_found() -> None:
    snapshot = parse_metrics("# HELP up whatever\n# TYPE up gauge\nup 1\n")
    assert snapshot == MetricsSnapshot(found=frozenset())


def test_a_window_between_two_scrapes_gives_rates_and_its_own_ttft() -> None:
    before = parse_metrics(
        exposition(finished=100, running=10, waiting=0, first_tokens=(5.0,) * 50), at=100.0
    )
    after = parse_metrics(
        exposition(finished=150, running=14, waiting=6, first_tokens=(5.0,) * 50 + (0.3,) * 40),
        at=110.0,
    )
    seen = observe("pod-a", after, before)
    assert seen.finished_per_s == pytest.approx(5.0)  # 50 finished in 10 s
    assert seen.arrived_per_s == pytest.approx(6.0)  # and 10 more are inside than before
    assert seen.ttft is not None and seen.ttft.total == 40  # the 50 slow ones came earlier
    p95 = seen.ttft.quantile(0.95)
    assert p95 is not None and 0.25 < p95 <= 0.5


def test_no_window_without_an_earlier_scrape_or_after_a_restart() -> None:
    now = parse_metrics(exposition(finished=10, first_tokens=(0.2,) * 5), at=110.0)
    first = observe("pod-a", now, None)
    assert (first.ttft, first.finished_per_s, first.arrived_per_s) == (None, None, None)
    before_restart = parse_metrics(exposition(finished=500, first_tokens=(0.2,) * 90), at=100.0)
    restarted = observe("pod-a", now, before_restart)
    assert restarted.finished_per_s is None  # the counter went backwards
    assert restarted.ttft is not None and restarted.ttft.total == 5  # all since the restart


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = Buckets((0.5, 1.0, float("inf")), (0.0, 100.0, 100.0))
    assert buckets.quantile(0.5) == pytest.approx(0.75)
    assert Buckets((0.5, float("inf")), (0.0, 10.0)).quantile(0.95) == 0.5  # beyond: last bound
    assert Buckets((0.5, float("inf")), (0.0, 0.0)).quantile(0.95) is None


def test_histograms_of_several_replicas_merge() -> None:
    a = Buckets((1.0, float("inf")), (3.0, 4.0))
    b = Buckets((1.0, float("inf")), (1.0, 6.0))
    merged = Buckets.merge([a, b])
    assert merged == Buckets((1.0, float("inf")), (4.0, 10.0))


def test_reads_what_the_real_server_exports() -> None:
    """/metrics captured from `modelplane serve` (vLLM 0.32, CPU) after a warm-up and
    three streamed completions of 8, 8 and 4 tokens."""
    text = (Path(__file__).parent / "data" / "modelplane-serve-vllm-0.32-cpu.metrics").read_text()
    snapshot = parse_metrics(text, at=1.0)
    assert (snapshot.waiting, snapshot.running, snapshot.kv_cache_usage) == (0, 0, 0.0)
    assert snapshot.finished == 4
    assert snapshot.ttft is not None and snapshot.ttft.total == 4  # the engine's, every request
    assert {"vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds"} <= snapshot.found


def test_series_that_appear_between_two_scrapes_count_from_zero() -> None:
    """A fresh replica scraped before its first request exports none of its labelled
    counters yet (the server's `modelplane_requests_total` by code, the engine's TTFT
    and finished counts): what it answers afterwards is counted, not unknown."""
    registry = CollectorRegistry()
    engine = ("model_name", "engine")
    Gauge("vllm:num_requests_waiting", "waiting", engine, registry=registry).labels("m", "0")
    done = Counter("vllm:request_success", "done", (*engine, "finished_reason"), registry=registry)
    ttft = Histogram(
        "vllm:time_to_first_token_seconds", "ttft", engine, buckets=TTFT, registry=registry
    )
    server = ServerMetrics(registry)
    fresh = parse_metrics(generate_latest(registry).decode(), at=100.0)
    assert (fresh.requests, fresh.ttft, fresh.finished) == (None, None, None)

    for _ in range(3):
        server.requests.labels("m", "/v1/chat/completions", "200").inc()
        done.labels("m", "0", "stop").inc()
        ttft.labels("m", "0").observe(0.2)
    server.requests.labels("m", "/v1/chat/completions", "500").inc()
    answered = parse_metrics(generate_latest(registry).decode(), at=102.0)

    seen = observe("canary-a", answered, fresh)
    assert (seen.requests, seen.errors) == (4, 1)
    assert seen.ttft is not None and seen.ttft.total == 3
    assert seen.finished_per_s == pytest.approx(1.5)  # 3 finished in 2 s
