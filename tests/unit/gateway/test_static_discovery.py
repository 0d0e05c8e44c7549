"""Static discovery: the YAML file's checks, and routes that follow replica readiness.

The replicas here are small aiohttp servers answering `/ready` with 200 or
503 on command: readiness flips are what discovery reacts to, and a real
model server takes half a minute to produce one (tests/integration/gateway
does that too).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.discovery.static import (
    StaticDiscovery,
    load_static_config,
    routes_from_static,
)
from modelplane.gateway.routing.routes import Routing, RoutingTable


class Replica:
    def __init__(self) -> None:
        self.ready = True
        self.endpoints: list[str] | None = None  # listed in /ready's answer, as the server does
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Replica:
        app = web.Application()
        app.router.add_get("/ready", self._ready)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _ready(self, _: web.Request) -> web.Response:
        if self.ready and self.endpoints is not None:
            return web.json_response({"status": "ready", "endpoints": self.endpoints})
        return web.Response(status=200 if self.ready else 503)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    started = [await Replica().start() for _ in range(2)]
    yield started
    for r in started:
        await r.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_with_both_forms_or_a_bad_url_is_refused_with_the_place(tmp_path: Path) -> None:
    both = write(
        tmp_path / "both.yaml",
        "models:\n  m:\n    upstreams: [http://a:1]\n    tracks: {stable: {upstreams: [http://b:1]}}\n",
    )
    with pytest.raises(ConfigError, match=r"models\.m: .*either 'upstreams' or 'tracks'"):
        load_static_config(both)
    bad = write(tmp_path / "bad.yaml", "models:\n  m:\n    upstreams: [ftp://x]\n")
    with pytest.raises(ConfigError, match=r"models\.m\.upstreams\.0"):
        load_static_config(bad)
    weight = write(
        tmp_path / "w.yaml",
        "models:\n  m:\n    tracks: {canary: {weight: 120, upstreams: [http://b:1]}}\n",
    )
    with pytest.raises(ConfigError, match="weight"):
        load_static_config(weight)
    with pytest.raises(ConfigError, match="cannot read"):
        load_static_config(tmp_path / "missing.yaml")


def test_routes_keep_only_ready_replicas_and_the_canary_split(tmp_path: Path) -> None:
    config = load_static_config(
        write(
            tmp_path / "g.yaml",
            """
models:
  small:
    upstreams: [http://a:1/, http://b:1]
  big:
    routing: prefix
    tracks:
      stable: {weight: 90, upstreams: [http://c:1]}
      canary: {weight: 10, revision: v2, upstreams: [http://d:1]}
""",
        )
    )
    routes = routes_from_static(config, ready={"http://a:1", "http://c:1", "http://d:1"})
    assert routes["small"].upstreams == ("http://a:1",)
    assert routes["small"].routing is Routing.LEAST_LOAD
    big = routes["big"]
    assert big.routing is Routing.PREFIX
    assert [(t.name, t.weight, t.upstreams, t.revision) for t in big.tracks] == [
        ("stable", 90, ("http://c:1",), ""),
        ("canary", 10, ("http://d:1",), "v2"),
    ]
    none_ready = routes_from_static(config, ready=())
    assert set(none_ready) == {"small", "big"} and not none_ready["small"].ready


def m_upstreams(table: RoutingTable) -> tuple[str, ...]:
    """Model m's replicas, read through a call: mypy would keep `table.routes["m"].upstreams`
    narrowed to the first tuple it was compared with, across the polls that change it."""
    return table.routes["m"].upstreams


async def test_discovery_follows_readiness_and_file_changes(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, b = replicas
    path = write(tmp_path / "g.yaml", f"models:\n  m:\n    upstreams: [{a.url}, {b.url}]\n")
    table = RoutingTable()
    discovery = StaticDiscovery(table, path=path)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        await discovery.poll_once(session)
        assert table.synced and m_upstreams(table) == (a.url, b.url)

        b.ready = False  # loading, or draining before exit
        await discovery.poll_once(session)
        assert m_upstreams(table) == (a.url,)

        await b.stop()  # gone: connection refused
        b.ready = True
        await discovery.poll_once(session)
        assert m_upstreams(table) == (a.url,)

        write(path, f"models:\n  m:\n    upstreams: [{a.url}]\n  n:\n    upstreams: [{a.url}]\n")
        os.utime(path, (1, 1))  # a distinct mtime, however fast the test runs
        await discovery.poll_once(session)
        assert sorted(table.routes) == ["m", "n"]

        write(path, "models: [not, a, mapping]\n")
        os.utime(path, (2, 2))
        await discovery.poll_once(session)  # a broken edit keeps the last good routes
        assert sorted(table.routes) == ["m", "n"]


async def test_routes_carry_the_paths_the_replicas_say_they_serve(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    """What a replica's /ready lists is its model's endpoints: unknown until one says,
    kept while the replica is down (it serves the same model when back)."""
    chat, embed = replicas
    chat.endpoints = ["/v1/chat/completions", "/v1/completions"]
    embed.ready = False
    path = write(
        tmp_path / "g.yaml",
        f"models:\n  smollm2:\n    upstreams: [{chat.url}]\n"
        f"  minilm:\n    upstreams: [{embed.url}]\n",
    )
    table = RoutingTable()
    discovery = StaticDiscovery(table, path=path)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        await discovery.poll_once(session)
        assert table.routes["smollm2"].endpoints == frozenset(
            {"/v1/chat/completions", "/v1/completions"}
        )
        assert table.routes["minilm"].endpoints is None  # loading: it has not said yet

        embed.ready, embed.endpoints = True, ["/v1/embeddings", "not a path"]
        await discovery.poll_once(session)
        assert table.routes["minilm"].endpoints == {"/v1/embeddings"}

        embed.ready = False  # stopped: still an embedding model
        await discovery.poll_once(session)
        assert not table.routes["minilm"].ready
        assert table.routes["minilm"].endpoints == {"/v1/embeddings"}


async def test_a_held_request_wakes_when_a_replica_turns_ready(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    a, _ = replicas
    a.ready = False
    path = write(tmp_path / "g.yaml", f"models:\n  m:\n    upstreams: [{a.url}]\n")
    table = RoutingTable()
    discovery = StaticDiscovery(table, path=path, interval_s=0.05)
    task = asyncio.create_task(discovery.run())
    try:
        while not table.synced:
            await table.wait_changed()
        waiter = asyncio.create_task(table.wait_until_ready("m", timeout_s=30))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        a.ready = True
        route = await waiter
        assert route is not None and route.upstreams == (a.url,)
        assert await table.wait_until_ready("m", timeout_s=0.01) is not None
        a.ready = False
        while table.routes["m"].ready:
            await table.wait_changed()
        assert await table.wait_until_ready("m", timeout_s=0.1) is None  # times out
    finally:
        task.cancel()


def test_the_documented_example_file_is_valid(tmp_path: Path) -> None:
    page = Path(__file__).resolve().parents[3] / "docs" / "concepts" / "gateway.md"
    block = re.search(r"```yaml\n(# gateway\.yaml.*?)```", page.read_text(), re.S)
    assert block, "docs/concepts/gateway.md has a `# gateway.yaml` example"
    config = load_static_config(write(tmp_path / "gateway.yaml", block.group(1)))
    assert config.models["llama-3.1-8b"].routing is Routing.PREFIX
