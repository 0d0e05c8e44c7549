"""`engine.extraArgs`: an allowlist, checked against every spelling vLLM's own parser accepts.

The hostile spellings below are parsed by the installed vLLM's real argument
parser (`FlexibleArgumentParser` with its server flags, the one `modelplane
serve` uses) to show that each one really sets the setting it smuggles in;
then `EngineConfig` must refuse it with a sentence that names the flag and
says why. The allowed spellings must parse in vLLM without an error.
"""

from __future__ import annotations

import argparse
from functools import cache
from typing import Any

import pytest
from pydantic import ValidationError

from modelplane.api.engine import EngineConfig, typed_flags
from modelplane.api.extra_args import ALLOWED, FROM_THE_SPEC, UNSAFE, Takes
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.server.options import add_serve_arguments, options_from_args
from tests.conftest import REPO


@cache
def vllm_parser() -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm"))  # type: ignore[no-untyped-call]


def vllm_parses(extra: list[str]) -> argparse.Namespace:
    parsed: argparse.Namespace = vllm_parser().parse_args(["--model", "/m", *extra])
    return parsed


# (extraArgs, the vLLM setting it changes, the value vLLM reads, words of the refusal)
SMUGGLED = [
    (["--served_model_name=other"], "served_model_name", ["other"], "--served-model-name"),
    (["--api_key", "k"], "api_key", ["k"], "the server's API keys"),
    (["--api-key=k"], "api_key", ["k"], "the server's API keys"),
    (["--trust-remote-code"], "trust_remote_code", True, "runs Python code shipped"),
    (["--trust_remote_code"], "trust_remote_code", True, "written --trust_remote_code"),
    (["--trust-remote"], "trust_remote_code", True, "--trust-remote: it is not one of"),
    (["--allowed-local-media-path=/"], "allowed_local_media_path", "/", "read files"),
    (["--allowed_local_media_path", "/"], "allowed_local_media_path", "/", "read files"),
    (["--allowed-media-domains", "evil.example"], "allowed_media_domains", ["evil.example"],
     "allowedMediaDomains already controls"),
    (["--tool_parser_plugin=/tmp/p.py"], "tool_parser_plugin", "/tmp/p.py", "Python code"),
    (["--enable-prompt-embeds"], "enable_prompt_embeds", True, "tensors"),
    (["-tp=2"], "tensor_parallel_size", 2, "tensorParallelSize already controls"),
    (["--no-enable-prefix-caching"], "enable_prefix_caching", False, "enablePrefixCaching"),
    (["--device_memory_utilization=0.5"], "gpu_memory_utilization", 0.5,
     "gpuMemoryUtilization already controls"),
    (["--enable-auto-tool-choice"], "enable_auto_tool_choice", True, "toolCallParser"),
    (["--revision", "evil"], "revision", "evil", "derives from spec.model.revision"),
    (["--load-format=dummy"], "load_format", "dummy", "derives from spec.model.source"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "setting", "value", "why"), SMUGGLED)
def test_every_spelling_of_a_refused_flag_is_refused(
    extra: list[str], setting: str, value: object, why: str
) -> None:
    assert getattr(vllm_parses(extra), setting) == value  # vLLM would take it
    with pytest.raises(ValidationError) as refused:
        EngineConfig(extra_args=extra)
    message = refused.value.errors()[0]["msg"]
    assert why in message, message
    assert "extraArgs" in message


