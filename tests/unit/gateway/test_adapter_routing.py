"""LoRA adapters in the gateway's routing decisions, as pure functions: which names are
accepted, which model serves an adapter's name, which replicas may take its requests
(only those that hold it, with bounded load), and when its requests wait."""

from __future__ import annotations

import asyncio

import pytest

from modelplane.gateway.routing.adapters import (
    MAX_ADAPTERS,
    AdapterConflict,
    adapter_key,
    adapter_names,
    annotation_adapter_names,
    index_adapters,
    ready_adapters,
)
from modelplane.gateway.routing.balancing import pick_upstream, stable_hash
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable, Track

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


def base(
    *upstreams: str,
    adapters: tuple[str, ...] = ("sql",),
    loaded: dict[str, frozenset[str]] | None = None,
    name: str = "llama",
) -> ModelRoute:
    return ModelRoute(
        name,
        (Track("stable", 100, upstreams),),
        adapters=frozenset(adapters),
        loaded=loaded or {},
    )


def pick(route: ModelRoute, adapter: str, loads: dict[str, int]) -> str | None:
    narrowed = route.for_adapter(adapter)
    chosen = pick_upstream(
        narrowed.routing,
        narrowed.tracks,
        loads,
        key_hash=stable_hash(adapter_key(adapter)),
        rand=0.5,
        turn=0,
    )
    return None if chosen is None else chosen.upstream


def test_adapter_names_are_checked_each_once_and_bounded() -> None:
    checked = adapter_names(["sql", "sql", "chat-v2", "", "-x", "a b", "a,b", 7, "x" * 129])
    assert checked.names == ("sql", "chat-v2")
    assert len(checked.problems) == 7
    assert "'sql' is listed twice" in checked.problems[0]
    assert any("over 128 characters" in p for p in checked.problems)
    assert any("is not a string" in p for p in checked.problems)


def test_a_huge_annotation_keeps_the_first_names_up_to_the_bound() -> None:
    value = ",".join(f"a{i}" for i in range(100_000))
    checked = annotation_adapter_names(value)
    assert len(checked.names) == MAX_ADAPTERS
    assert checked.names[:2] == ("a0", "a1")
    assert checked.problems == (f"more than {MAX_ADAPTERS} adapters: the rest are left out",)


def test_the_annotation_is_comma_separated_and_may_be_empty() -> None:
    assert annotation_adapter_names(" sql , chat ,,").names == ("sql", "chat")
    assert annotation_adapter_names("") == annotation_adapter_names(None)
    assert annotation_adapter_names(None).names == ()


def test_a_replicas_ready_answer_names_what_it_has_loaded_and_nothing_else() -> None:
    assert ready_adapters({"status": "ready", "adapters": ["sql", "chat"]}) == {"sql", "chat"}
    assert ready_adapters({"status": "ready"}) == frozenset()  # a server without adapters
    assert ready_adapters({"adapters": "sql"}) == frozenset()
    assert ready_adapters({"adapters": ["sql", 3, "../../x", "y" * 500]}) == {"sql"}
    assert ready_adapters(["sql"]) == frozenset()


def test_a_model_name_beats_an_adapter_name_and_the_first_model_by_name_keeps_one() -> None:
    index = index_adapters(
        {"llama": {"sql", "qwen", "shared"}, "qwen": set(), "mistral": {"shared", "math"}}
    )
    assert index.models == {"sql": "llama", "shared": "llama", "math": "mistral"}
    assert set(index.conflicts) == {
        AdapterConflict("qwen", "llama", "qwen"),
        AdapterConflict("shared", "mistral", "llama"),
    }
    assert "a model has that name" in str(AdapterConflict("qwen", "llama", "qwen"))
    # The same outcome whatever order discovery listed the models in.
    reordered = index_adapters(
        {"mistral": {"math", "shared"}, "qwen": set(), "llama": {"shared", "qwen", "sql"}}
    )
    assert reordered.models == index.models


