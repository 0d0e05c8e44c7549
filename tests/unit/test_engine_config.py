"""EngineConfig: engine flags, serve flags, and the start-up checks, as tables."""

from __future__ import annotations

import argparse
from enum import StrEnum

import pytest
from pydantic import ValidationError

from modelplane.api.engine import (
    EngineConfig,
    KVCacheDtype,
    ModelFacts,
    Quantization,
    engine_config_problems,
    engine_flags,
    scalar_type,
    typed_flags,
)
from modelplane.server.options import add_serve_arguments, options_from_args


def test_defaults_render_minimal_vllm_flags() -> None:
    assert EngineConfig().vllm_args() == [
        "--gpu-memory-utilization", "0.9",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]  # fmt: skip


def test_every_field_reaches_vllm() -> None:
    config = EngineConfig.model_validate(
        {
            "quantization": "awq", "kvCacheDtype": "fp8", "dtype": "float16",
            "maxModelLen": 8192, "gpuMemoryUtilization": 0.85, "tensorParallelSize": 2,
            "enablePrefixCaching": False, "enforceEager": True, "toolCallParser": "llama3_json",
            "extraArgs": ["--max-num-seqs=64"],
        }
    )  # fmt: skip
    assert config.vllm_args() == [
        "--quantization", "awq", "--kv-cache-dtype", "fp8", "--dtype", "float16",
        "--max-model-len", "8192", "--gpu-memory-utilization", "0.85",
        "--tensor-parallel-size", "2", "--no-enable-prefix-caching", "--enforce-eager",
        "--enable-auto-tool-choice", "--tool-call-parser", "llama3_json", "--max-num-seqs=64",
    ]  # fmt: skip


def test_pooling_runner_gets_no_tool_parser() -> None:
    args = EngineConfig(runner="pooling").vllm_args()
    assert "--tool-call-parser" not in args and args[-2:] == ["--runner", "pooling"]


@pytest.mark.parametrize(
    "extra",
    [["--quantization=awq"], ["--max-model-len", "10"], ["-tp", "2"], ["--api-key=x"]],
)
def test_extra_args_cannot_override_typed_fields(extra: list[str]) -> None:
    with pytest.raises(ValidationError, match="use that field instead"):
        EngineConfig(extra_args=extra)


@pytest.mark.parametrize(
    "field,value",
    [("gpuMemoryUtilization", 1.5), ("tensorParallelSize", 0), ("maxModelLen", 1),
     ("quantization", "int3"), ("unknownField", 1)],
)  # fmt: skip
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        EngineConfig.model_validate({field: value})


@pytest.mark.parametrize(
    "config",
    [
        EngineConfig(),
        EngineConfig.model_validate(
            {"quantization": "gptq", "kvCacheDtype": "fp8", "maxModelLen": 2048,
             "enablePrefixCaching": False, "enforceEager": True, "toolCallParser": None,
             "runner": "generate", "gpuMemoryUtilization": 0.5, "tensorParallelSize": 4,
             "allowedMediaDomains": ["images.example.com", "cdn.example.org"],
             "extraArgs": ["--max-num-seqs=8", "--block-size", "16"]}
        ),
    ],
)  # fmt: skip
def test_serve_flags_round_trip_through_the_server_cli(config: EngineConfig) -> None:
    """What the operator renders is parsed by `modelplane serve` back into the same config."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--model", "/m", *config.serve_flags()])
    assert options_from_args(args).engine == config


def _not_the_default(name: str) -> object:
    """A valid value of the field other than its default, found from its type."""
    field = EngineConfig.model_fields[name]
    default = field.get_default(call_default_factory=True)
    kind = scalar_type(field)
    if isinstance(default, list):
        return ["--max-num-seqs=8"] if name == "extra_args" else ["images.example.com"]
    if kind is bool:
        return not default
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return next(m for m in kind if m != default and m.value != "pooling")
    return {int: 64, float: 0.5, str: "llama3_json"}[kind]


@pytest.mark.parametrize("name", [name for name, _ in engine_flags()])
def test_every_engine_field_reaches_every_surface_from_its_one_declaration(name: str) -> None:
    """A field declared with a Flag needs nothing else: the server's CLI parses it, the
    operator's serve flags carry it, vLLM gets it, and extraArgs may not repeat it."""
    flag = dict(engine_flags())[name]
    config = EngineConfig.model_validate({name: _not_the_default(name)})
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    parsed = options_from_args(parser.parse_args(["--model", "/m", *config.serve_flags()]))
    assert parsed.engine == config
    rendered = " ".join(config.vllm_args())
    if name == "extra_args":
        assert rendered.endswith("--max-num-seqs=8")
    else:
        assert flag.name.removeprefix("--") in rendered
        assert flag.name in typed_flags()
        with pytest.raises(ValidationError, match=f"extraArgs sets {flag.name}"):
            EngineConfig(extra_args=[f"{flag.name}=1"])


FACTS = ModelFacts(max_position_embeddings=8192)


@pytest.mark.parametrize(
    "config,facts,on_gpu,expected",
    [
        (EngineConfig(), FACTS, False, []),
        (EngineConfig(quantization=Quantization.FP8), FACTS, True, []),
        (EngineConfig(quantization=Quantization.FP8), FACTS, False, ["needs an NVIDIA GPU"]),
        (EngineConfig(kv_cache_dtype=KVCacheDtype.FP8), FACTS, False, ["kvCacheDtype fp8"]),
        (EngineConfig(max_model_len=16384), FACTS, True, ["exceeds the model's context of 8192"]),
        (EngineConfig(quantization=Quantization.GGUF), FACTS, True, ["needs --model to point"]),
        (EngineConfig(quantization=Quantization.AWQ), ModelFacts(is_gguf_file=True), True,
         ["use quantization gguf"]),
        (EngineConfig(quantization=Quantization.AWQ), ModelFacts(quantization_method="gptq"),
         True, ["quantized with gptq"]),
        (EngineConfig(quantization=Quantization.COMPRESSED_TENSORS),
         ModelFacts(quantization_method="compressed-tensors"), True, []),
        (EngineConfig(), ModelFacts(quantization_method="awq"), True, []),
    ],
)  # fmt: skip
def test_start_up_checks(
    config: EngineConfig, facts: ModelFacts, on_gpu: bool, expected: list[str]
) -> None:
    problems = engine_config_problems(config, facts, on_gpu=on_gpu)
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem
        assert "\n" not in problem
