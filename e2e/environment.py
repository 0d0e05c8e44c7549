"""Can the e2e tests run here? One pure decision, and the probes that feed it.

They need a cluster to talk to (KUBECONFIG set and its API answering), the
tools that build and load images into it and install the chart (docker,
kind, kubectl, helm), and the name of the kind cluster to load images into.
Anything missing skips the whole suite with a reason that says what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
HELM_IN_REPO: Final = REPO / ".tools" / "helm"
KIND_CLUSTER_ENV: Final = "MODELPLANE_E2E_KIND_CLUSTER"
TOOLS: Final = ("docker", "kind", "kubectl", "helm")


@dataclass(frozen=True)
class Environment:
    kubeconfig: str | None
    tools: Mapping[str, str | None]  # name -> path, None when missing
    kind_cluster: str | None = None  # from the env var, else from a kind-* context


def skip_reason(env: Environment, api_problem: Callable[[], str | None]) -> str | None:
    """Why the e2e tests cannot run, or None when they can. `api_problem` is only asked
    once everything else is there (it talks to the cluster)."""
    if not env.kubeconfig:
        return (
            "KUBECONFIG is not set: create a cluster (kind create cluster --name modelplane) "
            "and export KUBECONFIG pointing at it"
        )
    missing = [name for name in TOOLS if not env.tools.get(name)]
    if missing:
        return f"{', '.join(missing)} not found (the e2e tests build and load images with them)"
    if not env.kind_cluster:
        return (
            f"the current context is not a kind cluster: set {KIND_CLUSTER_ENV} to the kind "
            "cluster the images should be loaded into"
        )
    problem = api_problem()
    if problem:
        return f"the Kubernetes API of KUBECONFIG does not answer: {problem}"
    return None


def find_tools() -> dict[str, str | None]:
    found: dict[str, str | None] = {name: shutil.which(name) for name in TOOLS}
    if found["helm"] is None and HELM_IN_REPO.is_file():
        found["helm"] = str(HELM_IN_REPO)  # `make tools` puts a pinned helm there
    return found


def current_context(kubectl: str | None) -> str | None:
    if kubectl is None:
        return None
    result = subprocess.run(
        [kubectl, "config", "current-context"], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def kind_cluster_name(context: str | None, environ: Mapping[str, str]) -> str | None:
    """kind names its contexts `kind-<cluster>`."""
    if environ.get(KIND_CLUSTER_ENV):
        return environ[KIND_CLUSTER_ENV]
    if context and context.startswith("kind-"):
        return context.removeprefix("kind-")
    return None


def detect(environ: Mapping[str, str] | None = None) -> Environment:
    environ = os.environ if environ is None else environ
    kubeconfig = environ.get("KUBECONFIG") or None
    tools = find_tools()
    context = current_context(tools["kubectl"]) if kubeconfig else None
    return Environment(kubeconfig, tools, kind_cluster_name(context, environ))


def api_problem(kubectl: str | None, timeout_s: float = 10) -> str | None:
    """None when the API server answers /readyz, else what went wrong (one line)."""
    if kubectl is None:
        return "kubectl not found"
    try:
        result = subprocess.run(
            [kubectl, "get", "--raw", "/readyz", f"--request-timeout={int(timeout_s)}s"],
            capture_output=True,
            text=True,
            timeout=timeout_s + 5,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout_s:.0f} s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"kubectl exited with {result.returncode}"
    return None


def why_not_here() -> str | None:
    """The reason the e2e suite skips on this machine, or None."""
    env = detect()
    return skip_reason(env, lambda: api_problem(env.tools.get("kubectl")))
