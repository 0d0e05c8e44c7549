"""The images run the same entry points the tests run, as a non-root user."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from modelplane.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def instructions(dockerfile: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in dockerfile.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def test_server_image_entrypoint_is_modelplane_serve() -> None:
    found = instructions(REPO / "Dockerfile.server")
    (entrypoint,) = found["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["modelplane", "serve"]  # exec form
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["modelplane"] == "modelplane.cli:main"
    default_args = json.loads(found["CMD"][0])
    args = build_parser().parse_args(["serve", *default_args, "--model", "/m"])
    assert (args.host, args.port) == ("0.0.0.0", 8000)


def test_server_image_runs_as_non_root() -> None:
    (user,) = instructions(REPO / "Dockerfile.server")["USER"]
    assert user.split(":")[0] not in ("root", "0")


def test_control_plane_image_runs_the_operator_and_gateway_without_an_engine() -> None:
    found = instructions(REPO / "Dockerfile.operator")
    (entrypoint,) = found["ENTRYPOINT"]
    assert json.loads(entrypoint) == ["modelplane", "operator"]
    args = build_parser().parse_args(["operator"])
    assert args.handler.__module__ == "modelplane.operator.operator_command"
    (user,) = found["USER"]
    assert user.split(":")[0] not in ("root", "0")
    (install,) = [run for run in found["RUN"] if "pip install" in run]
    assert '".[operator,gateway]"' in install and "vllm" not in install and "[cpu" not in install


def test_modelplane_operator_runs_kopf_with_the_arguments_the_tests_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kopf.cli

    from modelplane.operator.config import CONFIG_ENV, load_config
    from modelplane.operator.operator_command import kopf_args

    config_path = tmp_path / "operator.yaml"
    config_path.write_text("namespaces: [llm]\nhealthPort: 9000\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(kopf.cli.main, "main", lambda args, **_: calls.append(list(args)))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    args = build_parser().parse_args(["operator", "--config", str(config_path)])
    assert args.handler(args) == 0
    assert calls == [kopf_args(load_config(config_path))]
    assert os.environ[CONFIG_ENV] == str(config_path.resolve())
