"""`modelplane serve` options: config file, flags overriding it, one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from modelplane.api.engine import Quantization
from modelplane.server.options import OptionsError, add_serve_arguments, options_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_alone() -> None:
    options = options_from_args(parse("--model", "/models/llama-3-8b", "--port", "9000"))
    assert options.model_name == "llama-3-8b"
    assert options.port == 9000 and options.host == "127.0.0.1"
    assert options.engine.quantization is Quantization.NONE


def test_config_file_with_flag_overrides(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "model: /models/a\nservedModelName: alpha\ndrainTimeout: 90\n"
        "engine:\n  maxModelLen: 4096\n  quantization: awq\n  enablePrefixCaching: false\n"
    )
    options = options_from_args(parse("--config", str(config), "--max-model-len", "2048"))
    assert options.model_name == "alpha" and options.drain_timeout == 90
    assert options.engine.max_model_len == 2048  # the flag wins
    assert options.engine.quantization is Quantization.AWQ  # the file's value stays
    assert options.engine.enable_prefix_caching is False


def test_tool_parser_none_disables_tools() -> None:
    options = options_from_args(parse("--model", "/m", "--tool-call-parser", "none"))
    assert options.engine.tool_call_parser is None


@pytest.mark.parametrize(
    "argv,fragment",
    [
        ((), "--model is required"),
        (("--model", "/m", "--gpu-memory-utilization", "2"), "gpu_memory_utilization"),
        (("--model", "/m", "--engine-arg=--dtype=half"), "use that field instead"),
        (("--model", "/m", "--drain-timeout", "-1"), "drain_timeout"),
    ],
)
def test_bad_options_give_one_line_reason(argv: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(OptionsError) as exc:
        options_from_args(parse(*argv))
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "content,fragment",
    [("model: [unclosed", "not valid YAML"), ("- a\n- b\n", "mapping"), ("mdoel: x", "mdoel")],
)
def test_bad_config_file(tmp_path: Path, content: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    with pytest.raises(OptionsError, match=fragment):
        options_from_args(parse("--config", str(config), "--model", "/m"))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="cannot read config file"):
        options_from_args(parse("--config", str(tmp_path / "nope.yaml")))
