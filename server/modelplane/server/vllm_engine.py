"""The vLLM engine behind the server: built from EngineConfig, served by vLLM's own code.

We reuse vLLM's OpenAI serving layer (chat templates, tool parsers,
structured output, its request validation and error mapping) by building
vLLM's FastAPI app and mounting it behind our production front
(`modelplane.server.app`). What we own here is the lifecycle: creating the
engine off the event loop so probes answer during a long load, a warm-up
request before readiness, and a clean shutdown.

Only this module imports vLLM, so everything else is testable without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from modelplane.api.engine import ModelFacts
from modelplane.http.asgi import ASGIApp
from modelplane.http.errors import error_body
from modelplane.server.adapter_registry import AdapterLoadError
from modelplane.server.app import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    MODELS_PATH,
    SCORING_PATHS,
)
from modelplane.server.options import ServeOptions
from modelplane.server.request_checks import RESPONSES_PATH
from modelplane.server.request_errors import describe_validation_errors
from modelplane.server.startup_phases import StartupClock

log = logging.getLogger("modelplane.server.engine")

_ALWAYS = frozenset({MODELS_PATH, "/tokenize", "/detokenize"})

# How long the engine's processes get to exit on shutdown before vLLM kills them. vLLM's
# own 5 s (for the EngineCore, and for its workers inside that) is shorter than a normal
# exit takes on a small CPU machine: each process spends seconds in Python's final
# garbage collection, more with two engines stopping on two cores, and a kill prints
# "force killing remaining process EngineCore" and can leave an EngineDeadError behind.
ENGINE_SHUTDOWN_TIMEOUT_S = 30.0
WORKER_SHUTDOWN_TIMEOUT_S = 20


# vLLM 0.32 on CPUs saves its ahead-of-time compiled model but cannot load it back ("'function'
# object has no attribute 'finalize_loading'"), so every start compiled again. Without AOT
# compilation it keeps Inductor's compiled graphs in VLLM_CACHE_ROOT and loads them at the
# next start (Dynamo still traces the model, a few seconds). An explicit setting wins.
CPU_AOT_COMPILE = "0"


# A tool call's arguments follow the tool's `parameters` schema, as if every tool said
# `strict: true`: vLLM's default ("auto") constrains only the call's envelope for a tool
# without `strict`, so a named `tool_choice` could be answered with arguments like
# `"Paris"` instead of `{"city": "Paris"}`. Set before the engine settings, so an
# `--engine-arg --tool-strict-level=...` still wins.
TOOL_STRICT_LEVEL = "parameter"


def vllm_cli_args(options: ServeOptions) -> list[str]:
    """The vLLM server flags equivalent to these options (also used by the benchmark).

    The engine settings are taken as they are: the runner has already derived LoRA's
    from the adapters (`adapters.with_lora_defaults`)."""
    args = [
        "--model",
        options.model,
        "--served-model-name",
        options.model_name,
        "--tool-strict-level",
        TOOL_STRICT_LEVEL,
        *options.engine.vllm_args(),
    ]
    if options.adapters:
        # JSON, not NAME=PATH: vLLM reads an item with a comma in it as JSON.
        args.append("--lora-modules")
        args += [
            json.dumps(
                {
                    "name": a.name,
                    "path": str(a.path.absolute()),
                    "base_model_name": options.model_name,
                }
            )
            for a in options.adapters
        ]
    return args


def read_model_facts(model: str) -> ModelFacts:
    """What can be known about a local model before loading it (nothing for a hub id)."""
    path = Path(model)
    if path.suffix == ".gguf":
        return ModelFacts(is_gguf_file=True)
    config_file = path / "config.json"
    if not config_file.is_file():
        return ModelFacts()
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return ModelFacts()
    quant = config.get("quantization_config") or {}
    limit = config.get("max_position_embeddings")
    return ModelFacts(
        max_position_embeddings=limit if isinstance(limit, int) else None,
        quantization_method=quant.get("quant_method") if isinstance(quant, dict) else None,
    )


def running_on_gpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cuda_alike())


def served_paths(tasks: tuple[str, ...], *, scoring: bool = False) -> frozenset[str]:
    """The OpenAI paths a model with these vLLM tasks answers; `scoring`: vLLM serves
    score and rerank for it (an embedding model, by cosine similarity, or a
    cross-encoder)."""
    paths = set(_ALWAYS)
    if "generate" in tasks:
        paths |= {CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH}
    if "embed" in tasks:
        paths.add(EMBEDDINGS_PATH)
    if scoring:
        paths |= SCORING_PATHS
    return frozenset(paths)


@dataclass
class VllmEngine:
    app: Any  # vLLM's FastAPI app
    client: Any  # vllm.v1.engine.async_llm.AsyncLLM
    tasks: tuple[str, ...]

    @property
    def asgi(self) -> ASGIApp:
        app: ASGIApp = self.app
        return app

    @property
    def paths(self) -> frozenset[str]:
        # vLLM registers its score and rerank routes exactly when it builds this handler.
        scoring = getattr(self.app.state, "serving_scores", None) is not None
        return served_paths(self.tasks, scoring=scoring)

    async def healthy(self) -> bool:
        try:
            await self.client.check_health()
        except Exception:
            return False
        return True

    async def load_adapter(self, name: str, path: Path) -> None:
        """Serve the LoRA adapter in `path` as model `name`, through vLLM's own serving
        models (what its /v1/load_lora_adapter calls, which we do not expose)."""
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        request = LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path))
        result = await self.app.state.openai_serving_models.load_lora_adapter(request)
        if isinstance(result, ErrorResponse):
            raise AdapterLoadError(_engine_reason(result.error.message))

    async def unload_adapter(self, name: str) -> None:
        """Stop serving adapter `name` and free its slot in the engine."""
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        models = self.app.state.openai_serving_models
        held = models.lora_requests.get(name)
        await models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        if held is not None:
            # vLLM's unload only forgets the name; the engine keeps the weights cached.
            await self.client.remove_lora(held.lora_int_id)

    async def warm_up(self, model_name: str) -> None:
        """Serve one real request in-process, so `ready` means a request has succeeded."""
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://warmup") as client:
            if "generate" in self.tasks:
                response = await client.post(
                    COMPLETIONS_PATH,
                    json={"model": model_name, "prompt": "Hello", "max_tokens": 1},
                    timeout=None,
                )
            else:
                response = await client.post(
                    EMBEDDINGS_PATH, json={"model": model_name, "input": "hello"}, timeout=None
                )
        if response.status_code != 200:
            raise RuntimeError(f"warm-up request failed: {response.status_code} {response.text}")


def _engine_reason(message: str) -> str:
    """The engine's refusal in one line (it may carry a worker's traceback text)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "the engine refused the adapter")[:1000]


