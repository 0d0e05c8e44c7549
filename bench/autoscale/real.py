"""Drive the real CPU model server: calibrate the simulator's replica model and check it.

`bench/autoscale/sim.py` models a replica with a few constants (engine step
time, prefill cost per prompt token, KV-cache capacity, start-up delay). The
CPU constants are fitted to what this module measures on the real
`modelplane serve` (vLLM's CPU engine, SmolLM2-135M):

    python -m bench.autoscale.real --calibrate     # measures, prints the fit inputs

and the fitted model is then checked once against reality by replaying one
small open-loop trace against one real replica and against its simulated
twin (`python -m bench.autoscale.sim --check-real`, which calls `replay`).

Both start a real engine: run them under the machine's engine lock
(`flock /tmp/modelplane-engine.lock ...`). Prompts are random token ids sent
as a token array, so their length is exact and no prefix is shared; outputs
have a fixed length (`ignore_eos`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
from openai import APIError, AsyncOpenAI, DefaultAsyncHttpx2Client

MODEL_NAME = "smollm2"
# SmolLM2's vocabulary has 49152 ids; stay clear of the special ones at the start.
TOKEN_ID_RANGE = (1000, 40000)


@dataclass(frozen=True)
class Outcome:
    """What one request saw, as the client measures it."""

    sent_at: float
    ttft_s: float
    e2e_s: float
    output_tokens: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir() -> str:
    """The built SmolLM2 directory (`modelplane model build` prints it)."""
    exe = Path(sys.executable).parent / "modelplane"
    out = subprocess.run(
        [str(exe), "model", "build", "--quiet"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def real_server(max_model_len: int = 2048) -> Iterator[tuple[str, Path, float]]:
    """A `modelplane serve` on a free port: yields (url, log path, seconds to ready)."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="autoscale-real-")) / "server.log"
    exe = Path(sys.executable).parent / "modelplane"
    cmd = [
        str(exe),
        "serve",
        "--model",
        model_dir(),
        "--served-model-name",
        MODEL_NAME,
        "--max-model-len",
        str(max_model_len),
        "--enforce-eager",
        "--log-format",
        "text",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() - started > 900:
                raise SystemExit("server not ready after 900 s")
            with suppress(httpx.TransportError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url, log, time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def random_prompt(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(*TOKEN_ID_RANGE) for _ in range(length)]


def openai_client(url: str, connections: int) -> AsyncOpenAI:
    # openai talks through httpx2 (its own HTTP client since 3.x); the SDK's factory keeps
    # its defaults and takes our pool size and timeout.
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    http = DefaultAsyncHttpx2Client(timeout=900, limits=limits)
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="none", http_client=http, max_retries=0)


async def one_request(client: AsyncOpenAI, prompt: list[int], output_tokens: int) -> Outcome | None:
    """A streamed completion of exactly `output_tokens` tokens; TTFT is its first chunk."""
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        stream = await client.completions.create(
            model=MODEL_NAME,
            prompt=prompt,
            max_tokens=output_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices:
                first = time.perf_counter()
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except APIError:
        return None
    if first is None:
        return None
    return Outcome(start, first - start, time.perf_counter() - start, tokens)


async def closed_loop(
    url: str, concurrency: int, requests: int, prompt_len: int, output_len: int, seed: int
) -> tuple[list[Outcome], float]:
    """`concurrency` clients each sending back to back; returns outcomes and wall time."""
    rng = random.Random(seed)
    prompts = [random_prompt(rng, prompt_len) for _ in range(requests)]
    outcomes: list[Outcome] = []
    async with openai_client(url, concurrency + 4) as client:

        async def worker() -> None:
            while prompts:
                outcome = await one_request(client, prompts.pop(), output_len)
                if outcome is not None:
                    outcomes.append(outcome)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outcomes, time.perf_counter() - start


async def replay(
    url: str, arrivals: Sequence[tuple[float, int, int]], seed: int
) -> list[Outcome | None]:
    """Open loop: send each (time, prompt tokens, output tokens) at its time."""
    rng = random.Random(seed)
    prompts = [random_prompt(rng, p) for _, p, _ in arrivals]
    async with openai_client(url, len(arrivals) + 4) as client:
        start = time.perf_counter()

        async def send(i: int) -> Outcome | None:
            at, _, out = arrivals[i]
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            return await one_request(client, prompts[i], out)

        return list(await asyncio.gather(*(send(i) for i in range(len(arrivals)))))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def engine_facts(log: Path) -> list[str]:
    """The engine's own lines on KV-cache size and batch limits."""
    pattern = re.compile(r"KV cache|max_num_seqs|max_num_batched_tokens|Maximum concurrency")
    lines = log.read_text(errors="replace").splitlines()
    return [line.strip()[-220:] for line in lines if pattern.search(line)][:12]


def calibrate(concurrencies: Sequence[int], prompt_len: int, output_len: int) -> None:
    results: dict[str, object] = {}
    with real_server() as (url, log, ready_s):
        results["ready_s"] = round(ready_s, 1)
        results["engine_log"] = engine_facts(log)
        # Prefill cost: one request at a time, one output token, growing prompts.
        prefill: dict[int, float] = {}
        for length in (16, 256, 1024):
            runs = [
                asyncio.run(closed_loop(url, 1, 1, length, 1, seed=length + k))[0][0].ttft_s
                for k in range(4)
            ]
            prefill[length] = statistics.median(runs[1:])
        results["ttft_by_prompt_len_c1"] = prefill
        sweep: dict[int, dict[str, float]] = {}
        for conc in concurrencies:
            outcomes, wall = asyncio.run(
                closed_loop(url, conc, conc * 3, prompt_len, output_len, seed=conc)
            )
            tpot = [(o.e2e_s - o.ttft_s) / max(1, o.output_tokens - 1) for o in outcomes]
            sweep[conc] = {
                "req_per_s": len(outcomes) / wall,
                "out_tok_per_s": sum(o.output_tokens for o in outcomes) / wall,
                "tpot_ms": 1000 * statistics.mean(tpot),
                "ttft_p50_ms": 1000 * pct([o.ttft_s for o in outcomes], 0.5),
            }
            print(f"c={conc}: {sweep[conc]}", file=sys.stderr)
        results["sweep"] = sweep
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        results["vllm_metric_names"] = sorted(
            {
                line.split("{")[0].split(" ")[0]
                for line in metrics.splitlines()
                if line.startswith("vllm:")
            }
        )
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calibrate", action="store_true", help="measure the CPU server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=48)
    args = parser.parse_args()
    if not args.calibrate:
        parser.error("pass --calibrate (the sim-vs-real check is autoscale/sim.py --check-real)")
    calibrate(args.concurrency, args.prompt_len, args.output_len)


if __name__ == "__main__":
    main()
