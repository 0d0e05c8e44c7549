"""What do LoRA adapters cost? The base model alone vs the base plus 1 and 4 adapters.

Two `modelplane serve` processes run the same model with the same engine
flags, side by side in this one process run: one without LoRA, one with four
adapters (`--adapter`, rank 8 on q_proj/v_proj, random weights made here for
the model: the cost of serving an adapter does not depend on what it learned).
The same load (streamed completions, fixed output length with `ignore_eos`,
concurrency 16) is applied in alternating rounds to four setups, so that drift
of a noisy machine hits them all:

- `base`: the server without LoRA, every request for the base model;
- `lora, base only`: the LoRA server, every request for the base model (what
  enabling LoRA costs requests that use no adapter);
- `base + 1 adapter`: the LoRA server, requests taking turns over the base and one adapter;
- `base + 4 adapters`: the LoRA server, requests taking turns over the base and four.

Printed: one table (output tokens/s, TTFT p50/p95, end-to-end p50, errors)
with each setup's ratio to `base`, and as the last line
`throughput_ratio_1=<x> throughput_ratio_4=<y> ttft_p50_ratio_1=<x> ttft_p50_ratio_4=<y>`.

    make bench-lora                      # or:
    python -m bench.lora_serving --model "$(modelplane model build --quiet)"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.server_overhead import Phase, Server, drive, free_port, summarize
from tests.support.lora_adapter import write_random_adapter

CONCURRENCY = 16


@dataclass(frozen=True)
class Setup:
    name: str
    server: str  # "plain" or "lora"
    models: tuple[str, ...]


def setups(base: str, adapters: list[str]) -> list[Setup]:
    return [
        Setup("base", "plain", (base,)),
        Setup("lora, base only", "lora", (base,)),
        Setup("base + 1 adapter", "lora", (base, adapters[0])),
        Setup("base + 4 adapters", "lora", (base, *adapters[:4])),
    ]


def serve_command(args: argparse.Namespace, port: int, adapters: dict[str, Path]) -> list[str]:
    bin_dir = Path(sys.executable).parent
    command = [
        str(bin_dir / "modelplane"), "serve", "--model", args.model,
        "--served-model-name", args.served_model_name,
        "--max-model-len", str(args.max_model_len), "--enforce-eager",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--served-model-name", default="smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=48, help="per setup and round")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    adapters = {
        f"adapter-{i}": write_random_adapter(Path(args.model), work / f"adapter-{i}", seed=i)
        for i in range(1, 5)
    }
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    plain_port, lora_port = free_port(), free_port()
    servers = {
        "plain": Server("plain", serve_command(args, plain_port, {}), plain_port,
                        work / "plain.log"),
        "lora": Server("lora", serve_command(args, lora_port, adapters), lora_port,
                       work / "lora.log"),
    }  # fmt: skip
    print(f"adapters and server logs: {work}", file=sys.stderr)
    plan = setups(args.served_model_name, list(adapters))
    results: dict[str, list[Phase]] = {s.name: [] for s in plan}
    try:
        # One at a time, so the two loads do not compete for the cores.
        for server in servers.values():
            server.start(env)
            ready_s = server.wait_ready("/ready")
            print(f"{server.name} server ready in {ready_s:.1f}s", file=sys.stderr)
        for round_no in range(args.rounds):
            order = plan if round_no % 2 == 0 else list(reversed(plan))
            for setup in order:
                url = f"http://127.0.0.1:{servers[setup.server].port}"
                phase = asyncio.run(
                    drive(url, setup.models, CONCURRENCY, args.requests, args.max_tokens)
                )
                results[setup.name].append(phase)
                print(
                    f"round {round_no + 1} {setup.name:<18} "
                    f"{phase.tokens / phase.wall_s:7.1f} tok/s errors={phase.errors}",
                    file=sys.stderr,
                )
    finally:
        for server in servers.values():
            server.stop()

    cpu = platform.processor() or platform.machine()
    print(
        f"\nmachine: {os.cpu_count()} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; model {Path(args.model).name}; "
        f"adapters rank 8 on q_proj/v_proj; {args.rounds} alternating rounds of "
        f"{args.requests} requests at c={CONCURRENCY}; "
        f"{args.max_tokens} output tokens per request (ignore_eos)"
    )
    header = (
        f"{'setup':<19}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p95':>10}{'e2e p50':>9}"
        f"{'errors':>8}{'tok/s ratio':>13}{'TTFT p50 ratio':>16}"
    )
    print(header)
    print("-" * len(header))
    table = {name: summarize(phases) for name, phases in results.items()}
    base = table["base"]
    for name, s in table.items():
        print(
            f"{name:<19}{s['tps']:>8.1f}{s['ttft50'] * 1000:>8.0f}ms{s['ttft95'] * 1000:>8.0f}ms"
            f"{s['e2e50']:>8.2f}s{int(s['errors']):>8}{s['tps'] / base['tps']:>13.3f}"
            f"{s['ttft50'] / base['ttft50']:>16.3f}"
        )
    one, four = table["base + 1 adapter"], table["base + 4 adapters"]
    print(
        f"throughput_ratio_1={one['tps'] / base['tps']:.3f} "
        f"throughput_ratio_4={four['tps'] / base['tps']:.3f} "
        f"ttft_p50_ratio_1={one['ttft50'] / base['ttft50']:.3f} "
        f"ttft_p50_ratio_4={four['ttft50'] / base['ttft50']:.3f}"
    )


if __name__ == "__main__":
    main()
