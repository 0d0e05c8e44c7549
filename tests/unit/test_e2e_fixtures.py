"""The e2e suite's fixtures, set up and torn down against a fake cluster on every `make test`.

There is no cluster here, so the e2e tests themselves cannot run; their
wiring can. The suite is run by a real pytest with `--setup-only -p
e2e.fake_cluster`: every fixture of every e2e test is set up and torn down
(no test body runs) against e2e/fake_cluster.py, a stand-in kind cluster that
answers kubectl, helm, docker and kind as a healthy one would, fails on a
namespace that does not exist or an argument that is a formatted `None`, and
checks each fixture value against the annotation of what consumes it. The
commands it records are then read as a user's terminal would show them.
A fixture handing `None` where a namespace belongs (the bug this replaces:
`model(release)` with `release` yielding None, so `kubectl ... -n None`)
fails these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.fake_cluster import ENFORCES_ENV, NODE_ENV, RECORD_ENV, FakeCluster, conforms, mismatches
from e2e.kube import CommandError
from e2e.models import Model
from e2e.suite import (
    ELSEWHERE_NAMESPACE,
    MODELS_NAMESPACE,
    OWN_NAMESPACES,
    RELEASE,
    RELEASE_NAMESPACE,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = {"smollm2", "smollm2-canary", "smollm2-on-demand", "smollm2-upgrade"}


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    commands: list[list[str]]
    stdins: list[str | None]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    @property
    def summary(self) -> str:
        return self.result.stdout.strip().splitlines()[-1]

    def index(self, *words: str) -> int:
        """Where the first command containing every word (in order of arguments) is."""
        for i, argv in enumerate(self.commands):
            if all(w in argv for w in words):
                return i
        raise AssertionError(f"no command with {words}; commands: {self.commands}")

    def all_with(self, *words: str) -> list[int]:
        return [i for i, argv in enumerate(self.commands) if all(w in argv for w in words)]


def setup_only(tmp_path: Path, *paths: str, env: dict[str, str] | None = None) -> Run:
    record = tmp_path / "commands.jsonl"
    environ = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    environ.update({RECORD_ENV: str(record), **(env or {})})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(paths or ("e2e",)),
            "--setup-only",
            "-p",
            "e2e.fake_cluster",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
        ],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = record.read_text().splitlines() if record.exists() else []
    entries = [json.loads(line) for line in lines]
    return Run(result, [e["argv"] for e in entries], [e["stdin"] for e in entries])


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return setup_only(tmp_path_factory.mktemp("healthy"))


def namespaces_named(argv: list[str]) -> list[str]:
    found = []
    for i, arg in enumerate(argv):
        if arg in ("-n", "--namespace") and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--namespace="):
            found.append(arg.split("=", 1)[1])
    return found


def test_every_fixture_sets_up_and_tears_down_on_a_healthy_cluster(healthy: Run) -> None:
    assert healthy.result.returncode == 0, healthy.output
    assert healthy.summary.startswith("no tests ran"), healthy.output
    assert "SKIPPED" not in healthy.output and "ERROR" not in healthy.output, healthy.output


def test_every_namespace_named_is_one_the_suite_creates(healthy: Run) -> None:
    named = [ns for argv in healthy.commands for ns in namespaces_named(argv)]
    assert named, "no command named a namespace"
    assert set(named) <= set(OWN_NAMESPACES), set(named) - set(OWN_NAMESPACES)
    assert not [argv for argv in healthy.commands if "None" in argv]


def test_room_is_checked_before_anything_is_built_or_installed(healthy: Run) -> None:
    nodes = healthy.index("get", "nodes")
    build = healthy.index("build", "-f", "Dockerfile.operator")
    load = healthy.index("load", "docker-image", "modelplane/operator:e2e")
    server_load = healthy.index("load", "docker-image", "modelplane/server:cpu-e2e")
    install = healthy.index("upgrade", "--install", RELEASE, "--namespace", RELEASE_NAMESPACE)
    assert nodes < build < load < install and server_load < install
    assert healthy.index("get", "pods", "--all-namespaces") < build


def applied_llmdeployments(run: Run) -> list[tuple[int, str, list[str]]]:
    """(command index, name, namespaces named) of every LLMDeployment applied."""
    found = []
    for i, (argv, stdin) in enumerate(zip(run.commands, run.stdins, strict=True)):
        if "apply" not in argv or not stdin:
            continue
        for doc in yaml.safe_load_all(stdin):
            if doc and doc.get("kind") == "LLMDeployment":
                found.append((i, doc["metadata"]["name"], namespaces_named(argv)))
    return found


def test_each_module_s_model_lives_in_the_models_namespace_between_install_and_uninstall(
    healthy: Run,
) -> None:
    install = healthy.index("upgrade", "--install", RELEASE)
    namespace_made = next(
        i
        for i, stdin in enumerate(healthy.stdins)
        if stdin and f"name: {MODELS_NAMESPACE}" in stdin
    )
    namespace_gone = healthy.index("delete", "namespace", MODELS_NAMESPACE)
    uninstall = healthy.index("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE)
    applied = applied_llmdeployments(healthy)
    assert {name for _, name, _ in applied} == MODELS
    for i, name, named in applied:
        assert named == [MODELS_NAMESPACE], (name, named)
        assert install < namespace_made < i
        deleted = healthy.index("delete", "llmdeployment", name, "-n", MODELS_NAMESPACE)
        waited = healthy.all_with(
            "get", "pods", "-n", MODELS_NAMESPACE, "-l", f"modelplane.io/llmdeployment={name}"
        )
        assert i < deleted < namespace_gone and any(w > deleted for w in waited)
    assert healthy.index("delete", "namespace", ELSEWHERE_NAMESPACE) < uninstall
    assert namespace_gone < uninstall < healthy.index("delete", "namespace", RELEASE_NAMESPACE)


def test_the_gateway_is_reached_through_the_release_s_service(healthy: Run) -> None:
    forwards = healthy.all_with("port-forward", "-n", RELEASE_NAMESPACE, "svc/modelplane-gateway")
    assert len(forwards) == 3  # per module that calls the gateway: canary, llmdeployment, zero


def test_a_node_too_small_skips_every_test_saying_what_the_suite_needs(tmp_path: Path) -> None:
    run = setup_only(tmp_path, env={NODE_ENV: "cpu=4,memory=16Gi"})
    assert run.result.returncode == 0, run.output
    assert " skipped" in run.summary and "error" not in run.summary, run.output
    assert "e2e: the kind nodes have 3.05 CPU and 15.67 GiB free" in run.output
    assert "the e2e suite needs" in run.output
    assert "2 x model replica (2 CPU and 8 GiB)" in run.output
    assert "Give Docker more CPUs and memory" in run.output
    assert not [argv for argv in run.commands if Path(argv[0]).name in ("docker", "kind", "helm")]


def test_a_cluster_that_ignores_network_policy_skips_the_scale_from_zero_tests(
    tmp_path: Path,
) -> None:
    run = setup_only(tmp_path, "e2e/test_scale_from_zero.py", env={ENFORCES_ENV: "0"})
    assert run.result.returncode == 0, run.output
    assert run.summary.startswith("4 skipped"), run.output
    assert "this cluster does not enforce NetworkPolicy" in run.output
    assert "kind enforces it since v0.24.0" in run.output
    run.index("delete", "networkpolicy", "e2e-deny-all", "-n", ELSEWHERE_NAMESPACE)
    run.index("delete", "pod", "e2e-listener", "-n", ELSEWHERE_NAMESPACE)
    assert not applied_llmdeployments(run), "a model was applied though the module skipped"


# --- the fake's own refusals, and the annotation check ---------------------------


def test_the_fake_refuses_a_namespace_that_does_not_exist_as_kubectl_does() -> None:
    cluster = FakeCluster({"cpu": "8", "memory": "32Gi"})
    with pytest.raises(CommandError, match='namespaces "models" not found'):
        cluster(["kubectl", "get", "pods", "-n", "models", "-o", "json"])
    with pytest.raises(CommandError, match="a Python None"):
        cluster(["kubectl", "apply", "-n", "None", "-f", "-"], stdin="{}")
    with pytest.raises(CommandError, match="a Python None"):
        cluster(["kubectl", "get", "pods", "-n", None])  # type: ignore[list-item]
    cluster(["kubectl", "apply", "-f", "-"], stdin="kind: Namespace\nmetadata: {name: models}\n")
    assert cluster(["kubectl", "get", "pods", "-n", "models", "-o", "json"]) == '{"items": []}'


def a_fixture(release: str, replicas: int | None) -> Iterator[Model]:
    yield Model("m", release, {})


def test_a_value_that_is_not_what_the_consumer_declares_is_named() -> None:
    assert mismatches(a_fixture, {"release": None, "replicas": 1}) == [
        "release: <class 'str'> got None"
    ]
    assert mismatches(a_fixture, {"release": "ns", "replicas": None}) == []


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (None, str, False),
        ("ns", str, True),
        (None, None, True),
        (None, type(None), True),
        (None, int | None, True),
        ("x", int | None, False),
        ({"a": 1}, dict[str, Any], True),
        ([], dict[str, Any], False),
        (object(), Any, True),
    ],
)
def test_conforms(value: object, hint: object, expected: bool) -> None:
    assert conforms(value, hint) is expected
