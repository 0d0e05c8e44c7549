"""`modelplane serve` options: one typed model fed by a config file and flags.

A YAML config file (optional) gives the base; flags given on the command
line override it. Field names in the file are the camelCase ones of the
LLMDeployment resource (`servedModelName`, `engine.maxModelLen`, ...).
"""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from modelplane.api.contract import SERVER_ADAPTER_VOLUMES
from modelplane.api.engine import EngineConfig, engine_flags, scalar_type
from modelplane.api.extra_args import SERVE_COMMAND_LINE
from modelplane.server.adapters import AdapterError, adapter_names_problem, parse_adapter_arg


class AdapterPath(BaseModel):
    """One `--adapter NAME=PATH` (in a config file: `adapters: [{name, path}]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: Path


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
    key_reload_interval: Annotated[float, Field(gt=0)] = 5.0
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    max_request_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    body_timeout: Annotated[float, Field(gt=0)] = 30.0
    max_connections: Annotated[int, Field(ge=1)] = 1024
    otlp_traces_endpoint: str | None = None
    log_format: str = Field("json", pattern="^(json|text)$")
    warmup: bool = True
    print_examples: bool = False
    engine: EngineConfig = Field(default_factory=EngineConfig)
    adapters: tuple[AdapterPath, ...] = ()
    admin_port: Annotated[int, Field(ge=0, le=65535)] = 0
    adapter_cache_dir: Path | None = None
    adapter_volumes: Path = Path(SERVER_ADAPTER_VOLUMES)

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model.rstrip("/")).name.removesuffix(".gguf") or self.model


class OptionsError(ValueError):
    """A one-line reason the options cannot be used."""


_SERVE_FLAGS = (
    "model",
    "served_model_name",
    "host",
    "port",
    "api_key_file",
    "key_reload_interval",
    "drain_timeout",
    "max_request_bytes",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "otlp_traces_endpoint",
    "log_format",
    "warmup",
    "print_examples",
    "admin_port",
    "adapter_cache_dir",
    "adapter_volumes",
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
        "(comma-separated). With no key configured the API is open. The file is re-read "
        "every --key-reload-interval seconds: keys added or removed take effect without a "
        "restart.",
    )
    s.add_argument(
        "--key-reload-interval", type=float, help="Seconds between reads of the key file (5)."
    )
    s.add_argument(
        "--drain-timeout",
        type=float,
        help="Longest the server keeps serving after SIGTERM: requests in flight and "
        "arriving are served until it has been idle for a second, or this many seconds "
        "have passed (default 30).",
    )
    s.add_argument("--max-request-bytes", type=int, help="Largest accepted request body (8 MiB).")
    s.add_argument(
        "--header-timeout",
        type=float,
        help="Seconds a client has to send a request's head; then 408 and close (10).",
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        help="Seconds a client has to send a whole request body; then 408 and close (30).",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        help="Open client connections, idle ones included; past it 503 (1024).",
    )
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
    a = parser.add_argument_group("LoRA adapters")
    a.add_argument(
        "--adapter",
        dest="adapter",
        action="append",
        metavar="NAME=PATH",
        help="Serve the LoRA adapter in directory PATH (PEFT format: adapter_config.json and "
        "weights) as the OpenAI model NAME beside the base model (repeatable). Turns LoRA "
        "on; engine --max-loras and --max-lora-rank default to the adapters' number and "
        "largest rank.",
    )
    a.add_argument(
        "--admin-port",
        type=int,
        help="Port of the admin listener (same host) that loads and unloads adapters at run "
        "time: GET /adapters, PUT and DELETE /adapters/NAME. Never on the public port; API "
        "keys apply. 0 (the default) turns it off; the operator's pods use 8001.",
    )
    a.add_argument(
        "--adapter-cache-dir",
        type=Path,
        help="Where the admin API downloads hf:// adapters (default: a directory under the "
        "system temporary directory).",
    )
    a.add_argument(
        "--adapter-volumes",
        type=Path,
        help=f"Where pvc://CLAIM/PATH adapter sources are found: DIR/CLAIM/PATH, the claim "
        f"mounted at DIR/CLAIM (default {SERVER_ADAPTER_VOLUMES}).",
    )
    add_engine_arguments(parser.add_argument_group("engine (LLMDeployment spec.engine)"))


def add_engine_arguments(group: argparse._ArgumentGroup) -> None:
    """One flag per `EngineConfig` field, generated from the field and its `Flag`:
    choices from an enum, the type from the annotation, help from the description.
    Every flag defaults to None so that only flags given override the config file."""
    fields = EngineConfig.model_fields
    for name, flag in engine_flags():
        field = fields[name]
        kind = scalar_type(field)
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").rstrip(".")
        if isinstance(default, list):
            example = f", e.g. {flag.name}=--max-num-seqs=64" if flag.passthrough else ""
            group.add_argument(
                flag.name,
                dest=name,
                action="append",
                metavar="ARG" if flag.passthrough else "ITEM",
                help=f"{help_text}{example} (repeatable).",
            )
        elif kind is bool:
            group.add_argument(
                flag.name,
                dest=name,
                action=argparse.BooleanOptionalAction if default else "store_true",
                default=None,
                help=f"{help_text} ({'on' if default else 'off'} unless given).",
            )
        elif isinstance(kind, type) and issubclass(kind, StrEnum):
            choices = [member.value for member in kind]
            group.add_argument(
                flag.name, dest=name, choices=choices, help=f"{help_text} (default {default})."
            )
        else:
            spelled = f"; '{flag.none_word}' for none" if flag.none_word else ""
            group.add_argument(
                flag.name,
                dest=name,
                type=kind,
                help=f"{help_text} (default {default}{spelled}).",
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
    for name, flag in engine_flags():
        value = getattr(args, name, None)
        if value is None:
            continue
        if flag.none_word is not None and str(value).lower() == flag.none_word:
            value = None
        engine[name] = value
    for dest in _SERVE_FLAGS:
        value = getattr(args, dest, None)
        if value is not None:
            base[dest] = value
    if "model" not in base:
        raise OptionsError("--model is required (a model directory, .gguf file or HF id)")
    given = getattr(args, "adapter", None)
    if given is not None:
        try:
            pairs = [parse_adapter_arg(text) for text in given]
        except AdapterError as err:
            raise OptionsError(str(err)) from err
        base["adapters"] = [{"name": name, "path": path} for name, path in pairs]
    try:
        # The command line's --engine-arg may carry the flags the operator derives from
        # an LLMDeployment (api/extra_args.py); a spec's extraArgs may not.
        options = ServeOptions.model_validate(
            {**base, "engine": engine}, context={SERVE_COMMAND_LINE: True}
        )
    except ValidationError as err:
        raise OptionsError(_one_line(err)) from err
    problem = adapter_names_problem([a.name for a in options.adapters], options.model_name)
    if problem is not None:
        raise OptionsError(problem)
    if options.admin_port != 0 and options.admin_port == options.port:
        raise OptionsError(f"--admin-port {options.admin_port} is the public --port; use another")
    return options


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
