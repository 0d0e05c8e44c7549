"""Does a flooding tenant starve a light one? FIFO vs fair share at the gateway.

One `modelplane serve` (the real CPU engine) runs at most N requests at once
(`--engine-arg=--max-num-seqs=N`); vLLM queues the rest FIFO. Two gateways
stand in front of it with the same tenants file (`heavy` and `light`, both
weight 1, so fairness here is equal turns) and differ in one line of their
static discovery file:

- `fifo`: no `concurrency`, so the gateway forwards everything at once and
  the flood piles up in vLLM's own queue (the behaviour without the setting);
- `fair`: `concurrency: N`, so past N the requests wait at the gateway and
  are served by tenant weight (start-time fair queuing, tenants.fair_queue).

Phases, in alternating order each round so that a noisy machine's drift hits
them all: the light tenant alone through each gateway, then under the flood
through each. The heavy tenant floods at c=32 with streamed completions of a
fixed length (`ignore_eos`); the light tenant sends one short streamed
request at a time, back to back, and its time to first token is measured.
Heavy output tokens/s is counted over the window in which the light tenant
runs (completions inside it); the flood is then cancelled and the engine
left to go idle before the next phase.

Printed: one table (light TTFT p50/p95 and the p95's ratio to alone, alone
being both gateways' light-only phases together; the light tenant's mean wait
at the fair gateway from its queue_seconds; heavy and light tokens/s; how long
a heavy request holds a slot; errors), `heavy_throughput_ratio_fair=<fair/fifo>`,
and as the last line
`light_ttft_p95_ratio_fifo=<x> light_ttft_p95_ratio_fair=<y>`.

    make bench-fairness                      # or:
    python -m bench.fairness --model "$(modelplane model build --quiet)" [--max-num-seqs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.gateway_overhead import Child, machine
from bench.server_overhead import Phase, free_port, one_request, pct

HEAVY_KEY = "sk-bench-heavy-0001"
LIGHT_KEY = "sk-bench-light-0001"
GATEWAYS = ("fifo", "fair")


def tenants_yaml(heavy_weight: float, light_weight: float) -> str:
    """Two tenants, one key each."""
    return (
        "tenants:\n"
        f"  heavy:\n    keys: [{HEAVY_KEY}]\n    weight: {heavy_weight:g}\n"
        f"  light:\n    keys: [{LIGHT_KEY}]\n    weight: {light_weight:g}\n"
    )


def static_yaml(model: str, upstream: str, concurrency: int | None) -> str:
    """One model on one replica; with `concurrency` the gateway queues past it."""
    text = f"models:\n  {model}:\n    upstreams: [{upstream}]\n"
    if concurrency is not None:
        text += f"    concurrency: {concurrency}\n"
    return text


def window_throughput(completions: list[tuple[float, int]], start: float, end: float) -> float:
    """Output tokens/s of the requests that completed within [start, end]."""
    if end <= start:
        raise ValueError("the window must have a positive length")
    return sum(tokens for at, tokens in completions if start <= at <= end) / (end - start)


@dataclass
class FloodResult:
    light: Phase = field(default_factory=Phase)
    heavy_tps: float = 0.0
    window_s: float = 0.0  # the light tenant's time under the flood
    heavy_decode: list[float] = field(default_factory=list)  # first token to last: a slot held
    heavy_errors: int = 0
    light_queued_s: float = float("nan")  # mean wait at the gateway (the fair one's metrics)


async def light_loop(
    url: str, model: str, max_tokens: int, until: float | None, count: int | None, phase: Phase
) -> None:
    """One request at a time, back to back, until the deadline or the count."""
    headers = {"Authorization": f"Bearer {LIGHT_KEY}"}
    async with httpx.AsyncClient(timeout=600, headers=headers) as client:
        sent = 0
        while (until is None or time.perf_counter() < until) and (count is None or sent < count):
            await one_request(client, url, model, max_tokens, phase)
            sent += 1


def heavy_lengths(tokens: int, spread: int) -> list[int]:
    """The heavy requests' output lengths, taken in turn: `tokens` each, or with a spread,
    evenly from tokens - spread to tokens + spread (the same mean, the same work)."""
    if not 0 <= spread < tokens:
        raise ValueError("the spread must be at least 0 and less than the length")
    if spread == 0:
        return [tokens]
    step = max(1, spread // 4)
    return list(range(tokens - spread, tokens + spread + 1, step))


async def flood(url: str, args: argparse.Namespace) -> FloodResult:
    """The heavy tenant at c=`heavy_concurrency` while the light one runs for `seconds`."""
    result = FloodResult()
    completions: list[tuple[float, int]] = []
    conc = args.heavy_concurrency
    lengths = heavy_lengths(args.heavy_tokens, args.heavy_spread)
    sent = 0
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    headers = {"Authorization": f"Bearer {HEAVY_KEY}"}
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:

        async def heavy_worker() -> None:
            nonlocal sent
            while True:
                one = Phase()
                length = lengths[sent % len(lengths)]
                sent += 1
                await one_request(client, url, args.served_model_name, length, one)
                completions.append((time.perf_counter(), one.tokens))
                result.heavy_decode += [e - t for t, e in zip(one.ttft, one.e2e, strict=True)]
                result.heavy_errors += one.errors

        workers = [asyncio.create_task(heavy_worker()) for _ in range(conc)]
        try:
            await asyncio.sleep(args.warmup)  # the flood fills every slot and queue first
            start = time.perf_counter()
            await light_loop(
                url, args.served_model_name, args.light_tokens, start + args.seconds, None,
                result.light,
            )  # fmt: skip
            end = time.perf_counter()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    result.heavy_tps = window_throughput(completions, start, end)
    result.window_s = end - start
    return result


def light_queue_totals(metrics_url: str) -> tuple[float, float]:
    """The light tenant's seconds waited at the gateway and requests counted, so far."""
    totals = [0.0, 0.0]
    for line in httpx.get(f"{metrics_url}/metrics", timeout=5).text.splitlines():
        if 'tenant="light"' not in line:
            continue
        for i, suffix in enumerate(("_sum{", "_count{")):
            if line.startswith(f"modelplane_gateway_queue_seconds{suffix}"):
                totals[i] += float(line.rsplit(" ", 1)[1])
    return totals[0], totals[1]


