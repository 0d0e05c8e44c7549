"""Small, loud wrappers around the tools the e2e tests drive: kubectl, helm, docker, kind.

Every command goes through a `Runner` (the real one runs the program and
keeps its output; tests/unit/test_e2e_fixtures.py injects a fake one), and a
failing one fails the test with its output. Waiting is polling a condition
with a deadline, never a fixed sleep; the clock it polls by is `CLOCK`, which
the fake cluster replaces so that a wrong answer fails at once instead of
after the real timeout.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

T = TypeVar("T")


class CommandError(AssertionError):
    """A command the test needed exited non-zero; the message carries its output."""


class Runner(Protocol):
    """Runs one command line and returns its standard output, or raises CommandError."""

    def __call__(
        self, cmd: Sequence[str], *, timeout: float = 600, stdin: str | None = None
    ) -> str: ...


def run(cmd: Sequence[str], *, timeout: float = 600, stdin: str | None = None) -> str:
    result = subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise CommandError(
            f"{' '.join(cmd)} exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


CLOCK: Clock = RealClock()


def wait_until(what: str, check: Callable[[], T | None], timeout: float, every: float = 2) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    clock = CLOCK
    deadline = clock.monotonic() + timeout
    last: object = None
    while clock.monotonic() < deadline:
        try:
            value = check()
        except (CommandError, KeyError, IndexError, httpx.HTTPError) as err:
            last = err
        else:
            if value:
                return value
            last = value
        clock.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@dataclass(frozen=True)
class Kubectl:
    path: str
    runner: Runner = run

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        return self.runner([self.path, *args], stdin=stdin, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        where = ["-n", namespace] if namespace else []
        self("apply", *where, "-f", "-", stdin=manifest)

    def items(self, *args: str) -> list[dict[str, Any]]:
        """`kubectl get ... -o json` of a list: its items."""
        found: list[dict[str, Any]] = self.json("get", *args).get("items", [])
        return found


@dataclass(frozen=True)
class Helm:
    path: str
    runner: Runner = run

    def __call__(self, *args: str, timeout: float = 900) -> str:
        return self.runner([self.path, *args], timeout=timeout)

    def upgrade_install(self, release: str, chart: str, namespace: str, values_file: str) -> None:
        """Install the release, or upgrade it in place, and wait until its workloads are ready."""
        self(
            "upgrade",
            "--install",
            release,
            chart,
            "--namespace",
            namespace,
            "--create-namespace",
            "-f",
            values_file,
            "--wait",
            "--timeout",
            "10m",
        )

    def revision(self, release: str, namespace: str) -> int:
        status = json.loads(self("status", release, "--namespace", namespace, "-o", "json"))
        return int(status["version"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortForwarder(Protocol):
    """Forwards a local port to `target` (e.g. svc/NAME) in `namespace`; yields its URL."""

    def __call__(
        self, kubectl: Kubectl, namespace: str, target: str, port: int
    ) -> contextlib.AbstractContextManager[str]: ...


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to `target` (e.g. svc/NAME); yields http://127.0.0.1:LOCAL.

    kubectl resolves a Service to one of its pods when it starts and forwards
    to that pod only: it is a way in from this machine, not a test of the
    Service's routing (in-cluster clients do that, see e2e/in_cluster.py).
    """
    local = free_port()
    proc = subprocess.Popen(
        [kubectl.path, "port-forward", "-n", namespace, target, f"{local}:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"kubectl port-forward {target} exited: {output}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", local)) == 0

        wait_until(f"port-forward to {target}", listening, timeout=60, every=0.2)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
