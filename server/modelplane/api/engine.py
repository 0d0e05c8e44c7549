"""Typed engine configuration shared by the model server and the operator.

`EngineConfig` is `spec.engine` of an LLMDeployment minus the container
image: the operator parses the resource into it, renders it into
`modelplane serve` flags, and the server turns the same object into vLLM
engine arguments. One model, so the CRD, the server flags and the chart
values cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


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


# Engine flags the typed fields own. Passing one of them again through
# `extraArgs` would let two settings disagree, so it is refused.
TYPED_FLAGS: dict[str, str] = {
    "--quantization": "quantization",
    "-q": "quantization",
    "--kv-cache-dtype": "kvCacheDtype",
    "--dtype": "dtype",
    "--max-model-len": "maxModelLen",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--tensor-parallel-size": "tensorParallelSize",
    "-tp": "tensorParallelSize",
    "--enable-prefix-caching": "enablePrefixCaching",
    "--no-enable-prefix-caching": "enablePrefixCaching",
    "--enforce-eager": "enforceEager",
    "--tool-call-parser": "toolCallParser",
    "--runner": "runner",
    "--model": "the server's --model option",
    "--served-model-name": "the server's --served-model-name option",
    "--api-key": "the server's API keys (--api-key-file / MODELPLANE_API_KEYS)",
    "--host": "the server's --host option",
    "--port": "the server's --port option",
}

DEFAULT_TOOL_CALL_PARSER = "hermes"


class EngineConfig(BaseModel):
    """How the inference engine runs one model (LLMDeployment `spec.engine`)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    quantization: Quantization = Field(
        Quantization.NONE, description="Weight quantization method of the checkpoint."
    )
    kv_cache_dtype: KVCacheDtype = Field(
        KVCacheDtype.AUTO, description="KV-cache precision; fp8 halves KV memory."
    )
    dtype: Dtype = Field(Dtype.AUTO, description="Activation and weight dtype.")
    max_model_len: Annotated[int, Field(ge=16)] | None = Field(
        None, description="Context length in tokens; defaults to the model's own."
    )
    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9, description="Fraction of GPU memory the engine may use."
    )
    tensor_parallel_size: Annotated[int, Field(ge=1)] = Field(
        1, description="GPUs one replica shards the model across."
    )
    enable_prefix_caching: bool = Field(True, description="Reuse KV cache of shared prefixes.")
    enforce_eager: bool = Field(
        False, description="Skip graph capture/compilation: faster start, slower decode."
    )
    tool_call_parser: str | None = Field(
        DEFAULT_TOOL_CALL_PARSER,
        description="vLLM tool-call parser; enables tool calls and named tool_choice.",
    )
    runner: Runner = Field(Runner.AUTO, description="generate (chat) or pooling (embeddings).")
    extra_args: list[str] = Field(
        default_factory=list, description="Passed to the engine verbatim (escape hatch)."
    )

    @field_validator("extra_args")
    @classmethod
    def _extra_args_do_not_shadow_typed_fields(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in TYPED_FLAGS:
                raise ValueError(
                    f"extraArgs sets {flag}, which {TYPED_FLAGS[flag]} already controls; "
                    "use that field instead"
                )
        return value

    def _prefix_caching_flag(self) -> str:
        prefix = "" if self.enable_prefix_caching else "no-"
        return f"--{prefix}enable-prefix-caching"

    def vllm_args(self) -> list[str]:
        """vLLM engine flags for this configuration (model and serving flags excluded)."""
        args: list[str] = []
        if self.quantization is not Quantization.NONE:
            args += ["--quantization", self.quantization.value]
        if self.kv_cache_dtype is not KVCacheDtype.AUTO:
            args += ["--kv-cache-dtype", self.kv_cache_dtype.value]
        if self.dtype is not Dtype.AUTO:
            args += ["--dtype", self.dtype.value]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        args += ["--gpu-memory-utilization", repr(self.gpu_memory_utilization)]
        if self.tensor_parallel_size != 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if not self.enable_prefix_caching:
            # Enabled is vLLM's own default for models with a KV cache; saying
            # so explicitly breaks encoder-only (embedding) models, which have none.
            args.append("--no-enable-prefix-caching")
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.runner is not Runner.AUTO:
            args += ["--runner", self.runner.value]
        if self.tool_call_parser and self.runner is not Runner.POOLING:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        return args + list(self.extra_args)

    def serve_flags(self) -> list[str]:
        """`modelplane serve` flags that reproduce this configuration (used by the operator)."""
        flags = [
            "--quantization", self.quantization.value,
            "--kv-cache-dtype", self.kv_cache_dtype.value,
            "--dtype", self.dtype.value,
            "--gpu-memory-utilization", repr(self.gpu_memory_utilization),
            "--tensor-parallel-size", str(self.tensor_parallel_size),
            "--runner", self.runner.value,
        ]  # fmt: skip
        if self.max_model_len is not None:
            flags += ["--max-model-len", str(self.max_model_len)]
        flags.append(self._prefix_caching_flag())
        if self.enforce_eager:
            flags.append("--enforce-eager")
        flags += ["--tool-call-parser", self.tool_call_parser or "none"]
        flags += [f"--engine-arg={arg}" for arg in self.extra_args]
        return flags


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
