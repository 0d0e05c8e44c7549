"""The e2e suite (e2e/, `make e2e`) skips, saying why, wherever it cannot reach a kind cluster.

The decision is a pure function, tested on tables; the suite itself is then
collected by a real pytest run without KUBECONFIG, as on CI, and every test
must be reported skipped with the reason rather than fail or error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.environment import TOOLS, Environment, api_problem, kind_cluster_name, skip_reason

REPO = Path(__file__).resolve().parents[2]
ALL_TOOLS = {name: f"/usr/bin/{name}" for name in TOOLS}


def never_asked() -> str | None:
    raise AssertionError("the API must not be probed before everything else is there")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (Environment(None, ALL_TOOLS, "modelplane"), "KUBECONFIG is not set"),
        (Environment("", ALL_TOOLS, "modelplane"), "KUBECONFIG is not set"),
        (
            Environment("/k", {**ALL_TOOLS, "docker": None, "kind": None}, "modelplane"),
            "docker, kind not found",
        ),
        (Environment("/k", ALL_TOOLS, None), "not a kind cluster"),
    ],
)
def test_what_is_missing_is_named(env: Environment, expected: str) -> None:
    reason = skip_reason(env, never_asked)
    assert reason is not None and expected in reason


def test_a_cluster_that_does_not_answer_is_a_skip_and_one_that_does_runs() -> None:
    env = Environment("/k", ALL_TOOLS, "modelplane")
    reason = skip_reason(env, lambda: "dial tcp 127.0.0.1:6443: connect: connection refused")
    assert reason is not None and "does not answer" in reason and "6443" in reason
    assert skip_reason(env, lambda: None) is None


def test_the_kind_cluster_comes_from_the_context_or_the_environment() -> None:
    assert kind_cluster_name("kind-modelplane", {}) == "modelplane"
    assert kind_cluster_name("gke_prod", {}) is None
    assert kind_cluster_name("gke_prod", {"MODELPLANE_E2E_KIND_CLUSTER": "ci"}) == "ci"


def test_the_api_probe_reports_kubectl_s_last_word(tmp_path: Path) -> None:
    """A stand-in kubectl (a shell script: no cluster and no kubectl here) that fails as
    kubectl does when the API server is down."""
    fake = tmp_path / "kubectl"
    fake.write_text("#!/bin/sh\necho 'E1124 trying'>&2\necho 'connection refused' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert api_problem(str(fake)) == "connection refused"
    assert api_problem(None) == "kubectl not found"


def test_the_suite_skips_without_a_cluster() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "e2e", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "e2e: KUBECONFIG is not set" in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert " skipped" in summary and "passed" not in summary and "error" not in summary
