"""The admin listener's API: auth, hostile bodies, and what loads and unloads reach the engine.

The admin app and its adapter registry are the real ones, reading real
adapter directories under a temporary directory; only the engine is a
stand-in that records the loads and unloads it is asked for and refuses an
adapter named "refused" the way vLLM does (the real engine is in
tests/integration/test_server_adapters.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from modelplane.http.key_store import ApiKeys
from modelplane.server.adapter_registry import AdapterLoadError, AdapterRegistry
from modelplane.server.adapter_sources import SourceRoots
from modelplane.server.admin_app import AdminApp
from modelplane.server.metrics import ServerMetrics

KEY = "sk-admin"
BASE = "smollm2"


class RecordingEngine:
    """Stands in for the vLLM engine: records calls, refuses the adapter named 'refused'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def load_adapter(self, name: str, path: Path) -> None:
        if name == "refused":
            raise AdapterLoadError("Loading lora refused failed: target modules mismatch")
        self.calls.append(("load", f"{name}={path}"))

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))


def adapter_dir(path: Path, rank: int = 8) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return path


class Admin:
    def __init__(self, tmp_path: Path, *, keys: tuple[str, ...] = (KEY,)) -> None:
        self.registry_metrics = CollectorRegistry()
        metrics = ServerMetrics(self.registry_metrics)
        self.volumes = tmp_path / "volumes"
        self.registry = AdapterRegistry(
            BASE, SourceRoots(self.volumes, tmp_path / "cache"), 16, metrics.adapter_loaded
        )
        self.engine = RecordingEngine()
        self.app = AdminApp(self.registry, ApiKeys.fixed(keys))
        headers = {"Authorization": f"Bearer {KEY}"} if keys else {}
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://admin", headers=headers
        )

    def loaded_gauge(self, name: str) -> float | None:
        return self.registry_metrics.get_sample_value(
            "modelplane_server_adapter_loaded", {"adapter": name}
        )


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    setup = Admin(tmp_path)
    setup.registry.attach_engine(setup.engine, {"cli": tmp_path / "cli"})
    async with setup.http:
        yield setup


async def test_without_the_key_every_route_is_401(tmp_path: Path) -> None:
    setup = Admin(tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=setup.app), base_url="http://admin"
    ) as anonymous:
        for method, path in [("GET", "/adapters"), ("PUT", "/adapters/a"), ("DELETE", "/x")]:
            response = await anonymous.request(method, path)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"


async def test_without_keys_the_admin_api_is_open_like_the_server(tmp_path: Path) -> None:
    setup = Admin(tmp_path, keys=())
    async with setup.http:
        assert (await setup.http.get("/adapters")).status_code == 200


async def test_list_load_reload_and_unload(admin: Admin, tmp_path: Path) -> None:
    one, two = adapter_dir(tmp_path / "one"), adapter_dir(tmp_path / "two")
    listed = await admin.http.get("/adapters")
    assert listed.json()["adapters"] == [
        {"name": "cli", "source": f"file://{tmp_path}/cli", "revision": None,
         "state": "loaded", "error": None},
    ]  # fmt: skip

    put = await admin.http.put("/adapters/sql", json={"source": f"file://{one}", "revision": "v1"})
    assert put.status_code == 200
    assert put.json() == {
        "name": "sql", "source": f"file://{one}", "revision": "v1", "state": "loaded",
        "error": None,
    }  # fmt: skip
    assert admin.loaded_gauge("sql") == 1
    # The same source and revision: nothing reaches the engine.
    same = await admin.http.put("/adapters/sql", json={"source": f"file://{one}", "revision": "v1"})
    assert same.status_code == 200
    # A new revision reloads: unload, then load.
    await admin.http.put("/adapters/sql", json={"source": f"file://{one}", "revision": "v2"})
    await admin.http.put("/adapters/sql", json={"source": f"file://{two}", "revision": "v2"})
    assert admin.engine.calls == [
        ("load", f"sql={one}"),
        ("unload", "sql"), ("load", f"sql={one}"),
        ("unload", "sql"), ("load", f"sql={two}"),
    ]  # fmt: skip
    assert admin.registry.loaded_names() == ["cli", "sql"]

    deleted = await admin.http.delete("/adapters/sql")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "sql"}
    assert admin.engine.calls[-1] == ("unload", "sql")
    assert admin.loaded_gauge("sql") is None
    missing = await admin.http.delete("/adapters/sql")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404


async def test_a_claim_path_is_found_under_the_volumes(admin: Admin) -> None:
    path = adapter_dir(admin.volumes / "loras" / "sql" / "v1")
    put = await admin.http.put("/adapters/sql", json={"source": "pvc://loras/sql/v1"})
    assert put.status_code == 200, put.text
    assert admin.engine.calls == [("load", f"sql={path}")]


@pytest.mark.parametrize(
    "source,status,reason",
    [
        ("file:///does/not/exist", 422, "no such directory /does/not/exist"),
        ("pvc://loras/none", 422, "no such directory"),
        ("s3://bucket/sql", 422, "s3:// adapter sources are not fetched"),
    ],
)
async def test_a_source_that_cannot_be_had_is_listed_failed(
    admin: Admin, source: str, status: int, reason: str
) -> None:
    put = await admin.http.put("/adapters/sql", json={"source": source})
    assert put.status_code == status
    error = put.json()["error"]
    assert reason in error["message"] and error["param"] == "source"
    (entry,) = [
        e for e in (await admin.http.get("/adapters")).json()["adapters"] if e["name"] == "sql"
    ]
    assert entry["state"] == "failed" and reason in entry["error"]
    assert admin.engine.calls == []
    assert admin.registry.loaded_names() == ["cli"]


