"""How does the operator scale? 30 and 300 LLMDeployments against the Kubernetes emulator.

The operator runs as a real `modelplane operator` process against KMock's
Kubernetes emulator (tests/support/kube_emulator.py; no cluster can run here), which
records every API call. For each size, in this one process run:

- time from the first LLMDeployment created until every one has all its
  children and a status (the emulator has no controllers, so "status" is the
  operator's first report, phase Loading);
- the operator's API requests while creating, per LLMDeployment and by
  resource and verb;
- requests during an idle periodic resync of every LLMDeployment (the goal
  is 0 writes), and after an operator restart (again 0 writes);
- peak resident memory of the operator process.

Printed: one table with both sizes side by side and the 300/30 ratio (linear
work per resource shows as a ratio near 10), then the 300-size requests by
resource, and as the last line
`create_s_300=<s> writes_idle_300=<n> writes_restart_300=<n> peak_rss_mib_300=<MiB>`.

    make bench-operator                    # or: python -m bench.operator_scale
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from modelplane.api import contract
from tests.conftest import free_port
from tests.support.kube_emulator import HARNESS_AGENT, EmulatorThread, Kubectl

CHILDREN_PER_LLMD = 5  # ConfigMap, Service, Deployment, PodDisruptionBudget, NetworkPolicy
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SPEC = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "engine": {"maxModelLen": 4096},
}


@dataclass
class Result:
    size: int
    create_s: float = 0.0
    creation_requests: int = 0
    creation_writes: int = 0
    by_resource: collections.Counter[str] = field(default_factory=collections.Counter)
    idle_requests: int = 0
    idle_writes: int = 0
    restart_requests: int = 0
    restart_writes: int = 0
    unexpected: list[str] = field(default_factory=list)  # requests of idle and restart phases
    peak_rss_mib: float = 0.0
    operator_cpu_s: float = 0.0
    total_cpu_s: float = 0.0


class Operator:
    """A `modelplane operator` process and its peak RSS, sampled in the background."""

    def __init__(self, config: Path, kubeconfig: Path, log: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        cmd = [str(Path(sys.executable).parent / "modelplane"), "operator", "--config", str(config)]
        self._log = log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.peak_rss = 0
        self.cpu_s = 0.0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        process = psutil.Process(self.proc.pid)
        while not self._done.is_set():
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                times = process.cpu_times()
                self.cpu_s = times.user + times.system
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._done.set()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def reconciles(metrics_port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.TransportError:
        return -1
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelplane_operator_reconcile_total{")
    )


def operator_requests(cluster: EmulatorThread) -> list[Any]:
    return [r for r in cluster.requests() if r.headers.get("User-Agent", "") != HARNESS_AGENT]


def converged(cluster: EmulatorThread, size: int) -> bool:
    objects = cluster.emulator.objects
    with_status = 0
    children: collections.Counter[str] = collections.Counter()
    for (resource, _, _), obj in list(objects.items()):
        if obj.deleted:
            continue
        if resource.plural == contract.PLURAL:
            with_status += bool(obj.get("status", {}).get("phase"))
        else:
            owner = obj.get("metadata", {}).get("labels", {}).get(contract.LABEL_LLMDEPLOYMENT)
            if owner:
                children[owner] += 1
    complete = sum(1 for count in children.values() if count == CHILDREN_PER_LLMD)
    return with_status == size and complete == size


def describe(request: Any) -> str:
    plural = request.resource.plural if request.resource else "discovery"
    sub = f"/{request.subresource}" if request.subresource else ""
    verb = "watch" if request.params.get("watch") else request.method.value.lower()
    return f"{verb} {plural}{sub}"


def run_size(size: int, workdir: Path, resync_s: float) -> Result:
    result = Result(size)
    with EmulatorThread() as cluster:
        kubeconfig = cluster.write_kubeconfig(workdir / f"kubeconfig-{size}")
        port = free_port()
        config = workdir / f"operator-{size}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "metricsPort": port,
                    "healthPort": None,
                    "logFormat": "plain",
                    "resyncSeconds": resync_s,
                }
            )
        )
        log = workdir / f"operator-{size}.log"
        operator = Operator(config, kubeconfig, log)
        try:
            wait_for("the operator's metrics", lambda: reconciles(port) >= 0, 60)
            kubectl = Kubectl(cluster.url, timeout=120)  # a busy emulator answers slowly
            start_index = len(operator_requests(cluster))
            started = time.monotonic()
            cpu_before, own_before = operator.cpu_s, _own_cpu()
            for i in range(size):
                kubectl.create(
                    contract.PLURAL,
                    {
                        "apiVersion": contract.API_VERSION,
                        "kind": contract.KIND,
                        "metadata": {"name": f"model-{i:03d}", "namespace": "bench"},
                        "spec": SPEC,
                    },
                )
            # Checking walks every object; rarely, so the emulator keeps the interpreter.
            wait_for("children and status", lambda: converged(cluster, size), 600, every=0.5)
            result.create_s = time.monotonic() - started
            result.operator_cpu_s = operator.cpu_s - cpu_before
            result.total_cpu_s = result.operator_cpu_s + _own_cpu() - own_before
            # Quiet: the events of the last writes are processed before counting the resync.
            time.sleep(1)
            creation = operator_requests(cluster)[start_index:]
            result.creation_requests = len(creation)
            result.creation_writes = sum(r.method.value in WRITES for r in creation)
            result.by_resource = collections.Counter(describe(r) for r in creation)

            idle_index, before = len(operator_requests(cluster)), reconciles(port)
            wait_for("an idle resync", lambda: reconciles(port) >= before + size, resync_s * 4)
            idle = operator_requests(cluster)[idle_index:]
            result.idle_requests = len(idle)
            result.idle_writes = sum(r.method.value in WRITES for r in idle)
            result.unexpected += [f"idle: {r.method.value} {r.url.path_qs}" for r in idle]
        finally:
            operator.stop()
        peak = operator.peak_rss

        restart_index = len(operator_requests(cluster))
        operator = Operator(config, kubeconfig, log)
        try:
            wait_for("reconciles after restart", lambda: reconciles(port) >= size, 120)
            time.sleep(1)
            restart = operator_requests(cluster)[restart_index:]
            result.restart_requests = len(restart)
            result.restart_writes = sum(r.method.value in WRITES for r in restart)
            result.unexpected += [
                f"restart: {r.method.value} {r.url.path_qs}"
                for r in restart
                if r.method.value in WRITES
            ]
        finally:
            operator.stop()
        result.peak_rss_mib = max(peak, operator.peak_rss) / 2**20
        kubectl.close()
    return result


def _own_cpu() -> float:
    """CPU time of this process: the emulator, the test client and the polling."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a else "-"


