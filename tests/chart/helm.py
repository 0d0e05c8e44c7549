"""Run the real helm binary on the chart, as a user would.

`make tools` extracts helm into .tools/ (pinned by version and checksum); a
missing binary fails the test with that instruction rather than skipping it,
so a broken install can never pass for a green run.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelplane"
HELM = REPO / ".tools" / "helm"
RELEASE = "mp"
NAMESPACE = "modelplane-system"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(f"helm not found at {HELM}: run `make tools`")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )


@contextmanager
def values_file(values: dict[str, Any] | None) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        yield f.name


def lint(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    with values_file(values) as path:
        return helm("lint", "--strict", str(CHART), "-f", path)


def template(
    values: dict[str, Any] | None = None, kube_version: str | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with `values` given as a values file."""
    extra = ["--kube-version", kube_version] if kube_version else []
    with values_file(values) as path:
        return helm(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", path, *extra, *args
        )


def notes(values: dict[str, Any] | None = None) -> str:
    """The NOTES.txt `helm install` prints, rendered without a cluster (--dry-run=client)."""
    with values_file(values) as path:
        result = helm(
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", path,
            "--dry-run=client",
        )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"helm install --dry-run=client failed:\n{result.stderr}")
    return result.stdout.partition("\nNOTES:\n")[2]


@functools.cache
def _rendered(values_json: str, kube_version: str | None) -> str:
    result = template(json.loads(values_json), kube_version)
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}")
    return result.stdout


def render(
    values: dict[str, Any] | None = None, kube_version: str | None = None
) -> list[dict[str, Any]]:
    """The objects `helm template` renders (fresh objects; helm runs once per values and
    version in a test session); fails the test with helm's message."""
    text = _rendered(json.dumps(values or {}, sort_keys=True), kube_version)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find_all(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = find_all(docs, kind, name_suffix)
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def operator_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's config file as the chart writes it into its ConfigMap."""
    config: dict[str, Any] = yaml.safe_load(
        find(docs, "ConfigMap", "-operator-config")["data"]["operator.yaml"]
    )
    return config


def container(docs: list[dict[str, Any]], deployment_suffix: str) -> dict[str, Any]:
    deployment = find(docs, "Deployment", deployment_suffix)
    first: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return first