async def test_adapters_the_engine_cannot_hold_fail_with_its_reason(
    admin: Admin, tmp_path: Path
) -> None:
    wide = adapter_dir(tmp_path / "wide", rank=64)
    put = await admin.http.put("/adapters/wide", json={"source": f"file://{wide}"})
    assert put.status_code == 422
    assert "rank 64 exceeds the engine's maxLoraRank 16" in put.json()["error"]["message"]
    empty = tmp_path / "empty"
    empty.mkdir()
    put = await admin.http.put("/adapters/empty", json={"source": f"file://{empty}"})
    assert put.status_code == 422 and "holds no adapter_config.json" in put.text
    refused = adapter_dir(tmp_path / "refused")
    put = await admin.http.put("/adapters/refused", json={"source": f"file://{refused}"})
    assert put.status_code == 422 and "target modules mismatch" in put.text
    states = {e["name"]: e["state"] for e in (await admin.http.get("/adapters")).json()["adapters"]}
    assert states == {"cli": "loaded", "wide": "failed", "empty": "failed", "refused": "failed"}
    # A failed adapter is retried by the same PUT once its files are fixed.
    (empty / "adapter_config.json").write_text('{"r": 8}')
    again = await admin.http.put("/adapters/empty", json={"source": f"file://{empty}"})
    assert again.status_code == 200 and again.json()["state"] == "loaded"


@pytest.mark.parametrize(
    "path,body,status,reason",
    [
        ("/adapters/sql", b"", 400, "JSON object"),
        ("/adapters/sql", b"[1]", 400, "JSON object"),
        ("/adapters/sql", b"\xff\xfe{}", 400, "UTF-8"),
        ("/adapters/sql", b"[" * 2_000 + b"]" * 2_000, 400, "nest"),
        ("/adapters/sql", b'{"source": "\\ud800"}', 400, "surrogate"),
        ("/adapters/sql", b"{" + b'"a": 1,' * 4000 + b'"b": 1}', 413, "exceeds"),
        ("/adapters/sql", b'{"source": 5}', 400, "'source' must be a string"),
        ("/adapters/sql", b'{"source": "file:///a", "extra": 1}', 400, "unknown field 'extra'"),
        ("/adapters/sql", b'{"source": "ftp://host/a"}', 400, "source must start with one of"),
        ("/adapters/sql", b'{"source": "file://relative/a"}', 400, "absolute path"),
        ("/adapters/sql", b'{"source": "file:///models/../etc"}', 400, "without '.' or '..'"),
        ("/adapters/sql", b'{"source": "pvc://claim/../../etc"}', 400, "without '.' or '..'"),
        ("/adapters/sql", b'{"source": "pvc://"}', 400, "pvc://CLAIM/PATH"),
        ("/adapters/sql", b'{"source": "hf://just-a-name"}', 400, "ORG/NAME"),
        ("/adapters/sql", b'{"source": "file:///a\\u0000b"}', 400, "control characters"),
        ("/adapters/sql", b'{"source": "file:///a", "revision": "../x"}', 400, "'revision'"),
        ("/adapters/sql", json.dumps({"source": "file:///" + "a" * 3000}).encode(), 400, "longer"),
        ("/adapters/%2E%2E", b'{"source": "file:///a"}', 400, "is not valid"),
        ("/adapters/a%2Fb", b'{"source": "file:///a"}', 400, "is not valid"),
        ("/adapters/" + "x" * 64, b'{"source": "file:///a"}', 400, "is not valid"),
        ("/adapters/smollm2", b'{"source": "file:///a"}', 400, "base model's served name"),
        ("/adapters", b'{"source": "file:///a"}', 405, "use GET"),
        ("/nothing", b"", 404, "no route"),
    ],
)
async def test_hostile_requests_get_an_envelope_and_change_nothing(
    admin: Admin, path: str, body: bytes, status: int, reason: str
) -> None:
    response = await admin.http.put(path, content=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert reason in error["message"] and error["code"] == status
    assert admin.engine.calls == []
    assert [e["name"] for e in (await admin.http.get("/adapters")).json()["adapters"]] == ["cli"]


async def test_a_server_without_lora_refuses_loads(tmp_path: Path) -> None:
    registry = AdapterRegistry(BASE, SourceRoots(tmp_path), None)
    registry.attach_engine(RecordingEngine(), {})
    app = AdminApp(registry, ApiKeys.fixed(()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as http:
        put = await http.put("/adapters/sql", json={"source": f"file://{tmp_path}"})
    assert put.status_code == 409 and "--max-loras" in put.json()["error"]["message"]


async def test_loads_wait_for_the_engine(tmp_path: Path) -> None:
    registry = AdapterRegistry(BASE, SourceRoots(tmp_path), 16)
    app = AdminApp(registry, ApiKeys.fixed(()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as http:
        put = await http.put("/adapters/sql", json={"source": f"file://{tmp_path}"})
    assert put.status_code == 503 and "still loading" in put.json()["error"]["message"]
