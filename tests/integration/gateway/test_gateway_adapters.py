"""LoRA adapters through the gateway, in front of two real model servers (vLLM's CPU engine,
SmolLM2-135M), as a user runs them with static discovery.

Server A serves the adapter `sql` from the command line (`--adapter sql=DIR`); server B
serves LoRA but starts with no adapter, and has its admin listener on. The gateway lists
both adapters, `sql` and `poet`, for the model. The adapters are random rank-8 weights
the tests write (tests/support/lora_adapter.py). Both engines start once for the module,
side by side on their own CPUs; the tests run in file order (the last one loads `poet`
on B).

Where each request went is read from the gateway's per-replica request counter
(`modelplane_gateway_requests_total{upstream=...}`), which counts the replica that
answered.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from modelplane.local.cpu_binding import server_envs
from tests.conftest import ServerProcess, free_port
from tests.integration.gateway.conftest import GatewayProcess
from tests.support.lora_adapter import write_random_adapter

pytestmark = pytest.mark.engine

MODEL = "smollm2"
PROMPT = "The capital of France is"
REQUESTS = "modelplane_gateway_requests_total"
BINDS = server_envs(2, {})  # each engine computes on its own CPUs


@dataclass
class Fleet:
    a: ServerProcess  # has `sql` loaded from the command line
    b: ServerProcess  # LoRA on, no adapter loaded; admin API at `b_admin`
    b_admin: str
    gateway: GatewayProcess
    adapters: dict[str, Path]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway.url}/v1", api_key="none", max_retries=0)

    def served_by(self, server: ServerProcess) -> float:
        return self.gateway.metric(REQUESTS, model=MODEL, code="200", upstream=server.url)


@pytest.fixture(scope="module")
def fleet(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("gateway-adapters")
    adapters = {
        "sql": write_random_adapter(smollm2_dir, tmp / "sql", seed=1),
        "poet": write_random_adapter(smollm2_dir, tmp / "poet", seed=2),
    }
    common = [
        "--model", str(smollm2_dir), "--served-model-name", MODEL,
        "--max-model-len", "1024", "--enforce-eager", "--no-warmup",
    ]  # fmt: skip
    admin_port = free_port()
    a = ServerProcess(
        args=[*common, "--adapter", f"sql={adapters['sql']}"],
        log_path=tmp / "server-a.log",
        env=BINDS[0],
    )
    b = ServerProcess(
        args=[*common, "--max-loras", "1", "--max-lora-rank", "8",
              "--admin-port", str(admin_port)],
        log_path=tmp / "server-b.log",
        env=BINDS[1],
    )  # fmt: skip
    gateway = GatewayProcess.static(
        tmp, "gateway", [a.url, b.url], "--health-interval", "0.25", "--hold-timeout", "300",
        model=MODEL, adapters=["sql", "poet"],
    )  # fmt: skip
    with contextlib.ExitStack() as stop:
        for process in (a, b, gateway):
            stop.callback(process.stop)
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        gateway.start().wait_synced()
        yield Fleet(a, b, f"http://127.0.0.1:{admin_port}", gateway, adapters)


def greedy(client: openai.OpenAI, model: str) -> str:
    reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    return reply.choices[0].text


def wait_for_metric(gateway: GatewayProcess, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 30
    while gateway.metric(name, **labels) != value:
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} never reached {value}:\n{gateway.log()[-3000:]}")
        time.sleep(0.1)


def test_the_gateway_lists_each_adapter_under_its_base_model(fleet: Fleet) -> None:
    wait_for_metric(fleet.gateway, "modelplane_gateway_adapter_replicas", 1, adapter="sql")
    listed = httpx.get(f"{fleet.gateway.url}/v1/models", timeout=10).json()["data"]
    by_id = {m["id"]: m for m in listed}
    assert sorted(by_id) == ["poet", MODEL, "sql"]
    assert by_id["sql"]["parent"] == MODEL and by_id["sql"]["ready"] is True
    assert by_id["poet"]["parent"] == MODEL and by_id["poet"]["ready"] is False
    assert [m.id for m in fleet.client().models.list()] == [MODEL, "poet", "sql"]


def test_an_adapters_requests_all_go_to_the_replica_that_has_it(fleet: Fleet) -> None:
    client = fleet.client()
    on_a, on_b = fleet.served_by(fleet.a), fleet.served_by(fleet.b)
    answers = {greedy(client, "sql") for _ in range(6)}
    assert fleet.served_by(fleet.a) - on_a == 6 and fleet.served_by(fleet.b) == on_b
    # The adapter answered (greedy: one answer), not the base model.
    base = greedy(client, MODEL)
    assert len(answers) == 1 and answers != {base}
    # The base model's requests spread over both (least load takes turns when idle).
    for _ in range(4):
        greedy(client, MODEL)
    assert fleet.served_by(fleet.b) > on_b
    adapter_200 = fleet.gateway.metric(
        "modelplane_gateway_adapter_requests_total", model=MODEL, adapter="sql", code="200"
    )
    assert adapter_200 == 6
    tokens = "modelplane_gateway_adapter_tokens_total"
    assert fleet.gateway.metric(tokens, model=MODEL, adapter="sql", kind="completion") == 6 * 12


def test_an_adapter_loaded_nowhere_is_held_until_a_replica_loads_it(fleet: Fleet) -> None:
    client = fleet.client()
    on_a, on_b = fleet.served_by(fleet.a), fleet.served_by(fleet.b)
    answer: list[str] = []
    asker = threading.Thread(target=lambda: answer.append(greedy(client, "poet")), daemon=True)
    asker.start()
    wait_for_metric(fleet.gateway, "modelplane_gateway_held_requests", 1, model=MODEL)
    assert answer == []
    # The operator's part: load it on B through B's admin listener.
    source = {"source": f"file://{fleet.adapters['poet']}"}
    loaded = httpx.put(f"{fleet.b_admin}/adapters/poet", json=source, timeout=300)
    assert loaded.status_code == 200, loaded.text
    asker.join(120)
    assert len(answer) == 1
    assert fleet.served_by(fleet.b) - on_b == 1 and fleet.served_by(fleet.a) == on_a
    assert fleet.gateway.metric("modelplane_gateway_held_requests", model=MODEL) == 0
    assert fleet.gateway.metric("modelplane_gateway_hold_seconds_count", model=MODEL) == 1
    # From now on `poet` goes to B, `sql` still to A.
    assert greedy(client, "poet") == answer[0]
    assert fleet.served_by(fleet.b) - on_b == 2 and fleet.served_by(fleet.a) == on_a
