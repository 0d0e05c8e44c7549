"""Run the model server: bind, load the engine, serve, and drain on SIGTERM.

Order of life: the port opens first (probes answer at once: `/health` 200,
`/ready` 503); the engine loads in the background, serves a warm-up request
and only then turns `/ready` to 200. On SIGTERM (or Ctrl-C) `/ready` turns
503 at once, while requests keep being served: those in flight -- streams
included -- run to completion, and one that still arrives (routed here
before the endpoint was removed) is answered rather than refused. Once no
request has been in flight for `DRAIN_QUIET_S`, or after `--drain-timeout`
seconds at most, the server closes and the process exits 0. A second Ctrl-C
exits at once.

In a pod the kubelet runs the container's pre-stop sleep before it sends
SIGTERM, so endpoints have dropped the replica by the time the drain starts
and late arrivals are rare; the drain serves them all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import uvicorn
from prometheus_client import REGISTRY

from modelplane.api.engine import engine_config_problems
from modelplane.http.asgi import ASGIApp
from modelplane.http.connections import ConnectionLimits, guarded_protocol
from modelplane.http.key_store import ApiKeys
from modelplane.http.logs import configure_logging
from modelplane.http.server import SignalFreeServer, install_stop_signals
from modelplane.http.tracing import RequestTracer, otlp_exporter
from modelplane.server.adapter_registry import AdapterRegistry
from modelplane.server.adapter_sources import SourceRoots
from modelplane.server.adapters import (
    AdapterError,
    engine_lora_rank,
    read_local_adapters,
    with_lora_defaults,
)
from modelplane.server.admin_app import AdminApp
from modelplane.server.app import FrontSettings, ModelServerApp
from modelplane.server.examples import usage_examples
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.metrics import ServerMetrics
from modelplane.server.options import ServeOptions
from modelplane.server.startup_phases import (
    EngineMarkHandler,
    StartupClock,
    phases_line,
    process_start_time,
    read_marks,
    startup_phases,
    total_seconds,
)

log = logging.getLogger("modelplane.server")

# The drain ends this long after the last request finished (or after SIGTERM, when
# nothing was in flight): time for a request already on its way to arrive.
DRAIN_QUIET_S = 1.0
# After the drain, uvicorn's wait for open connections to close (the operator's pod
# grace leaves room for it and the engine's shutdown).
CLOSE_TIMEOUT_S = 5
# The admin listener's callers: the operator, one call per replica at a time.
ADMIN_MAX_CONNECTIONS = 16


def serve(options: ServeOptions) -> int:
    """Entry point of `modelplane serve`; returns the process exit code."""
    clock = StartupClock(process_started=process_start_time(), serve_entered=time.time())
    fd, marks_path = tempfile.mkstemp(prefix="modelplane-startup-marks-", suffix=".jsonl")
    os.close(fd)
    try:
        configure_logging(options.log_format, _marks_handler(marks_path))
        return _serve_logged(options, clock, Path(marks_path))
    finally:
        Path(marks_path).unlink(missing_ok=True)


def _marks_handler(path: str) -> dict[str, dict[str, str]]:
    """The logging handler that keeps the engine's start-up marks in `path`."""
    handler = f"{EngineMarkHandler.__module__}.{EngineMarkHandler.__qualname__}"
    return {"startup_marks": {"()": handler, "path": path}}


def _serve_logged(options: ServeOptions, clock: StartupClock, marks_path: Path) -> int:
    try:
        keys = ApiKeys(options.api_key_file)
    except ValueError as err:
        print(f"modelplane serve: {err}", file=sys.stderr)
        return 2
    try:
        given = [(a.name, a.path) for a in options.adapters]
        adapters = read_local_adapters(given, options.model_name)
        engine = with_lora_defaults(options.engine, adapters)
    except AdapterError as err:
        print(f"modelplane serve: {err}", file=sys.stderr)
        return 2
    options = options.model_copy(update={"engine": engine})
    from modelplane.server import vllm_engine

    facts = vllm_engine.read_model_facts(options.model)
    problems = engine_config_problems(options.engine, facts, on_gpu=vllm_engine.running_on_gpu())
    if problems:
        print(f"modelplane serve: {'; '.join(problems)}", file=sys.stderr)
        return 2
    import uvloop

    return int(uvloop.run(_serve(options, keys, clock, marks_path)))


