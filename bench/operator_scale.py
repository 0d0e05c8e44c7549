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

The small size runs a second time in a crowded cluster: 5,000 Pods and 5,000
ConfigMaps of about 10 KB each that the operator does not manage, stored in
the emulator before the operator starts (a shared cluster's other tenants).
The operator lists and watches only what carries its labels, so it should
neither see nor hold them: its peak RSS may differ by less than 10%.

Printed: one table with both sizes side by side and the 300/30 ratio (linear
work per resource shows as a ratio near 10), and the crowded run beside the
small one with their ratio; then the 300-size requests by resource, and as
the last line `create_s_300=<s> writes_idle_300=<n> writes_restart_300=<n>
peak_rss_mib_300=<MiB> rss_ratio_unrelated=<ratio>`.

    make bench-operator                    # or: python -m bench.operator_scale
"""

from __future__ import annotations

import argparse
import collections
import json
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
UNRELATED_LIMIT = 0.10  # the crowded run's peak RSS may exceed the plain one's by this much
SPEC = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
    "engine": {"maxModelLen": 4096},
}


@dataclass
class Result:
    size: int
    unrelated: int = 0  # Pods and (as many) ConfigMaps the operator does not manage
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


def unrelated_pod(index: int, namespace: str, size: int) -> dict[str, Any]:
    """A pod of someone else's web app, about `size` bytes of JSON (mostly its env)."""
    app = f"web-{index % 50}"
    env = [
        {"name": f"SETTING_{k:03d}", "value": f"{index:05d}-" + "v" * 70}
        for k in range(size // 117)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app}-{index:05d}",
            "namespace": namespace,
            # Some carry another tool's managed-by: the operator must select by value.
            "labels": {"app": app, contract.LABEL_MANAGED_BY: "Helm" if index % 2 else "kustomize"},
        },
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "env": env}]},
        "status": {"phase": "Running"},
    }


