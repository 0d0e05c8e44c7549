"""bench.fairness's pure parts: the files it writes are ones the gateway accepts, with
the settings the benchmark means, and heavy throughput counts only its window."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fairness import (
    HEAVY_KEY,
    LIGHT_KEY,
    heavy_lengths,
    static_yaml,
    tenants_yaml,
    window_throughput,
)
from modelplane.gateway.discovery.static import load_static_config
from modelplane.gateway.tenants.config import parse_tenants


def test_tenants_file_gives_each_key_its_tenant_and_weight(tmp_path: Path) -> None:
    tenants = parse_tenants(tenants_yaml(1, 2.5), tmp_path)
    heavy, light = tenants.for_key(HEAVY_KEY), tenants.for_key(LIGHT_KEY)
    assert heavy is not None and light is not None
    assert (heavy.name, heavy.weight) == ("heavy", 1.0)
    assert (light.name, light.weight) == ("light", 2.5)


@pytest.mark.parametrize("concurrency", [None, 4])
def test_static_file_queues_at_the_gateway_only_with_a_concurrency(
    tmp_path: Path, concurrency: int | None
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(static_yaml("smollm2", "http://127.0.0.1:8001", concurrency))
    model = load_static_config(path).models["smollm2"]
    assert model.upstreams == ["http://127.0.0.1:8001"]
    assert model.concurrency == concurrency


def test_window_throughput_counts_completions_inside_the_window_only() -> None:
    completions = [(0.5, 100), (1.0, 32), (2.0, 32), (3.0, 32), (3.5, 100)]
    assert window_throughput(completions, 1.0, 3.0) == pytest.approx(96 / 2.0)


def test_window_throughput_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="positive length"):
        window_throughput([(1.0, 32)], 2.0, 2.0)


def test_heavy_lengths_keep_the_mean_and_refuse_a_spread_past_the_length() -> None:
    assert heavy_lengths(32, 0) == [32]
    spread = heavy_lengths(32, 16)
    assert (min(spread), max(spread), sum(spread) / len(spread)) == (16, 48, 32)
    with pytest.raises(ValueError, match="spread"):
        heavy_lengths(32, 32)
