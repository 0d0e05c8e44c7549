"""Fixtures for gateway tests that need HTTP on both sides: stub replicas and a served gateway.

The stub replicas are small aiohttp servers that speak the OpenAI shapes
and fail on command (503 while "draining", a stream that stops half way, a
slow stream to walk away from). Those failure modes are what these tests
are about, and a real model server cannot produce them on demand; the real
server behind the gateway is tested in tests/integration/gateway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from aiohttp import web
from prometheus_client import CollectorRegistry

from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.app import DemandHook, FrontSettings, GatewayApp
from modelplane.gateway.metrics import GatewayMetrics, MetricsApp
from modelplane.gateway.proxy import ProxySettings, UpstreamPool
from modelplane.gateway.routing.resilience import RetryBudget
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable, Track
from modelplane.gateway.tenants.tenancy import Tenancy
from modelplane.http.key_store import ApiKeys
from modelplane.http.server import SignalFreeServer
from modelplane.http.tracing import RequestTracer


@dataclass
class StubReplica:
    name: str
    # ok | draining (503) | broken-stream (dies after two events) | slow (one
    # event per 0.3 s) | gated (first event, then waits for `release`) |
    # lingering ([DONE], then waits for `release` before ending the response) |
    # redirect (307 to `redirect_to`, as a compromised or confused replica might) |
    # long (a 1.5 MiB plain answer whose `usage`, at its end, reports 500,000 tokens) |
    # fail (500 with an error body) | silent (answers nothing until `release`)
    mode: str = "ok"
    redirect_to: str = ""
    adapters: list[str] = field(default_factory=list)  # LoRA adapters its /ready lists
    seen: list[dict[str, Any]] = field(default_factory=list)
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # lets a gated stream go on
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> StubReplica:
        app = web.Application(client_max_size=32 << 20)  # bodies as large as tests send
        app.router.add_get("/ready", self._ready)
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"):
            app.router.add_post(path, self._complete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _ready(self, _: web.Request) -> web.Response:
        if self.adapters:
            return web.json_response({"status": "ready", "adapters": self.adapters})
        return web.Response(status=503 if self.mode == "draining" else 200)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append({"headers": headers, "body": body, "path": request.path})
        if self.mode == "redirect":
            return web.Response(status=307, headers={"Location": self.redirect_to + request.path})
        if self.mode == "fail":
            return web.json_response(
                {"error": {"message": "the engine failed", "type": "internal_error"}}, status=500
            )
        if self.mode == "silent":
            await self.release.wait()
        if self.mode == "draining":
            return web.json_response(
                {"error": {"message": "shutting down", "type": "service_unavailable"}},
                status=503,
                headers={"Retry-After": "1"},
            )
        if body.get("max_tokens") == -1:
            return web.json_response(
                {"error": {"message": "max_tokens must be positive", "param": "max_tokens"}},
                status=400,
            )
        if self.mode == "long" and not body.get("stream"):
            return web.json_response(
                {
                    "object": "chat.completion",
                    "choices": [{"message": {"role": "assistant", "content": "x" * (3 << 19)}}],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": 499_990,
                        "total_tokens": 500_000,
                    },
                }
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "object": "chat.completion",
                    "served_by": self.name,
                    "choices": [{"message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(int(body.get("max_tokens", 3))):
                if self.mode == "broken-stream" and i == 2:
                    assert request.transport is not None
                    request.transport.close()  # the replica dies half way
                    return response
                if self.mode == "slow":
                    await asyncio.sleep(0.3)
                if self.mode == "gated" and i == 1:
                    await self.release.wait()
                chunk = {"served_by": self.name, "choices": [{"delta": {"content": f"t{i} "}}]}
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            if self.mode == "lingering":
                await self.release.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_left.set()
            raise
        await response.write_eof()
        return response


@dataclass
class ServedGateway:
    url: str
    app: GatewayApp
    table: RoutingTable
    registry: CollectorRegistry
    metrics_url: str  # the metrics port's base URL: GET {metrics_url}/metrics

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll until `condition()` holds; fails the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling metrics, which have no event
            await asyncio.sleep(0.01)


def route(
    name: str, *urls: str, routing: Routing = Routing.LEAST_LOAD, tracks: tuple[Track, ...] = ()
) -> ModelRoute:
    return ModelRoute(name, tracks or (Track("stable", 100, tuple(urls)),), routing)


StubFactory = Callable[[int], Awaitable[list[StubReplica]]]


@pytest.fixture
async def stub_replicas() -> AsyncIterator[StubFactory]:
    started: list[StubReplica] = []

    async def make(n: int) -> list[StubReplica]:
        fresh = [await StubReplica(f"r{len(started) + i}").start() for i in range(n)]
        started.extend(fresh)
        return fresh

    yield make
    for replica in started:
        await replica.stop()


GatewayFactory = Callable[..., Awaitable[ServedGateway]]


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, access_log=False
    )
    server = SignalFreeServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


@pytest.fixture
async def serve_gateway() -> AsyncIterator[GatewayFactory]:
    """Serve a GatewayApp over a real socket with uvicorn, routes set by the test, and its
    metrics on a second socket, as the runner does."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None], UpstreamPool]] = []

    async def make(
        routes: dict[str, ModelRoute],
        *,
        settings: FrontSettings | None = None,
        limiter: KeyRateLimiter | None = None,
        tracer: RequestTracer | None = None,
        proxy: ProxySettings | None = None,
        budget: RetryBudget | None = None,
        on_demand: DemandHook | None = None,
        demand_throttle: DemandThrottle | None = None,
        keys: ApiKeys | None = None,
        tenancy: Callable[[CollectorRegistry], Tenancy] | None = None,
    ) -> ServedGateway:
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry)
        table = RoutingTable()
        served_tenancy = tenancy(registry) if tenancy is not None else None
        if served_tenancy is not None:
            table.listeners.append(served_tenancy.update_capacities)
        table.replace(routes)
        pool = UpstreamPool.open(proxy or ProxySettings(connect_timeout_s=1), metrics)
        if budget is not None:
            pool.budget = budget
        app = GatewayApp(
            settings or FrontSettings(hold_timeout_s=5),
            table,
            pool,
            limiter or KeyRateLimiter(),
            metrics,
            registry,
            tracer=tracer,
            demand_throttle=demand_throttle,
            keys=keys,
            tenancy=served_tenancy,
            **({"on_demand": on_demand} if on_demand is not None else {}),
        )
        server, task, port = await _serve(app)
        servers.append((server, task, pool))
        scrapes, scrapes_task, metrics_port = await _serve(MetricsApp(registry))
        servers.append((scrapes, scrapes_task, pool))
        return ServedGateway(
            f"http://127.0.0.1:{port}", app, table, registry, f"http://127.0.0.1:{metrics_port}"
        )

    yield make
    for server, task, pool in servers:
        server.should_exit = True
        await task
        if not pool.session.closed:
            await pool.close()
