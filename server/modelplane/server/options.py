"""`modelplane serve` options: one typed model fed by a config file and flags.

A YAML config file (optional) gives the base; flags given on the command
line override it. Field names in the file are the camelCase ones of the
LLMDeployment resource (`servedModelName`, `engine.maxModelLen`, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from modelplane.api.engine import Dtype, EngineConfig, KVCacheDtype, Quantization, Runner


class ServeOptions(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    model: str = Field(description="Local model directory, .gguf file or HF model id.")
    served_model_name: str | None = Field(
        None, description="The OpenAI `model` name clients use; defaults to the model's name."
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    api_key_file: Path | None = None
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    max_request_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    otlp_traces_endpoint: str | None = None
    log_format: str = Field("json", pattern="^(json|text)$")
    warmup: bool = True
    print_examples: bool = False
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model.rstrip("/")).name.removesuffix(".gguf") or self.model


class OptionsError(ValueError):
    """A one-line reason the options cannot be used."""


# flag dest -> engine field name, for flags that set EngineConfig fields
_ENGINE_FLAGS = {
    "quantization": "quantization",
    "kv_cache_dtype": "kv_cache_dtype",
    "dtype": "dtype",
    "max_model_len": "max_model_len",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "tensor_parallel_size": "tensor_parallel_size",
    "enable_prefix_caching": "enable_prefix_caching",
    "enforce_eager": "enforce_eager",
    "tool_call_parser": "tool_call_parser",
    "runner": "runner",
    "engine_args": "extra_args",
}
_SERVE_FLAGS = (
    "model",
    "served_model_name",
    "host",
    "port",
    "api_key_file",
    "drain_timeout",
    "max_request_bytes",
    "otlp_traces_endpoint",
    "log_format",
    "warmup",
    "print_examples",
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag defaults to None so that only flags actually given override the file."""
    s = parser.add_argument_group("serving")
    s.add_argument("--config", type=Path, help="YAML file with these options (flags override).")
    s.add_argument("--model", help="Local model directory, .gguf file or HF model id.")
    s.add_argument("--served-model-name", help="Name clients pass as `model` (default: dir name).")
    s.add_argument("--host", help="Address to bind (default 127.0.0.1; 0.0.0.0 in a pod).")
    s.add_argument("--port", type=int, help="Port to bind (default 8000).")
    s.add_argument(
        "--api-key-file",
        type=Path,
        help="File with API keys, one per line. Keys also come from MODELPLANE_API_KEYS "
        "(comma-separated). With no key configured the API is open.",
    )
    s.add_argument(
        "--drain-timeout",
        type=float,
        help="Seconds in-flight requests may take to finish after SIGTERM (default 30).",
    )
    s.add_argument("--max-request-bytes", type=int, help="Largest accepted request body (8 MiB).")
    s.add_argument("--otlp-traces-endpoint", help="OTLP/HTTP collector URL for request spans.")
    s.add_argument("--log-format", choices=("json", "text"), help="Log line format (json).")
    s.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Serve one warm-up request before reporting ready (default on).",
    )
    s.add_argument(
        "--print-examples",
        action="store_true",
        default=None,
        help="Print ready-to-paste curl and OpenAI client examples once ready.",
    )
    e = parser.add_argument_group("engine (LLMDeployment spec.engine)")
    e.add_argument("--quantization", choices=[q.value for q in Quantization])
    e.add_argument("--kv-cache-dtype", choices=[k.value for k in KVCacheDtype])
    e.add_argument("--dtype", choices=[d.value for d in Dtype])
    e.add_argument("--max-model-len", type=int, help="Context length in tokens.")
    e.add_argument("--gpu-memory-utilization", type=float, help="Fraction of GPU memory (0.9).")
    e.add_argument("--tensor-parallel-size", type=int, help="GPUs per replica (1).")
    e.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Reuse the KV cache of shared prompt prefixes (on).",
    )
    e.add_argument(
        "--enforce-eager",
        action="store_true",
        default=None,
        help="Skip compilation and graph capture: much faster start, slower decode.",
    )
    e.add_argument(
        "--tool-call-parser",
        help="vLLM tool-call parser for tool calls and named tool_choice "
        "(default hermes; 'none' disables tools).",
    )
    e.add_argument("--runner", choices=[r.value for r in Runner], help="generate or pooling.")
    e.add_argument(
        "--engine-arg",
        dest="engine_args",
        action="append",
        metavar="ARG",
        help="Extra vLLM flag passed verbatim, e.g. --engine-arg=--max-num-seqs=64 (repeatable).",
    )


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """Merge the config file (if any) with the flags given; raise OptionsError with a reason."""
    base: dict[str, Any] = {}
    if args.config is not None:
        base = _by_field_name(ServeOptions, _read_config(args.config))
    engine_in_file = base.pop("engine", None) or {}
    if not isinstance(engine_in_file, dict):
        raise OptionsError("engine in the config file must be a mapping of engine options")
    engine = _by_field_name(EngineConfig, engine_in_file)
    for dest, field in _ENGINE_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "tool_call_parser" and value.lower() == "none":
            value = None
        engine[field] = value
    for dest in _SERVE_FLAGS:
        value = getattr(args, dest, None)
        if value is not None:
            base[dest] = value
    if "model" not in base:
        raise OptionsError("--model is required (a model directory, .gguf file or HF id)")
    try:
        return ServeOptions.model_validate({**base, "engine": engine})
    except ValidationError as err:
        raise OptionsError(_one_line(err)) from err


def _by_field_name(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Key the file's camelCase names by field name, so flags can override them."""
    names = {field.alias or name: name for name, field in model.model_fields.items()}
    return {names.get(key, key): value for key, value in data.items()}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise OptionsError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise OptionsError(f"config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionsError(f"config file {path} must hold a mapping of options")
    return data


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "options"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)
