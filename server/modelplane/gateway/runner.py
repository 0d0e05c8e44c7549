"""Run the gateway: wire discovery, balancing and the HTTP front, serve, stop cleanly.

Used by `modelplane gateway` (static or Kubernetes discovery) and by
`modelplane local`, which puts the gateway in front of model servers it
starts itself. On SIGTERM or Ctrl-C the listener closes, responses in
flight (streams included) get up to `--drain-timeout` seconds to finish,
then the process exits 0. A second Ctrl-C exits at once.

Two listeners: the API (`--port`) and `/metrics` (`--metrics-port`), which
only Prometheus should reach.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry

from modelplane.gateway.adapter_reports import adapter_reports
from modelplane.gateway.admission.concurrency import ConcurrencyCaps
from modelplane.gateway.admission.demand import DemandThrottle
from modelplane.gateway.admission.limits import KeyRateLimiter
from modelplane.gateway.app import FrontSettings, GatewayApp
from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.discovery.demand_leases import DemandLeases
from modelplane.gateway.discovery.kubernetes import KubernetesDiscovery, default_api_client
from modelplane.gateway.discovery.static import (
    StaticConfig,
    StaticDiscovery,
    load_static_config,
    read_model_keys,
)
from modelplane.gateway.metrics import GatewayMetrics, MetricsApp
from modelplane.gateway.options import GatewayOptions
from modelplane.gateway.proxy import ProxySettings, UpstreamPool
from modelplane.gateway.routing.resilience import OutlierDetector, RetryBudget
from modelplane.gateway.routing.routes import ModelRoute, RoutingTable
from modelplane.gateway.tenants.admission import TenantLimits
from modelplane.gateway.tenants.budgets import Budgets
from modelplane.gateway.tenants.config import TenantsFileWatch
from modelplane.gateway.tenants.metrics import TenantMetrics
from modelplane.gateway.tenants.stores import (
    FailoverLimitStore,
    LimitStore,
    MemoryLimitStore,
    RedisLimitStore,
    redis_client,
)
from modelplane.gateway.tenants.tenancy import Tenancy
from modelplane.http.connections import ConnectionLimits, guarded_protocol
from modelplane.http.key_store import ApiKeys
from modelplane.http.logs import logging_config
from modelplane.http.server import SignalFreeServer, install_stop_signals
from modelplane.http.tracing import RequestTracer, otlp_exporter

log = logging.getLogger("modelplane.gateway")


@dataclass
class Gateway:
    app: GatewayApp
    table: RoutingTable
    pool: UpstreamPool
    discover: Callable[[], Coroutine[Any, Any, None]]  # runs discovery until cancelled
    tracer: RequestTracer
    metrics_app: MetricsApp


REDIS_TIMEOUT_S = 0.5  # per call: a limiter that answers later than this is down


def build_tenancy(
    options: GatewayOptions,
    registry: CollectorRegistry,
    watch: TenantsFileWatch | None,
    store_up: Callable[[bool], None] = lambda up: None,
) -> Tenancy | None:
    """Tenants' limits and the gateway queue, when either is configured."""
    if watch is None and options.replica_concurrency is None:
        return None
    store: LimitStore = MemoryLimitStore()
    if options.redis_url is not None:
        store = FailoverLimitStore(
            RedisLimitStore(redis_client(options.redis_url, REDIS_TIMEOUT_S)),
            MemoryLimitStore(),
            fail_open=options.redis_failure == "open",
            on_state=store_up,
        )
        store_up(True)  # until a call finds it down
    return Tenancy(
        TenantLimits(store, Budgets(store)),
        TenantMetrics(registry),
        watch=watch,
        default_concurrency=options.replica_concurrency,
        max_queued_per_tenant=options.max_queued_per_tenant,
        anticipation_s=options.queue_anticipation,
        queue_signal_interval_s=options.demand_interval,
    )