def engine_busy(server_url: str) -> float:
    """Requests the engine runs or queues now, from its /metrics."""
    text = httpx.get(f"{server_url}/metrics", timeout=5).text
    busy = 0.0
    for line in text.splitlines():
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
            busy += float(line.rsplit(" ", 1)[1])
    return busy


def wait_idle(server_url: str, timeout_s: float = 120) -> None:
    """Until the cancelled flood has left the engine."""
    deadline = time.monotonic() + timeout_s
    while engine_busy(server_url) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the engine still has requests {timeout_s}s after the flood")
        time.sleep(0.2)


def ratio(value: float, base: float) -> float:
    return value / base if base > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--served-model-name", default="smollm2")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument(
        "--max-num-seqs", type=int, default=4,
        help="the engine's slots, and the fair gateway's concurrency (4)",
    )  # fmt: skip
    parser.add_argument(
        "--fair-headroom", type=int, default=0,
        help="the fair gateway's concurrency above --max-num-seqs: requests vLLM holds ready (0)",
    )  # fmt: skip
    parser.add_argument("--heavy-concurrency", type=int, default=32)
    parser.add_argument("--heavy-tokens", type=int, default=32, help="per heavy request (32)")
    parser.add_argument(
        "--heavy-spread", type=int, default=0,
        help="heavy lengths from tokens-spread to tokens+spread in turn (0: all the same)",
    )  # fmt: skip
    parser.add_argument("--light-tokens", type=int, default=8, help="per light request (8)")
    parser.add_argument(
        "--seconds", type=float, default=25, help="light tenant's time under each flood (25)"
    )
    parser.add_argument("--alone-requests", type=int, default=20, help="per round and gateway (20)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of flood before light")
    parser.add_argument("--heavy-weight", type=float, default=1)
    parser.add_argument("--light-weight", type=float, default=1)
    parser.add_argument("--max-model-len", type=int, default=512)
    args = parser.parse_args()
    heavy_lengths(args.heavy_tokens, args.heavy_spread)  # a bad spread fails before start-up

    tmp = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    print(f"logs: {tmp}", file=sys.stderr)
    program = str(Path(sys.executable).parent / "modelplane")
    server_port = free_port()
    server_url = f"http://127.0.0.1:{server_port}"
    server = Child(
        "server",
        [program, "serve", "--model", args.model, "--served-model-name", args.served_model_name,
         "--max-model-len", str(args.max_model_len), "--enforce-eager",
         f"--engine-arg=--max-num-seqs={args.max_num_seqs}",
         "--host", "127.0.0.1", "--port", str(server_port), "--log-format", "text"],
        tmp / "server.log",
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    tenants = tmp / "tenants.yaml"
    tenants.write_text(tenants_yaml(args.heavy_weight, args.light_weight))
    gateways: dict[str, tuple[Child, str, str]] = {}
    for name in GATEWAYS:
        config = tmp / f"{name}.yaml"
        concurrency = args.max_num_seqs + args.fair_headroom if name == "fair" else None
        config.write_text(static_yaml(args.served_model_name, server_url, concurrency))
        port, metrics_port = free_port(), free_port()
        child = Child(
            f"gateway-{name}",
            [program, "gateway", "--config", str(config), "--tenants", str(tenants),
             "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
             "--log-format", "text"],
            tmp / f"gateway-{name}.log",
        )  # fmt: skip
        gateways[name] = (child, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")

    alone: dict[str, Phase] = {name: Phase() for name in GATEWAYS}
    flooded: dict[str, list[FloodResult]] = {name: [] for name in GATEWAYS}
    started_at = machine()
    try:
        server.start().wait_http(f"{server_url}/ready")
        for child, url, _ in gateways.values():
            child.start().wait_http(f"{url}/ready", 30)
        for round_no in range(args.rounds):
            order = GATEWAYS if round_no % 2 == 0 else GATEWAYS[::-1]
            for name in order:
                _, url, metrics_url = gateways[name]
                asyncio.run(
                    light_loop(
                        url, args.served_model_name, args.light_tokens, None,
                        args.alone_requests, alone[name],
                    )
                )  # fmt: skip
                before = light_queue_totals(metrics_url)
                result = asyncio.run(flood(url, args))
                after = light_queue_totals(metrics_url)
                if after[1] > before[1]:
                    result.light_queued_s = (after[0] - before[0]) / (after[1] - before[1])
                flooded[name].append(result)
                wait_idle(server_url)
                print(
                    f"round {round_no + 1} {name}: light TTFT p95 "
                    f"{pct(result.light.ttft, 0.95) * 1000:.0f} ms over "
                    f"{len(result.light.ttft)} requests, heavy {result.heavy_tps:.1f} tok/s",
                    file=sys.stderr,
                )
    finally:
        for child, _, _ in gateways.values():
            child.stop()
        server.stop()

    spread = f"{args.heavy_tokens}" + (f"+-{args.heavy_spread}" if args.heavy_spread else "")
    print(
        f"\nmachine: {started_at}; model {Path(args.model).name}, --enforce-eager, "
        f"--max-num-seqs={args.max_num_seqs} (the fair gateway's concurrency: "
        f"{args.max_num_seqs + args.fair_headroom}); heavy "
        f"c={args.heavy_concurrency} x {spread} tokens (weight {args.heavy_weight:g}), light one "
        f"at a time x {args.light_tokens} tokens (weight {args.light_weight:g}); {args.rounds} "
        f"alternating rounds of {args.seconds:g} s under the flood"
    )
    header = (
        f"{'setup':<20}{'light n':>8}{'TTFT p50':>10}{'TTFT p95':>10}{'p95 ratio':>11}"
        f"{'gw queue':>10}{'heavy tok/s':>13}{'light tok/s':>12}{'heavy hold':>11}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    # One baseline: alone, the two gateways forward alike (no queue forms).
    base = [t for name in GATEWAYS for t in alone[name].ttft]
    base_errors = sum(alone[name].errors for name in GATEWAYS)
    base95 = pct(base, 0.95)
    print(
        f"{'light alone':<20}{len(base):>8}{pct(base, 0.5) * 1000:>8.0f}ms"
        f"{base95 * 1000:>8.0f}ms{1.0:>11.2f}{'-':>10}{'-':>13}{'-':>12}{'-':>11}{base_errors:>8}"
    )
    p95_ratio: dict[str, float] = {}
    heavy_tps: dict[str, float] = {}
    for name in GATEWAYS:
        runs = flooded[name]
        ttft = [t for r in runs for t in r.light.ttft]
        errors = sum(r.light.errors + r.heavy_errors for r in runs)
        heavy_tps[name] = statistics.median(r.heavy_tps for r in runs)
        light_tps = statistics.median(r.light.tokens / r.window_s for r in runs)
        heavy_decode = pct([t for r in runs for t in r.heavy_decode], 0.5)
        queued = [r.light_queued_s for r in runs if r.light_queued_s == r.light_queued_s]
        queue_cell = f"{statistics.mean(queued) * 1000:>8.0f}ms" if queued else f"{'-':>10}"
        p95_ratio[name] = ratio(pct(ttft, 0.95), base95)
        print(
            f"{'flood + light, ' + name:<20}{len(ttft):>8}{pct(ttft, 0.5) * 1000:>8.0f}ms"
            f"{pct(ttft, 0.95) * 1000:>8.0f}ms{p95_ratio[name]:>11.2f}{queue_cell}"
            f"{heavy_tps[name]:>13.1f}{light_tps:>12.1f}{heavy_decode:>10.2f}s{errors:>8}"
        )
    mean_length = statistics.mean(heavy_lengths(args.heavy_tokens, args.heavy_spread))
    print(
        "gw queue: the light tenant's mean wait at the gateway (its queue_seconds); heavy hold: "
        "p50 of a heavy request's first to last token, about how long it holds a slot.\n"
        f"Under the fair gateway a slot frees every {mean_length:g} tokens / "
        f"{heavy_tps['fair']:.1f} tok/s = {ratio(mean_length, heavy_tps['fair']) * 1000:.0f} ms "
        "on average: what the light tenant waits for when every slot is busy."
    )
    print(f"heavy_throughput_ratio_fair={ratio(heavy_tps['fair'], heavy_tps['fifo']):.3f}")
    print(
        f"light_ttft_p95_ratio_fifo={p95_ratio['fifo']:.2f} "
        f"light_ttft_p95_ratio_fair={p95_ratio['fair']:.2f}"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
