"""Where a replica's start-up goes, and what a warm compile cache saves.

`modelplane serve` (the real CPU engine, compiled: no `--enforce-eager`)
is started four times, one at a time, in the order cold A, warm A, cold B,
warm B: A and B are two compile-cache directories, empty for the cold
starts, filled by them for the warm ones; pairs in turn, so that a change in
the machine's load meanwhile hits cold and warm starts alike. The cache is laid out as the
operator lays it out on a replica's cache volume (`VLLM_CACHE_ROOT`,
`TRITON_CACHE_DIR`, `TORCHINDUCTOR_CACHE_DIR` under one directory). Each
start is timed from the spawn to `/ready` answering 200, and its phases are
read from the server's `/metrics` (`modelplane_server_startup_seconds`).
The model's files are in the page cache for all four starts. A fifth
start in eager mode (`--enforce-eager`: nothing compiled) is shown for
reference and counted in neither mean.

Weights: the model's safetensors are also read into memory from the
model directory, whose pages the starts left in the page cache, and
from a fresh copy in another directory whose pages were evicted after
writing (`posix_fadvise(DONTNEED)`, so the read comes from the disk), best of
three each: what a replica's weight load costs from a warm node-local cache
vs a fresh one on this machine's disk.

Printed: the machine, one table (seconds per phase, per start), the weights
line, and last `cold_s=<x> warm_s=<y> ratio=<y/x>` (means of the two
starts of each kind).

    make bench-startup                      # or:
    python -m bench.startup --model "$(modelplane model build --quiet)"
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.gateway_overhead import Child, machine
from bench.server_overhead import free_port
from modelplane.server.startup_phases import PHASES

MODELPLANE = [str(Path(sys.executable).parent / "modelplane")]


@dataclass(frozen=True)
class Start:
    label: str
    wall_s: float  # spawn -> /ready 200, as this benchmark saw it
    phases: dict[str, float]
    total_s: float | None  # the server's own process start -> ready


def cache_env(root: Path) -> dict[str, str]:
    """The compile-cache variables the operator sets on a replica (builders/model_cache.py)."""
    return {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TRITON_CACHE_DIR": str(root / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "torchinductor"),
    }


def startup_metrics(url: str) -> tuple[dict[str, float], float | None]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    phases: dict[str, float] = {}
    total = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelplane_server_startup_seconds":
                phases[sample.labels["phase"]] = sample.value
            elif sample.name == "modelplane_server_startup_total_seconds":
                total = sample.value
    return phases, total


def start_once(
    label: str, model: str, cache: Path, tmp: Path, max_model_len: int, *extra: str
) -> Start:
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **cache_env(cache)}
    child = Child(
        label,
        [*MODELPLANE, "serve", "--model", model, "--served-model-name", "bench",
         "--max-model-len", str(max_model_len), "--host", "127.0.0.1", "--port", str(port),
         *extra],
        tmp / f"{label.replace(' ', '-')}.log",
        env,
    )  # fmt: skip
    started = time.monotonic()
    child.start()
    try:
        url = f"http://127.0.0.1:{port}"
        child.wait_http(f"{url}/ready")
        wall = time.monotonic() - started
        phases, total = startup_metrics(url)
    finally:
        child.stop()
    return Start(label, wall, phases, total)


def evict(path: Path) -> None:
    """Write the file's pages out and drop them from the page cache (no privileges needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_weights(files: list[Path]) -> float:
    """Seconds to read the files' bytes from storage (what a load must do at least once),
    through one reused 16 MiB buffer, so that what is timed is the storage, not memory."""
    chunk = bytearray(16 << 20)
    started = time.perf_counter()
    for f in files:
        with f.open("rb", buffering=0) as stream:
            while stream.readinto(chunk):
                pass
    return time.perf_counter() - started


def weights_line(model: Path, tmp: Path) -> str:
    files = sorted(model.glob("*.safetensors"))
    if not files:
        return "weights: no safetensors in the model directory"
    size = sum(f.stat().st_size for f in files) / 2**30
    cached = min(read_weights(files) for _ in range(3))
    fresh_times = []
    for attempt in range(3):
        copy = tmp / f"fresh-copy-{attempt}"
        copy.mkdir()
        copies = [Path(shutil.copy2(f, copy / f.name)) for f in files]
        for f in copies:
            evict(f)
        fresh_times.append(read_weights(copies))
        shutil.rmtree(copy)
    fresh = min(fresh_times)
    return (
        f"weights ({size:.2f} GiB safetensors, best of 3): page cache {cached:.2f} s, "
        f"fresh copy read from disk {fresh:.2f} s ({fresh / cached:.1f}x)"
    )


def table(starts: list[Start]) -> str:
    shown = [p for p in PHASES if any(p in s.phases for s in starts)]
    head = f"{'start':<8}" + "".join(f"{p:>15}" for p in shown) + f"{'total':>9}{'wall':>9}"
    rows = [head, "-" * len(head)]
    for s in starts:
        cells = "".join(f"{s.phases[p]:>15.1f}" if p in s.phases else f"{'-':>15}" for p in shown)
        total = f"{s.total_s:>9.1f}" if s.total_s is not None else f"{'-':>9}"
        rows.append(f"{s.label:<8}{cells}{total}{s.wall_s:>9.1f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as name:
        tmp = Path(name)
        caches = {"A": tmp / "cache-a", "B": tmp / "cache-b"}
        starts = []
        for cache_name, cache in caches.items():
            for kind in ("cold", "warm"):
                label = f"{kind} {cache_name}"
                print(f"starting: {label}", flush=True)
                starts.append(start_once(label, args.model, cache, tmp, args.max_model_len))
        print("starting: eager (reference)", flush=True)
        eager = start_once(
            "eager", args.model, tmp / "cache-eager", tmp, args.max_model_len, "--enforce-eager"
        )
        print(table([*starts, eager]))
        print(weights_line(Path(args.model), tmp))
    cold = statistics.mean(s.wall_s for s in starts if s.label.startswith("cold"))
    warm = statistics.mean(s.wall_s for s in starts if s.label.startswith("warm"))
    print(
        "(seconds; total: the server's process start to ready, by its own clock; "
        "wall: spawn to /ready 200 as seen here)"
    )
    print(f"cold_s={cold:.1f} warm_s={warm:.1f} ratio={warm / cold:.2f}")


if __name__ == "__main__":
    main()