def build_gateway(
    options: GatewayOptions,
    keys: ApiKeys | tuple[str, ...],
    registry: CollectorRegistry,
    *,
    static_config: StaticConfig | None = None,
    tenants: TenantsFileWatch | None = None,
) -> Gateway:
    """Everything but the listening socket. Must run inside the event loop."""
    metrics = GatewayMetrics(registry)
    table = RoutingTable()
    pool = UpstreamPool.open(
        ProxySettings(
            connect_timeout_s=options.connect_timeout,
            read_timeout_s=options.read_timeout,
            max_attempts=options.max_attempts,
            prefix_load_factor=options.prefix_load_factor,
            max_connections=options.max_upstream_connections,
        ),
        metrics,
    )
    pool.outliers = OutlierDetector(
        consecutive_failures=options.eject_after, base_ejection_s=options.ejection_time
    )
    pool.budget = RetryBudget(ratio=options.retry_budget)
    table.listeners.append(_ready_replicas_gauge(metrics))
    table.listeners.append(adapter_reports(table, metrics))
    table.listeners.append(_series_from_zero(metrics))
    table.listeners.append(lambda routes: pool.outliers.forget(_all_upstreams(routes)))
    # A replica that left discovery takes its series with it (pod IPs churn).
    table.listeners.append(lambda routes: metrics.forget_upstreams(_all_upstreams(routes)))
    tracer = RequestTracer(
        otlp_exporter(options.otlp_traces_endpoint) if options.otlp_traces_endpoint else None,
        service_name="modelplane-gateway",
    )
    on_demand = None
    on_queued = None
    tenancy = build_tenancy(
        options, registry, tenants, lambda up: metrics.shared_store_up.labels("redis").set(up)
    )
    if tenancy is not None:
        table.listeners.append(tenancy.update_capacities)
        table.listeners.append(lambda routes: tenancy.prepare(list(routes)))
        if tenants is not None:
            tenants.on_change = lambda _: tenancy.prepare(list(table.routes))
    discover: Callable[[], Coroutine[Any, Any, None]]
    if options.discovery == "kubernetes":
        kube = KubernetesDiscovery(
            table,
            namespaces=options.namespaces,
            default_routing=options.default_routing,
            key_refresh_s=options.model_key_refresh,
            on_conflicts=_conflicts_gauge(metrics),
        )
        demand = DemandLeases(default_api_client, hold_seconds=options.hold_timeout)
        discover, on_demand, on_queued = kube.run, demand.record, demand.record_queued
    else:
        static = StaticDiscovery(
            table,
            path=None if static_config is not None else options.config,
            config=static_config,
            interval_s=options.health_interval,
        )
        discover = static.run
    app = GatewayApp(
        FrontSettings(
            hold_timeout_s=options.hold_timeout,
            max_request_bytes=options.max_request_bytes,
            access_log=options.access_log,
            body_timeout_s=options.body_timeout,
            max_buffered_bytes=options.max_buffered_bytes,
            caps=ConcurrencyCaps(
                in_flight=options.max_in_flight,
                in_flight_per_model=options.max_in_flight_per_model,
                in_flight_per_identity=options.max_in_flight_per_key,
                held=options.max_held,
                held_per_model=options.max_held_per_model,
            ),
        ),
        table,
        pool,
        KeyRateLimiter(options.requests_per_minute, options.tokens_per_minute),
        metrics,
        registry,
        tracer=tracer,
        demand_throttle=DemandThrottle(options.demand_interval),
        keys=keys if isinstance(keys, ApiKeys) else ApiKeys.fixed(keys),
        tenancy=tenancy,
        **({"on_demand": on_demand} if on_demand is not None else {}),
    )
    if tenancy is not None and on_queued is not None:
        tenancy.on_queued = on_queued
    return Gateway(app, table, pool, discover, tracer, MetricsApp(registry))


def _all_upstreams(routes: Mapping[str, ModelRoute]) -> set[str]:
    return {u for route in routes.values() for u in route.upstreams}


def _series_from_zero(metrics: GatewayMetrics) -> Callable[[Mapping[str, ModelRoute]], None]:
    """Each discovered model's retries and held requests, and each replica's ejections, at 0.

    rate() sees a counter from its first sample on: one that appeared at 1
    would hide a model's first retry, or a replica's first ejection, from the
    dashboards.
    """

    def update(routes: Mapping[str, ModelRoute]) -> None:
        for route in routes.values():
            metrics.retries.labels(route.name)
            metrics.held.labels(route.name)
            for upstream in route.upstreams:
                metrics.ejection_counter(route.name, upstream)

    return update


def _conflicts_gauge(metrics: GatewayMetrics) -> Callable[[Mapping[str, int]], None]:
    """LLMDeployments refused per model name, as discovery last found them."""

    def update(refused: Mapping[str, int]) -> None:
        metrics.model_name_conflicts.clear()
        for model, count in refused.items():
            metrics.model_name_conflicts.labels(model).set(count)

    return update


def _ready_replicas_gauge(metrics: GatewayMetrics) -> Callable[[Mapping[str, ModelRoute]], None]:
    def update(routes: Mapping[str, ModelRoute]) -> None:
        metrics.ready_replicas.clear()
        for route in routes.values():
            for track in route.tracks:
                metrics.ready_replicas.labels(route.name, track.name).inc(len(track.upstreams))

    return update