async def _serve(
    options: ServeOptions, keys: ApiKeys, clock: StartupClock, marks_path: Path
) -> int:
    from modelplane.server.vllm_engine import open_vllm_engine

    lifecycle = Lifecycle()
    metrics = ServerMetrics(REGISTRY)
    tracer = RequestTracer(
        otlp_exporter(options.otlp_traces_endpoint) if options.otlp_traces_endpoint else None
    )
    registry = AdapterRegistry(
        options.model_name,
        SourceRoots(options.adapter_volumes, options.adapter_cache_dir),
        engine_lora_rank(options.engine),
        metrics.adapter_loaded,
    )
    front = ModelServerApp(
        FrontSettings(
            served_model_name=options.model_name,
            max_request_bytes=options.max_request_bytes,
            body_timeout_s=options.body_timeout,
            allowed_media_hosts=frozenset(options.engine.allowed_media_domains),
        ),
        lifecycle,
        metrics,
        REGISTRY,
        tracer,
        keys=keys,
        adapters=registry.loaded_names,
    )
    server = _listener(front, options, options.port, options.max_connections)
    # The admin listener: same host, its own port, never the public one.
    admin = (
        _listener(AdminApp(registry, keys), options, options.admin_port, ADMIN_MAX_CONNECTIONS)
        if options.admin_port
        else None
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    http_task = asyncio.create_task(server.serve(), name="http")
    listeners = {http_task}
    if admin is not None:
        listeners.add(asyncio.create_task(admin.serve(), name="admin-http"))
    keys_task = asyncio.create_task(keys.watch(options.key_reload_interval), name="key-reload")
    engine_done = asyncio.Event()

    async def run_engine() -> None:
        try:
            async with open_vllm_engine(options, clock) as engine:
                if options.warmup:
                    await engine.warm_up(options.model_name)
                clock.ready = time.time()
                _report_startup(options.model_name, clock, marks_path, metrics)
                front.attach_engine(engine)
                loaded = {a.name: a.path.absolute() for a in options.adapters}
                registry.attach_engine(engine, loaded)
                lifecycle.mark_ready()
                metrics.ready.set(1)
                log.info("ready", extra={"model": options.model_name, "port": options.port})
                if options.print_examples:
                    base = f"http://{_display_host(options.host)}:{options.port}/v1"
                    examples = usage_examples(base, options.model_name, needs_key=keys.required)
                    print(examples, flush=True)
                await engine_done.wait()
        finally:
            metrics.ready.set(0)

    engine_task = asyncio.create_task(run_engine(), name="engine")
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(
        {engine_task, stop_task, *listeners}, return_when=asyncio.FIRST_COMPLETED
    )
    code = 0
    if engine_task in done and engine_task.exception() is not None:
        err = engine_task.exception()
        lifecycle.mark_failed(f"engine failed to start: {err}")
        log.error("engine failed to start: %s", err, exc_info=err)
        code = 1
    elif listeners & done:
        code = 1  # a port could not be bound; uvicorn logged why
    else:
        await _drain(lifecycle, metrics, options.drain_timeout)
    server.should_exit = True
    if admin is not None:
        admin.should_exit = True
    await asyncio.gather(*listeners)
    engine_done.set()
    if not engine_task.done():
        await asyncio.gather(engine_task, return_exceptions=True)
    stop_task.cancel()
    keys_task.cancel()
    tracer.shutdown()
    log.info("stopped", extra={"exit_code": code})
    return code


def _listener(
    app: ASGIApp, options: ServeOptions, port: int, max_connections: int
) -> uvicorn.Server:
    """A uvicorn server for `app` on `port` of the server's host, with a deadline for request
    heads and a connection cap answered in the envelope; bodies have theirs in the app."""
    return SignalFreeServer(
        uvicorn.Config(
            app,
            host=options.host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=CLOSE_TIMEOUT_S,
            http=guarded_protocol(
                ConnectionLimits(
                    header_timeout_s=options.header_timeout, max_connections=max_connections
                )
            ),
        )
    )


def _report_startup(
    model: str, clock: StartupClock, marks_path: Path, metrics: ServerMetrics
) -> None:
    """Log the start-up's phases in one line and export them; the engine's marks are read
    once, and their file removed (later marks are dropped)."""
    phases = startup_phases(clock, read_marks(marks_path))
    marks_path.unlink(missing_ok=True)
    total = total_seconds(clock)
    metrics.record_startup(model, phases, total)
    log.info(phases_line(phases, total), extra={"startup_seconds": phases, "total_s": total})


async def _drain(lifecycle: Lifecycle, metrics: ServerMetrics, timeout_s: float) -> None:
    """Not ready, still serving; return once quiet, or after `timeout_s` at most."""
    lifecycle.start_drain()
    metrics.draining.set(1)
    log.info("draining", extra={"in_flight": lifecycle.in_flight, "timeout_s": timeout_s})
    try:
        async with asyncio.timeout(timeout_s):
            await lifecycle.wait_quiet(DRAIN_QUIET_S)
    except TimeoutError:
        # What is still in flight is cut when the server closes: the drain timeout is the
        # longest a request may take after SIGTERM.
        log.warning("drain timed out", extra={"in_flight": lifecycle.in_flight})


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
