"""Local mode: start model servers on this machine and put the gateway in front.

Like FastChat's controller with its model workers, on one machine: a small
YAML file lists the models (each a `modelplane serve` process, or several
replicas of one), the supervisor starts them on their own ports, and the
gateway routes to them with static discovery, holding requests until each
has loaded. With no file, it serves the packaged SmolLM2 test model.

    models:
      - name: smollm2                # the OpenAI `model` name
        model: builtin:smollm2       # a model directory, .gguf, HF id, or builtin:smollm2|minilm
        args: [--max-model-len, "4096", --enforce-eager]   # more `modelplane serve` flags
      - name: minilm
        model: builtin:minilm
        args: [--runner, pooling, --enforce-eager]
        replicas: 1                  # server processes for this model
        routing: least-load          # least-load | prefix | round-robin

Model servers run in their own sessions, so Ctrl-C reaches only this
supervisor, which stops in order: the gateway stops accepting, the servers
drain their requests, then everything exits. A second Ctrl-C kills at once.
With several servers, each computes on its own share of the CPUs
(`cpu_binding`), unless VLLM_CPU_OMP_THREADS_BIND is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import logging.config
import os
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict, Field

from modelplane.gateway.config_files import ConfigError, read_yaml_model
from modelplane.gateway.discovery.static import StaticConfig, StaticModel
from modelplane.gateway.options import GatewayOptions
from modelplane.gateway.routing.routes import ModelRoute, Routing
from modelplane.gateway.runner import build_gateway, serve_gateway
from modelplane.http.auth import load_api_keys
from modelplane.http.logs import logging_config
from modelplane.local.cpu_binding import server_envs
from modelplane.server.examples import usage_examples
from modelplane.server.model_build import ModelBuildError

log = logging.getLogger("modelplane.local")

BUILTIN_PREFIX = "builtin:"


class LocalModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    args: list[str] = []
    replicas: Annotated[int, Field(ge=1, le=16)] = 1
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    routing: Routing = Routing.LEAST_LOAD

    @property
    def generates_text(self) -> bool:
        joined = " ".join(self.args)
        return "--runner pooling" not in joined and "--runner=pooling" not in joined


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: Annotated[list[LocalModel], Field(min_length=1)]


DEFAULT_CONFIG = LocalConfig(
    models=[
        LocalModel(
            name="smollm2",
            model="builtin:smollm2",
            args=["--max-model-len", "4096", "--enforce-eager"],
        )
    ]
)


class LocalConfigError(ConfigError):
    pass


def load_local_config(path: Path) -> LocalConfig:
    return read_yaml_model(path, LocalConfig)


@dataclass(frozen=True)
class Replica:
    model: LocalModel
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def plan_replicas(
    config: LocalConfig, first_port: int, reserved: Collection[int] = ()
) -> list[Replica]:
    """Ports for every replica: a model's `port` and the ones after it, else the
    next unused ports from `first_port` on, skipping the `reserved` ones (the
    gateway's metrics port)."""
    fixed = {
        m.port + i for m in config.models if m.port is not None for i in range(m.replicas)
    }  # fmt: skip
    names = [m.name for m in config.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LocalConfigError(f"model names must be unique: {', '.join(duplicates)}")
    taken = sorted(fixed.intersection(reserved))
    if taken:
        raise LocalConfigError(
            f"port {taken[0]} is the gateway's metrics port; give the model another port"
        )
    fixed |= set(reserved)
    replicas: list[Replica] = []
    next_port = first_port
    for model in config.models:
        for i in range(model.replicas):
            if model.port is not None:
                port = model.port + i
            else:
                while next_port in fixed:
                    next_port += 1
                port = next_port
                next_port += 1
            replicas.append(Replica(model, port))
    return replicas


def static_config_for(replicas: list[Replica]) -> StaticConfig:
    by_model: dict[str, list[Replica]] = {}
    for r in replicas:
        by_model.setdefault(r.model.name, []).append(r)
    return StaticConfig(
        models={
            name: StaticModel(routing=group[0].model.routing, upstreams=[r.url for r in group])
            for name, group in by_model.items()
        }
    )


def resolve_model(spec: str) -> str:
    """A `builtin:` name to its directory (building SmolLM2 once); anything else as is."""
    if not spec.startswith(BUILTIN_PREFIX):
        return spec
    from modelplane.server import model_build

    name = spec.removeprefix(BUILTIN_PREFIX)
    if name == "smollm2":
        return str(model_build.build_model(progress=model_build.stderr_progress).path)
    if name == "minilm":
        return str(model_build.embedding_model_dir())
    raise LocalConfigError(f"unknown builtin model {name!r}; builtins: smollm2, minilm")


def serve_command(replica: Replica, model_path: str, log_format: str) -> list[str]:
    script = Path(sys.executable).parent / "modelplane"
    program = [str(script)] if script.exists() else ["modelplane"]
    return [
        *program, "serve", "--model", model_path, "--served-model-name", replica.model.name,
        "--host", "127.0.0.1", "--port", str(replica.port), "--log-format", log_format,
        *replica.model.args,
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies without stopping us (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    replica: Replica
    proc: subprocess.Popen[bytes]
    ready_once: bool = False
    reported: bool = False  # its unexpected exit has been logged


def _kill_group(child: Child) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, signal.SIGKILL)


def examples_text(
    gateway_url: str, config: LocalConfig, needs_key: bool, metrics_url: str | None = None
) -> str:
    chat = next((m.name for m in config.models if m.generates_text), config.models[0].name)
    names = ", ".join(m.name for m in config.models)
    return (
        usage_examples(f"{gateway_url}/v1", chat, needs_key=needs_key)
        + f"\n  Models: {names}\n  Chat page: {gateway_url}/\n"
        + f"  Terminal chat: modelplane chat --url {gateway_url} --model {chat}\n"
        + (f"  Metrics (Prometheus): {metrics_url}\n" if metrics_url else "")
    )


def start_children(
    replicas: list[Replica], paths: Mapping[str, str], log_format: str
) -> list[Child]:
    envs = server_envs(len(replicas), os.environ)
    return [
        Child(
            r,
            subprocess.Popen(
                serve_command(r, paths[r.model.name], log_format),
                env={**os.environ, **extra_env},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: no threads are running yet
            ),
        )
        for r, extra_env in zip(replicas, envs, strict=True)
    ]


async def run_local(
    options: GatewayOptions,
    config: LocalConfig,
    replicas: list[Replica],
    children: list[Child],
    keys: tuple[str, ...],
) -> int:
    stop = asyncio.Event()
    failed = False
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and sig is signal.SIGINT:
            log.warning("second interrupt: killing the model servers")
            for child in children:
                _kill_group(child)
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    gateway = build_gateway(options, keys, REGISTRY, static_config=static_config_for(replicas))
    shown = False
    display = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    url = f"http://{display}:{options.port}"
    metrics_host = options.metrics_address
    metrics_display = "127.0.0.1" if metrics_host in ("0.0.0.0", "::", "") else metrics_host
    metrics_url = f"http://{metrics_display}:{options.metrics_port}/metrics"

    def note_ready(routes: Mapping[str, ModelRoute]) -> None:
        nonlocal shown
        ready_urls = {u for r in routes.values() for u in r.upstreams}
        for child in children:
            child.ready_once = child.ready_once or child.replica.url in ready_urls
        if not shown and all(r.ready for r in routes.values()):
            shown = True
            print(examples_text(url, config, bool(keys), metrics_url), flush=True)

    gateway.table.listeners.append(note_ready)

    async def supervise() -> None:
        nonlocal failed
        while not stop.is_set():
            for child in children:
                code = child.proc.poll()
                if code is None or child.reported:
                    continue
                child.reported = True
                name = child.replica.model.name
                if not child.ready_once:
                    log.error("model server %s exited with %s before it was ready", name, code)
                    failed = True
                    stop.set()
                    return
                log.error("model server %s (%s) exited with %s", name, child.replica.url, code)
            await asyncio.sleep(0.5)

    async def stop_children() -> None:
        await stop.wait()
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)

    supervisor = asyncio.create_task(supervise())
    stopper = asyncio.create_task(stop_children())
    code = await serve_gateway(gateway, options, stop)
    await stopper
    supervisor.cancel()
    deadline = loop.time() + options.drain_timeout + 10
    for child in children:
        remaining = max(0.1, deadline - loop.time())
        try:
            await asyncio.to_thread(child.proc.wait, remaining)
        except subprocess.TimeoutExpired:
            log.warning("model server did not stop in time; killing it")
        _kill_group(child)  # the engine's own child processes, if any are left
    return 1 if failed else code


def run_local_mode(options: GatewayOptions, config_path: Path | None) -> int:
    logging.config.dictConfig(logging_config(options.log_format))
    try:
        config = load_local_config(config_path) if config_path else DEFAULT_CONFIG
        replicas = plan_replicas(config, options.port + 1, reserved={options.metrics_port})
        keys = load_api_keys(options.api_key_file)
        paths = {m.name: resolve_model(m.model) for m in config.models}
    except (ValueError, ModelBuildError) as err:  # the config, a key file, the model build
        print(f"modelplane local: {err}", file=sys.stderr)
        return 2
    import uvloop

    children = start_children(replicas, paths, options.log_format)
    try:
        return int(uvloop.run(run_local(options, config, replicas, children, keys)))
    finally:
        for child in children:
            if child.proc.poll() is None:
                _kill_group(child)
