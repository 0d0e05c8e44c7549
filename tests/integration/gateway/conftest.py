"""Processes for the gateway's integration tests: `modelplane local` and `modelplane gateway`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODELPLANE, free_port

ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


@dataclass
class Process:
    """A modelplane command in its own session, its output in a log file."""

    args: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*MODELPLANE, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENGINE_ENV, **self.env},
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if text in self.log():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        pytest.fail(f"{text!r} not printed after {timeout_s}s:\n{self.log()[-4000:]}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@dataclass
class GatewayProcess(Process):
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def static(
        tmp: Path, name: str, upstreams: Sequence[str], *flags: str, model: str = "smollm2"
    ) -> GatewayProcess:
        config = tmp / f"{name}.yaml"
        config.write_text(f"models:\n  {model}:\n    upstreams: [{', '.join(upstreams)}]\n")
        gateway = GatewayProcess(args=(), log_path=tmp / f"{name}.log")
        gateway.args = [
            "gateway", "--config", str(config), "--host", "127.0.0.1", "--port", str(gateway.port),
            "--log-format", "text", *flags,
        ]  # fmt: skip
        return gateway

    def wait_synced(self, timeout_s: float = 60) -> GatewayProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        pytest.fail(f"gateway not synced after {timeout_s}s:\n{self.log()}")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )
