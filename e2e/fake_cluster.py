"""A stand-in kind cluster for checking the e2e fixtures' wiring where there is none.

tests/unit/test_e2e_fixtures.py runs the e2e suite with `--setup-only -p
e2e.fake_cluster`: every fixture is set up and torn down, no test body runs.
This plugin puts a `ClusterAccess` in pytest's stash whose runner answers
kubectl, helm, docker and kind the way a healthy kind cluster would
(LLMDeployments are Ready at once, probe pods finish at once), and refuses
what a real one refuses: a namespace that does not exist (`-n None` fails as
it would against an API server), an argument that is a formatted Python
`None`, a Helm release uninstalled that was never installed. Every command
is appended to the JSON-lines file named by MODELPLANE_E2E_FAKE_RECORD.

It also checks that every fixture hands on what its consumer declares: a
fixture's arguments and a test's arguments must match their annotations
(`model(release: str)` given a `None` fails setup, naming both).

Scenarios, from the environment:
- MODELPLANE_E2E_FAKE_NODE: the one node's allocatable, e.g. `cpu=8,memory=32Gi`
  (default `cpu=16,memory=64Gi`); kind's own system pods request 950m and 340Mi;
- MODELPLANE_E2E_FAKE_ENFORCES=0: the CNI ignores NetworkPolicy.

The waits run on a fake clock, so an answer the fixtures do not expect fails
at once with the wait's message instead of after its real timeout.
"""

from __future__ import annotations

import collections.abc
import contextlib
import inspect
import json
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from e2e import kube
from e2e.access import ACCESS_KEY, ClusterAccess
from e2e.environment import TOOLS, Environment
from e2e.in_cluster import PROBE_SCRIPT
from e2e.kube import CommandError, Kubectl

RECORD_ENV: Final = "MODELPLANE_E2E_FAKE_RECORD"
NODE_ENV: Final = "MODELPLANE_E2E_FAKE_NODE"
ENFORCES_ENV: Final = "MODELPLANE_E2E_FAKE_ENFORCES"
NODE_NAME: Final = "modelplane-control-plane"
SYSTEM_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
# One pod standing for kind's control plane, CoreDNS and kindnet (their requests together).
SYSTEM_POD: Final = {
    "metadata": {"name": "control-plane", "namespace": "kube-system"},
    "spec": {
        "nodeName": NODE_NAME,
        "containers": [
            {"name": "all", "resources": {"requests": {"cpu": "950m", "memory": "340Mi"}}}
        ],
    },
    "status": {"phase": "Running"},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _flags(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and `--flag value` / `--flag=value` / `-n value` options."""
    takes_value = {
        "-n",
        "--namespace",
        "-o",
        "--output",
        "-l",
        "--selector",
        "-f",
        "--filename",
        "-p",
        "--patch",
        "--type",
        "--field-selector",
        "--name",
        "--timeout",
        "--values",
        "-t",
        "--build-arg",
        "--replicas",
    }
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and "=" in arg:
            key, value = arg.split("=", 1)
            options[key] = value
        elif arg in takes_value and i + 1 < len(args):
            options[arg] = args[i + 1]
            i += 1
        elif arg.startswith("-"):
            options[arg] = ""
        else:
            positional.append(arg)
        i += 1
    return positional, options


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(key) == value for key, value in pairs)


def _not_found(kind: str, name: str) -> CommandError:
    return CommandError(f'Error from server (NotFound): {kind} "{name}" not found')


class FakeCluster:
    """The runner and port-forwarder of a kind cluster that does what it is told at once."""

    def __init__(
        self,
        allocatable: Mapping[str, str],
        *,
        enforces_network_policy: bool = True,
        record: Path | None = None,
    ) -> None:
        self.allocatable = dict(allocatable)
        self.enforces_network_policy = enforces_network_policy
        self.record = record
        self.namespaces: set[str] = set(SYSTEM_NAMESPACES)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name)
        self.releases: set[tuple[str, str]] = set()
        self.commands: list[list[str]] = []

    # --- the runner -------------------------------------------------------

    def __call__(
        self, cmd: Sequence[str], *, timeout: float = 600, stdin: str | None = None
    ) -> str:
        argv = [str(a) for a in cmd]
        self.commands.append(argv)
        if self.record is not None:
            with self.record.open("a") as out:
                out.write(json.dumps({"argv": argv, "stdin": stdin}) + "\n")
        bad = [a for a in cmd if a is None or str(a) in ("None", "")]
        if bad:
            raise CommandError(f"{' '.join(argv)}: an argument is {bad[0]!r} (a Python None?)")
        program = Path(argv[0]).name
        handler = {"kubectl": self._kubectl, "helm": self._helm}.get(program)
        return handler(argv[1:], stdin) if handler else ""  # docker and kind: built, loaded

    def _require_namespace(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise _not_found("namespaces", namespace)

    def _kubectl(self, args: list[str], stdin: str | None) -> str:
        positional, options = _flags(args)
        namespace = options.get("-n") or options.get("--namespace")
        if namespace is not None:
            self._require_namespace(namespace)
        verb, rest = positional[0], positional[1:]
        if verb in ("apply", "create"):
            return self._apply(stdin or "", namespace, dry_run="--dry-run" in options)
        if verb == "get":
            return self._get(rest, namespace or "default", options)
        if verb == "delete":
            return self._delete(rest, namespace or "default", options)
        if verb == "logs":
            return self._logs(rest[0], namespace or "default")
        return ""  # patch, scale, ...: not used by fixtures

    def _apply(self, manifest: str, namespace: str | None, *, dry_run: bool) -> str:
        names = []
        for doc in yaml.safe_load_all(manifest):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "Namespace":
                if not dry_run:
                    self.namespaces.add(name)
            else:
                where = doc["metadata"].get("namespace") or namespace or "default"
                self._require_namespace(where)
                if not dry_run:
                    self.objects[(kind.lower(), where, name)] = self._admitted(doc, where)
            names.append(f"{kind.lower()}/{name}")
        return "\n".join(f"{n} configured" for n in names)

    def _admitted(self, doc: dict[str, Any], namespace: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(doc))
        body["metadata"].update(namespace=namespace, generation=1)
        if body["kind"] == "Pod":
            probe = PROBE_SCRIPT in body["spec"]["containers"][0].get("args", [])
            pods = sum(1 for key in self.objects if key[0] == "pod")
            body["status"] = {
                "phase": "Succeeded" if probe else "Running",
                "podIP": f"10.244.0.{10 + pods}",
            }
        if body["kind"] == "LLMDeployment":
            replicas = body["spec"].get("replicas", 1)
            body["status"] = {"phase": "Ready", "observedGeneration": 1}
            if replicas:
                body["status"]["readyReplicas"] = replicas
        return body

    def _get(self, rest: list[str], namespace: str, options: dict[str, str]) -> str:
        if "--raw" in options:
            return "ok"
        output = options.get("-o", "")
        kind = rest[0].lower() if rest else ""
        if kind == "nodes":
            return json.dumps({"items": [self._node()]})
        everywhere = "--all-namespaces" in options or "-A" in options
        plural = {"pods": "pod", "llmdeployments": "llmdeployment"}.get(kind, kind)
        if len(rest) > 1:  # one object by name
            found = self.objects.get((plural, namespace, rest[1]))
            if found is None:
                if "--ignore-not-found" in options:
                    return ""
                raise _not_found(kind, rest[1])
            return json.dumps(found) if output == "json" else f"{plural}/{rest[1]}"
        selector = options.get("-l", "")
        items = [
            body
            for (k, ns, _), body in self.objects.items()
            if k == plural
            and (everywhere or ns == namespace)
            and _matches(body["metadata"].get("labels", {}), selector)
        ]
        if kind == "pods" and everywhere:
            items.append(SYSTEM_POD)
        if output == "json":
            return json.dumps({"items": items})
        return "\n".join(f"{plural}/{b['metadata']['name']}" for b in items)

    def _node(self) -> dict[str, Any]:
        return {
            "metadata": {"name": NODE_NAME},
            "spec": {},
            "status": {
                "allocatable": self.allocatable,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def _delete(self, rest: list[str], namespace: str, options: dict[str, str]) -> str:
        kind = rest[0].lower()
        if kind in ("namespace", "namespaces"):
            for name in rest[1:]:
                self.namespaces.discard(name)
                self.objects = {k: v for k, v in self.objects.items() if k[1] != name}
            return ""
        if "-l" in options:
            return ""
        for name in rest[1:]:
            missing = self.objects.pop((kind, namespace, name), None) is None
            if missing and "--ignore-not-found" not in options:
                raise _not_found(kind, name)
        return ""

    def _logs(self, name: str, namespace: str) -> str:
        pod = self.objects.get(("pod", namespace, name))
        if pod is None:
            raise _not_found("pods", name)
        args = pod["spec"]["containers"][0].get("args", [])
        if PROBE_SCRIPT not in args:
            return ""
        host = args[1]
        target = next(
            (k for k, v in self.objects.items() if k[0] == "pod" and v["status"]["podIP"] == host),
            None,
        )
        guarded = target is not None and any(
            k[0] == "networkpolicy" and k[1] == target[1] for k in self.objects
        )
        return "timeout\n" if guarded and self.enforces_network_policy else "connected\n"

    def _helm(self, args: list[str], stdin: str | None) -> str:
        positional, options = _flags(args)
        namespace = options.get("--namespace") or options.get("-n") or "default"
        verb = positional[0]
        if verb == "upgrade":
            if "--create-namespace" in options:
                self.namespaces.add(namespace)
            self._require_namespace(namespace)
            values = options.get("-f") or options.get("--values")
            if values is not None and not Path(values).is_file():
                raise CommandError(f"open {values}: no such file or directory")
            self.releases.add((positional[1], namespace))
            return ""
        if verb == "uninstall":
            if (positional[1], namespace) not in self.releases:
                raise CommandError(f"uninstall: Release not loaded: {positional[1]}: not found")
            self.releases.discard((positional[1], namespace))
            return ""
        if verb == "status":
            return json.dumps({"version": 1})
        return ""

    # --- the port-forwarder -------------------------------------------------

    @contextlib.contextmanager
    def port_forward(
        self, kubectl: Kubectl, namespace: str, target: str, port: int
    ) -> Iterator[str]:
        argv = [kubectl.path, "port-forward", "-n", namespace, target, f"0:{port}"]
        self.commands.append(argv)
        if self.record is not None:
            with self.record.open("a") as out:
                out.write(json.dumps({"argv": argv, "stdin": None}) + "\n")
        self._require_namespace(namespace)
        yield "http://127.0.0.1:9"


# --- fixture values against their consumers' annotations ------------------------


def conforms(value: object, hint: object) -> bool:
    """Whether `value` may be what `hint` declares (classes, unions, None; Protocols and
    other typing forms are taken on trust)."""
    if hint is typing.Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Final:
        return conforms(value, typing.get_args(hint)[0])
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(hint, type):
        if getattr(hint, "_is_protocol", False):
            return True
        return isinstance(value, hint)
    return True


def _yielded(hint: object) -> object:
    """What a fixture annotated `-> Iterator[T]` (or Generator) hands on: T."""
    origin = typing.get_origin(hint)
    if origin in (collections.abc.Iterator, collections.abc.Generator, collections.abc.Iterable):
        return typing.get_args(hint)[0]
    return hint


def mismatches(func: Callable[..., object], values: Mapping[str, object]) -> list[str]:
    """Arguments of `func` whose values do not conform to its annotations."""
    hints = typing.get_type_hints(func)
    return [
        f"{name}: {hints[name]} got {value!r}"
        for name, value in values.items()
        if name in hints and not conforms(value, hints[name])
    ]


def _where(func: Callable[..., object]) -> str:
    return f"{func.__module__}.{func.__name__}"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Iterator[None]:
    func = fixturedef.func
    if not func.__module__.startswith("e2e."):
        return (yield)  # pytest's and plugins' own fixtures
    names = [n for n in fixturedef.argnames if n != "request"]
    wrong = mismatches(func, {n: request.getfixturevalue(n) for n in names})
    if wrong:
        error = TypeError(f"fixture {_where(func)} is given the wrong values: {'; '.join(wrong)}")
        # Cached as pytest caches a fixture's own failure: every later test using this
        # fixture reports the same error (rather than pytest tripping over a half setup).
        key = fixturedef.cache_key(typing.cast(Any, request))
        fixturedef.cached_result = (None, key, (error, error.__traceback__))
        raise error
    result = yield
    declared = typing.get_type_hints(func).get("return", typing.Any)
    if not conforms(result, _yielded(declared)):
        raise TypeError(f"fixture {_where(func)} declares {declared} but gave {result!r}")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    result = yield
    function = getattr(item, "function", None)
    values = getattr(item, "funcargs", {})
    if inspect.isfunction(function) and function.__module__.startswith("e2e."):
        wrong = mismatches(function, values)
        if wrong:
            raise TypeError(f"test {item.nodeid} is given the wrong values: {'; '.join(wrong)}")
    return result


def _allocatable(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if part)


def pytest_configure(config: pytest.Config) -> None:
    record = os.environ.get(RECORD_ENV)
    cluster = FakeCluster(
        _allocatable(os.environ.get(NODE_ENV, "cpu=16,memory=64Gi")),
        enforces_network_policy=os.environ.get(ENFORCES_ENV, "1") != "0",
        record=Path(record) if record else None,
    )
    environment = Environment(
        kubeconfig="/fake/kubeconfig",
        tools={name: f"/fake/bin/{name}" for name in TOOLS},
        kind_cluster="modelplane",
    )
    config.stash[ACCESS_KEY] = ClusterAccess(
        detect=lambda: environment,
        api_problem=lambda env: None,
        runner=cluster,
        port_forward=cluster.port_forward,
    )
    kube.CLOCK = FakeClock()
