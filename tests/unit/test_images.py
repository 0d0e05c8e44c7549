"""The server image runs the same entry point the tests run, as a non-root user."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

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
