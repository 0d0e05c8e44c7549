"""The stack under fuzzing: a real `modelplane serve` (CPU vLLM) and a gateway in front.

Like `make run`, on free local ports: the model server loads the local
SmolLM2 build with its own API key; the gateway routes to it by a static
discovery file, authenticates clients with a key of its own and the server
with the model's key (`upstreamApiKeyFile`). Each runs in its own session,
its output in a log file, and is stopped (then killed with its engine
processes) on exit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port

MODELPLANE: Sequence[str] = [str(Path(sys.executable).parent / "modelplane")]
SERVED_NAME = "smollm2"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class StackError(RuntimeError):
    """A process of the stack did not start; the message holds its log's tail."""


@dataclass
class Process:
    name: str
    args: Sequence[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*MODELPLANE, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENGINE_ENV},
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise StackError(f"{self.name} not ready after {timeout_s:g}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the engine's processes too
        self._log.close()


@dataclass
class Stack:
    server: Process
    gateway: Process
    server_key: str
    gateway_key: str

    def processes(self) -> tuple[Process, Process]:
        return self.server, self.gateway


@contextlib.contextmanager
def running_stack(model_dir: Path, work: Path, load_timeout_s: float = 600) -> Iterator[Stack]:
    """Start the server, then the gateway; stop both on exit."""
    work.mkdir(parents=True, exist_ok=True)
    server_key, gateway_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    (work / "server.keys").write_text(server_key + "\n")
    (work / "gateway.keys").write_text(gateway_key + "\n")
    server = Process(
        "model server",
        [],
        work / "server.log",
    )
    server.args = [
        "serve", "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--max-model-len", "512", "--enforce-eager", "--api-key-file", str(work / "server.keys"),
        "--host", "127.0.0.1", "--port", str(server.port), "--log-format", "text",
    ]  # fmt: skip
    (work / "gateway.yaml").write_text(
        f"models:\n  {SERVED_NAME}:\n    upstreams: [{server.url}]\n"
        "    upstreamApiKeyFile: server.keys\n"
    )
    gateway = Process("gateway", [], work / "gateway.log")
    gateway.args = [
        "gateway", "--host", "127.0.0.1", "--port", str(gateway.port),
        "--metrics-port", str(free_port()), "--config", str(work / "gateway.yaml"),
        "--api-key-file", str(work / "gateway.keys"), "--log-format", "text",
    ]  # fmt: skip
    stack = Stack(server, gateway, server_key, gateway_key)
    try:
        server.start().wait_ready("/ready", load_timeout_s)
        gateway.start().wait_ready("/ready", 60)
        yield stack
    finally:
        gateway.stop()
        server.stop()