def unrelated_config_map(index: int, namespace: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"settings-{index:05d}",
            "namespace": namespace,
            "labels": {"app": f"web-{index % 50}"},
        },
        "data": {"app.properties": "\n".join(f"key.{k}=value-{index}" for k in range(size // 17))},
    }


def crowd(cluster: EmulatorThread, count: int, size: int = 10_000) -> int:
    """Store `count` unrelated Pods and ConfigMaps, in the benchmark's namespace and nine
    others; returns their total size in bytes of JSON."""
    namespaces = ["bench", *(f"team-{n}" for n in range(9))]
    pods = [unrelated_pod(i, namespaces[i % 10], size) for i in range(count)]
    maps = [unrelated_config_map(i, namespaces[i % 10], size) for i in range(count)]
    total = sum(len(json.dumps(obj)) for obj in (*pods, *maps))
    cluster.preload("v1/pods", pods)
    cluster.preload("v1/configmaps", maps)
    return total


def run_size(size: int, workdir: Path, resync_s: float, unrelated: int = 0) -> Result:
    result = Result(size, unrelated)
    with EmulatorThread() as cluster:
        if unrelated:
            crowd(cluster, unrelated)
        label = f"{size}-{unrelated}"
        kubeconfig = cluster.write_kubeconfig(workdir / f"kubeconfig-{label}")
        port = free_port()
        config = workdir / f"operator-{label}.yaml"
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
        log = workdir / f"operator-{label}.log"
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


ROWS: list[tuple[str, Callable[[Result], float], str]] = [
    ("time to children + status (s)", lambda r: r.create_s, "{:.2f}"),
    ("  per LLMDeployment (ms)", lambda r: 1000 * r.create_s / r.size, "{:.1f}"),
    ("API requests while creating", lambda r: r.creation_requests, "{}"),
    ("  per LLMDeployment", lambda r: r.creation_requests / r.size, "{:.2f}"),
    ("  writes per LLMDeployment", lambda r: r.creation_writes / r.size, "{:.2f}"),
    ("idle resync: requests", lambda r: r.idle_requests, "{}"),
    ("idle resync: writes", lambda r: r.idle_writes, "{}"),
    ("restart: requests", lambda r: r.restart_requests, "{}"),
    ("restart: writes", lambda r: r.restart_writes, "{}"),
    ("  CPU of the operator (s)", lambda r: r.operator_cpu_s, "{:.1f}"),
    ("  CPU of operator + emulator (s)", lambda r: r.total_cpu_s, "{:.1f}"),
    ("operator peak RSS (MiB)", lambda r: r.peak_rss_mib, "{:.0f}"),
]


def report(small: Result, large: Result, crowded: Result | None) -> bool:
    """Print the comparison table; False when the crowded run's RSS grew past the limit."""
    columns = [f"{small.size:>8}", f"{large.size:>8}", f"ratio {large.size}/{small.size}"]
    if crowded:
        columns += [f"{crowded.size} + unrelated", f"ratio to {small.size}"]
    print("| " + " " * 32 + " | " + " | ".join(columns) + " |")
    print("|" + "-" * 34 + "|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")
    for label, value, fmt in ROWS:
        a, b = value(small), value(large)
        cells = [fmt.format(a), fmt.format(b), ratio(a, b)]
        if crowded:
            cells += [fmt.format(value(crowded)), ratio(a, value(crowded))]
        print(
            f"| {label:32} | "
            + " | ".join(f"{c:>{len(h)}}" for c, h in zip(cells, columns, strict=True))
            + " |"
        )
    print(f"\nrequests while creating {large.size} LLMDeployments, by verb and resource:")
    for what, count in sorted(large.by_resource.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {what:40} {count:6}  ({count / large.size:.2f} per LLMDeployment)")
    for result in (small, large, *([crowded] if crowded else [])):
        for line in result.unexpected:
            print(f"  {result.size}: {line}")
    within = True
    if crowded:
        growth = crowded.peak_rss_mib / small.peak_rss_mib - 1
        within = growth < UNRELATED_LIMIT
        print(
            f"\nunrelated objects: {crowded.unrelated:,} Pods + {crowded.unrelated:,} ConfigMaps "
            f"(about 10 KB each) beside {crowded.size} LLMDeployments: operator peak RSS "
            f"{crowded.peak_rss_mib:.0f} MiB against {small.peak_rss_mib:.0f} MiB without them, "
            f"{growth:+.1%} ({'within' if within else 'OVER'} the {UNRELATED_LIMIT:.0%} limit)"
        )
    cpu = platform.processor() or platform.machine()
    print(
        f"\nmachine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        "operator as a `modelplane operator` process, API: KMock's emulator in this process"
    )
    rss_ratio = (
        f" rss_ratio_unrelated={ratio(small.peak_rss_mib, crowded.peak_rss_mib)}" if crowded else ""
    )
    print(
        f"create_s_{large.size}={large.create_s:.2f} writes_idle_{large.size}={large.idle_writes} "
        f"writes_restart_{large.size}={large.restart_writes} "
        f"peak_rss_mib_{large.size}={large.peak_rss_mib:.0f}{rss_ratio}"
    )
    return within


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[30, 300], metavar=("SMALL", "LARGE"))
    parser.add_argument("--resync-seconds", type=float, default=15.0)
    parser.add_argument(
        "--unrelated",
        type=int,
        default=5000,
        help="Pods and ConfigMaps the operator does not manage, in the crowded run (0: no run)",
    )
    args = parser.parse_args()
    small_size, large_size = args.sizes
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        small = run_size(small_size, Path(tmp), args.resync_seconds)
        large = run_size(large_size, Path(tmp), args.resync_seconds)
        crowded = None
        if args.unrelated:
            crowded = run_size(small_size, Path(tmp), args.resync_seconds, args.unrelated)
        if not report(small, large, crowded):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
