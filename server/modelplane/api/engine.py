"""Typed engine configuration shared by the model server and the operator.

`EngineConfig` is `spec.engine` of an LLMDeployment minus the container
image: the operator parses the resource into it, renders it into
`modelplane serve` flags, and the server turns the same object into vLLM
engine arguments. One model, so the CRD, the server flags and the chart
values cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Final, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from modelplane.api.extra_args import SERVE_COMMAND_LINE, extra_args_problem


class Quantization(StrEnum):
    NONE = "none"
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"
    GGUF = "gguf"
    COMPRESSED_TENSORS = "compressed-tensors"


class KVCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class Runner(StrEnum):
    """Which vLLM runner serves the model: text generation or pooling (embeddings)."""

    AUTO = "auto"
    GENERATE = "generate"
    POOLING = "pooling"


@dataclass(frozen=True)
class Flag:
    """How one `EngineConfig` field reaches the engine: declared once, on the field.

    `name` is the flag of both vLLM and `modelplane serve`; everything else
    (vLLM's arguments, the `modelplane serve` flags the operator renders, the
    server's command line, the flags `extraArgs` may not repeat) is generated
    from the fields in their order, as vLLM's `EngineArgs` builds its CLI.
    A bool defaulting to True is `--name/--no-name`; one defaulting to False is
    a switch; a list is repeated on `modelplane serve` (`--name=ITEM` each) and
    given to vLLM as one flag with every item, unless it is `passthrough`
    (`extraArgs`), whose items reach vLLM verbatim.
    """

    name: str
    aliases: tuple[str, ...] = ()  # other spellings vLLM accepts (refused in extraArgs too)
    vllm_default: object = None  # left out of vLLM's arguments at this value (its own default)
    always: bool = False  # passed to vLLM whatever the value
    with_flags: tuple[str, ...] = ()  # passed to vLLM before it (a switch it needs)
    generation_only: bool = False  # not for the pooling runner, which has no use for it
    none_word: str | None = None  # how None is spelled on the command line ("none")
    passthrough: bool = False  # a list of vLLM arguments, passed as they are


def flag_of(field: FieldInfo) -> Flag | None:
    return next((m for m in field.metadata if isinstance(m, Flag)), None)


def _nullable(field: FieldInfo) -> bool:
    return type(None) in get_args(field.annotation)


def scalar_type(field: FieldInfo) -> type:
    """The field's value type with None and constraints stripped (int, float, str, an enum)."""
    kind: Any = field.annotation
    while get_origin(kind) is Annotated or type(None) in get_args(kind):
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        else:
            kind = next(a for a in get_args(kind) if a is not type(None))
    return kind  # type: ignore[no-any-return]


# A host name as URLs carry it: lower-case DNS labels (an IPv4 address fits too).
MediaHost = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
    ),
]
DEFAULT_TOOL_CALL_PARSER = "hermes"
# The LoRA ranks vLLM's engine accepts as its largest (vllm.config.lora.MaxLoRARanks).
LORA_RANKS: Final = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Flags the server sets itself from its own options: refused in extraArgs as well.
SERVER_FLAGS: dict[str, str] = {
    "--model": "the server's --model option",
    "--served-model-name": "the server's --served-model-name option",
    "--api-key": "the server's API keys (--api-key-file / MODELPLANE_API_KEYS)",
    "--host": "the server's --host option",
    "--port": "the server's --port option",
}


