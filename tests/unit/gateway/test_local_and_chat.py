"""Local mode's plan (ports, routes, examples) and the terminal chat's stream parsing."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelplane.gateway.chat_command import (
    Answer,
    ChatSession,
    api_base,
    chat_command,
    default_url,
    sse_data,
)
from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.routing.routes import Routing
from modelplane.local.stack import (
    DEFAULT_CONFIG,
    LocalConfig,
    LocalConfigError,
    LocalModel,
    examples_text,
    load_local_config,
    plan_replicas,
    serve_command,
    static_config_for,
)
from modelplane.server.examples import modelplane_command, shell_path, usage_examples
from modelplane.server.options import add_serve_arguments, options_from_args
from modelplane.server.vllm_engine import vllm_cli_args
from tests.conftest import MODELPLANE, free_port
from tests.unit.gateway.conftest import GatewayFactory, StubFactory, route

GATEWAY_DOC = Path(__file__).resolve().parents[3] / "docs" / "concepts" / "gateway.md"


def test_replicas_get_the_ports_after_the_gateway_unless_pinned() -> None:
    config = LocalConfig(
        models=[
            LocalModel(name="chat", model="/m/chat", replicas=2),
            LocalModel(name="embed", model="/m/embed", port=8001),
            LocalModel(name="code", model="/m/code"),
        ]
    )
    plan = plan_replicas(config, first_port=8001)
    assert [(r.model.name, r.port) for r in plan] == [
        ("chat", 8002),
        ("chat", 8003),
        ("embed", 8001),
        ("code", 8004),
    ]
    static = static_config_for(plan)
    assert static.models["chat"].upstreams == ["http://127.0.0.1:8002", "http://127.0.0.1:8003"]
    assert static.models["embed"].routing is Routing.LEAST_LOAD


def test_a_local_models_adapters_are_routed_by_the_gateway() -> None:
    model = LocalModel(
        name="chat",
        model="/m/chat",
        args=["--adapter", "sql=/a/sql", "--max-loras", "2", "--adapter=poet=/a/poet"],
    )
    static = static_config_for(plan_replicas(LocalConfig(models=[model]), first_port=8001))
    assert static.models["chat"].adapters == ["sql", "poet"]


def test_replicas_skip_the_gateways_metrics_port_and_may_not_pin_it() -> None:
    config = LocalConfig(models=[LocalModel(name="chat", model="/m/chat", replicas=2)])
    plan = plan_replicas(config, first_port=8001, reserved={8002})
    assert [r.port for r in plan] == [8001, 8003]
    pinned = LocalConfig(models=[LocalModel(name="chat", model="/m/chat", port=8081)])
    with pytest.raises(LocalConfigError, match="port 8081 is the gateway's metrics port"):
        plan_replicas(pinned, 8001, reserved={8081})


def test_duplicate_model_names_are_refused() -> None:
    config = LocalConfig(models=[LocalModel(name="a", model="x"), LocalModel(name="a", model="y")])
    with pytest.raises(LocalConfigError, match="unique: a"):
        plan_replicas(config, 8001)


GREEDY = '--engine-arg=--override-generation-config={"temperature": 0, "repetition_penalty": 1.1}'


def test_the_serve_command_carries_the_models_flags() -> None:
    (replica,) = plan_replicas(DEFAULT_CONFIG, 8001)
    cmd = serve_command(replica, "/models/smollm2", "text")
    assert cmd[1:] == [
        "serve", "--model", "/models/smollm2", "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", "8001", "--log-format", "text",
        GREEDY, "--max-model-len", "4096", "--enforce-eager",
    ]  # fmt: skip


def test_the_builtin_smollm2_answers_greedily_unless_its_args_say_otherwise() -> None:
    """`modelplane serve` accepts the default and hands vLLM its generation-config override;
    a model's own override replaces it, and other models get none."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    (replica,) = plan_replicas(DEFAULT_CONFIG, 8001)
    serve_args = serve_command(replica, "/m", "text")[2:]
    engine_args = vllm_cli_args(options_from_args(parser.parse_args(serve_args)))
    assert '--override-generation-config={"temperature": 0, "repetition_penalty": 1.1}' in (
        engine_args
    )
    own = '--engine-arg=--override-generation-config={"temperature": 0.7}'
    models = [
        LocalModel(name="a", model="builtin:smollm2", args=[own]),
        LocalModel(name="b", model="/models/smollm2"),
        LocalModel(name="c", model="builtin:minilm", args=["--runner", "pooling"]),
    ]
    assert [m.serve_args for m in models] == [[own], [], ["--runner", "pooling"]]


