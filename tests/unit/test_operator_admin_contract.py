"""The operator's admin client and plan against the model server's real admin app.

The operator (modelplane.operator.adapters) and the server
(modelplane.server.admin_app) meet only over HTTP; this runs the server's
real admin app and adapter registry (through httpx's ASGI transport, with
real adapter directories under a temporary directory and an engine
stand-in that records loads, like tests/unit/test_admin_app.py) under the
operator's own client and planner. So what the operator sends is what the
server takes, and what the server lists back is what the operator reads as
"done": a second pass plans nothing, a new revision plans one reload.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from modelplane.http.key_store import ApiKeys
from modelplane.operator.adapters.admin_client import (
    AdminTarget,
    list_adapters,
    load_adapter,
    unload_adapter,
)
from modelplane.operator.adapters.plan import DesiredAdapter, Load, plan_replica
from modelplane.server.adapter_registry import AdapterRegistry
from modelplane.server.adapter_sources import SourceRoots
from modelplane.server.admin_app import AdminApp
from modelplane.server.metrics import ServerMetrics

KEY = "sk-model"


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def load_adapter(self, name: str, path: Path) -> None:
        self.calls.append(("load", name))

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))


def adapter_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return path


def test_a_pass_the_server_answers_is_done_the_next_time(tmp_path: Path) -> None:
    registry = AdapterRegistry(
        "smollm2",
        SourceRoots(tmp_path / "volumes", tmp_path / "cache"),
        16,
        ServerMetrics(CollectorRegistry()).adapter_loaded,
    )
    engine = RecordingEngine()
    registry.attach_engine(engine, {})
    app = AdminApp(registry, ApiKeys.fixed((KEY,)))
    sql = DesiredAdapter("sql", "main", f"file://{adapter_dir(tmp_path / 'sql')}")
    target = AdminTarget("chat-a", "http://chat-a:8001", api_key=KEY)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as http:
            held = await list_adapters(http, target)
            assert held == []
            plan = plan_replica([sql], held)
            assert plan.loads == (Load(sql, reload=False),)
            assert await load_adapter(http, target, "sql", str(sql.location), "main") is None

            held = await list_adapters(http, target)
            assert not isinstance(held, str)
            assert plan_replica([sql], held).empty  # the server echoes what was sent

            # Another revision: one reload, which the server does.
            v2 = DesiredAdapter("sql", "v2", sql.location)
            assert plan_replica([v2], held).loads == (Load(v2, reload=True),)
            assert await load_adapter(http, target, "sql", str(v2.location), "v2") is None
            held = await list_adapters(http, target)
            assert not isinstance(held, str) and plan_replica([v2], held).empty

            # Gone from the spec: unloaded; unloading it again is fine too.
            plan = plan_replica([], held)
            assert plan.unloads == ("sql",)
            assert await unload_adapter(http, target, "sql") is None
            assert await unload_adapter(http, target, "sql") is None
            assert await list_adapters(http, target) == []

            # The server's refusals reach the status as one readable line.
            missing = await load_adapter(http, target, "poet", f"file://{tmp_path}/nope", "main")
            assert str(missing).startswith("pod chat-a: HTTP 422: ")
            wrong_key = AdminTarget("chat-a", target.url, api_key="not-the-key")
            refused = await list_adapters(http, wrong_key)
            assert str(refused).startswith("pod chat-a: listing adapters: HTTP 401: ")

    asyncio.run(run())
    assert engine.calls == [("load", "sql"), ("unload", "sql"), ("load", "sql"), ("unload", "sql")]