def http_server(gateway: Gateway, options: GatewayOptions) -> uvicorn.Server:
    return SignalFreeServer(
        uvicorn.Config(
            gateway.app,
            host=options.host,
            port=options.port,
            lifespan="off",
            access_log=False,
            log_config=None,
            # The replica's own Server and Date headers pass through.
            server_header=False,
            date_header=False,
            # Client addresses are the peer's; X-Forwarded-For is passed on, not trusted.
            proxy_headers=False,
            backlog=4096,
            timeout_keep_alive=75,
            # A deadline for request heads and a connection cap answered in the envelope;
            # bodies have theirs in the app.
            http=guarded_protocol(
                ConnectionLimits(
                    header_timeout_s=options.header_timeout,
                    max_connections=options.max_connections,
                )
            ),
            timeout_graceful_shutdown=int(options.drain_timeout) or None,
        )
    )


def metrics_server(gateway: Gateway, options: GatewayOptions) -> uvicorn.Server:
    return SignalFreeServer(
        uvicorn.Config(
            gateway.metrics_app,
            host=options.metrics_address,
            port=options.metrics_port,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=1,
            # Scrapers need few connections; a half-sent request is closed as on the API port.
            http=guarded_protocol(
                ConnectionLimits(header_timeout_s=options.header_timeout, max_connections=64)
            ),
        )
    )


async def serve_gateway(gateway: Gateway, options: GatewayOptions, stop: asyncio.Event) -> int:
    """Serve until `stop` is set; returns the exit code."""
    server = http_server(gateway, options)
    scrapes = metrics_server(gateway, options)
    http_task = asyncio.create_task(server.serve(), name="http")
    metrics_task = asyncio.create_task(scrapes.serve(), name="metrics")
    discovery_task = asyncio.create_task(gateway.discover(), name="discovery")
    keys_task = asyncio.create_task(
        gateway.app.keys.watch(options.key_reload_interval), name="key-reload"
    )
    tenancy = gateway.app.tenancy
    tenants_task = asyncio.create_task(
        tenancy.watch.watch(options.key_reload_interval)
        if tenancy is not None and tenancy.watch is not None
        else asyncio.Event().wait(),
        name="tenants-reload",
    )
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait(
        {http_task, metrics_task, discovery_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    if discovery_task in done:
        err = discovery_task.exception()
        log.error("discovery stopped: %s", err, exc_info=err)
        code = 1
    elif http_task in done or metrics_task in done:
        code = 1  # a port could not be bound; uvicorn said why
    else:
        log.info(
            "stopping: finishing requests in flight", extra={"timeout_s": options.drain_timeout}
        )
    server.should_exit = True
    await http_task
    # Scraped until the API has drained, so the drain shows on the dashboards.
    scrapes.should_exit = True
    await metrics_task
    for task in (discovery_task, keys_task, tenants_task, stop_task):
        task.cancel()
    await asyncio.gather(discovery_task, keys_task, tenants_task, stop_task, return_exceptions=True)
    await gateway.pool.close()
    gateway.tracer.shutdown()
    log.info("stopped", extra={"exit_code": code})
    return code


def run_gateway(options: GatewayOptions) -> int:
    """Entry point of `modelplane gateway`; returns the process exit code."""
    logging.config.dictConfig(logging_config(options.log_format))
    try:
        keys = ApiKeys(options.api_key_file)
        tenants = TenantsFileWatch(options.tenants) if options.tenants is not None else None
        if options.redis_url is not None:
            try:
                import redis  # noqa: F401
            except ImportError as err:
                raise ConfigError(
                    "--redis-url needs the `redis` client: pip install 'modelplane[gateway]'"
                ) from err
        if options.discovery == "kubernetes":
            try:
                import kubernetes  # noqa: F401
            except ImportError as err:
                raise ConfigError(
                    "Kubernetes discovery needs the `kubernetes` client: "
                    "pip install 'modelplane[gateway]'"
                ) from err
        if options.discovery == "static":
            if options.config is None:
                raise ConfigError("static discovery needs --config FILE (models and their URLs)")
            # Fail now, with the reason, not in a task: the file, then its key files.
            read_model_keys(load_static_config(options.config))
    except (ValueError, ConfigError) as err:
        print(f"modelplane gateway: {err}", file=sys.stderr)
        return 2
    import uvloop

    return int(uvloop.run(_main(options, keys, tenants)))


async def _main(options: GatewayOptions, keys: ApiKeys, tenants: TenantsFileWatch | None) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    gateway = build_gateway(options, keys, REGISTRY, tenants=tenants)
    log.info(
        "gateway starting",
        extra={
            "host": options.host,
            "port": options.port,
            "metrics_port": options.metrics_port,
            "discovery": options.discovery,
        },
    )
    return await serve_gateway(gateway, options, stop)
