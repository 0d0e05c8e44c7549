"""What does Modelplane's production layer cost? `modelplane serve` vs vLLM's own server.

Both servers run the same model with the same engine flags (rendered from
one EngineConfig), side by side in this one process run. Load is applied in
alternating rounds (vLLM, Modelplane, vLLM, Modelplane, ...) so that drift
of a noisy machine hits both. Each round drives streaming completions with
a fixed output length (`ignore_eos`) at concurrency 1 and 16.

Printed: one table (output tokens/s, TTFT p50/p95, end-to-end p50, peak RSS
of each server's process tree) with ratios, and as the last line
`ratio_throughput_c16=<ours/vllm> ratio_ttft_p50_c16=<ours/vllm>`.

    make bench-server                      # or:
    python -m bench.server_overhead --model "$(modelplane model build --quiet)"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from modelplane.server.options import ServeOptions
from modelplane.server.vllm_engine import vllm_cli_args

PROMPT = "Write a long story about a lighthouse keeper and the sea."


@dataclass
class Phase:
    tokens: int = 0
    wall_s: float = 0.0
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    _sampling: bool = True

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _sample_rss(self) -> None:
        assert self.proc is not None
        while self._sampling and self.proc.poll() is None:
            try:
                root = psutil.Process(self.proc.pid)
                procs = [root, *root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
                self.peak_rss = max(self.peak_rss, total)
            except psutil.Error:
                pass
            time.sleep(0.5)

    def wait_ready(self, path: str, timeout_s: float = 900) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{self.name} exited during start-up:\n{tail}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} not ready after {timeout_s}s")

    def stop(self) -> None:
        self._sampling = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_request(
    client: httpx.AsyncClient, url: str, model: str, max_tokens: int, phase: Phase
) -> None:
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            phase.errors += 1
            await response.aread()
            return
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and event.get("choices") and event["choices"][0].get("text"):
                first = time.perf_counter()
            usage = event.get("usage")
            if usage:
                tokens = int(usage["completion_tokens"])
    end = time.perf_counter()
    if first is None:
        phase.errors += 1
        return
    phase.ttft.append(first - start)
    phase.e2e.append(end - start)
    phase.tokens += tokens


async def drive(
    url: str, model: str | tuple[str, ...], concurrency: int, requests: int, max_tokens: int
) -> Phase:
    """`requests` streamed completions at `concurrency`; several models take turns."""
    models = (model,) if isinstance(model, str) else model
    phase = Phase()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one_request(client, url, models[i % len(models)], max_tokens, phase)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.wall_s = time.perf_counter() - start
    return phase


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(phases: list[Phase]) -> dict[str, float]:
    """Median tokens/s over rounds; TTFT p50/p95 and e2e p50 over all requests; errors."""
    ttft = [t for p in phases for t in p.ttft]
    e2e = [t for p in phases for t in p.e2e]
    return {
        "tps": statistics.median(p.tokens / p.wall_s for p in phases),
        "ttft50": pct(ttft, 0.5),
        "ttft95": pct(ttft, 0.95),
        "e2e50": pct(e2e, 0.5),
        "errors": sum(p.errors for p in phases),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--served-model-name", default="smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-c1", type=int, default=6)
    parser.add_argument("--requests-c16", type=int, default=48)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    options = ServeOptions.model_validate(
        {
            "model": args.model,
            "served_model_name": args.served_model_name,
            "engine": {"max_model_len": args.max_model_len, "enforce_eager": True},
        }
    )
    engine_flags = vllm_cli_args(options)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    logs = Path(tempfile.mkdtemp(prefix="bench-server-"))
    bin_dir = Path(sys.executable).parent
    vllm_port, ours_port = free_port(), free_port()
    servers = [
        Server(
            "vllm",
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *engine_flags,
             "--host", "127.0.0.1", "--port", str(vllm_port), "--disable-uvicorn-access-log"],
            vllm_port,
            logs / "vllm.log",
        ),
        Server(
            "modelplane",
            [str(bin_dir / "modelplane"), "serve", "--model", args.model,
             "--served-model-name", args.served_model_name, "--max-model-len",
             str(args.max_model_len), "--enforce-eager", "--host", "127.0.0.1",
             "--port", str(ours_port)],
            ours_port,
            logs / "modelplane.log",
        ),
    ]  # fmt: skip
    print(f"engine flags (both servers): {' '.join(engine_flags)}", file=sys.stderr)
    print(f"server logs: {logs}", file=sys.stderr)
    results: dict[tuple[str, int], list[Phase]] = {}
    startup: dict[str, float] = {}
    try:
        # One at a time, so the two loads do not compete for the cores.
        for server in servers:
            server.start(env)
            ready_path = "/ready" if server.name == "modelplane" else "/health"
            startup[server.name] = server.wait_ready(ready_path)
            print(f"{server.name} ready in {startup[server.name]:.1f}s", file=sys.stderr)
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else list(reversed(servers))
            for server in order:
                url = f"http://127.0.0.1:{server.port}"
                for conc, n in ((1, args.requests_c1), (16, args.requests_c16)):
                    phase = asyncio.run(
                        drive(url, args.served_model_name, conc, n, args.max_tokens)
                    )
                    results.setdefault((server.name, conc), []).append(phase)
                    print(
                        f"round {round_no + 1} {server.name:<10} c={conc:<2} "
                        f"{phase.tokens / phase.wall_s:7.1f} tok/s errors={phase.errors}",
                        file=sys.stderr,
                    )
    finally:
        for server in servers:
            server.stop()

    def summary(name: str, conc: int) -> dict[str, float]:
        return summarize(results[(name, conc)])

    cpu = platform.processor() or platform.machine()
    print(
        f"\nmachine: {os.cpu_count()} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; model {Path(args.model).name}; "
        f"{args.rounds} alternating rounds; "
        f"{args.max_tokens} output tokens per request (ignore_eos)"
    )
    header = (
        f"{'server':<11}{'conc':>5}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}"
        f"{'e2e p50':>9}{'errors':>8}{'peak RSS':>10}{'ready in':>10}"
    )
    print(header)
    print("-" * len(header))
    table: dict[tuple[str, int], dict[str, float]] = {}
    for conc in (1, 16):
        for server in servers:
            s = summary(server.name, conc)
            table[(server.name, conc)] = s
            print(
                f"{server.name:<11}{conc:>5}{s['tps']:>9.1f}{s['ttft50'] * 1000:>8.0f}ms"
                f"{s['ttft95'] * 1000:>8.0f}ms{s['e2e50']:>8.2f}s{int(s['errors']):>8}"
                f"{server.peak_rss / 2**20:>8.0f}MB{startup[server.name]:>9.1f}s"
            )
    for conc in (1, 16):
        ours, theirs = table[("modelplane", conc)], table[("vllm", conc)]
        print(
            f"ratio ours/vllm c={conc:<2}: throughput {ours['tps'] / theirs['tps']:.3f}  "
            f"TTFT p50 {ours['ttft50'] / theirs['ttft50']:.3f}  "
            f"TTFT p95 {ours['ttft95'] / theirs['ttft95']:.3f}  "
            f"e2e p50 {ours['e2e50'] / theirs['e2e50']:.3f}"
        )
    ours, theirs = table[("modelplane", 16)], table[("vllm", 16)]
    print(
        f"ratio_throughput_c16={ours['tps'] / theirs['tps']:.3f} "
        f"ratio_ttft_p50_c16={ours['ttft50'] / theirs['ttft50']:.3f}"
    )


if __name__ == "__main__":
    main()
