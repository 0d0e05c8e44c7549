"""What does the gateway cost? Measured in one run, side by side.

(a) The real model server (vLLM on CPU, SmolLM2) at concurrency 16,
    directly and through `modelplane gateway`:
    - throughput: alternating rounds (direct, gateway, direct, ...) of
      streaming completions with a fixed output length; the ratio is the
      median of the per-round-pair ratios.
    - added TTFT: paired requests. 8 workers each send one request direct
      and one through the gateway at the same instant (16 in flight), so
      both land in the same engine batches; the added TTFT is the median of
      the per-pair differences. (Comparing p50s of separate runs measures
      the engine's run-to-run noise, which is larger than the gateway's
      cost.) The gateway's own `added_latency` histogram is shown beside it.
(b) Pure proxy cost, against a fast stub upstream (bench/stub_upstream.py):
    the gateway vs nginx (Debian's, as reverse proxy with buffering off,
    keep-alive upstream connections, one worker) driven by wrk: plain JSON
    requests/s and streamed SSE chunks/s; plus time to first event at
    concurrency 1, direct and through each proxy.

Prints one table and, as the last line,
`ratio_throughput_via_gateway=<x> added_ttft_p50_ms=<y> ratio_vs_nginx_chunks=<z>`.

    make bench-gateway      # or:
    python -m bench.gateway_overhead --model "$(modelplane model build --quiet)"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import psutil

BENCH = Path(__file__).resolve().parent
PROMPT = "Write a long story about a lighthouse keeper and the sea."
MODEL = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        return self

    def wait_http(self, url: str, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{self.name} exited during start-up:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise SystemExit(f"{self.name} not ready after {timeout_s}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def gateway_child(
    name: str, upstream: str, port: int, tmp: Path, metrics_port: int | None = None
) -> Child:
    """`modelplane gateway` on `port`, its /metrics on `metrics_port` (else a free one)."""
    config = tmp / f"{name}.yaml"
    config.write_text(f"models:\n  {MODEL}:\n    upstreams: [{upstream}]\n")
    program = str(Path(sys.executable).parent / "modelplane")
    metrics = metrics_port if metrics_port is not None else free_port()
    return Child(
        name,
        [program, "gateway", "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", str(metrics), "--log-format", "text"],
        tmp / f"{name}.log",
    )  # fmt: skip


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  upstream stub {{ server 127.0.0.1:{upstream}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://stub;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


# ---- (a) the real server -----------------------------------------------------


@dataclass
class Phase:
    tokens: int = 0
    wall_s: float = 0.0
    ttft: list[float] = field(default_factory=list)
    errors: int = 0


async def one_request(
    session: aiohttp.ClientSession, url: str, max_tokens: int, phase: Phase
) -> None:
    body = {
        "model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True,
        "temperature": 0.8, "stream": True,
    }  # fmt: skip
    start = time.perf_counter()
    first: float | None = None
    events = 0
    async with session.post(f"{url}/v1/completions", json=body) as response:
        if response.status != 200:
            phase.errors += 1
            await response.read()
            return
        async for line in response.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                events += 1
                if first is None:
                    first = time.perf_counter()
    if first is None:
        phase.errors += 1
        return
    phase.ttft.append(first - start)
    phase.tokens += events  # one token per event (vLLM's default stream interval)


async def drive(urls: list[str], requests: int, max_tokens: int) -> list[Phase]:
    """len(urls) workers, worker i always on urls[i]; one Phase per distinct url."""
    phases = {u: Phase() for u in urls}
    remaining = [requests]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def worker(url: str) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await one_request(session, url, max_tokens, phases[url])

        start = time.perf_counter()
        await asyncio.gather(*(worker(u) for u in urls))
        wall = time.perf_counter() - start
    for phase in phases.values():
        phase.wall_s = wall
    return list(phases.values())


async def paired(direct: str, via: str, pairs: int, max_tokens: int) -> list[tuple[float, float]]:
    """(direct TTFT, gateway TTFT) of requests sent at the same instant, 8 pairs at a time."""
    results: list[tuple[float, float]] = []
    remaining = [pairs]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def ttft(url: str) -> float | None:
            phase = Phase()
            await one_request(session, url, max_tokens, phase)
            return phase.ttft[0] if phase.ttft else None

        async def worker(offset: int) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                # Alternate who is sent first, so neither path gets a head start.
                order = (direct, via) if (remaining[0] + offset) % 2 else (via, direct)
                times = dict(
                    zip(order, await asyncio.gather(*(ttft(u) for u in order)), strict=True)
                )
                d, g = times[direct], times[via]
                if d is not None and g is not None:
                    results.append((d, g))

        await asyncio.gather(*(worker(i) for i in range(8)))
    return results


def histogram_p50(url: str, name: str) -> float:
    """The median of a Prometheus histogram on `url`/metrics, interpolated in its bucket."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if not total:
        return float("nan")
    lower, below = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= total / 2:
            share = (total / 2 - below) / max(buckets[le] - below, 1e-9)
            return lower + (le - lower) * share if le != float("inf") else lower
        lower, below = le, buckets[le]
    return lower


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- (b) the stub ---------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body: str, seconds: int, connections: int, tmp: Path) -> float:
    script = tmp / f"wrk-{abs(hash(body))}.lua"
    script.write_text(WRK_SCRIPT.format(body=body))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"{url}/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