class EngineConfig(BaseModel):
    """How the inference engine runs one model (LLMDeployment `spec.engine`)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    quantization: Annotated[
        Quantization, Flag("--quantization", aliases=("-q",), vllm_default=Quantization.NONE)
    ] = Field(Quantization.NONE, description="Weight quantization method of the checkpoint.")
    kv_cache_dtype: Annotated[
        KVCacheDtype, Flag("--kv-cache-dtype", vllm_default=KVCacheDtype.AUTO)
    ] = Field(KVCacheDtype.AUTO, description="KV-cache precision; fp8 halves KV memory.")
    dtype: Annotated[Dtype, Flag("--dtype", vllm_default=Dtype.AUTO)] = Field(
        Dtype.AUTO, description="Activation and weight dtype."
    )
    max_model_len: Annotated[Annotated[int, Field(ge=16)] | None, Flag("--max-model-len")] = Field(
        None, description="Context length in tokens; defaults to the model's own."
    )
    gpu_memory_utilization: Annotated[
        float,
        Field(gt=0.0, le=1.0),
        Flag("--gpu-memory-utilization", aliases=("--device-memory-utilization",), always=True),
    ] = Field(0.9, description="Fraction of GPU memory the engine may use.")
    tensor_parallel_size: Annotated[
        int, Field(ge=1), Flag("--tensor-parallel-size", aliases=("-tp",), vllm_default=1)
    ] = Field(1, description="GPUs one replica shards the model across.")
    # Enabled is vLLM's own default for models with a KV cache; saying so
    # explicitly breaks encoder-only (embedding) models, which have none.
    enable_prefix_caching: Annotated[bool, Flag("--enable-prefix-caching", vllm_default=True)] = (
        Field(True, description="Reuse KV cache of shared prefixes.")
    )
    enforce_eager: Annotated[bool, Flag("--enforce-eager", vllm_default=False)] = Field(
        False, description="Skip graph capture/compilation: faster start, slower decode."
    )
    runner: Annotated[Runner, Flag("--runner", vllm_default=Runner.AUTO)] = Field(
        Runner.AUTO, description="generate (chat) or pooling (embeddings)."
    )
    tool_call_parser: Annotated[
        str | None,
        Flag(
            "--tool-call-parser",
            with_flags=("--enable-auto-tool-choice",),
            generation_only=True,
            none_word="none",
        ),
    ] = Field(
        DEFAULT_TOOL_CALL_PARSER,
        description="vLLM tool-call parser; enables tool calls and named tool_choice.",
    )
    allowed_media_domains: Annotated[
        list[MediaHost], Field(max_length=64), Flag("--allowed-media-domains")
    ] = Field(
        default_factory=list,
        description="Hosts whose http(s) media URLs (image_url, audio_url, video_url) the "
        "engine may fetch. Empty: requests carrying such URLs are refused with a 400 "
        "(data: URLs always work).",
    )
    # LoRA: on when either is set or `modelplane serve --adapter` gives adapters (the
    # server then derives what is unset from them: server/modelplane/server/adapters.py).
    max_loras: Annotated[
        Annotated[int, Field(ge=1, le=256)] | None,
        Flag("--max-loras", with_flags=("--enable-lora",)),
    ] = Field(
        None,
        description="LoRA adapters one batch may use at once (each holds GPU memory); "
        "setting it serves LoRA adapters. Unset: the number of --adapter given, or none.",
    )
    max_lora_rank: Annotated[
        Annotated[int, Field(json_schema_extra={"enum": list(LORA_RANKS)})] | None,
        Flag("--max-lora-rank", with_flags=("--enable-lora",)),
    ] = Field(
        None,
        description="Largest LoRA adapter rank served (one of 1, 8, 16, 32, 64, 128, 256, "
        "320, 512); setting it serves LoRA adapters. Unset: the largest rank of the "
        "--adapter given, rounded up, else 16.",
    )
    extra_args: Annotated[list[str], Flag("--engine-arg", passthrough=True)] = Field(
        default_factory=list,
        description="More vLLM flags, from an allowlist of tuning flags "
        "(docs/reference/engine-flags.md); any spelling vLLM accepts is checked.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _lora_rank_is_one_vllm_serves(cls, value: int | None) -> int | None:
        if value is not None and value not in LORA_RANKS:
            ranks = ", ".join(str(r) for r in LORA_RANKS)
            raise ValueError(f"maxLoraRank must be one of {ranks}")
        return value

    @property
    def serves_lora(self) -> bool:
        return self.max_loras is not None or self.max_lora_rank is not None

    @field_validator("extra_args")
    @classmethod
    def _extra_args_are_allowed_engine_flags(
        cls, value: list[str], info: ValidationInfo
    ) -> list[str]:
        context = info.context if isinstance(info.context, dict) else {}
        problem = extra_args_problem(
            value, typed_flags(), from_serve_command_line=bool(context.get(SERVE_COMMAND_LINE))
        )
        if problem is not None:
            raise ValueError(problem)
        return value

    def vllm_args(self) -> list[str]:
        """vLLM engine flags for this configuration (model and serving flags excluded):
        each field's flag, left out at vLLM's own default."""
        args: list[str] = []
        extra: list[str] = []
        for name, flag in engine_flags():
            value = getattr(self, name)
            if isinstance(value, list):
                if flag.passthrough:
                    extra += value
                elif value:
                    args += [flag.name, *value]
                continue
            if value is None or (not flag.always and value == flag.vllm_default):
                continue
            if flag.generation_only and self.runner is Runner.POOLING:
                continue
            if isinstance(value, bool):
                args.append(flag.name if value else _negated(flag.name))
                continue
            args += [f for f in flag.with_flags if f not in args]
            args += [flag.name, _text(value)]
        return args + extra

    def serve_flags(self) -> list[str]:
        """`modelplane serve` flags that reproduce this configuration (used by the operator).

        Every setting is spelled out, so the pod template says what runs. Fields
        that always hold a value come first, the others after, each group in
        field order: the order is part of the pod template's hash, and a change
        would restart every model on an operator upgrade.
        """
        flags: list[str] = []
        fields = type(self).model_fields
        valued = [(n, f) for n, f in engine_flags() if _always_valued(fields[n])]
        others = [(n, f) for n, f in engine_flags() if not _always_valued(fields[n])]
        for name, flag in valued + others:
            value = getattr(self, name)
            if isinstance(value, list):
                flags += [f"{flag.name}={arg}" for arg in value]
            elif isinstance(value, bool):
                default = fields[name].default
                if value or default is True:
                    flags.append(flag.name if value else _negated(flag.name))
            elif value is None:
                if flag.none_word is not None:
                    flags += [flag.name, flag.none_word]
            else:
                flags += [flag.name, _text(value)]
        return flags


def _negated(name: str) -> str:
    return f"--no-{name.removeprefix('--')}"


def _text(value: object) -> str:
    return value.value if isinstance(value, StrEnum) else str(value)


def _always_valued(field: FieldInfo) -> bool:
    """A field whose flag always carries a value (not a switch, a list or an optional)."""
    kind = scalar_type(field)
    return kind is not bool and get_origin(field.annotation) is not list and not _nullable(field)


@cache
def engine_flags() -> tuple[tuple[str, Flag], ...]:
    """(field name, flag) of every EngineConfig field, in field order."""
    found = []
    for name, field in EngineConfig.model_fields.items():
        flag = flag_of(field)
        if flag is not None:
            found.append((name, flag))
    return tuple(found)


@cache
def typed_flags() -> dict[str, str]:
    """Engine flags the typed fields (or the server itself) own, with who owns each.
    Passing one again through `extraArgs` would let two settings disagree."""
    owned: dict[str, str] = {}
    for name, flag in engine_flags():
        if flag.passthrough:
            continue
        field = to_camel(name)
        for spelling in (flag.name, *flag.aliases, *flag.with_flags):
            owned[spelling] = field
        if scalar_type(EngineConfig.model_fields[name]) is bool:
            owned[_negated(flag.name)] = field
    return {**owned, **SERVER_FLAGS}


class ModelFacts(BaseModel):
    """What the server can read about a local model before starting the engine."""

    max_position_embeddings: int | None = None
    quantization_method: str | None = None
    is_gguf_file: bool = False


def engine_config_problems(config: EngineConfig, facts: ModelFacts, *, on_gpu: bool) -> list[str]:
    """Reasons this configuration cannot work for this model on this device.

    Each reason is one line that says what to change. An empty list means go.
    """
    problems: list[str] = []
    if config.quantization is Quantization.GGUF and not facts.is_gguf_file:
        problems.append("quantization gguf needs --model to point at a .gguf file")
    if facts.is_gguf_file and config.quantization not in (Quantization.GGUF, Quantization.NONE):
        problems.append(
            f"the model is a GGUF file but quantization is {config.quantization.value}; "
            "use quantization gguf"
        )
    ckpt = facts.quantization_method
    if (
        ckpt
        and config.quantization is not Quantization.NONE
        and config.quantization.value.replace("-", "_") != ckpt.replace("-", "_")
    ):
        problems.append(
            f"the checkpoint is quantized with {ckpt} but quantization is "
            f"{config.quantization.value}; set quantization to {ckpt} or none"
        )
    if (
        config.max_model_len is not None
        and facts.max_position_embeddings is not None
        and config.max_model_len > facts.max_position_embeddings
    ):
        problems.append(
            f"maxModelLen {config.max_model_len} exceeds the model's context of "
            f"{facts.max_position_embeddings} tokens; lower maxModelLen"
        )
    if not on_gpu:
        if config.quantization in (Quantization.FP8, Quantization.BITSANDBYTES):
            problems.append(
                f"quantization {config.quantization.value} needs an NVIDIA GPU; "
                "use none (or awq/gptq) on CPU"
            )
        if config.kv_cache_dtype is KVCacheDtype.FP8:
            problems.append("kvCacheDtype fp8 needs a GPU; use auto on CPU")
    return problems
