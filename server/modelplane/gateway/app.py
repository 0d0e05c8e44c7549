"""The gateway's HTTP front: one OpenAI endpoint in front of every model.

A pure-ASGI application (no framework between uvicorn and the proxy, so
nothing buffers a stream or adds per-request overhead). For the OpenAI
endpoints it applies, in order: API-key auth (keys re-read from their file
by the runner), per-key request rate limits, the in-flight caps overall and
per key, the body's size limit, deadline and memory budget, the lookup of the
request's `model` (404 listing what exists), the per-model in-flight cap, the
tokens-per-minute reservation, holding (capped) while the model has no ready
replica, and then hands the request to the proxy. A `model` that names a LoRA
adapter goes to its base model's replicas that have it loaded, and is held while
none has. Of the parsed body only a small summary is kept, and the body itself is
released once a replica has answered (`http.request_body.BufferedBody`). It
answers `/v1/models` (every discovered model and adapter), `/health`, `/ready`
(discovery has synced), and serves the chat page at `/`.
`/metrics` is not here: it names replicas by address, and is served on the
gateway's metrics port (`metrics.MetricsApp`).

The client's credential ends here: it is checked, and not copied upstream
(`credentials`); a request sending `Authorization` (or `api-key`) twice is
refused with 400 before either is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from modelplane.gateway.admission.concurrency import (
    BUSY_RETRY_AFTER_S,
    ConcurrencyCaps,
    ConcurrencyGate,
    Refusal,
)
from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import Decision, KeyRateLimiter
from modelplane.gateway.admission.tokens import TokenTally, reservation
from modelplane.gateway.credentials import CLIENT_CREDENTIAL_HEADERS, repeated_credential_header
from modelplane.gateway.disconnect import CancelOnDisconnect
from modelplane.gateway.metrics import GatewayMetrics
from modelplane.gateway.proxy import HOP_BY_HOP, Outcome, UpstreamPool
from modelplane.gateway.routing.adapters import adapter_key
from modelplane.gateway.routing.affinity import affinity_key
from modelplane.gateway.routing.balancing import stable_hash
from modelplane.gateway.routing.routes import ModelRoute, Routing, RoutingTable
from modelplane.gateway.tenants.admission import TenantRefusal
from modelplane.gateway.tenants.config import Tenant
from modelplane.gateway.tenants.fair_queue import FairQueue, QueueFullError
from modelplane.gateway.tenants.stores import StoreUnavailableError
from modelplane.gateway.tenants.tenancy import DEFAULT_TENANT, Tenancy
from modelplane.http.asgi import Receive, Scope, Send, header
from modelplane.http.auth import presented_key
from modelplane.http.errors import send_error, send_json
from modelplane.http.json_body import BodyProblem, json_kind, not_an_object, parse_json_body
from modelplane.http.key_store import ApiKeys
from modelplane.http.request_body import (
    BodyBudget,
    BodyBudgetError,
    BodyTimeoutError,
    BodyTooLargeError,
    BufferedBody,
    ClientGoneError,
    read_request_body,
)
from modelplane.http.tracing import RequestTracer
from modelplane.server.request_checks import stored_response_route_problem

log = logging.getLogger("modelplane.gateway")
access_log = logging.getLogger("modelplane.gateway.access")

# The model server's inference routes (`modelplane.server.app`), routed by the body's `model`.
FORWARDED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
     "/v1/score", "/v1/rerank", "/score", "/rerank", "/v2/rerank"}
)  # fmt: skip
MODELS_PATH = "/v1/models"
UNKNOWN_MODEL = "unknown"  # the label value of every model name the gateway does not serve
CHAT_PAGE = resources.files("modelplane.gateway").joinpath("chat.html")

_PROPAGATOR = TraceContextTextMapPropagator()

# Called with the route and how many requests this gateway holds for it, this one included.
DemandHook = Callable[[ModelRoute, int], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class FrontSettings:
    api_keys: tuple[str, ...] = ()
    hold_timeout_s: float = 120.0
    max_request_bytes: int = 8 * 1024 * 1024
    access_log: bool = False
    # The whole body, from the end of the head (http.request_body says why a total).
    body_timeout_s: float = 30.0
    # Request bodies in memory at once (read, held, or not yet taken by a replica).
    max_buffered_bytes: int = 512 * 1024 * 1024
    caps: ConcurrencyCaps = field(default_factory=ConcurrencyCaps)


@dataclass(frozen=True)
class _Summary:
    """What routing and limits need from a request's JSON; the parsed payload is not kept."""

    model: str
    streaming: bool
    affinity: bytes | None  # the prefix-routing key, computed while the payload exists
    tokens: int  # what a tokens-per-minute limit reserves for it


