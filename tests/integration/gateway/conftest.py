"""Processes for the gateway's integration tests: `modelplane local` and `modelplane gateway`."""

from __future__ import annotations

import asyncio
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
from tests.integration.gateway.cluster_objects import cluster  # noqa: F401 - a fixture
from tests.unit.gateway.conftest import stub_replicas  # noqa: F401 - a fixture

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
    metrics_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The metrics port's GET /metrics (the API's port has none)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @staticmethod
    def static(
        tmp: Path,
        name: str,
        upstreams: Sequence[str],
        *flags: str,
        model: str = "smollm2",
        adapters: Sequence[str] = (),
    ) -> GatewayProcess:
        config = tmp / f"{name}.yaml"
        text = f"models:\n  {model}:\n    upstreams: [{', '.join(upstreams)}]\n"
        if adapters:
            text += f"    adapters: [{', '.join(adapters)}]\n"
        config.write_text(text)
        return GatewayProcess.with_args(tmp, name, "--config", str(config), *flags)

    @staticmethod
    def with_args(
        tmp: Path, name: str, *flags: str, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        """`modelplane gateway FLAGS` on free ports, logging to `tmp/<name>.log`."""
        gateway = GatewayProcess(args=(), log_path=tmp / f"{name}.log", env=env or {})
        gateway.args = [
            "gateway", "--host", "127.0.0.1", "--port", str(gateway.port),
            "--metrics-port", str(gateway.metrics_port), "--log-format", "text", *flags,
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

    async def wait_synced_async(self, timeout_s: float = 60) -> GatewayProcess:
        """`wait_synced` for async tests, whose stub replicas share the event loop."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.url}/ready")).status_code == 200:
                        return self
                await asyncio.sleep(0.1)
        pytest.fail(f"gateway not synced after {timeout_s}s:\n{self.log()}")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return metric_sum(httpx.get(self.metrics_url, timeout=5).text, name, **labels)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` in a scrape whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
