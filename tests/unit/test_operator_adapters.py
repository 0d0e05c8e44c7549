"""LoRA adapters in the operator's pure parts: the spec's rules, the template, the plan.

No network and no cluster: the builders, the hash that tells the model's own
change from the operator's, the per-replica plan and the status and Events
written from what the replicas answered (the running operator against the
emulator and recording fake replicas: tests/integration/operator/
test_operator_adapters.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.adapters.admin_client import (
    AdminTarget,
    HeldAdapter,
    list_adapters,
    load_adapter,
    unload_adapter,
)
from modelplane.operator.adapters.plan import (
    DesiredAdapter,
    Load,
    ReplicaCalls,
    ReplicaOutcome,
    ReplicaPlan,
    adapter_events,
    adapter_status,
    desired_adapters,
    outcome_after,
    plan_replica,
)
from modelplane.operator.builders import BuildOptions, build_children
from modelplane.operator.builders.deployment import template_hash_of
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.parsing import parse_spec
from modelplane.operator.reconcile.rollout_limit import model_spec_hash

MODEL = {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"}
SQL = {"name": "sql", "source": "hf://example/sql-lora"}
FRENCH = {"name": "french", "source": "s3://loras/french", "revision": "v3"}


def spec(**fields: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({"model": MODEL, **fields})


def deployment(s: LLMDeploymentSpec) -> dict[str, Any]:
    children = build_children("chat", "default", s, OperatorConfig(), BuildOptions(replicas=2))
    return next(c for c in children if c["kind"] == "Deployment")


# --- the spec --------------------------------------------------------------


def test_adapters_default_to_revision_main() -> None:
    (adapter,) = spec(adapters=[SQL]).adapters
    assert (adapter.name, adapter.source, adapter.revision) == ("sql", SQL["source"], "main")


@pytest.mark.parametrize(
    ("adapters", "fragment"),
    [
        ([SQL, SQL], "adapters[].name must be unique (repeated: sql)"),
        ([{**SQL, "source": "ftp://x/y"}], "must start with hf://, pvc://, s3:// or file://"),
        ([{**SQL, "name": "-sql"}], "String should match pattern"),
        ([{**SQL, "name": "a/b"}], "String should match pattern"),
        ([{"name": "sql"}], "Field required"),
    ],
)
def test_bad_adapters_are_refused(adapters: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(adapters=adapters)
    assert fragment in str(err.value)


def test_an_adapter_may_not_take_the_base_model_s_name() -> None:
    parsed = parse_spec(
        "chat", {"model": MODEL, "adapters": [{**SQL, "name": "smollm2"}]}, OperatorConfig()
    )
    assert not parsed.servable and parsed.reason == "InvalidSpec"
    assert parsed.problems == (
        "spec.adapters[].name must differ from the base model's served name "
        "(model.servedName, else metadata.name): 'smollm2' is both",
    )
    # Without servedName the resource's name is the model's.
    unnamed = {"source": MODEL["source"]}
    assert not parse_spec("chat", {"model": unnamed, "adapters": [{**SQL, "name": "chat"}]},
                          OperatorConfig()).servable  # fmt: skip
    assert parse_spec("chat", {"model": MODEL, "adapters": [SQL]}, OperatorConfig()).servable


# --- the template ----------------------------------------------------------


def test_adapter_changes_keep_the_template_once_lora_is_on() -> None:
    one = deployment(spec(adapters=[SQL]))
    two = deployment(spec(adapters=[SQL, FRENCH]))
    changed = deployment(spec(adapters=[{**SQL, "revision": "v2"}]))
    assert template_hash_of(one) == template_hash_of(two) == template_hash_of(changed)
    assert one["spec"]["template"] == two["spec"]["template"]


def test_the_first_adapter_turns_lora_and_the_admin_port_on() -> None:
    without = deployment(spec())
    with_one = deployment(spec(adapters=[SQL]))
    assert template_hash_of(without) != template_hash_of(with_one)
    (server,) = with_one["spec"]["template"]["spec"]["containers"]
    assert server["ports"][1] == {
        "name": contract.SERVER_ADMIN_PORT_NAME,
        "containerPort": contract.SERVER_ADMIN_PORT,
        "protocol": "TCP",
    }
    args = server["args"]
    assert args[args.index("--max-loras") + 1] == "4"
    assert args[args.index("--admin-port") + 1] == "8001"
    (plain,) = without["spec"]["template"]["spec"]["containers"]
    assert "--admin-port" not in plain["args"] and len(plain["ports"]) == 1


def test_engine_lora_settings_keep_lora_on_without_adapters() -> None:
    engine = {"maxLoras": 8, "maxLoraRank": 64}
    empty = deployment(spec(engine=engine))
    full = deployment(spec(engine=engine, adapters=[SQL, FRENCH]))
    assert empty["spec"]["template"] == full["spec"]["template"]
    (server,) = full["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    assert args[args.index("--max-loras") + 1] == "8" and "--admin-port" in args


def test_the_model_spec_hash_ignores_adapters_but_for_turning_lora_on() -> None:
    raw = {"model": MODEL}
    with_sql = {**raw, "adapters": [SQL]}
    with_both = {**raw, "adapters": [SQL, FRENCH]}
    assert model_spec_hash(with_sql, lora_by_adapters=True) == model_spec_hash(
        with_both, lora_by_adapters=True
    )
    assert model_spec_hash(raw) != model_spec_hash(with_sql, lora_by_adapters=True)
    assert model_spec_hash(raw) == model_spec_hash(with_sql)  # LoRA on by engine settings


# --- the plan --------------------------------------------------------------

SQL_WANTED = DesiredAdapter("sql", "main", "hf://example/sql-lora")
FRENCH_WANTED = DesiredAdapter("french", "v3", "s3://loras/french")


def held(name: str, source: str, revision: str, state: str = "loaded") -> HeldAdapter:
    return HeldAdapter(name, source, revision, state)


def test_a_replica_is_planned_from_what_it_holds() -> None:
    plan = plan_replica(
        [SQL_WANTED, FRENCH_WANTED],
        [
            held("sql", "hf://example/sql-lora", "old"),  # another revision
            held("legal", "hf://example/legal", "main"),  # no longer wanted
        ],
    )
    assert plan == ReplicaPlan(
        loads=(Load(SQL_WANTED, reload=True), Load(FRENCH_WANTED, reload=False)),
        unloads=("legal",),
    )
    assert plan_replica([SQL_WANTED], [held("sql", "hf://example/sql-lora", "main")]).empty


def test_loading_is_awaited_and_failed_is_tried_again() -> None:
    loading = held("sql", "hf://example/sql-lora", "main", "loading")
    assert plan_replica([SQL_WANTED], [loading]) == ReplicaPlan(loading=frozenset({"sql"}))
    failed = held("sql", "hf://example/sql-lora", "main", "failed")
    assert plan_replica([SQL_WANTED], [failed]).loads == (Load(SQL_WANTED, reload=False),)


def test_pvc_adapters_load_from_the_model_s_own_claim_only() -> None:
    s = LLMDeploymentSpec.model_validate(
        {
            "model": {"source": "pvc://weights/smollm2"},
            "adapters": [
                {"name": "here", "source": "pvc://weights/loras/sql"},
                {"name": "there", "source": "pvc://other/sql"},
            ],
        }
    )
    here, there = desired_adapters(s)
    assert here.location == "file:///models/loras/sql" and here.problem is None
    assert there.location is None and "claim 'other' is not mounted" in str(there.problem)
    assert plan_replica([here, there], []).loads == (Load(here, reload=False),)


def test_status_counts_replicas_and_names_the_failure() -> None:
    a = ReplicaOutcome("chat-a", loaded=frozenset({"sql", "french"}))
    b = ReplicaOutcome("chat-b", loaded=frozenset({"sql"}), errors={"french": "pod chat-b: 404"})
    status = adapter_status([SQL_WANTED, FRENCH_WANTED], [a, b])
    assert status == [
        {"name": "sql", "revision": "main", "state": "Loaded", "loadedReplicas": 2,
         "replicas": 2, "message": "Loaded on 2/2 replicas"},
        {"name": "french", "revision": "v3", "state": "Failed", "loadedReplicas": 1,
         "replicas": 2, "message": "pod chat-b: 404; loaded on 1/2 replicas"},
    ]  # fmt: skip


def test_status_while_loading_and_without_replicas() -> None:
    a = ReplicaOutcome("chat-a", loaded=frozenset({"sql"}))
    (entry,) = adapter_status([SQL_WANTED], [a], without_admin=1)
    assert entry["state"] == "Loading" and entry["replicas"] == 2
    assert entry["message"] == (
        "Loading: loaded on 1/2 replicas (1 replica still run without LoRA: restarting with it)"
    )
    (none,) = adapter_status([SQL_WANTED], [])
    assert (none["state"], none["message"]) == ("Pending", "no serving replica yet")
    gone = ReplicaOutcome("chat-a", unreachable="pod chat-a: cannot reach its admin API")
    (failed,) = adapter_status([SQL_WANTED], [gone])
    assert failed["state"] == "Failed" and failed["message"].startswith("pod chat-a: cannot")


def test_outcome_counts_only_loads_that_answered() -> None:
    plan = plan_replica([SQL_WANTED, FRENCH_WANTED], [])
    outcome = outcome_after("chat-a", [SQL_WANTED, FRENCH_WANTED], [], plan,
                            {"sql": None, "french": "HTTP 400: bad adapter"})  # fmt: skip
    assert outcome.loaded == {"sql"} and outcome.errors == {"french": "HTTP 400: bad adapter"}


def test_events_group_replicas_per_adapter_and_outcome() -> None:
    plan = ReplicaPlan(loads=(Load(SQL_WANTED, reload=False),), unloads=("legal",))
    calls = [
        ReplicaCalls("chat-b", plan, {"sql": None}, {"legal": None}),
        ReplicaCalls("chat-a", plan, {"sql": None}, {"legal": None}),
        ReplicaCalls(
            "chat-c", plan, {"sql": "pod chat-c: HTTP 500: out of memory"}, {"legal": None}
        ),
    ]
    loaded = "adapter sql at revision main loaded on 2 replicas: chat-a, chat-b"
    unloaded = "adapter legal unloaded on 3 replicas: chat-a, chat-b, chat-c"
    assert adapter_events(calls) == [
        ("Normal", "AdapterLoaded", loaded),
        ("Normal", "AdapterUnloaded", unloaded),
        ("Warning", "AdapterFailed", "adapter sql: pod chat-c: HTTP 500: out of memory"),
    ]


# --- the admin client ------------------------------------------------------
# httpx's MockTransport answers in place of a replica (the running operator against real
# HTTP servers: tests/integration/operator/test_operator_adapters.py).

TARGET = AdminTarget("chat-a", "http://10.0.0.7:8001", api_key="k-1")


def client(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def test_the_client_sends_the_key_and_reads_the_list() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        entry = {"name": "sql", "source": "hf://x/sql", "revision": "main", "state": "loaded"}
        return httpx.Response(200, json={"adapters": [entry]})

    async def run() -> list[HeldAdapter] | str:
        async with client(answer) as http:
            return await list_adapters(http, TARGET)

    assert asyncio.run(run()) == [HeldAdapter("sql", "hf://x/sql", "main", "loaded")]
    assert seen[0].headers["Authorization"] == "Bearer k-1"
    assert str(seen[0].url) == "http://10.0.0.7:8001/adapters"


def test_the_client_turns_failures_into_one_line_each() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, text="<html>not json</html>")
        if request.method == "DELETE":
            return httpx.Response(404, json={"error": {"message": "no adapter sql"}})
        error = {"error": {"message": "rank 64 is over maxLoraRank 16", "param": "source"}}
        return httpx.Response(422, json=error)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def run() -> tuple[object, ...]:
        async with client(answer) as http:
            listed = await list_adapters(http, TARGET)
            loaded = await load_adapter(http, TARGET, "sql", "hf://x/sql", "main")
            unloaded = await unload_adapter(http, TARGET, "sql")
        async with client(refuse) as http:
            unreachable = await load_adapter(http, TARGET, "sql", "hf://x/sql", "main")
        return listed, loaded, unloaded, unreachable

    listed, loaded, unloaded, unreachable = asyncio.run(run())
    assert str(listed).startswith("pod chat-a: unreadable adapter list")
    assert loaded == "pod chat-a: HTTP 422: rank 64 is over maxLoraRank 16"
    assert unloaded is None  # not there: what an unload wants
    assert unreachable == "pod chat-a: cannot reach its admin API: ConnectError"
