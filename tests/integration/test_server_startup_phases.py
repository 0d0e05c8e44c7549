"""The real server's start-up phases: one log line when ready, the same figures on /metrics.

The server is the shared one of tests/integration/conftest.py (vLLM's CPU
build, SmolLM2-135M-Instruct, eager mode), so this costs no engine start of
its own. In eager mode nothing is compiled: the compile phase is absent, not 0.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess
from tests.integration.conftest import MODEL

MEASURED = {
    "process", "config", "engine_start", "weights_locate", "weights_load", "kv_cache", "ready"
}  # fmt: skip


def startup_record(server: ServerProcess) -> dict[str, Any]:
    records = [
        json.loads(line)
        for line in server.log_path.read_text(errors="replace").splitlines()
        if line.startswith("{") and "startup phases:" in line
    ]
    assert len(records) == 1, "one start-up line, logged once"
    record: dict[str, Any] = records[0]
    return record


def test_the_ready_server_logs_its_start_up_phases_in_one_line(server: ServerProcess) -> None:
    record = startup_record(server)
    phases = record["startup_seconds"]
    assert set(phases) == MEASURED
    assert all(seconds >= 0 for seconds in phases.values())
    # The phases follow one another on one clock: together they are the whole start.
    assert abs(sum(phases.values()) - record["total_s"]) < 0.5
    words = record["msg"].removeprefix("startup phases: ").split()
    assert [w.split("=")[0] for w in words] == [*phases, "total"]
    assert words[-1] == f"total={record['total_s']:.1f}s"


def test_metrics_export_the_logged_phases(server: ServerProcess) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    exported = {}
    totals = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelplane_server_startup_seconds":
                assert sample.labels["model"] == MODEL
                exported[sample.labels["phase"]] = sample.value
            elif sample.name == "modelplane_server_startup_total_seconds":
                totals[sample.labels["model"]] = sample.value
    record = startup_record(server)
    assert exported == record["startup_seconds"]
    assert totals == {MODEL: record["total_s"]}