@dataclass(frozen=True)
class _Rejected:
    message: str
    param: str | None = None


async def _no_demand_hook(route: ModelRoute, held: int) -> None:
    return None


def _store_down(tenant: Tenant) -> TenantRefusal:
    """The limits live in Redis, which cannot be reached, and the gateway fails closed."""
    return TenantRefusal(
        503,
        "service_unavailable",
        "limits_unavailable",
        f"the limits of tenant {tenant.name} cannot be checked now; retry shortly",
        "store_unavailable",
        BUSY_RETRY_AFTER_S,
    )


class GatewayApp:
    def __init__(
        self,
        settings: FrontSettings,
        table: RoutingTable,
        pool: UpstreamPool,
        limiter: KeyRateLimiter,
        metrics: GatewayMetrics,
        registry: CollectorRegistry,
        *,
        tracer: RequestTracer | None = None,
        on_demand: DemandHook = _no_demand_hook,
        demand_throttle: DemandThrottle | None = None,
        keys: ApiKeys | None = None,
        tenancy: Tenancy | None = None,
    ) -> None:
        self.settings = settings
        # Re-read from their file by the runner; fixed when given as settings.api_keys.
        self.keys = keys or ApiKeys.fixed(settings.api_keys)
        self.gate = ConcurrencyGate(settings.caps)
        self.bodies = BodyBudget(settings.max_buffered_bytes)
        self.table = table
        self.pool = pool
        self.limiter = limiter
        self.metrics = metrics
        self.registry = registry
        self.tracer = tracer or RequestTracer(None, service_name="modelplane-gateway")
        self.on_demand = on_demand
        self.demand_throttle = demand_throttle or DemandThrottle()
        self._started = int(time.time())
        self._chat_page = CHAT_PAGE.read_bytes()
        self._latency: dict[str, Any] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._holding: dict[str, int] = {}  # requests held now, per model
        # Teams' keys, limits, budgets and turns (tenants.tenancy); None: no tenants, no
        # gateway queue.
        self.tenancy = tenancy
        self._tracing = self.tracer.provider is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # served with lifespan off: nothing to start or stop per app
        path: str = scope["path"]
        if path in FORWARDED_PATHS:
            if scope["method"] != "POST":
                await send_error(send, 405, f"use POST for {path}")
                return
            await self._forward(scope, receive, send)
        elif path == MODELS_PATH:
            await self._models(scope, send)
        elif path == "/" or path == "/index.html":
            await _send_bytes(send, 200, self._chat_page, b"text/html; charset=utf-8")
        elif path == "/health":
            await send_json(send, 200, b'{"status": "ok"}')
        elif path == "/ready":
            synced = self.table.synced
            await send_json(send, 200 if synced else 503, json.dumps({"synced": synced}).encode())
        elif (stored := stored_response_route_problem(scope["method"], path)) is not None:
            await send_error(send, stored.status, stored.message, param=stored.param)
        else:
            await send_error(send, 404, f"no route {scope['method']} {path}")

    def _tenant(self, key: str | None) -> Tenant | None:
        return self.tenancy.tenant_for(key) if self.tenancy is not None else None

    def _authorized(self, scope: Scope) -> tuple[bool, str]:
        """Whether the request may pass, and the identity its limits are kept under: the
        key, or with no keys configured the client's address (a made-up key per request
        would otherwise be a fresh identity each time)."""
        if self.tenancy is not None and self.tenancy.tenants is not None:
            key = presented_key(scope) or ""
            return self.tenancy.tenant_for(key) is not None, key  # a tenant's key, or none
        if not self.keys.required:
            client = scope.get("client")
            return True, client[0] if client else "anonymous"
        return self.keys.allows(scope), presented_key(scope) or ""

    async def _models(self, scope: Scope, send: Send) -> None:
        if await _refused_repeated_credential(scope, send):
            return
        if not self._authorized(scope)[0]:
            await _unauthorized(send)
            return
        routes, adapters = self.table.routes, self.table.adapters.models
        tenant = self._tenant(presented_key(scope))
        data = [
            _model_entry(routes[name], self._started)
            for name in sorted(routes)
            if tenant is None or tenant.may_use(name)
        ]
        data += [
            _adapter_entry(routes[model], adapter, self._started)
            for adapter, model in sorted(adapters.items())
            if tenant is None or tenant.may_use(adapter) or tenant.may_use(model)
        ]
        await send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        if await _refused_repeated_credential(scope, send):
            self._count("", 400, "none")
            return
        allowed, identity = self._authorized(scope)
        if not allowed:
            await _unauthorized(send)
            self._count("", 401, "none")
            return
        decision = self.limiter.admit(identity)
        if not decision.allowed:
            await self._rate_limited(send, decision, "")
            return
        refusal = self.gate.enter(identity)
        if refusal is not None:
            await self._refuse(send, refusal, "")
            return
        try:
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            try:
                await self._route(scope, receive, send, identity, arrived, body)
            finally:
                body.release()
        finally:
            self.gate.leave(identity)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> BufferedBody | None:
        """The body, counted in the gateway's budget for bodies; None once answered."""
        settings = self.settings
        try:
            data = await read_request_body(
                scope,
                receive,
                max_bytes=settings.max_request_bytes,
                timeout_s=settings.body_timeout_s,
                budget=self.bodies,
            )
        except BodyTooLargeError:
            limit = settings.max_request_bytes
            await send_error(send, 413, f"request body exceeds the limit of {limit} bytes")
            self._count("", 413, "none")
            return None
        except BodyTimeoutError:
            await send_error(
                send,
                408,
                f"the request body did not arrive within {settings.body_timeout_s:g}s",
                close=True,
            )
            self._count("", 408, "none")
            return None
        except BodyBudgetError:
            message = "the gateway holds as many request bodies in memory as it may; retry shortly"
            refusal = Refusal(503, BUSY_RETRY_AFTER_S, "request bodies in memory", message)
            await self._refuse(send, refusal, "", close=True)
            return None
        except ClientGoneError:
            self._count("", 499, "none")
            return None
        return BufferedBody(data, self.bodies)

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        identity: str,
        arrived: float,
        body: BufferedBody,
    ) -> None:
        # The parsed payload ends in there.
        summary = _summarize(scope["path"], body.data, self.table.route_for)
        if isinstance(summary, _Rejected):
            await send_error(send, 400, summary.message, param=summary.param)
            self._count("", 400, "none")
            return
        resolved = self.table.resolve(summary.model)
        tenant = self._tenant(identity)
        if resolved is None:
            model = summary.model
            names = [*self.table.routes, *self.table.adapters.models]
            known = ", ".join(sorted(n for n in names if tenant is None or tenant.may_use(n)))
            known = known or "none"
            await send_error(
                send, 404, f"the model {model!r} does not exist; available: {known}", param="model"
            )
            # Only models the gateway serves become label values: a client's names would
            # add a series each, unbounded in count and length.
            self._count(UNKNOWN_MODEL, 404, "none")
            return
        route, adapter = resolved
        model = route.name  # an adapter's requests count against its base model's caps
        ticket = ""  # the request's concurrency slot, when its tenant has a cap
        if tenant is not None:
            ticket = uuid.uuid4().hex
            # The allow-list names models or adapters: an adapter listed by name may be
            # used, and so may every adapter of a listed model.
            asked = adapter if adapter is not None and tenant.may_use(adapter) else model
            turned = await self._tenant_admits(send, tenant, asked, ticket, model, adapter)
            if not turned:
                return
        try:
            refusal = self.gate.enter_model(model)
            if refusal is not None:
                await self._refuse(send, refusal, model, adapter=adapter)
                return
            try:
                await self._serve(
                    scope, receive, send, identity, arrived, route, adapter, summary, body,
                    tenant,
                )  # fmt: skip
            finally:
                self.gate.leave_model(model)
        finally:
            if tenant is not None and self.tenancy is not None:
                self._spawn(self.tenancy.limits.finished(tenant, ticket), "tenant-finished")

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        identity: str,
        arrived: float,
        route: ModelRoute,
        adapter: str | None,
        summary: _Summary,
        body: BufferedBody,
        tenant: Tenant | None = None,
    ) -> None:
        model = route.name
        tally: TokenTally | None = None
        if self.limiter.counts_tokens:
            decision = self.limiter.reserve_tokens(identity, summary.tokens)
            if not decision.allowed:
                await self._rate_limited(send, decision, model, adapter=adapter)
                return
        if tenant is not None and self.tenancy is not None:
            try:
                tenant_refusal = await self.tenancy.limits.reserve_tokens(tenant, summary.tokens)
            except StoreUnavailableError:
                tenant_refusal = _store_down(tenant)
            if tenant_refusal is not None:
                await self._tenant_refused(send, tenant, tenant_refusal, model, adapter)
                if self.limiter.counts_tokens:
                    self.limiter.settle_tokens(identity, summary.tokens, 0)
                return
        if self.limiter.counts_tokens or adapter is not None or tenant is not None:
            # Adapters' and tenants' tokens are counted.
            tally = TokenTally(body.size, streaming=summary.streaming)
        request_id = _request_id(scope)
        outcome = Outcome()
        held_s = 0.0
        try:
            async with CancelOnDisconnect(receive) as watch:
                send = watch.wrap(send)
                if not route.ready_for(adapter):
                    refusal = self.gate.hold(model)
                    if refusal is not None:
                        await self._refuse(send, refusal, model, adapter=adapter)
                        return
                    held_started = time.perf_counter()
                    try:
                        ready_route = await self._hold(route, adapter)
                    finally:
                        self.gate.release(model)
                    held_s = time.perf_counter() - held_started
                    if ready_route is None:
                        await send_error(
                            send, 503, self._hold_timeout_message(model, adapter), retry_after=5
                        )
                        self._count(model, 503, "none", adapter)
                        return
                    route = ready_route
                # A saturated model: wait here for a turn, by tenant weight (tenants.fair_queue).
                queue = self.tenancy.queue_for(route) if self.tenancy is not None else None
                turn = tenant.name if tenant is not None else identity  # whose turn it is
                if queue is not None and not await self._take_turn(
                    send, queue, route, identity, tenant, adapter, summary.tokens
                ):
                    return
                try:
                    key_hash = _prefix_hash(route, summary.affinity)
                    if adapter is not None:
                        # Only its holders; by the conversation when the model is
                        # prefix-routed, else by the adapter's name.
                        if key_hash is None:
                            key_hash = stable_hash(adapter_key(adapter))
                        route = route.for_adapter(adapter)
                    with self.tracer.span(scope, request_id) as span:
                        headers = _upstream_headers(scope, request_id, self._tracing)
                        await self.pool.forward(
                            route, scope["path"], body, headers, key_hash, send, tally, outcome
                        )
                        span.finish(outcome.status)
                finally:
                    if queue is not None:
                        queue.release(turn)
        finally:
            used = 0
            if tally is not None and outcome.first_byte_at is not None:
                # Settled even when cancelled; nothing is charged for what no replica answered.
                used = tally.total()
            if tally is not None and self.limiter.counts_tokens:
                outcome.tokens = used
                self.limiter.settle_tokens(identity, summary.tokens, used)
            if tenant is not None and tally is not None:
                split = tally.split() if used else (0, 0)
                self._spawn(
                    self._settle_tenant(tenant, model, summary.tokens, used, split), "settle"
                )
        if watch.client_gone:
            outcome.status = 499  # client closed the request (nginx's convention)
        self._record(model, outcome, arrived, held_s)
        if adapter is not None:
            self._record_adapter(model, adapter, outcome, tally)
        if self.settings.access_log or outcome.status >= 500 or outcome.attempts > 1:
            _log_access(scope, model, outcome, arrived, request_id)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Bookkeeping that must not delay the response (or be lost when it is cancelled)."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tenant_admits(
        self,
        send: Send,
        tenant: Tenant,
        asked: str,
        ticket: str,
        model: str,
        adapter: str | None,
    ) -> bool:
        """The tenant's allow-list, budget, concurrency and request rate; False once refused."""
        assert self.tenancy is not None
        try:
            refusal = await self.tenancy.limits.admit(tenant, asked, ticket)
        except StoreUnavailableError:
            refusal = _store_down(tenant)
        if refusal is not None:
            await self._tenant_refused(send, tenant, refusal, model, adapter)
            return False
        self.tenancy.metrics.admitted(tenant.name, model)
        return True

    async def _tenant_refused(
        self, send: Send, tenant: Tenant, refusal: TenantRefusal, model: str, adapter: str | None
    ) -> None:
        assert self.tenancy is not None
        self.tenancy.metrics.refused(tenant.name, refusal.reason)
        await send_error(
            send,
            refusal.status,
            refusal.message,
            retry_after=refusal.retry_after_s,
            type_=refusal.type,
            code=refusal.code,
        )
        self._count(model, refusal.status, "none", adapter)

    async def _take_turn(
        self,
        send: Send,
        queue: FairQueue,
        route: ModelRoute,
        identity: str,
        tenant: Tenant | None,
        adapter: str | None,
        cost: int,
    ) -> bool:
        """A slot on the saturated model, after the tenants ahead by weight (and by the
        work they asked for: `cost` is the request's token estimate); False once refused
        (the tenant already has as many requests waiting as it may)."""
        assert self.tenancy is not None
        key, weight = (tenant.name, tenant.weight) if tenant is not None else (identity, 1.0)
        label = tenant.name if tenant is not None else DEFAULT_TENANT
        try:
            await self.tenancy.wait_turn(queue, route, key, weight, label, max(1, cost))
        except QueueFullError:
            limit = self.tenancy.max_queued_per_tenant
            self.tenancy.metrics.refused(label, "queue_full")
            await send_error(
                send,
                429,
                f"{'tenant ' + label if tenant is not None else 'this client'} already has "
                f"{limit} requests waiting for model {route.name!r}, which is saturated",
                retry_after=BUSY_RETRY_AFTER_S,
                type_="requests",
                code="rate_limit_exceeded",
            )
            self._count(route.name, 429, "none", adapter)
            return False
        return True

    async def _settle_tenant(
        self, tenant: Tenant, model: str, reserved: int, used: int, split: tuple[int, int]
    ) -> None:
        """Usage counted, the token reservation corrected, the budget charged."""
        assert self.tenancy is not None
        self.tenancy.metrics.used(tenant.name, model, *split)
        try:
            state = await self.tenancy.limits.settle(tenant, reserved, used)
        except StoreUnavailableError:
            log.warning("tenant usage not counted: the shared limit store is unreachable",
                        extra={"tenant": tenant.name, "tokens": used})  # fmt: skip
            return
        if state is not None and tenant.budget_period is not None:
            self.tenancy.metrics.budget(
                tenant.name, tenant.budget_period.value, state.limit, state.spent
            )

    async def _rate_limited(
        self, send: Send, decision: Decision, model: str, *, adapter: str | None = None
    ) -> None:
        self.metrics.rate_limited.labels(decision.reason).inc()
        who = "this API key" if self.keys.required else "this client address"
        await send_error(
            send,
            429,
            f"rate limit reached: {decision.reason} for {who}",
            retry_after=decision.retry_after_s,
        )
        self._count(model, 429, "none", adapter)

    async def _refuse(
        self,
        send: Send,
        refusal: Refusal,
        model: str,
        *,
        close: bool = False,
        adapter: str | None = None,
    ) -> None:
        self.metrics.overload_refusals.labels(refusal.limit).inc()
        await send_error(
            send, refusal.status, refusal.message, retry_after=refusal.retry_after_s, close=close
        )
        self._count(model, refusal.status, "none", adapter)

    def _hold_timeout_message(self, model: str, adapter: str | None) -> str:
        within = f"{self.settings.hold_timeout_s:g}s"
        if adapter is not None:
            return (
                f"no replica of model {model!r} had the adapter {adapter!r} loaded within "
                f"{within}; it may be loading, or the model scaling up from zero"
            )
        return (
            f"no replica of model {model!r} became ready within {within}; "
            "it may be scaling up from zero"
        )

    async def _hold(self, route: ModelRoute, adapter: str | None = None) -> ModelRoute | None:
        """Wait for a ready replica (with `adapter` loaded, if given); scale-from-zero demand
        is signalled only while the model has no ready replica at all."""
        model = route.name
        holding = self._holding[model] = self._holding.get(model, 0) + 1
        if route.demand and not route.ready and self.demand_throttle.should_signal(model):
            self.metrics.demand_signals.labels(model).inc()
            task = asyncio.create_task(self.on_demand(route, holding), name=f"demand-{model}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        gauge = self.metrics.held.labels(model)
        gauge.inc()
        started = time.perf_counter()
        try:
            return await self.table.wait_until_ready(model, self.settings.hold_timeout_s, adapter)
        finally:
            self._holding[model] -= 1
            gauge.dec()
            self.metrics.hold_duration.labels(model).observe(time.perf_counter() - started)

    def _count(self, model: str, status: int, upstream: str, adapter: str | None = None) -> None:
        self.metrics.request_counter(model, str(status), upstream).inc()
        if adapter is not None:
            self.metrics.adapter_requests.labels(model, adapter, str(status)).inc()

    def _record_adapter(
        self, model: str, adapter: str, outcome: Outcome, tally: TokenTally | None
    ) -> None:
        self.metrics.adapter_requests.labels(model, adapter, str(outcome.status or 499)).inc()
        if tally is not None and 200 <= outcome.status < 300:
            prompt, completion = tally.split()
            self.metrics.adapter_tokens.labels(model, adapter, "prompt").inc(prompt)
            self.metrics.adapter_tokens.labels(model, adapter, "completion").inc(completion)

    def _record(self, model: str, outcome: Outcome, arrived: float, held_s: float) -> None:
        self._count(model, outcome.status or 499, outcome.upstream)
        if outcome.first_byte_at is not None:
            added = outcome.first_byte_at - arrived - held_s - outcome.upstream_ttfb_s
            histogram = self._latency.get(model)
            if histogram is None:
                histogram = self._latency[model] = self.metrics.added_latency.labels(model)
            histogram.observe(max(0.0, added))


def _model_entry(route: ModelRoute, created: int) -> dict[str, object]:
    """A model as `/v1/models` lists it: OpenAI's fields, and two of ours for clients that
    choose a model (the chat page): whether a replica is ready now (when none is, a request
    is held while one starts) and, once a replica has said, the paths the model serves."""
    entry: dict[str, object] = {
        "id": route.name,
        "object": "model",
        "created": created,
        "owned_by": "modelplane",
        "root": route.name,
        "parent": None,
        "ready": route.ready,
    }
    if route.endpoints is not None:
        entry["endpoints"] = sorted(route.endpoints)
    return entry


def _adapter_entry(route: ModelRoute, adapter: str, created: int) -> dict[str, object]:
    """A LoRA adapter as `/v1/models` lists it: its base model as `parent` and `root` (as
    OpenAI lists a fine-tune; vLLM puts the adapter's path in `root`, which clients of the
    gateway have no use for), ready when a replica has it loaded, the base model's paths."""
    return {
        **_model_entry(route, created),
        "id": adapter,
        "root": route.name,
        "parent": route.name,
        "ready": route.ready_for(adapter),
    }


def _summarize(
    path: str, body: bytes, route_for: Callable[[str], ModelRoute | None]
) -> _Summary | _Rejected:
    """Parse the body and keep only what the gateway needs of it.

    The parsed payload takes several times the body's memory; it exists only
    inside this call (no await between parse and return), so however many
    requests are held or streaming, at most one parsed payload is alive.
    """
    payload = parse_json_body(body)
    if isinstance(payload, BodyProblem):
        return _Rejected(payload.message)
    if (problem := not_an_object(payload)) is not None:
        return _Rejected(problem.message)
    model = payload.get("model")
    if model is None or model == "":
        return _Rejected("model is required", param="model")
    if not isinstance(model, str):
        return _Rejected(f"model must be a string (got {json_kind(model)})", param="model")
    route = route_for(model)  # an adapter's: its base model's
    prefix_routed = route is not None and route.routing is Routing.PREFIX
    return _Summary(
        model=model,
        streaming=bool(payload.get("stream")),
        affinity=affinity_key(path, payload) if prefix_routed else None,
        tokens=reservation(path, payload, len(body)),
    )


def _prefix_hash(route: ModelRoute, affinity: bytes | None) -> int | None:
    """Only prefix-affine models need the hash; the others skip its cost."""
    if route.routing is not Routing.PREFIX or affinity is None:
        return None
    return stable_hash(affinity)


def _request_id(scope: Scope) -> str:
    raw = header(scope, b"x-request-id")
    return raw.decode("latin-1")[:128] if raw else uuid.uuid4().hex


def _upstream_headers(scope: Scope, request_id: str, tracing: bool) -> dict[str, str]:
    """The client's headers minus hop-by-hop ones and its credentials, plus forwarding
    and trace context.

    The client's key (`Authorization`, `api-key`, `x-api-key`, cookies) stays
    here: the proxy sends the model's own key instead. The client's
    `traceparent` goes through as is unless the gateway traces itself; then
    the gateway's span becomes the replica's parent.
    """
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key not in HOP_BY_HOP and key not in CLIENT_CREDENTIAL_HEADERS:
            headers[key.decode("latin-1")] = value.decode("latin-1")
    headers["x-request-id"] = request_id
    client = scope.get("client")
    if client:
        prior = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{prior}, {client[0]}" if prior else client[0]
    if tracing:
        _PROPAGATOR.inject(headers)
    return headers


async def _refused_repeated_credential(scope: Scope, send: Send) -> bool:
    """Answer 400 to a request that sends a key header twice; True if it did."""
    name = repeated_credential_header(scope)
    if name is None:
        return False
    await send_error(send, 400, f"the request sends the {name!r} header more than once")
    return True


async def _unauthorized(send: Send) -> None:
    await send_error(send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'")


async def _send_bytes(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log_access(
    scope: Scope, model: str, outcome: Outcome, arrived: float, request_id: str
) -> None:
    access_log.info(
        "%s %s %d model=%s upstream=%s attempts=%d",
        scope["method"],
        scope["path"],
        outcome.status,
        model,
        outcome.upstream,
        outcome.attempts,
        extra={
            "request_id": request_id,
            "model": model,
            "status": outcome.status,
            "upstream": outcome.upstream,
            "attempts": outcome.attempts,
            "duration_ms": round((time.perf_counter() - arrived) * 1000, 2),
        },
    )
