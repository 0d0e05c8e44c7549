"""`make images`: which tool builds, what the images are called, when they are pushed.

The Makefile runs for real; the image tools are stand-ins (small scripts on
a PATH of their own that record how they were called), because no test may
build a multi-gigabyte image. A stand-in's `info` fails when it plays a
Docker CLI without a daemon.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")

CHART = yaml.safe_load((REPO / "charts" / "modelplane" / "Chart.yaml").read_text())
VALUES = yaml.safe_load((REPO / "charts" / "modelplane" / "values.yaml").read_text())


def tools(tmp_path: Path, working: tuple[str, ...], broken: tuple[str, ...] = ()) -> Path:
    """A PATH holding sed (the Makefile reads the chart's version with it) and stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sed = shutil.which("sed")
    assert sed is not None
    (bin_dir / "sed").symlink_to(sed)
    for name in (*working, *broken):
        fails = "1" if name in broken else "0"
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> "{tmp_path}/calls"\n'
            f'[ "$1" = info ] && exit {fails}\n'
            "exit 0\n"
        )
        script.chmod(0o755)
    return bin_dir


def make_images(tmp_path: Path, bin_dir: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run(
        [MAKE, "--no-print-directory", "-s", "images", *variables],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_without_a_registry_the_images_get_the_names_the_chart_and_bundle_run(
    tmp_path: Path,
) -> None:
    result = make_images(tmp_path, tools(tmp_path, ("docker",)))
    assert result.returncode == 0, result.stderr
    operator = f"{VALUES['operator']['image']['repository']}:{CHART['appVersion']}"
    images = VALUES["operator"]["config"]["images"]
    assert calls(tmp_path) == [
        "docker info",
        f"docker build -f Dockerfile.operator -t {operator} .",
        f"docker build -f Dockerfile.server --build-arg VARIANT=cpu -t {images['cpu']} .",
        f"docker build -f Dockerfile.server -t {images['gpu']} .",
    ]
    assert "local only" in result.stdout  # and nothing pushed


def test_with_a_registry_they_are_named_under_it_versioned_and_pushed_by_the_tool_that_works(
    tmp_path: Path,
) -> None:
    """Docker without a daemon is passed over for Podman."""
    bin_dir = tools(tmp_path, ("podman",), broken=("docker",))
    variables = ("REGISTRY=registry.example.com/ml/", "TAG=1.2", "IMAGES=operator server-cpu")
    result = make_images(tmp_path, bin_dir, *variables)
    assert result.returncode == 0, result.stderr
    base = "registry.example.com/ml/modelplane"
    assert calls(tmp_path) == [
        "docker info",
        "podman info",
        f"podman build -f Dockerfile.operator -t {base}/operator:1.2 .",
        f"podman build -f Dockerfile.server --build-arg VARIANT=cpu -t {base}/server:1.2-cpu .",
        f"podman push {base}/operator:1.2",
        f"podman push {base}/server:1.2-cpu",
    ]
    # The README's helm install names the same images.
    readme = (REPO / "README.md").read_text()
    assert "make images REGISTRY=registry.example.com/ml TAG=0.1.0" in readme
    for value in (
        "operator.image.repository=registry.example.com/ml/modelplane/operator",
        "operator.image.tag=0.1.0",
        "operator.config.images.cpu=registry.example.com/ml/modelplane/server:0.1.0-cpu",
        "operator.config.images.gpu=registry.example.com/ml/modelplane/server:0.1.0-gpu",
    ):
        assert f"--set {value}" in readme


def test_buildah_builds_with_bud(tmp_path: Path) -> None:
    result = make_images(tmp_path, tools(tmp_path, ("buildah",)), "IMAGES=operator")
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path)[1].startswith("buildah bud -f Dockerfile.operator -t ")


def test_without_a_tool_it_says_what_it_needs_and_that_no_image_is_published(
    tmp_path: Path,
) -> None:
    result = make_images(tmp_path, tools(tmp_path, ()))
    assert result.returncode != 0
    assert "needs Docker, Podman or Buildah on PATH" in result.stderr
    assert "No Modelplane image is published anywhere" in result.stderr
    daemonless = tmp_path / "daemonless"
    daemonless.mkdir()
    broken = make_images(daemonless, tools(daemonless, (), broken=("docker",)))
    assert broken.returncode != 0
    assert "found docker, but '<tool> info' fails" in broken.stderr


def test_an_unknown_image_name_is_refused(tmp_path: Path) -> None:
    result = make_images(tmp_path, tools(tmp_path, ("docker",)), "IMAGES=operater")
    assert result.returncode != 0
    assert "unknown image 'operater' in IMAGES (operator, server-cpu, server-gpu)" in result.stderr
    assert calls(tmp_path) == ["docker info"]  # nothing built