# Malformed lists: each reads as something vLLM would misparse or refuse at start-up.
@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--max-num-seqs 64"], "one flag or value per item"),
        (["64"], "a value with no flag before it"),
        (["--max-num-seqs"], "--max-num-seqs without a value"),
        (["--max-num-seqs", "--seed", "1"], "--max-num-seqs without a value"),
        (["--enable-chunked-prefill=true"], "it is a switch"),
        (["--enable-chunked-prefill", "yes"], "a value with no flag before it"),
        (["--max-num-seqs.x=1"], "only JSON flags take dotted keys"),
        (["--no-max-num-seqs"], "is not a switch"),
        (["--cudagraph-capture-sizes"], "without a value"),
        ([""], "is empty"),
        (["-x"], "-x: it is not one of"),
        (["--config", "/etc/vllm.yaml"], "reads more flags from a file"),
    ],
)
def test_malformed_extra_args_are_refused_with_a_reason(extra: list[str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        EngineConfig(extra_args=extra)


ACCEPTED = [
    ["--max-num-seqs", "64"],
    ["--max_num_seqs=64", "--max-num-batched-tokens=8192"],
    ["--enable-chunked-prefill"],
    ["--no-enable-chunked-prefill"],
    ["--compilation-config.mode=3"],
    ["--compilation-config", '{"cudagraph_capture_sizes": [1, 2, 4]}'],
    ["-O3"],
    ["-O", "2"],
    ["-pp", "2", "-dp=2", "-ep"],
    ["--cudagraph-capture-sizes", "1", "2", "4", "--seed", "7"],
    ["--seed", "-1"],
    ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3}'],
    ["--limit-mm-per-prompt", '{"image": 2}'],
    ["--hf-overrides", '{"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}'],
    ["--reasoning-parser", "deepseek_r1", "--max-logprobs=5"],
    ["--block-size=16", "--cpu-offload-gb", "4"],
]


@pytest.mark.parametrize("extra", ACCEPTED, ids=[" ".join(e)[:40] for e in ACCEPTED])
def test_the_common_tuning_flags_pass_in_any_spelling_vllm_reads(extra: list[str]) -> None:
    assert EngineConfig(extra_args=extra).extra_args == extra
    vllm_parses(extra)  # and vLLM takes them


def test_the_allowlist_names_real_flags_of_the_installed_vllm() -> None:
    """Every allowed flag is one of vLLM's, taking what the table says it takes; no
    allowed flag is also refused or owned by a typed field."""
    actions = {o: a for a in vllm_parser()._actions for o in a.option_strings}
    for flag, takes in {**ALLOWED, **{f: t for f, (t, _) in FROM_THE_SPEC.items()}}.items():
        action = actions.get(flag)
        assert action is not None, f"{flag} is not a flag of the installed vLLM"
        if takes is Takes.SWITCH:
            assert action.nargs == 0, flag
        elif takes is Takes.VALUES:
            assert action.nargs in ("+", "*"), flag
        else:
            assert action.nargs is None, flag
    for flag in UNSAFE:
        assert flag in actions, f"{flag} is not a flag of the installed vLLM"
    assert not set(ALLOWED) & (set(UNSAFE) | set(typed_flags()) | set(FROM_THE_SPEC))


def test_flags_the_operator_derives_pass_on_the_serve_command_line_only() -> None:
    """The operator renders `--engine-arg=--revision=v2` for spec.model.revision; a tenant
    writing the same in extraArgs is told to set the field."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--model", "/m", "--engine-arg=--revision=v2"])
    assert options_from_args(args).engine.extra_args == ["--revision=v2"]
    spec = {"model": {"source": "hf://org/model"}, "engine": {"extraArgs": ["--revision=v2"]}}
    with pytest.raises(ValidationError, match=r"spec\.model\.revision"):
        LLMDeploymentSpec.model_validate(spec)


def test_allowed_media_domains_reach_vllm_as_one_flag() -> None:
    config = EngineConfig.model_validate({"allowedMediaDomains": ["a.example", "b.example"]})
    args = config.vllm_args()
    at = args.index("--allowed-media-domains")
    assert args[at + 1 : at + 3] == ["a.example", "b.example"]
    assert vllm_parses(args).allowed_media_domains == ["a.example", "b.example"]
    assert "--allowed-media-domains" not in EngineConfig().vllm_args()


@pytest.mark.parametrize(
    "hosts", [["Images.Example.com"], ["https://a.example"], ["a.example/x"], ["*.example"]]
)
def test_allowed_media_domains_are_plain_host_names(hosts: list[str]) -> None:
    with pytest.raises(ValidationError, match="allowedMediaDomains"):
        EngineConfig.model_validate({"allowedMediaDomains": hosts})


def test_the_reference_page_lists_every_allowed_flag() -> None:
    page = (REPO / "docs" / "reference" / "engine-flags.md").read_text()
    missing = [flag for flag in ALLOWED if f"`{flag}`" not in page]
    assert not missing, missing


def test_the_operator_reports_a_smuggled_flag_as_an_invalid_spec() -> None:
    """What `kubectl describe llmd` shows: the field, the flag as written, and why."""
    from modelplane.operator.config import OperatorConfig
    from modelplane.operator.reconcile.parsing import INVALID_SPEC, parse_spec

    raw = {
        "model": {"source": "hf://org/model"},
        "engine": {"extraArgs": ["--served_model_name=other-teams-model"]},
    }
    parsed = parse_spec("chat", raw, OperatorConfig())
    assert parsed.spec is None and parsed.reason == INVALID_SPEC
    assert parsed.problems == (
        "spec.engine.extraArgs: extraArgs sets --served-model-name (written "
        "--served_model_name), which the server's --served-model-name option already "
        "controls; use that field instead",
    )