def test_examples_point_at_the_gateway_and_a_chat_model() -> None:
    config = LocalConfig(
        models=[
            LocalModel(name="minilm", model="builtin:minilm", args=["--runner", "pooling"]),
            LocalModel(name="smollm2", model="builtin:smollm2"),
        ]
    )
    text = examples_text("http://127.0.0.1:8000", config, needs_key=False)
    assert "curl -s http://127.0.0.1:8000/v1/chat/completions" in text
    assert '"model": "smollm2", "temperature": 0' in text  # not the embedding model
    assert "Chat page: http://127.0.0.1:8000/" in text
    assert "Models: minilm, smollm2" in text
    # This installation's script, so it runs without an activated virtualenv.
    assert f"Terminal chat: {modelplane_command()} chat --model smollm2" in text


def test_the_terminal_chat_line_names_the_url_only_when_it_is_not_the_default() -> None:
    assert "chat --url" not in examples_text("http://127.0.0.1:8000", DEFAULT_CONFIG, False)
    text = examples_text("http://127.0.0.1:9000", DEFAULT_CONFIG, False)
    assert f"Terminal chat: {modelplane_command()} chat --url http://127.0.0.1:9000" in text


def heredoc(text: str) -> tuple[str, str]:
    """The command that starts a `<<'EOF'` heredoc in `text`, and the heredoc's body."""
    match = re.search(r"^(\S+) - <<'EOF'\n(.*?)^EOF$", text, re.S | re.M)
    assert match, text
    return match.group(1), match.group(2)


@pytest.mark.parametrize("needs_key", [False, True])
def test_the_python_example_runs_as_pasted(needs_key: bool) -> None:
    """Flush left (an indented heredoc neither ends nor compiles), run by an interpreter
    that has `openai`, and importing only what it uses."""
    text = usage_examples("http://127.0.0.1:8000/v1", "smollm2", needs_key=needs_key)
    python, body = heredoc(text)
    assert python == shell_path(Path(sys.executable))  # this interpreter has openai
    assert importlib.util.find_spec("openai") is not None
    compile(body, "<banner>", "exec")
    assert ("import os" in body) is needs_key
    assert ('os.environ["MODELPLANE_API_KEY"]' in body) is needs_key
    assert "temperature=0," in body
    curl = text.split("curl -s ", 1)[1].split("\n\n", 1)[0]
    assert ('"Authorization: Bearer $MODELPLANE_API_KEY"' in curl) is needs_key
    bash = subprocess.run(["bash", "-n"], input=f"curl -s {curl}\n", text=True, check=False)
    assert bash.returncode == 0


def test_paths_in_commands_are_relative_below_the_working_directory(tmp_path: Path) -> None:
    script = tmp_path / ".venv" / "bin" / "python"
    assert shell_path(script, cwd=tmp_path) == ".venv/bin/python"
    assert shell_path(script, cwd=tmp_path / "elsewhere") == str(script)


def test_the_readme_local_models_example_is_a_valid_config(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(# local-models\.yaml.*?)```", GATEWAY_DOC.read_text(), re.S)
    assert block, "docs/concepts/gateway.md has a `# local-models.yaml` example"
    path = tmp_path / "local-models.yaml"
    path.write_text(block.group(1))
    config = load_local_config(path)
    assert len(config.models) >= 2


def test_bad_local_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - name: x\n    model: y\n    replicas: 0\n")
    with pytest.raises(ConfigError, match=r"models\.0\.replicas"):
        load_local_config(path)


def test_sse_parsing_stops_at_done() -> None:
    lines = ['data: {"a": 1}', "", ": comment", 'data: {"a": 2}', "data: [DONE]", 'data: {"a": 3}']
    assert list(sse_data(lines)) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://h:8000", "http://h:8000/v1"),
        ("http://h:8000/", "http://h:8000/v1"),
        ("http://h:8000/v1", "http://h:8000/v1"),
    ],
)
def test_api_base_accepts_with_or_without_v1(url: str, base: str) -> None:
    assert api_base(url) == base