def install_error_handlers(app: Any) -> None:
    """Make the engine app's own errors readable and keep its error handlers working.

    A request its models refuse is answered with sentences
    (`request_errors.describe_validation_errors`) instead of pydantic's repr.
    vLLM's handler for a dead or failed engine reads `app.state.server` (the
    uvicorn server of vLLM's own launcher, which we do not run) to ask it to
    exit; without one the handler itself fails and the client is told
    "'State' object has no attribute 'server'". A stand-in takes the request
    harmlessly: `/health` reports the dead engine and the kubelet restarts the pod.
    """
    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request
    from starlette.responses import Response

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = describe_validation_errors(exc.errors())
        return Response(
            error_body(400, message, param=param), status_code=400, media_type="application/json"
        )

    app.add_exception_handler(RequestValidationError, refused)
    # vLLM's build_app already built the middleware stack, which holds its own copy of
    # the handlers: built again, it holds this one.
    app.middleware_stack = app.build_middleware_stack()
    if not hasattr(app.state, "server"):
        app.state.server = SimpleNamespace(should_exit=False)


@asynccontextmanager
async def open_vllm_engine(
    options: ServeOptions, clock: StartupClock | None = None
) -> AsyncIterator[VllmEngine]:
    """Create the engine (in a worker thread: it blocks for the whole load) and vLLM's app.

    `clock` is given the times the engine's configuration was resolved and the engine
    was up (the start-up phases)."""
    clock = clock or StartupClock()
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    os.environ.setdefault("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", str(WORKER_SHUTDOWN_TIMEOUT_S))
    # A media host on engine.allowedMediaDomains must not redirect the engine elsewhere.
    os.environ["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"
    if not running_on_gpu():
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", CPU_AOT_COMPILE)
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.v1.engine.async_llm import AsyncLLM

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm"))  # type: ignore[no-untyped-call]
    args = parser.parse_args(vllm_cli_args(options))
    validate_parsed_serve_args(args)
    engine_args = AsyncEngineArgs.from_cli_args(args)
    usage = UsageContext.OPENAI_API_SERVER

    def create() -> Any:
        vllm_config = engine_args.create_engine_config(usage_context=usage)
        clock.engine_configured = clock.now()
        return AsyncLLM.from_vllm_config(
            vllm_config=vllm_config,
            usage_context=usage,
            enable_log_requests=engine_args.enable_log_requests,
            disable_log_stats=engine_args.disable_log_stats,
        )

    client = await asyncio.to_thread(create)
    clock.engine_returned = clock.now()
    try:
        tasks = tuple(await client.get_supported_tasks())
        app = build_app(args, tasks, client.model_config)
        await init_app_state(client, app.state, args, tasks)
        install_error_handlers(app)
        async with app.router.lifespan_context(app):
            yield VllmEngine(app=app, client=client, tasks=tasks)
    finally:
        await _stop_output_handler(client)
        await asyncio.to_thread(client.shutdown, ENGINE_SHUTDOWN_TIMEOUT_S)


async def _stop_output_handler(client: Any) -> None:
    """Cancel the engine client's output task before the engine stops (nothing is in flight
    after the drain). vLLM's shutdown, run in a worker thread, first closes the engine's
    output socket, which hands that task an EngineDeadError, and cancels the task only
    afterwards from the thread: on a busy machine the task reads the error first and logs
    "AsyncLLM output_handler failed" with a traceback at every normal stop."""
    handler = getattr(client, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()
        await asyncio.gather(handler, return_exceptions=True)