async def first_event_times(url: str, n: int) -> list[float]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            start = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.content.readline()
                times.append(time.perf_counter() - start)
                await response.read()
    return times


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"load average {load:.1f} at start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--rounds", type=int, default=3, help="throughput round pairs (3)")
    parser.add_argument("--requests", type=int, default=48, help="requests per round (48)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request (64)")
    parser.add_argument("--pairs", type=int, default=400, help="paired TTFT requests (400)")
    parser.add_argument("--wrk-seconds", type=int, default=6)
    parser.add_argument("--stub-events", type=int, default=16, help="SSE events per stream")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("nginx", path="/usr/sbin:/usr/bin") is None:
        raise SystemExit(
            "needs wrk and nginx (Debian packages): `make bench-gateway` installs them"
        )

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    print(f"logs: {tmp}", file=sys.stderr)
    program = str(Path(sys.executable).parent / "modelplane")
    stub_port, nginx_port, gw_stub_port = free_port(), free_port(), free_port()
    server_port, gw_real_port, gw_real_metrics_port = free_port(), free_port(), free_port()
    stub = Child("stub", [sys.executable, str(BENCH / "stub_upstream.py"), "--port",
                          str(stub_port)], tmp / "stub.log")  # fmt: skip
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, upstream=stub_port, port=nginx_port))
    nginx_bin = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx_bin is not None
    nginx = Child(
        "nginx", [nginx_bin, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")],
        tmp / "nginx.log",
    )  # fmt: skip
    gw_stub = gateway_child("gateway-stub", f"http://127.0.0.1:{stub_port}", gw_stub_port, tmp)
    server = Child(
        "server",
        [program, "serve", "--model", args.model, "--served-model-name", MODEL,
         "--max-model-len", "2048", "--enforce-eager", "--host", "127.0.0.1",
         "--port", str(server_port), "--log-format", "text"],
        tmp / "server.log",
    )  # fmt: skip
    gw_real = gateway_child(
        "gateway-real", f"http://127.0.0.1:{server_port}", gw_real_port, tmp, gw_real_metrics_port
    )
    children = [stub, nginx, gw_stub, server, gw_real]
    stub_url = f"http://127.0.0.1:{stub_port}"
    nginx_url = f"http://127.0.0.1:{nginx_port}"
    gws_url = f"http://127.0.0.1:{gw_stub_port}"
    direct = f"http://127.0.0.1:{server_port}"
    via = f"http://127.0.0.1:{gw_real_port}"
    stream_body = (
        '{"model":"smollm2","messages":[{"role":"user","content":"hi"}],'
        f'"stream":true,"max_tokens":{args.stub_events}}}'
    )
    plain_body = '{"model":"smollm2","messages":[{"role":"user","content":"hi"}]}'
    rps: dict[tuple[str, str], list[float]] = {}
    first_event: dict[str, list[float]] = {}
    throughput: dict[str, list[Phase]] = {"direct": [], "gateway": []}
    pairs: list[tuple[float, float]] = []
    own_p50_ms = float("nan")
    started_at = machine()
    try:
        # (b) first, while no engine is running.
        stub.start().wait_http(f"{stub_url}/ready", 30)
        nginx.start()
        gw_stub.start().wait_http(f"{gws_url}/ready", 30)
        time.sleep(1.5)  # the gateway's first /ready poll of the stub
        for url in (nginx_url, gws_url):
            wrk(url, plain_body, 1, 16, tmp)  # warm connections
        for _ in range(2):
            for name, url in (("stub", stub_url), ("nginx", nginx_url), ("gateway", gws_url)):
                for kind, body in (("plain", plain_body), ("stream", stream_body)):
                    value = wrk(url, body, args.wrk_seconds, 64, tmp)
                    rps.setdefault((name, kind), []).append(value)
                    print(f"stub {name:<8} {kind:<6} {value:9.0f} req/s", file=sys.stderr)
        for name, url in (("stub", stub_url), ("nginx", nginx_url), ("gateway", gws_url)):
            first_event[name] = asyncio.run(first_event_times(url, 300))
        for child in (gw_stub, nginx, stub):
            child.stop()

        # (a) the real server.
        server.start().wait_http(f"{direct}/ready")
        gw_real.start().wait_http(f"{via}/ready", 30)
        time.sleep(1.5)
        asyncio.run(drive([via] * 4, 8, 8))  # warm both paths
        asyncio.run(drive([direct] * 4, 8, 8))
        for round_no in range(args.rounds):
            order = [("direct", direct), ("gateway", via)]
            for name, url in order if round_no % 2 == 0 else order[::-1]:
                (phase,) = asyncio.run(drive([url] * 16, args.requests, args.max_tokens))
                throughput[name].append(phase)
                print(
                    f"round {round_no + 1} {name:<8} c=16 {phase.tokens / phase.wall_s:7.1f} "
                    f"tok/s errors={phase.errors}",
                    file=sys.stderr,
                )
        pairs = asyncio.run(paired(direct, via, args.pairs, 8))
        print(f"paired requests: {len(pairs)} of {args.pairs} answered", file=sys.stderr)
        via_metrics = f"http://127.0.0.1:{gw_real_metrics_port}"  # the metrics port
        own_p50_ms = histogram_p50(via_metrics, "modelplane_gateway_added_latency_seconds") * 1000
    finally:
        for child in reversed(children):
            child.stop()

    report(args, started_at, throughput, pairs, own_p50_ms, rps, first_event)


def report(
    args: argparse.Namespace,
    started_at: str,
    throughput: dict[str, list[Phase]],
    pairs: list[tuple[float, float]],
    own_p50_ms: float,
    rps: dict[tuple[str, str], list[float]],
    first_event: dict[str, list[float]],
) -> None:
    def row(label: str, *cells: str) -> None:
        print(f"{label:<36}" + "".join(f"{c:>12}" for c in cells))

    print(f"\nmachine: {started_at}; model {Path(args.model).name} on vLLM CPU")
    rounds = list(zip(throughput["direct"], throughput["gateway"], strict=True))
    ratio_tput = statistics.median((g.tokens / g.wall_s) / (d.tokens / d.wall_s) for d, g in rounds)

    def tps(name: str) -> float:
        return statistics.median(p.tokens / p.wall_s for p in throughput[name])

    def separate(name: str) -> list[float]:
        return [t for p in throughput[name] for t in p.ttft]

    row("(a) real server, c=16", "direct", "via gateway", "ratio/diff")
    print("-" * 72)
    row("output tokens/s (median round)", f"{tps('direct'):.1f}", f"{tps('gateway'):.1f}",
        f"{ratio_tput:.3f}")  # fmt: skip
    for q in (0.5, 0.95):
        d, g = pct(separate("direct"), q) * 1000, pct(separate("gateway"), q) * 1000
        row(f"TTFT p{q * 100:.0f} ms, separate rounds", f"{d:.1f}", f"{g:.1f}", f"{g - d:+.1f}")
    added_ttft_ms = statistics.median(g - d for d, g in pairs) * 1000
    d50, g50 = (pct([p[i] for p in pairs], 0.5) * 1000 for i in (0, 1))
    row("TTFT p50 ms, paired requests", f"{d50:.1f}", f"{g50:.1f}", f"{added_ttft_ms:+.2f}")
    row("  (median of per-pair differences)")
    row("gateway's own added latency p50 ms", "", f"{own_p50_ms:.2f}")
    errors = sum(p.errors for phases in throughput.values() for p in phases)
    row("errors", str(errors))

    print()
    row("(b) stub upstream, wrk c=64", "stub", "nginx", "gateway", "gw/nginx")
    print("-" * 84)
    best = {key: max(values) for key, values in rps.items()}
    plain = {n: best[n, "plain"] for n in ("stub", "nginx", "gateway")}
    row("plain JSON requests/s", *(f"{v:.0f}" for v in plain.values()),
        f"{plain['gateway'] / plain['nginx']:.3f}")  # fmt: skip
    per_stream = args.stub_events + 1  # the events plus `data: [DONE]`
    chunks = {n: best[n, "stream"] * per_stream for n in ("stub", "nginx", "gateway")}
    ratio_chunks = chunks["gateway"] / chunks["nginx"]
    row("streamed SSE chunks/s", *(f"{v:.0f}" for v in chunks.values()), f"{ratio_chunks:.3f}")
    first = {n: pct(v, 0.5) * 1000 for n, v in first_event.items()}
    row("first event p50 ms, c=1", *(f"{first[n]:.2f}" for n in ("stub", "nginx", "gateway")))
    print(
        f"(at c=1 nginx adds {first['nginx'] - first['stub']:+.2f} ms, the gateway "
        f"{first['gateway'] - first['stub']:+.2f} ms; chunks/s = requests/s x {per_stream})"
    )
    print(
        f"ratio_throughput_via_gateway={ratio_tput:.3f} added_ttft_p50_ms={added_ttft_ms:.2f} "
        f"ratio_vs_nginx_chunks={ratio_chunks:.3f}"
    )


if __name__ == "__main__":
    main()