def report(small: Result, large: Result) -> None:
    rows = [
        ("time to children + status (s)", small.create_s, large.create_s, "{:.2f}"),
        ("  per LLMDeployment (ms)", 1000 * small.create_s / small.size,
         1000 * large.create_s / large.size, "{:.1f}"),
        ("API requests while creating", small.creation_requests, large.creation_requests, "{}"),
        ("  per LLMDeployment", small.creation_requests / small.size,
         large.creation_requests / large.size, "{:.2f}"),
        ("  writes per LLMDeployment", small.creation_writes / small.size,
         large.creation_writes / large.size, "{:.2f}"),
        ("idle resync: requests", small.idle_requests, large.idle_requests, "{}"),
        ("idle resync: writes", small.idle_writes, large.idle_writes, "{}"),
        ("restart: requests", small.restart_requests, large.restart_requests, "{}"),
        ("restart: writes", small.restart_writes, large.restart_writes, "{}"),
        ("  CPU of the operator (s)", small.operator_cpu_s, large.operator_cpu_s, "{:.1f}"),
        ("  CPU of operator + emulator (s)", small.total_cpu_s, large.total_cpu_s, "{:.1f}"),
        ("operator peak RSS (MiB)", small.peak_rss_mib, large.peak_rss_mib, "{:.0f}"),
    ]  # fmt: skip
    head = f"| {'':32} | {small.size:>8} | {large.size:>8} | ratio {large.size}/{small.size} |"
    print(head)
    print("|" + "-" * 34 + "|" + "-" * 10 + "|" + "-" * 10 + "|" + "-" * 14 + "|")
    for label, a, b, fmt in rows:
        print(f"| {label:32} | {fmt.format(a):>8} | {fmt.format(b):>8} | {ratio(a, b):>12} |")
    print(f"\nrequests while creating {large.size} LLMDeployments, by verb and resource:")
    for what, count in sorted(large.by_resource.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {what:40} {count:6}  ({count / large.size:.2f} per LLMDeployment)")
    for result in (small, large):
        for line in result.unexpected:
            print(f"  {result.size}: {line}")
    cpu = platform.processor() or platform.machine()
    print(
        f"\nmachine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        "operator as a `modelplane operator` process, API: KMock's emulator in this process"
    )
    print(
        f"create_s_{large.size}={large.create_s:.2f} writes_idle_{large.size}={large.idle_writes} "
        f"writes_restart_{large.size}={large.restart_writes} "
        f"peak_rss_mib_{large.size}={large.peak_rss_mib:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[30, 300], metavar=("SMALL", "LARGE"))
    parser.add_argument("--resync-seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        small, large = (run_size(n, Path(tmp), args.resync_seconds) for n in args.sizes)
        report(small, large)


if __name__ == "__main__":
    main()
