"""Autoscaling policies side by side: ours vs HPA, KEDA, KubeAI and AIBrix, in a simulator.

Discrete-event and seeded: the same Poisson arrivals, lengths, replica model
and start-up delays for every policy (see autoscale/model.py for the replica
model, autoscale/profiles.py for the two calibrations and their sources,
autoscale/traces.py for the five traces, autoscale/policies.py for the
policies and the documents each follows). Ours is the operator's own policy
code, imported from the package.

Printed: one table per calibration with, for each trace and policy, TTFT
p50/p95, SLO attainment (share of requests whose TTFT is within the target),
replica-hours and scaling events; then ours against the best baseline of
each trace (the cheapest baseline at >= 99% attainment, or the one with the
highest attainment if none gets there). Pictures (one PNG per trace and
calibration: offered load, ready and loading replicas, TTFT p95 over time,
one panel per policy) go to bench/results/. The last line is

    ours_dominates=<true|false> min_slo_attainment_ours=<x> cost_ratio_vs_best_baseline=<y>

with the worst trace's cost ratio. `--bound` instead sets ours beside the
surprise bound (autoscale_policies.SurpriseBound): the attainment no policy
that sizes on the load it has seen can exceed; and beside ours with spare
capacity bought up front (autoscale_policies.Padded: one spare replica, 1.5x
the need), with its cost against the best baseline. `--check-real` instead replays one small
trace against the real CPU server and its simulated twin (needs the engine
lock: `flock /tmp/modelplane-engine.lock python -m bench.autoscale.sim --check-real`).

    make bench-autoscale          # or: python -m bench.autoscale.sim [--seed N] [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from bench.autoscale.model import (
    Cluster,
    HoldReplicas,
    Policy,
    Profile,
    Workload,
    make_workload,
    simulate,
)
from bench.autoscale.policies import (
    AibrixKpa,
    HpaUtilization,
    KedaQueue,
    KubeAiMovingAverage,
    OracleReactive,
    Ours,
    Padded,
    SurpriseBound,
)
from bench.autoscale.profiles import CPU, GPU
from bench.autoscale.traces import Trace, all_traces
from modelplane.operator.autoscaler import AutoscalingSpec, AutoscalingTargets

PROFILES = {"cpu": CPU, "gpu": GPU}
BASELINES = ("hpa-util80", "keda-queue5", "kubeai-avg10m", "aibrix-kpa")  # what users would pick
REFERENCE = "oracle-reactive"  # shown for scale, never the best baseline
POLICIES = ("ours", *BASELINES, REFERENCE)
BOUND = "surprise-bound"  # --bound only: the most any policy sized on what it saw can attain
# --bound only: ours with spare capacity bought up front (spare replicas, factor).
PADDINGS = {"ours+1": (1, 1.0), "ours x1.5": (0, 1.5)}
ATTAINMENT_GOAL = 0.99
MAX_REPLICAS = 10
BIN_S = 30.0
# The oracle's replica: 1.25 load units, where one replica still keeps 99% of
# TTFTs within the SLO on both calibrations (a single-replica sweep).
ORACLE_PER_REPLICA = 1.25
RESULTS = Path(__file__).resolve().parents[1] / "results"


def our_spec(profile: Profile, trace: Trace) -> AutoscalingSpec:
    """What a user would write in spec.autoscaling for this SLO."""
    return AutoscalingSpec(
        min_replicas=trace.min_replicas,
        max_replicas=MAX_REPLICAS,
        targets=AutoscalingTargets(
            ttft_p95_seconds=profile.slo_ttft_s, queue_depth_per_replica=4, kv_cache_utilization=0.8
        ),
        scale_down_delay_seconds=300,
    )


@cache
def in_flight_per_replica(profile_name: str) -> float:
    """Requests one replica holds at the unit load (Little's law), for KubeAI's target."""
    profile = PROFILES[profile_name]
    rate = profile.unit_rps
    workload = make_workload(lambda t: np.full_like(t, rate), rate, 1800.0, profile, seed=99)
    cluster = Cluster(profile, workload, HoldReplicas(), initial=1)
    cluster.run(1800.0)
    e2e = cluster.last_finish - workload.arrival
    return float(np.sum(e2e[np.isfinite(e2e)]) / 1800.0)


def build_policy(name: str, profile: Profile, trace: Trace) -> Policy:
    lo = trace.min_replicas
    if name == "ours":
        return Ours(our_spec(profile, trace))
    if name in PADDINGS:
        return Padded(our_spec(profile, trace), *PADDINGS[name])
    if name == "hpa-util80":
        return HpaUtilization(lo, MAX_REPLICAS)
    if name == "keda-queue5":
        return KedaQueue(lo, MAX_REPLICAS)
    if name == "kubeai-avg10m":
        target = max(1.0, round(in_flight_per_replica(profile.name)))
        return KubeAiMovingAverage(lo, MAX_REPLICAS, target)
    if name == "aibrix-kpa":
        return AibrixKpa(lo, MAX_REPLICAS)
    if name in (REFERENCE, BOUND):
        unit = profile.unit_rps

        def rate(t: float) -> float:
            return float(trace.level(np.array([t]))[0]) * unit

        if name == BOUND:
            return SurpriseBound(rate, ORACLE_PER_REPLICA * unit, lo, MAX_REPLICAS)
        return OracleReactive(rate, ORACLE_PER_REPLICA * unit, lo, MAX_REPLICAS)
    raise ValueError(name)


@dataclass
class Row:
    profile: str
    trace: str
    policy: str
    requests: int
    ttft_p50: float
    ttft_p95: float
    attainment: float
    replica_hours: float
    events: int
    wall_s: float
    # For the pictures: replica samples and per-bin offered load / TTFT p95.
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    ttft_bins: list[float] = field(default_factory=list)


def trace_workload(profile: Profile, trace: Trace, seed: int) -> Workload:
    unit = profile.unit_rps
    return make_workload(
        lambda t: trace.level(t) * unit, trace.peak * unit, trace.duration_s, profile, seed
    )


def run_one(task: tuple[str, str, str, int]) -> Row:
    profile_name, trace_name, policy_name, seed = task
    profile = PROFILES[profile_name]
    trace = next(t for t in all_traces(seed) if t.name == trace_name)
    workload = trace_workload(profile, trace, seed)
    policy = build_policy(policy_name, profile, trace)
    initial = max(trace.min_replicas, 1, math.ceil(float(trace.level(np.array([0.0]))[0])))
    started = time.perf_counter()
    result = simulate(profile, workload, policy, trace.duration_s, initial)
    wall = time.perf_counter() - started
    ttft = result.ttft
    edges = np.arange(0.0, trace.duration_s + BIN_S, BIN_S)
    cuts = np.searchsorted(workload.arrival, edges)
    load, ttft_bins = [], []
    for a, b in itertools.pairwise(cuts):
        load.append((b - a) / BIN_S / profile.unit_rps)
        ttft_bins.append(
            float(np.percentile(np.minimum(ttft[a:b], 1e4), 95)) if b > a else math.nan
        )
    finite = np.minimum(ttft, 1e9)
    return Row(
        profile_name,
        trace_name,
        policy_name,
        len(ttft),
        float(np.percentile(finite, 50)),
        float(np.percentile(finite, 95)),
        result.attainment(profile.slo_ttft_s),
        result.replica_seconds / 3600.0,
        result.scaling_events,
        wall,
        result.samples,
        load,
        ttft_bins,
    )


def best_baseline(rows: list[Row]) -> Row:
    baselines = [r for r in rows if r.policy in BASELINES]
    meeting = [r for r in baselines if r.attainment >= ATTAINMENT_GOAL]
    if meeting:
        return min(meeting, key=lambda r: r.replica_hours)
    return max(baselines, key=lambda r: (r.attainment, -r.replica_hours))


def print_tables(
    rows: list[Row], profiles: list[str], traces: list[str]
) -> tuple[bool, float, float]:
    dominates, min_att, worst_ratio = True, 1.0, 0.0
    for profile_name in profiles:
        profile = PROFILES[profile_name]
        print(
            f"\n== {profile_name}: {profile.source}; SLO: TTFT <= {profile.slo_ttft_s:g}s; "
            f"start-up {profile.startup_s:g}s; 1 load unit = {profile.unit_rps:g} req/s =="
        )
        header = (
            f"{'trace':<16}{'policy':<15}{'requests':>9}{'TTFT p50':>10}{'TTFT p95':>10}"
            f"{'SLO att.':>10}{'replica-h':>11}{'events':>8}  verdict"
        )
        print(header)
        print("-" * len(header))
        for trace_name in traces:
            group = [r for r in rows if r.profile == profile_name and r.trace == trace_name]
            if not group:
                continue
            best = best_baseline(group)
            ours = next(r for r in group if r.policy == "ours")
            ratio = ours.replica_hours / best.replica_hours
            ok = ours.attainment >= ATTAINMENT_GOAL and ratio <= 1.0
            dominates &= ok
            min_att = min(min_att, ours.attainment)
            worst_ratio = max(worst_ratio, ratio)
            for r in group:
                verdict = ""
                if r is best:
                    verdict = "best baseline"
                elif r is ours:
                    verdict = f"{'meets' if ok else 'MISSES'} goal; cost {ratio:.2f}x best"
                elif r.policy == REFERENCE:
                    verdict = "reference: knows the load, pays the loads"
                print(
                    f"{r.trace:<16}{r.policy:<15}{r.requests:>9}{_secs(r.ttft_p50):>10}"
                    f"{_secs(r.ttft_p95):>10}{r.attainment:>9.2%} {r.replica_hours:>10.2f}"
                    f"{r.events:>8}  {verdict}"
                )
            print()
    return dominates, min_att, worst_ratio


def print_bound(profiles: list[str], traces: list[str], seed: int, jobs: int) -> None:
    """Ours next to the surprise bound, per trace: where 99% is out of any such policy's reach.

    Beside them, ours with spare capacity bought up front (PADDINGS): its
    attainment and its cost against the trace's best baseline.
    """
    policies = (*POLICIES, BOUND, *PADDINGS)
    tasks = [(p, t, pol, seed) for p in profiles for t in traces for pol in policies]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        rows = {(r.profile, r.trace, r.policy): r for r in pool.map(run_one, tasks)}
    padded = "".join(f"{name + ': att. / cost':>26}" for name in PADDINGS)
    print(f"{'calibration':<12}{'trace':<16}{'ours':>9}{'bound':>9}{padded}  99% reachable")
    for profile_name in profiles:
        for trace_name in traces:
            group = [r for (p, t, _), r in rows.items() if (p, t) == (profile_name, trace_name)]
            best = best_baseline(group).replica_hours
            ours = rows[(profile_name, trace_name, "ours")]
            bound = rows[(profile_name, trace_name, BOUND)]
            cells = "".join(
                f"{f'{r.attainment:.2%} / {r.replica_hours / best:.2f}x':>26}"
                for r in (rows[(profile_name, trace_name, name)] for name in PADDINGS)
            )
            verdict = "yes" if bound.attainment >= ATTAINMENT_GOAL else "no: its first surprise"
            print(
                f"{profile_name:<12}{trace_name:<16}{ours.attainment:>8.2%} "
                f"{bound.attainment:>8.2%} {cells}  {verdict}"
            )


def _secs(value: float) -> str:
    if value >= 3600:
        return ">1h"
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def check_real(seed: int) -> None:
    """Replay one small trace against the real CPU server and against its simulated twin."""
    from bench.autoscale import real as autoscale_real

    profile = CPU
    rate, duration = 0.8 * profile.unit_rps, 150.0
    workload = make_workload(lambda t: np.full_like(t, rate), rate, duration, profile, seed)
    arrivals = [
        (float(t), int(p), int(o))
        for t, p, o in zip(workload.arrival, workload.prompt, workload.output, strict=True)
    ]
    with autoscale_real.real_server() as (url, _, ready_s):
        print(
            f"real server ready in {ready_s:.1f}s; replaying {len(arrivals)} requests "
            f"at {rate:g} req/s for {duration:g}s",
            file=sys.stderr,
        )
        outcomes = asyncio.run(autoscale_real.replay(url, arrivals, seed))
    real = np.array([o.ttft_s for o in outcomes if o is not None])
    twin = simulate(profile, workload, HoldReplicas(), duration, initial=1).ttft
    print(
        f"sim-vs-real, one CPU replica, {len(arrivals)} requests, Poisson {rate:g} req/s, "
        f"prompt lognormal(median {profile.prompt[0]:g}), output lognormal(median "
        f"{profile.output[0]:g}); failed real requests: {len(arrivals) - len(real)}"
    )
    print(f"{'':<8}{'TTFT p50':>10}{'TTFT p95':>10}")
    for name, values in (("real", real), ("sim", twin)):
        print(
            f"{name:<8}{_secs(float(np.percentile(values, 50))):>10}"
            f"{_secs(float(np.percentile(values, 95))):>10}"
        )
    p50 = float(np.percentile(twin, 50) / np.percentile(real, 50))
    p95 = float(np.percentile(twin, 95) / np.percentile(real, 95))
    print(f"sim_over_real_ttft_p50={p50:.3f} sim_over_real_ttft_p95={p95:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--traces", nargs="+", default=None)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--check-real", action="store_true", help="sim vs the real CPU server")
    parser.add_argument(
        "--bound",
        action="store_true",
        help="ours vs the surprise bound and vs ours with headroom: is 99%% reachable?",
    )
    args = parser.parse_args()
    if args.check_real:
        check_real(args.seed)
        return
    traces = args.traces or [t.name for t in all_traces(args.seed)]
    if args.bound:
        print_bound(args.profiles, traces, args.seed, args.jobs)
        return
    tasks = [(p, t, pol, args.seed) for p in args.profiles for t in traces for pol in POLICIES]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, tasks))
        sim_wall = time.perf_counter() - started
        dominates, min_att, ratio = print_tables(rows, args.profiles, traces)
        if not args.no_plots:
            from bench.autoscale.plots import write_picture

            pictures = [
                pool.submit(
                    write_picture,
                    p,
                    PROFILES[p].slo_ttft_s,
                    t.name,
                    t.description,
                    [r for r in rows if r.profile == p and r.trace == t.name],
                    RESULTS,
                )
                for p in args.profiles
                for t in all_traces(args.seed)
                if t.name in traces
            ]
            print(f"pictures: {len(pictures)} PNGs in {RESULTS}")
            for picture in pictures:
                picture.result()
    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        f"{len(tasks)} simulated runs of {sum(r.requests for r in rows):,} requests in "
        f"{sim_wall:.1f}s with {args.jobs} processes, {time.perf_counter() - started:.1f}s "
        f"with the pictures; seed {args.seed}"
    )
    print(
        f"ours_dominates={'true' if dominates else 'false'} "
        f"min_slo_attainment_ours={min_att:.4f} cost_ratio_vs_best_baseline={ratio:.3f}"
    )


if __name__ == "__main__":
    main()
