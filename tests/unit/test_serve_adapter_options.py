"""`modelplane serve --adapter NAME=PATH`: the option, adapter directories, and the LoRA
engine settings derived from them."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest

from modelplane.api.engine import EngineConfig
from modelplane.server.adapters import (
    AdapterError,
    LocalAdapter,
    engine_lora_rank,
    lora_rank_for,
    parse_adapter_arg,
    read_adapter_rank,
    read_local_adapters,
    with_lora_defaults,
)
from modelplane.server.options import OptionsError, add_serve_arguments, options_from_args
from modelplane.server.vllm_engine import vllm_cli_args
from tests.conftest import MODELPLANE


def write_config(path: Path, config: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (path / "adapter_config.json").write_text(text)
    return path


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(["--model", "/models/smollm2", *argv])


@pytest.mark.parametrize(
    "text,expected",
    [("sql=/a/b", ("sql", Path("/a/b"))), ("a=b=c", ("a", Path("b=c"))),
     ("x=rel/dir", ("x", Path("rel/dir")))],
)  # fmt: skip
def test_name_equals_path(text: str, expected: tuple[str, Path]) -> None:
    assert parse_adapter_arg(text) == expected


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--adapter", "sql"], "--adapter 'sql': expected NAME=PATH"),
        (["--adapter", "=/a"], "expected NAME=PATH"),
        (["--adapter", "sql="], "expected NAME=PATH"),
        (["--adapter=-bad=/a"], "adapter name '-bad' is not valid"),
        (["--adapter", "a/b=/a"], "adapter name 'a/b' is not valid"),
        (["--adapter", f"{'x' * 64}=/a"], "is not valid"),
        (["--adapter", "smollm2=/a"], "is the base model's served name"),
        (["--served-model-name", "m", "--adapter", "m=/a"], "adapter name 'm' is the base"),
        (["--adapter", "a=/x", "--adapter", "a=/y"], "adapter name 'a' is given twice"),
        (["--admin-port", "8000"], "--admin-port 8000 is the public --port"),
        (["--admin-port", "70000"], "admin_port"),
        (["--max-lora-rank", "12"], "maxLoraRank must be one of 1, 8, 16"),
    ],
)
def test_bad_adapter_options_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(OptionsError, match=re.escape(message)) as err:
        options_from_args(options(*argv))
    assert "\n" not in str(err.value)


def test_adapters_from_flags_and_the_admin_port() -> None:
    parsed = options_from_args(
        options("--adapter", "sql=/a/sql", "--adapter", "poet=/a/poet", "--admin-port", "8001")
    )
    assert [(a.name, a.path) for a in parsed.adapters] == [
        ("sql", Path("/a/sql")),
        ("poet", Path("/a/poet")),
    ]
    assert parsed.admin_port == 8001
    assert options_from_args(options()).admin_port == 0  # off unless given


@pytest.mark.parametrize(
    "config,message",
    [
        (None, "holds no adapter_config.json"),
        ("{not json", "is not valid JSON"),
        ('"\\ud800"', "must hold a JSON object"),
        ([1, 2], "must hold a JSON object"),
        ({"peft_type": "PREFIX_TUNING", "r": 8}, "peft_type is 'PREFIX_TUNING'"),
        ({"peft_type": "LORA"}, "'r' (the rank) must be a positive integer"),
        ({"r": 0}, "must be a positive integer"),
        ({"r": True}, "must be a positive integer"),
        ({"r": "8"}, "must be a positive integer"),
        ({"r": 1024}, "rank 1024 exceeds the largest the engine serves (512)"),
        ("[" * 100_000, "is not valid JSON"),
    ],
)
def test_an_adapter_directory_that_is_not_one_is_refused(
    tmp_path: Path, config: object, message: str
) -> None:
    path = tmp_path / "adapter"
    if config is None:
        path.mkdir()
    else:
        write_config(path, config)
    with pytest.raises(AdapterError, match=re.escape(message)):
        read_adapter_rank(path)


def test_a_missing_or_non_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        read_adapter_rank(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdapterError, match="is not a directory"):
        read_adapter_rank(tmp_path / "file")


@pytest.mark.parametrize(
    "rank,expected",
    [(1, 1), (2, 8), (8, 8), (9, 16), (64, 64), (300, 320), (512, 512), (513, None)],
)
def test_ranks_round_up_to_one_the_engine_takes(rank: int, expected: int | None) -> None:
    assert lora_rank_for(rank) == expected


def adapter(name: str, rank: int) -> LocalAdapter:
    return LocalAdapter(name, Path(f"/a/{name}"), rank)


@pytest.mark.parametrize(
    "engine,adapters,max_loras,max_rank",
    [
        (EngineConfig(), [], None, None),  # no adapters: LoRA stays off
        (EngineConfig(), [adapter("a", 8)], 1, 8),
        (EngineConfig(), [adapter("a", 8), adapter("b", 12), adapter("c", 4)], 3, 16),
        (EngineConfig(max_loras=8), [adapter("a", 8)], 8, 8),
        (EngineConfig(max_lora_rank=64), [adapter("a", 8)], 1, 64),
        (EngineConfig(max_loras=2), [], 2, None),  # LoRA on, adapters at run time
    ],
)
def test_lora_settings_default_from_the_adapters_given(
    engine: EngineConfig, adapters: list[LocalAdapter], max_loras: int | None, max_rank: int | None
) -> None:
    derived = with_lora_defaults(engine, adapters)
    assert (derived.max_loras, derived.max_lora_rank) == (max_loras, max_rank)


def test_a_set_rank_below_an_adapters_is_refused() -> None:
    with pytest.raises(AdapterError, match="maxLoraRank 8 is below the rank 16 of adapter 'b'"):
        with_lora_defaults(EngineConfig(max_lora_rank=8), [adapter("a", 8), adapter("b", 16)])


def test_the_running_engines_rank() -> None:
    assert engine_lora_rank(EngineConfig()) is None
    assert engine_lora_rank(EngineConfig(max_loras=4)) == 16  # vLLM's default
    assert engine_lora_rank(EngineConfig(max_lora_rank=64)) == 64


def test_the_engine_is_started_with_lora_and_the_adapters(tmp_path: Path) -> None:
    sql = write_config(tmp_path / "sql,v2", {"peft_type": "LORA", "r": 8})
    parsed = options_from_args(options("--adapter", f"sql={sql}"))
    local = read_local_adapters([(a.name, a.path) for a in parsed.adapters], parsed.model_name)
    engine = with_lora_defaults(parsed.engine, local)
    args = vllm_cli_args(parsed.model_copy(update={"engine": engine}))
    assert args[args.index("--enable-lora") :][:5] == [
        "--enable-lora", "--max-loras", "1", "--max-lora-rank", "8",
    ]  # fmt: skip
    modules = args[args.index("--lora-modules") + 1 :]
    assert [json.loads(m) for m in modules] == [
        {"name": "sql", "path": str(sql), "base_model_name": "smollm2"}
    ]
    assert "--enable-lora" not in vllm_cli_args(options_from_args(options()))


def test_an_adapter_path_that_is_not_an_adapter_stops_serve_with_one_line(tmp_path: Path) -> None:
    """Before the engine loads: exit 2 and one line that names the path, no traceback."""
    result = subprocess.run(
        [*MODELPLANE, "serve", "--model", str(tmp_path), "--adapter", f"sql={tmp_path}/none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"modelplane serve: adapter path {tmp_path}/none does not exist"
    ]
