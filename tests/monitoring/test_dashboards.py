"""Dashboard JSON that Grafana can load, and PromQL that Prometheus parses.

No Grafana runs here (no Debian or PyPI package of it), so the dashboard
structure is checked for what Grafana needs from a provisioned dashboard;
every panel query (variables substituted as Grafana would) is parsed by
promtool; and the panels that must survive vLLM's metric renames are
evaluated by promtool on series carrying only the old, or only the new, names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.dashboards import (
    BUILTINS,
    DASHBOARDS,
    all_queries,
    label_values_query,
    load,
    panels,
    queries,
    substitute,
    variables,
)
from tests.monitoring.prometheus import promtool

VALUES = {"namespace": "ml", "model": "chat", "tenant": "team-a", "datasource": "prometheus"}

MODELS_PANELS = {
    "Requests/s by status", "Error ratio (5xx)", "Tokens/s in and out", "Running requests",
    "Queue depth", "Time to first token", "Inter-token latency", "End-to-end latency",
    "KV-cache usage", "Prefix-cache hit rate", "GPU utilization", "GPU memory used",
    "Replicas: desired vs ready", "Server start-up by phase",
    "Replica start-up: scheduled to ready", "Gateway requests/s by code", "Gateway added latency",
    "Gateway retries and ejections", "Held requests", "Adapter requests/s by code",
    "Adapter tokens/s", "Adapter replicas", "Tenant requests/s", "Tenant tokens/s",
    "Tenant share of model tokens", "Tenant throttled requests/s", "Tenant budget used",
    "Tenant queue wait (p95)", "Tenant requests waiting", "Tenant limit store up",
}  # fmt: skip
OPERATOR_PANELS = {
    "Reconciles/s by result", "Reconcile errors", "Reconcile duration", "Operator replicas up",
    "LLMDeployments by phase", "LLMDeployment phases", "Scaling decisions",
    "Replicas: desired vs ready",
}  # fmt: skip


def board(title: str) -> dict[str, Any]:
    (found,) = [b for b in map(load, DASHBOARDS) if b["title"] == title]
    return found


@pytest.mark.parametrize(
    ("title", "expected"),
    [("Modelplane / Models", MODELS_PANELS), ("Modelplane / Operator", OPERATOR_PANELS)],
)
def test_dashboard_has_the_panels_operators_need(title: str, expected: set[str]) -> None:
    dash = board(title)
    titles = [p["title"] for p in panels(dash) if p["type"] != "row"]
    assert set(titles) == expected
    assert len(titles) == len(set(titles)), "panel titles repeat"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_loadable_by_grafana(path: Path) -> None:
    dash = load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"])
    assert dash["title"].startswith("Modelplane / ")
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    defined = set(variables(dash)) | set(BUILTINS)
    assert variables(dash)["datasource"]["type"] == "datasource"
    for panel in panels(dash):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", target["expr"]))
            assert used <= defined, f"{panel['title']}: undefined {used - defined}"


def test_models_dashboard_filters_by_namespace_model_and_tenant() -> None:
    dash = board("Modelplane / Models")
    names = variables(dash)
    for name in ("namespace", "model", "tenant"):
        assert names[name]["multi"] and names[name]["includeAll"]
        label_values_query(names[name]["query"]["query"])
    assert "$namespace" in names["model"]["query"]["query"]
    assert "$model" in names["tenant"]["query"]["query"]
    for query in queries(dash):
        if query.panel.startswith("Tenant"):
            # Gateway series too; a tenant's limits, budget and the shared store have no model.
            if "shared_store_up" not in query.expr:
                assert "$tenant" in query.expr, query
            if re.search(r"tenant_(requests|tokens)_total|queue_(seconds|waiting)", query.expr):
                assert "$model" in query.expr, query
        elif query.panel.startswith(("Gateway", "Held", "Adapter")):
            # The gateway runs in the chart's namespace, whatever the model's.
            assert "$model" in query.expr or "added_latency" in query.expr, query
        else:
            assert "$namespace" in query.expr and "$model" in query.expr, query


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, without any server."""
    found = all_queries()
    rules = [
        {"record": f"panel_query_{i}", "expr": substitute(q.expr, VALUES)}
        for i, q in enumerate(found)
    ]
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout


def panel_expr(title: str) -> str:
    (query,) = [q for q in queries(board("Modelplane / Models")) if q.panel == title]
    return substitute(query.expr, VALUES)


SERVER = 'job="modelplane-model-server",namespace="ml",pod="chat-a",model_name="chat"'
# (panel, engine generation, input series, expected value)
RENAMES = [
    ("KV-cache usage", "current", [(f"vllm:kv_cache_usage_perc{{{SERVER}}}", "0.42x10")], 0.42),
    ("KV-cache usage", "before the rename", [
        (f"vllm:gpu_cache_usage_perc{{{SERVER}}}", "0.42x10"),
    ], 0.42),
    ("Prefix-cache hit rate", "current", [
        (f"vllm:prefix_cache_hits_total{{{SERVER}}}", "0+3x10"),
        (f"vllm:prefix_cache_queries_total{{{SERVER}}}", "0+10x10"),
    ], 0.3),
    ("Prefix-cache hit rate", "gpu_-prefixed counters", [
        (f"vllm:gpu_prefix_cache_hits_total{{{SERVER}}}", "0+3x10"),
        (f"vllm:gpu_prefix_cache_queries_total{{{SERVER}}}", "0+10x10"),
    ], 0.3),
    ("Prefix-cache hit rate", "V0 hit-rate gauge", [
        (f"vllm:gpu_prefix_cache_hit_rate{{{SERVER}}}", "0.25x10"),
    ], 0.25),
]  # fmt: skip


@pytest.mark.parametrize(
    ("panel", "generation", "series", "expected"),
    RENAMES,
    ids=[f"{p}: {g}" for p, g, *_ in RENAMES],
)
def test_panel_survives_vllm_metric_renames(
    tmp_path: Path, panel: str, generation: str, series: list[tuple[str, str]], expected: float
) -> None:
    expr = panel_expr(panel)
    labels = {"model_name": "chat"} | ({"pod": "chat-a"} if "pod" in expr else {})
    labels_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    test_file = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [{
                "expr": expr,
                "eval_time": "8m",
                "exp_samples": [{"labels": f"{{{labels_text}}}", "value": expected}],
            }],
        }],
    }  # fmt: skip
    path = tmp_path / "renames_test.yaml"
    path.write_text(yaml.safe_dump(test_file))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
