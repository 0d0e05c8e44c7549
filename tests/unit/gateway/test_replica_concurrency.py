"""Where the gateway learns how many requests one replica runs at once (its queue's bound).

In a cluster: `--max-num-seqs` in the model's `engine.extraArgs`, which the
operator writes on the model's Service; in the static file: `concurrency`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelplane.api import contract
from modelplane.api.extra_args import flag_value
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.discovery.kubernetes import (
    model_service,
    routes_from_cluster,
    slice_endpoints,
)
from modelplane.gateway.discovery.static import load_static_config, routes_from_static
from modelplane.operator.builders.service import build_service
from tests.unit.gateway.test_kubernetes_discovery import (
    NS,
    endpoint_slice,
    llmdeployment,
    owners,
    service,
)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["--max-num-seqs=64"], "64"),
        (["--max_num_seqs", "32", "--block-size", "16"], "32"),
        (["--max-num-seqs=8", "--max-num-seqs=4"], "4"),
        (["--block-size", "16"], None),
        ([], None),
    ],
)
def test_the_value_extra_args_give_a_flag(items: list[str], expected: str | None) -> None:
    assert flag_value(items, "--max-num-seqs") == expected


def spec(extra_args: list[str]) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate(
        {"model": {"source": "hf://org/model"}, "engine": {"extraArgs": extra_args}}
    )


def test_the_operator_writes_the_replica_concurrency_the_engine_is_told() -> None:
    annotations = build_service("chat", NS, spec(["--max-num-seqs=16"]))["metadata"]["annotations"]
    assert annotations[contract.ANNOTATION_REPLICA_CONCURRENCY] == "16"
    untold = build_service("chat", NS, spec([]))["metadata"]["annotations"]
    assert contract.ANNOTATION_REPLICA_CONCURRENCY not in untold


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16", 16), ("0", None), ("-1", None), ("4097", None), ("1e3", None), ("9" * 500, None)],
)
def test_discovery_reads_the_annotation_and_ignores_anything_else(
    value: str, expected: int | None
) -> None:
    obj: dict[str, Any] = service("chat-stable", "llama")
    obj["metadata"]["annotations"][contract.ANNOTATION_REPLICA_CONCURRENCY] = value
    parsed = model_service(obj)
    assert parsed is not None and parsed.concurrency == expected
    ready = slice_endpoints(endpoint_slice("s", "chat-stable", [("10.0.0.1", True, None)]))
    assert ready is not None
    routes = routes_from_cluster(
        {(NS, "chat-stable"): parsed}, {(NS, "s"): ready}, owners(llmdeployment("chat"))
    ).routes
    assert routes["llama"].concurrency == expected


def test_the_static_file_says_it_per_model(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  m:\n    upstreams: [http://127.0.0.1:1]\n    concurrency: 8\n")
    routes = routes_from_static(load_static_config(path), ["http://127.0.0.1:1"])
    assert routes["m"].concurrency == 8
    path.write_text("models:\n  m:\n    upstreams: [http://127.0.0.1:1]\n    concurrency: 0\n")
    with pytest.raises(ConfigError, match=r"models\.m\.concurrency"):
        load_static_config(path)
