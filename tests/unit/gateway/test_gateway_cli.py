"""The gateway commands refuse unusable settings at once, with one line saying why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import MODELPLANE


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELPLANE, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_static_discovery_without_a_file_is_refused() -> None:
    result = run("gateway")
    assert result.returncode == 2
    assert "static discovery needs --config FILE" in result.stderr


def test_a_broken_discovery_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text("models:\n  m:\n    upstreams: [not-a-url]\n")
    result = run("gateway", "--config", str(config))
    assert result.returncode == 2
    assert "models.m.upstreams.0" in result.stderr


def test_bad_option_values_are_refused() -> None:
    result = run("gateway", "--config", "x.yaml", "--max-attempts", "0")
    assert result.returncode == 2 and "max_attempts" in result.stderr


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-1", "greater than or equal to 0"),
        ("5", "less than or equal to 1"),  # a second-long hold would idle a slot per request
        ("nan", "queue_anticipation"),
        ("soon", "invalid float value"),
    ],
)
def test_careless_queue_anticipation_is_refused(value: str, says: str) -> None:
    result = run("gateway", "--config", "x.yaml", "--queue-anticipation", value)
    assert result.returncode == 2
    assert "queue_anticipation" in result.stderr or "--queue-anticipation" in result.stderr
    assert says in result.stderr


def test_local_mode_refuses_a_bad_models_file(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - name: a\n    model: builtin:nothing\n")
    result = run("local", "--config", str(config))
    assert result.returncode == 2
    assert "unknown builtin model 'nothing'" in result.stderr


def test_chat_without_a_server_says_so() -> None:
    result = run("chat", "--url", "http://127.0.0.1:9", "--model", "m", stdin="hello\n")
    assert result.returncode == 1
    assert result.stderr.startswith("\nmodelplane chat:") and "connect" in result.stderr.lower()


def test_metrics_may_not_share_the_api_port() -> None:
    result = run("gateway", "--config", "x.yaml", "--port", "9000", "--metrics-port", "9000")
    assert result.returncode == 2
    assert "/metrics needs a port of its own" in result.stderr


def test_an_unreadable_upstream_key_file_is_refused_naming_the_model(tmp_path: Path) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(
        "models:\n  m:\n    upstreams: [http://127.0.0.1:9]\n    upstreamApiKeyFile: m.key\n"
    )
    result = run("gateway", "--config", str(config))
    assert result.returncode == 2
    assert "models.m.upstreamApiKeyFile: cannot read upstream API key file" in result.stderr
