"""Local mode's plan (ports, routes, examples) and the terminal chat's stream parsing."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from modelplane.gateway.chat_command import Answer, ChatSession, api_base, sse_data
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


def test_the_serve_command_carries_the_models_flags() -> None:
    (replica,) = plan_replicas(DEFAULT_CONFIG, 8001)
    cmd = serve_command(replica, "/models/smollm2", "text")
    assert cmd[1:] == [
        "serve", "--model", "/models/smollm2", "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", "8001", "--log-format", "text",
        "--max-model-len", "4096", "--enforce-eager",
    ]  # fmt: skip


def test_examples_point_at_the_gateway_and_a_chat_model() -> None:
    config = LocalConfig(
        models=[
            LocalModel(name="minilm", model="builtin:minilm", args=["--runner", "pooling"]),
            LocalModel(name="smollm2", model="builtin:smollm2"),
        ]
    )
    text = examples_text("http://127.0.0.1:8000", config, needs_key=False)
    assert "curl -s http://127.0.0.1:8000/v1/chat/completions" in text
    assert '"model": "smollm2"' in text  # not the embedding model
    assert "Chat page: http://127.0.0.1:8000/" in text
    assert "Models: minilm, smollm2" in text


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
