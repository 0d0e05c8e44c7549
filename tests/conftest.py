"""Shared fixtures: free ports and a real `modelplane serve` process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
# The installed console script: the same entry point users and the pod run.
MODELPLANE = [str(Path(sys.executable).parent / "modelplane")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A `modelplane serve` child process with its log, started in its own session.

    Its own session means a signal sent to the test runner's process group
    never reaches it: only the signals a test sends on purpose do.
    """

    args: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    probes: list[tuple[int, int]] = field(default_factory=list)  # (health, ready) while starting

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **self.env}
        cmd = [*MODELPLANE, "serve", *self.args, "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def wait_ready(self, timeout_s: float = 600) -> ServerProcess:
        """Poll /health and /ready until ready, recording what the probes saw."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    health = client.get(f"{self.url}/health").status_code
                    ready = client.get(f"{self.url}/ready").status_code
                except httpx.TransportError:
                    time.sleep(0.25)
                    continue
                self.probes.append((health, ready))
                if ready == 200:
                    return self
                time.sleep(0.25)
        pytest.fail(f"server not ready after {timeout_s}s:\n{self.log_tail()}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float = 120) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.terminate()
        self.wait_exit()
        # The engine runs in child processes of the server's session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def built_model_dir() -> Path:
    """The SmolLM2 build `make test` makes before running pytest."""
    from modelplane.server.model_build import MODEL_DIR_NAME, default_models_dir

    path = default_models_dir() / MODEL_DIR_NAME
    if not (path / "config.json").is_file():
        pytest.skip("SmolLM2 not built: run `make test` (it builds the model first)")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return built_model_dir()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