def test_an_adapter_request_goes_only_to_replicas_that_hold_it() -> None:
    route = base(A, B, C, loaded={B: frozenset({"sql"})})
    # B is far busier than A and C, and still the only one that can answer for `sql`.
    assert pick(route, "sql", {A: 0, B: 50, C: 0}) == B
    assert route.ready_for("sql") and route.ready_for(None)


def test_among_holders_one_takes_an_adapter_until_its_load_passes_the_bound() -> None:
    both = frozenset({"sql"})
    route = base(A, B, C, loaded={A: both, B: both})
    first = pick(route, "sql", {})
    assert first in (A, B)
    other = B if first == A else A
    # Affinity: while its load stays within the bound, the same holder takes them all.
    assert all(pick(route, "sql", {first: n, other: n}) == first for n in range(5))
    # Past the bound (1.25 x the holders' mean), the other holder; never C, which is idle.
    assert pick(route, "sql", {first: 4, other: 0, C: 0}) == other
    assert pick(route, "sql", {first: 40, other: 40, C: 0}) in (A, B)


def test_an_adapter_no_ready_replica_holds_is_not_ready_and_picks_nothing() -> None:
    route = base(A, B, loaded={})
    assert route.ready and not route.ready_for("sql")
    assert pick(route, "sql", {}) is None
    # A replica that holds it but is not ready (not in any track) does not count.
    assert not base(A, loaded={B: frozenset({"sql"})}).ready_for("sql")


def test_adapter_affinity_keeps_canary_tracks_and_their_weights() -> None:
    route = ModelRoute(
        "llama",
        (Track("stable", 90, (A, B)), Track("canary", 10, (C,))),
        routing=Routing.LEAST_LOAD,
        adapters=frozenset({"sql"}),
        loaded={B: frozenset({"sql"}), C: frozenset({"sql"})},
    )
    narrowed = route.for_adapter("sql")
    assert [(t.name, t.weight, t.upstreams) for t in narrowed.tracks] == [
        ("stable", 90, (B,)),
        ("canary", 10, (C,)),
    ]
    assert narrowed.name == "llama" and narrowed.routing is Routing.PREFIX


def test_the_table_resolves_an_adapter_to_its_base_model() -> None:
    table = RoutingTable()
    table.replace({"llama": base(A), "sql": base(B, adapters=(), name="sql")})
    assert table.resolve("llama") == (table.routes["llama"], None)
    # `sql` is a model's name: the model wins over llama's adapter of that name.
    assert table.resolve("sql") == (table.routes["sql"], None)
    assert table.adapters.conflicts == (AdapterConflict("sql", "llama", "sql"),)
    table.replace({"llama": base(A, adapters=("sql", "chat"))})
    assert table.resolve("chat") == (table.routes["llama"], "chat")
    assert table.route_for("chat") is table.routes["llama"]
    assert table.resolve("nope") is None


async def test_a_request_for_an_adapter_waits_until_a_replica_has_it_loaded() -> None:
    table = RoutingTable()
    table.replace({"llama": base(A)})
    waiting = asyncio.create_task(table.wait_until_ready("llama", 5, "sql"))
    await asyncio.sleep(0.01)
    table.replace({"llama": base(A, B)})  # more replicas, none with the adapter
    await asyncio.sleep(0.01)
    assert not waiting.done()
    table.replace({"llama": base(A, B, loaded={B: frozenset({"sql"})})})
    route = await waiting
    assert route is not None and route.ready_for("sql")


@pytest.mark.parametrize(
    "after",
    [
        pytest.param({"llama": base(A, adapters=())}, id="adapter-removed"),
        pytest.param({}, id="model-removed"),
    ],
)
async def test_a_wait_for_an_adapter_ends_when_it_is_no_longer_configured(
    after: dict[str, ModelRoute],
) -> None:
    table = RoutingTable()
    table.replace({"llama": base(A)})
    waiting = asyncio.create_task(table.wait_until_ready("llama", 5, "sql"))
    await asyncio.sleep(0.01)
    table.replace(after)
    assert await asyncio.wait_for(waiting, 1) is None


async def test_a_wait_for_an_adapter_times_out() -> None:
    table = RoutingTable()
    table.replace({"llama": base(A)})
    assert await table.wait_until_ready("llama", 0.05, "sql") is None
