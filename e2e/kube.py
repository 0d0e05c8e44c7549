"""Small, loud wrappers around the tools the e2e tests drive: kubectl, helm, docker, kind.

Every command's output is kept, and a failing one fails the test with it.
Waiting is polling a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class CommandError(AssertionError):
    """A command the test needed exited non-zero; the message carries its output."""


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


def wait_until(what: str, check: Callable[[], T | None], timeout: float, every: float = 2) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (CommandError, KeyError, IndexError, httpx.HTTPError) as err:
            last = err
        else:
            if value:
                return value
            last = value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@dataclass(frozen=True)
class Kubectl:
    path: str

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        return run([self.path, *args], stdin=stdin, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        where = ["-n", namespace] if namespace else []
        self("apply", *where, "-f", "-", stdin=manifest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to `target` (e.g. svc/NAME); yields http://127.0.0.1:LOCAL."""
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