def test_answer_stats_report_speed_and_first_token() -> None:
    assert Answer("x", 11, 0.2, 1.2).stats() == "[11 tokens, 10.0 tokens/s, first token 200 ms]"
    assert Answer("", 0, None, 1.0).stats() == "[no tokens]"


async def test_a_chat_session_keeps_the_conversation(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    import asyncio
    import io

    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    args = argparse.Namespace(
        url=gw.url, model=None, api_key=None, system="Be brief.", max_tokens=3, temperature=None
    )
    out = io.StringIO()
    session = ChatSession(args, out)
    model = await asyncio.to_thread(session.pick_model)
    first = await asyncio.to_thread(session.ask, model, "hello")
    await asyncio.to_thread(session.ask, model, "again")
    assert model == "m" and first.text == "t0 t1 t2 " and first.tokens == 3
    assert out.getvalue() == "t0 t1 t2 t0 t1 t2 "
    roles = [m["role"] for m in a.seen[1]["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://127.0.0.1:9000"),  # make run's everywhere
        ({"HOST": "10.0.0.5"}, "http://10.0.0.5:8000"),
        ({"HOST": "::1", "PORT": "9000"}, "http://[::1]:9000"),
    ],
)
def test_the_chat_follows_make_runs_host_and_port(env: dict[str, str], url: str) -> None:
    assert default_url(env) == url


def test_a_line_is_a_command_only_when_it_is_one_slash_word() -> None:
    lines = ("/reset", "/EXIT", "/nope", "/etc/hosts is a file", "hi")
    assert [chat_command(t) for t in lines] == ["/reset", "/exit", "/nope", None, None]


def chat_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "MODELPLANE_API_KEY")}
    return {**env, **extra}


def test_the_chat_names_the_address_nothing_answers_at() -> None:
    """Through the `modelplane` entry point, with PORT set as for `PORT=... make run`."""
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [*MODELPLANE, "chat"],
        input="hello\n",
        capture_output=True,
        text=True,
        env=chat_env(PORT=str(port)),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot connect to http://127.0.0.1:{port}/v1 (Connection refused)" in result.stderr
    assert "[Errno" not in result.stderr and "make run" in result.stderr


async def test_the_chat_cli_confirms_its_commands_and_keeps_stdout_for_answers(
    stub_replicas: StubFactory, serve_gateway: GatewayFactory
) -> None:
    (a,) = await stub_replicas(1)
    gw = await serve_gateway({"m": route("m", a.url)})
    port = gw.url.rsplit(":", 1)[1]
    chat = await asyncio.create_subprocess_exec(
        *MODELPLANE, "chat", "--max-tokens", "2", "--system", "Be brief.",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=chat_env(PORT=port),
    )  # fmt: skip
    script = b"hello\n/reset\n/help\n/nope\nagain\n/exit\nnever sent\n"
    out, err = await asyncio.wait_for(chat.communicate(script), 60)
    assert chat.returncode == 0, err.decode()
    assert out.decode() == "t0 t1 \nt0 t1 \n"  # the answers, and nothing else
    notes = err.decode().splitlines()
    assert "[conversation cleared (the system prompt is kept)]" in notes
    assert "[/reset starts over, /exit quits, /help lists the commands]" in notes
    assert "[unknown command /nope; /reset starts over, /exit quits, /help lists the commands]" in (
        notes
    )
    assert sum("tokens/s" in line for line in notes) == 2
    # After /reset the model saw a new conversation; after /exit, nothing more.
    assert [[m["role"] for m in seen["body"]["messages"]] for seen in a.seen] == [
        ["system", "user"],
        ["system", "user"],
    ]
