"""Does routing by conversation prefix pay off? Round-robin vs least-load vs prefix affinity.

Two real model servers (vLLM on CPU, SmolLM2, prefix caching on), each
bound to its own core the way each replica would own its GPU, behind three
gateways that differ only in balancing strategy. The same multi-turn chat
trace is replayed through each: conversations share a few system prompts,
each opens with its own long document, every turn resends the history (as
chat clients do), users pause to read between turns, and a fixed number of
them talk at once. Strategies run in alternating order; each run uses fresh
prompt text, so no run reuses another's KV cache.

Printed: one table (TTFT mean and p95, output tokens/s, requests/s, prefix
cache hit rate from the servers' own `vllm:prefix_cache_*` counters) and,
as the last line, the mean-TTFT ratios of prefix affinity to the others.

    make bench-prefix       # or:
    python -m bench.prefix_routing --model "$(modelplane model build --quiet)"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.gateway_overhead import MODEL, Child, free_port, gateway_child, machine, pct

STRATEGIES = ("round-robin", "least-load", "prefix")
TOPICS = ("astronomy", "cooking", "tax law", "gardening", "sailing", "chess", "opera", "geology")


WORDS = [
    "river",
    "stone",
    "market",
    "winter",
    "harbor",
    "lantern",
    "garden",
    "letter",
    "window",
    "silver",
    "morning",
    "mountain",
    "bridge",
    "candle",
    "forest",
    "engine",
    "orchard",
    "village",
    "thunder",
    "meadow",
    "copper",
    "island",
    "signal",
    "ladder",
    "canyon",
    "feather",
    "circuit",
    "glacier",
    "pocket",
    "marble",
    "compass",
]


def prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def system_prompt(run: int, index: int, words: int) -> str:
    rng = random.Random(run * 1000 + index)
    return (
        f"[run {run}] You are assistant number {index}, an expert in {TOPICS[index % 8]}. "
        f"Follow the house style guide below in every answer.\n{prose(rng, words)}"
    )


def opening(run: int, conversation: int, words: int) -> str:
    """Each conversation starts with its own long document: its history is what caches."""
    rng = random.Random(run * 100_000 + conversation)
    return (
        f"[run {run}] Conversation {conversation}. Read this report, then answer my "
        f"questions about it.\n{prose(rng, words)}"
    )


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    hits: float = 0.0
    queries: float = 0.0


async def converse(
    session: aiohttp.ClientSession,
    url: str,
    system: str,
    opening: str,
    args: argparse.Namespace,
    think: random.Random,
    result: Result,
) -> None:
    turns, max_tokens = args.turns, args.max_tokens
    messages = [{"role": "system", "content": system}, {"role": "user", "content": opening}]
    for turn in range(turns):
        body = {
            "model": MODEL, "messages": messages, "max_tokens": max_tokens,
            "ignore_eos": True, "temperature": 0.7, "stream": True,
        }  # fmt: skip
        start = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        async with session.post(f"{url}/v1/chat/completions", json=body) as response:
            if response.status != 200:
                result.errors += 1
                await response.read()
                return
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = json.loads(line[6:])
                delta = (event.get("choices") or [{}])[0].get("delta", {}).get("content")
                if delta:
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(delta)
        if first is None:
            result.errors += 1
            return
        result.ttft.append(first - start)
        result.tokens += len(pieces)
        result.requests += 1
        messages += [
            {"role": "assistant", "content": "".join(pieces)},
            {"role": "user", "content": f"Thanks. What does part {turn + 2} of it say?"},
        ]
        if turn + 1 < turns:  # the user reads and types before the next turn
            await asyncio.sleep(think.uniform(0.5, 1.5) * args.think_time)


async def run_trace(url: str, run: int, args: argparse.Namespace) -> Result:
    result = Result()
    systems = [system_prompt(run, i, args.system_words) for i in range(args.system_prompts)]
    conversations = [
        (systems[c % len(systems)], opening(run, c, args.document_words))
        for c in range(args.conversations)
    ]
    queue: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
    for c, (system, first) in enumerate(conversations):
        queue.put_nowait((c, system, first))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def user() -> None:
            while not queue.empty():
                c, system, first = queue.get_nowait()
                think = random.Random(run * 100_000 + c)
                await converse(session, url, system, first, args, think, result)

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(args.users)))
        result.wall_s = time.perf_counter() - start
    return result


def cache_counters(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
            for sample in family.samples:
                if sample.name == "vllm:prefix_cache_hits_total":
                    hits += sample.value
                elif sample.name == "vllm:prefix_cache_queries_total":
                    queries += sample.value
    return hits, queries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--repeats", type=int, default=2, help="runs per strategy (2)")
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--users", type=int, default=8, help="conversations at once (8)")
    parser.add_argument(
        "--think-time", type=float, default=1.0, help="mean seconds between a user's turns (1)"
    )
    parser.add_argument("--system-prompts", type=int, default=3)
    parser.add_argument("--system-words", type=int, default=150)
    parser.add_argument("--document-words", type=int, default=400, help="first user message")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-prefix-"))
    print(f"logs: {tmp}", file=sys.stderr)
    program = str(Path(sys.executable).parent / "modelplane")
    cores = os.cpu_count() or 2
    servers: list[Child] = []
    server_urls: list[str] = []
    for i in range(2):
        port = free_port()
        server_urls.append(f"http://127.0.0.1:{port}")
        child = Child(
            f"server-{i}",
            [program, "serve", "--model", args.model, "--served-model-name", MODEL,
             "--max-model-len", "4096", "--enforce-eager", "--enable-prefix-caching",
             "--host", "127.0.0.1", "--port", str(port), "--log-format", "text"],
            tmp / f"server-{i}.log",
        )  # fmt: skip
        servers.append(child)
    gateways: dict[str, tuple[Child, str]] = {}
    for strategy in STRATEGIES:
        port = free_port()
        config = tmp / f"{strategy}.yaml"
        config.write_text(
            f"models:\n  {MODEL}:\n    routing: {strategy}\n"
            f"    upstreams: [{', '.join(server_urls)}]\n"
        )
        child = gateway_child(f"gateway-{strategy}", server_urls[0], port, tmp)
        child.cmd[child.cmd.index("--config") + 1] = str(config)
        gateways[strategy] = (child, f"http://127.0.0.1:{port}")
    results: dict[str, list[Result]] = {s: [] for s in STRATEGIES}
    started_at = machine()
    try:
        for i, child in enumerate(servers):
            # One core per replica, as one GPU per replica in a cluster.
            child.env = {"VLLM_CPU_OMP_THREADS_BIND": str(i % cores), "VLLM_CPU_KVCACHE_SPACE": "2"}
            child.start()
        for child, url in zip(servers, server_urls, strict=True):
            child.wait_http(f"{url}/ready")
        for child, url in gateways.values():
            child.start().wait_http(f"{url}/ready", 30)
        time.sleep(1.5)  # every gateway has seen both replicas ready
        run = 0
        for repeat in range(args.repeats):
            order = STRATEGIES if repeat % 2 == 0 else STRATEGIES[::-1]
            for strategy in order:
                run += 1
                before = cache_counters(server_urls)
                result = asyncio.run(run_trace(gateways[strategy][1], run, args))
                after = cache_counters(server_urls)
                result.hits, result.queries = after[0] - before[0], after[1] - before[1]
                results[strategy].append(result)
                print(
                    f"run {run} {strategy:<12} TTFT mean {statistics.mean(result.ttft) * 1000:6.0f}"
                    f" ms  hit rate {result.hits / max(1, result.queries):.2f}"
                    f"  errors {result.errors}",
                    file=sys.stderr,
                )
    finally:
        for child, _ in gateways.values():
            child.stop()
        for child in servers:
            child.stop()

    print(
        f"\nmachine: {started_at}; two SmolLM2 servers on vLLM CPU, one core each; "
        f"{args.conversations} conversations x {args.turns} turns, {args.users} at once "
        f"with ~{args.think_time:g} s between turns, "
        f"{args.system_prompts} shared system prompts of {args.system_words} words, "
        f"a {args.document_words}-word document opening each conversation, "
        f"{args.max_tokens} output tokens per turn; {args.repeats} runs per strategy"
    )
    header = (
        f"{'strategy':<13}{'TTFT mean':>11}{'TTFT p95':>10}{'tokens/s':>10}"
        f"{'requests/s':>12}{'cache hits':>12}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    means: dict[str, float] = {}
    for strategy in STRATEGIES:
        rs = results[strategy]
        ttft = [t for r in rs for t in r.ttft]
        means[strategy] = statistics.mean(ttft)
        wall = sum(r.wall_s for r in rs)
        hit_rate = sum(r.hits for r in rs) / max(1.0, sum(r.queries for r in rs))
        print(
            f"{strategy:<13}{means[strategy] * 1000:>9.0f}ms{pct(ttft, 0.95) * 1000:>8.0f}ms"
            f"{sum(r.tokens for r in rs) / wall:>10.1f}{sum(r.requests for r in rs) / wall:>12.2f}"
            f"{hit_rate:>12.2f}{sum(r.errors for r in rs):>8}"
        )
    vs_ll = means["prefix"] / means["least-load"]
    vs_rr = means["prefix"] / means["round-robin"]
    print(
        f"prefix affinity changes mean TTFT by {(vs_ll - 1) * 100:+.0f}% vs least-load and "
        f"{(vs_rr - 1) * 100:+.0f}% vs round-robin (KubeAI reports about -65% vs least-load "
        "at 800 users on 8 GPUs)"
    )
    print(
        f"ratio_ttft_mean_prefix_vs_least_load={vs_ll:.3f} "
        f"ratio_ttft_mean_prefix_vs_round_robin={vs_rr:.3f}"
    )


if __name__ == "__main__":
    main()
