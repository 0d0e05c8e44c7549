"""Autoscaling policies side by side: ours vs HPA, KEDA, KubeAI and AIBrix, in a simulator.

Discrete-event and seeded: the same Poisson arrivals, lengths, replica model
and start-up delays for every policy (see autoscale/model.py for the replica
model, autoscale/profiles.py for the two calibrations, their start-up phases
and sources, autoscale/traces.py for the five traces, autoscale/policies.py
for the policies and the documents each follows). Ours is the operator's own
policy code, imported from the package.

The goal. For each trace, the best baseline is the cheapest of the four
baselines at >= 99% attainment (else the one with the highest attainment),
and R is the highest attainment among the references that cost no more
replica-hours than it: the surprise bound (autoscale_policies.SurpriseBound,
the most any policy that sizes on the load it has seen can attain), ours+1
and ours x1.5 (ours with a fixed headroom bought up front on top of what it
asks for, autoscale_policies.Padded). A run (one seed, calibration and trace) meets the
goal when ours attains at least min(99%, R - 0.25 points) and costs no more
replica-hours than the best baseline. If no reference stays within that
budget, R is the best baseline's own attainment.

Printed: for seed 1, one table per calibration with, for each trace and
policy, TTFT p50/p95, SLO attainment, replica-hours and scaling events, the
references beside them and ours' verdict with R and the reference that set
it; then, per trace, the runs over all seeds that meet the goal, the misses
and how many runs ask for more than the surprise bound attains; then a
what-if table (seed 1): attainment and replica-hours of ours and of the best
baseline with 60 s, 20 s and 5 s starts. Pictures (one PNG per trace and
calibration, seed 1: offered load, ready and loading replicas, TTFT p95 over
time, one panel per policy) go to bench/results/. The last line is

    runs_meeting_goal=<n>/<runs> worst_gap_to_reference_pts=<x> worst_cost_ratio=<y>

with the largest R - ours (in points) and ours' largest cost against the
best baseline over all runs. `--check-real` instead replays one small trace
against the real CPU server and its simulated twin (needs the engine lock:
`flock /tmp/modelplane-engine.lock python -m bench.autoscale.sim --check-real`).

    make bench-autoscale   # or: python -m bench.autoscale.sim [--seeds 1 2 ...] [--jobs N]
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
from dataclasses import dataclass, field, replace
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
REFERENCE = "oracle-reactive"  # shown for scale (seed 1), never the best baseline
POLICIES = ("ours", *BASELINES, REFERENCE)
BOUND = "surprise-bound"  # the most any policy sized on what it saw can attain
# Ours with spare capacity bought up front (spare replicas, factor).
PADDINGS = {"ours+1": (1, 1.0), "ours x1.5": (0, 1.5)}
REFERENCES = (BOUND, *PADDINGS)  # what R, the attainment to match, is taken from
ATTAINMENT_GOAL = 0.99  # the best baseline: the cheapest at this; and the cap on R
GOAL_SLACK = 0.0025  # ours may trail R by a quarter of a point
SEEDS = tuple(range(1, 11))
WHAT_IF_STARTS = (60.0, 20.0, 5.0)  # start-up delays for the what-if table (seed 1)
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
    seed: int
    startup_s: float
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


Task = tuple[str, str, str, int, float | None]  # profile, trace, policy, seed, start-up (s)


def run_one(task: Task) -> Row:
    """One simulated run; a start-up delay other than the profile's when the task names one."""
    profile_name, trace_name, policy_name, seed, startup_s = task
    profile = PROFILES[profile_name]
    if startup_s is not None:
        profile = replace(profile, startup_s=startup_s)
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
        seed,
        profile.startup_s,
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


@dataclass(frozen=True)
class Verdict:
    """Ours on one run (seed, calibration, trace) against the goal."""

    ours: Row
    best: Row  # the best baseline: the budget
    reference: Row  # what set R: a reference within budget, else the best baseline
    required: float  # min(99%, R - 0.25 points)
    bound: Row | None = None  # the surprise bound's run, when it ran

    @property
    def beyond_bound(self) -> bool:
        """Asks more than the surprise bound attains: only spare capacity held before
        the first rise, which no sizing on the load seen so far buys, reaches it."""
        return self.bound is not None and self.required > self.bound.attainment + 1e-12

    @property
    def r(self) -> float:
        return self.reference.attainment

    @property
    def cost_ratio(self) -> float:
        return self.ours.replica_hours / self.best.replica_hours

    @property
    def gap_pts(self) -> float:
        """How far ours trails R, in points (negative: ours is above it)."""
        return 100.0 * (self.r - self.ours.attainment)

    @property
    def meets(self) -> bool:
        return self.ours.attainment >= self.required - 1e-12 and self.cost_ratio <= 1.0


def judge(rows: list[Row]) -> Verdict:
    """The goal for one run's rows (ours, the baselines and the references)."""
    best = best_baseline(rows)
    ours = next(r for r in rows if r.policy == "ours")
    within = [r for r in rows if r.policy in REFERENCES and r.replica_hours <= best.replica_hours]
    reference = max(within, key=lambda r: r.attainment) if within else best
    required = min(ATTAINMENT_GOAL, reference.attainment - GOAL_SLACK)
    bound = next((r for r in rows if r.policy == BOUND), None)
    return Verdict(ours, best, reference, required, bound)


def print_tables(rows: list[Row], profiles: list[str], traces: list[str]) -> None:
    """Seed 1, calibration by calibration: every policy and reference, and ours' verdict."""
    for profile_name in profiles:
        profile = PROFILES[profile_name]
        print(
            f"\n== {profile_name}: {profile.source}; SLO: TTFT <= {profile.slo_ttft_s:g}s; "
            f"start-up {profile.startup_s:g}s ({profile.startup_note}); "
            f"1 load unit = {profile.unit_rps:g} req/s =="
        )
        header = (
            f"{'trace':<16}{'policy':<16}{'requests':>9}{'TTFT p50':>10}{'TTFT p95':>10}"
            f"{'SLO att.':>10}{'replica-h':>11}{'events':>8}  verdict"
        )
        print(header)
        print("-" * len(header))
        for trace_name in traces:
            group = [r for r in rows if r.profile == profile_name and r.trace == trace_name]
            if not group:
                continue
            verdict = judge(group)
            for r in group:
                note = ""
                if r is verdict.best:
                    note = "best baseline"
                elif r is verdict.ours:
                    note = (
                        f"{'meets' if verdict.meets else 'MISSES'} goal: needs "
                        f"{verdict.required:.2%} (R {verdict.r:.2%}, {verdict.reference.policy}); "
                        f"cost {verdict.cost_ratio:.2f}x best"
                    )
                elif r.policy == REFERENCE:
                    note = "knows the load, pays the loads"
                elif r.policy in REFERENCES:
                    ratio = r.replica_hours / verdict.best.replica_hours
                    within = "within budget" if ratio <= 1.0 else "over budget"
                    note = f"reference, {ratio:.2f}x best ({within})"
                    if r is verdict.reference:
                        note += ": sets R"
                print(
                    f"{r.trace:<16}{r.policy:<16}{r.requests:>9}{_secs(r.ttft_p50):>10}"
                    f"{_secs(r.ttft_p95):>10}{r.attainment:>9.2%} {r.replica_hours:>10.2f}"
                    f"{r.events:>8}  {note}"
                )
            print()


def print_over_seeds(verdicts: list[Verdict], profiles: list[str], traces: list[str]) -> None:
    """Per calibration and trace: the runs meeting the goal and how close the others came."""
    seeds = len({v.ours.seed for v in verdicts})
    print(f"\n== the goal over {seeds} seed(s): ours >= min(99%, R - 0.25 points), cost <= best ==")
    print(
        f"{'calibration':<12}{'trace':<16}{'meeting':>8}{'ours mean':>11}{'ours worst':>11}"
        f"{'R mean':>9}{'worst gap':>10}{'worst cost':>11}  R set by"
    )
    for profile_name in profiles:
        for trace_name in traces:
            group = [
                v for v in verdicts if (v.ours.profile, v.ours.trace) == (profile_name, trace_name)
            ]
            if not group:
                continue
            att = [v.ours.attainment for v in group]
            setters: dict[str, int] = {}
            for v in group:
                setters[v.reference.policy] = setters.get(v.reference.policy, 0) + 1
            set_by = ", ".join(f"{name} {n}" for name, n in sorted(setters.items()))
            print(
                f"{profile_name:<12}{trace_name:<16}"
                f"{f'{sum(v.meets for v in group)}/{len(group)}':>8}"
                f"{float(np.mean(att)):>10.2%} {min(att):>10.2%}"
                f"{float(np.mean([v.r for v in group])):>9.2%}"
                f"{max(v.gap_pts for v in group):>9.2f}p"
                f"{max(v.cost_ratio for v in group):>10.2f}x  {set_by}"
            )
    missed = [v for v in verdicts if not v.meets]
    for v in sorted(missed, key=lambda v: (v.ours.profile, v.ours.trace, v.ours.seed)):
        why = []
        if v.ours.attainment < v.required:
            why.append(f"{v.ours.attainment:.2%} < {v.required:.2%} ({v.reference.policy})")
        if v.cost_ratio > 1.0:
            why.append(f"cost {v.cost_ratio:.2f}x {v.best.policy}")
        if v.beyond_bound:
            why.append("beyond the surprise bound")
        print(f"  missed: {v.ours.profile} {v.ours.trace} seed {v.ours.seed}: {'; '.join(why)}")
    beyond = [v for v in verdicts if v.beyond_bound]
    if beyond:
        met = sum(v.meets for v in beyond)
        print(
            f"{len(beyond)} of {len(verdicts)} runs ask for more than the surprise bound "
            f"attains there (R from a reference that held a spare replica before the "
            f"first rise); ours meets {met} of them"
        )


def print_what_if(rows: list[Row], profiles: list[str], traces: list[str]) -> None:
    """Ours and the best baseline (seed 1) with faster starts: what cutting start-up buys."""
    print("\n== what-if (seed 1): the same runs with faster model starts ==")
    print(
        f"{'calibration':<12}{'trace':<16}{'start':>6}{'ours att.':>11}{'replica-h':>10}"
        f"  {'best baseline':<15}{'att.':>8}{'replica-h':>10}"
    )
    for profile_name in profiles:
        for trace_name in traces:
            for start in WHAT_IF_STARTS:
                group = [
                    r
                    for r in rows
                    if (r.profile, r.trace) == (profile_name, trace_name) and r.startup_s == start
                ]
                if not group:
                    continue
                ours = next(r for r in group if r.policy == "ours")
                best = best_baseline(group)
                print(
                    f"{profile_name:<12}{trace_name:<16}{start:>5.0f}s{ours.attainment:>10.2%} "
                    f"{ours.replica_hours:>9.2f}  {best.policy:<15}{best.attainment:>7.2%} "
                    f"{best.replica_hours:>9.2f}"
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
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--traces", nargs="+", default=None)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-what-if", action="store_true", help="skip the start-up what-if")
    parser.add_argument("--check-real", action="store_true", help="sim vs the real CPU server")
    args = parser.parse_args()
    if args.check_real:
        check_real(args.seeds[0])
        return
    first = args.seeds[0]
    traces = args.traces or [t.name for t in all_traces(first)]
    unknown = sorted(set(traces) - {t.name for t in all_traces(first)})
    if unknown:
        parser.error(f"unknown trace(s): {', '.join(unknown)}")
    judged = ("ours", *BASELINES, *REFERENCES)  # the oracle is shown for the first seed only
    tasks: list[Task] = [
        (p, t, pol, seed, None)
        for seed in args.seeds
        for p in args.profiles
        for t in traces
        for pol in (*judged, REFERENCE)
        if seed == first or pol != REFERENCE
    ]
    if not args.no_what_if:
        tasks += [
            (p, t, pol, first, start)
            for p in args.profiles
            for t in traces
            for start in WHAT_IF_STARTS
            for pol in ("ours", *BASELINES)
        ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, tasks, chunksize=1))
        sim_wall = time.perf_counter() - started
        main_rows = [r for r, task in zip(rows, tasks, strict=True) if task[4] is None]
        what_if = [r for r, task in zip(rows, tasks, strict=True) if task[4] is not None]
        print_tables([r for r in main_rows if r.seed == first], args.profiles, traces)
        verdicts = [
            judge([r for r in main_rows if (r.seed, r.profile, r.trace) == (seed, p, t)])
            for seed in args.seeds
            for p in args.profiles
            for t in traces
        ]
        print_over_seeds(verdicts, args.profiles, traces)
        if what_if:
            print_what_if(what_if, args.profiles, traces)
        if not args.no_plots:
            from bench.autoscale.plots import write_picture

            by_run = {(v.ours.profile, v.ours.trace): v for v in verdicts if v.ours.seed == first}
            pictures = [
                pool.submit(
                    write_picture,
                    p,
                    PROFILES[p].slo_ttft_s,
                    t.name,
                    t.description,
                    [
                        r
                        for r in main_rows
                        if (r.seed, r.profile, r.trace) == (first, p, t.name)
                        and r.policy in POLICIES
                    ],
                    RESULTS,
                    _goal_line(by_run[(p, t.name)]),
                )
                for p in args.profiles
                for t in all_traces(first)
                if t.name in traces
            ]
            print(f"pictures (seed {first}): {len(pictures)} PNGs in {RESULTS}")
            for picture in pictures:
                picture.result()
    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        f"{len(tasks)} simulated runs of {sum(r.requests for r in rows):,} requests in "
        f"{sim_wall:.1f}s with {args.jobs} processes, {time.perf_counter() - started:.1f}s "
        f"with the pictures; seeds {', '.join(map(str, args.seeds))}"
    )
    print(
        f"runs_meeting_goal={sum(v.meets for v in verdicts)}/{len(verdicts)} "
        f"worst_gap_to_reference_pts={max(v.gap_pts for v in verdicts):.2f} "
        f"worst_cost_ratio={max(v.cost_ratio for v in verdicts):.3f}"
    )


def _goal_line(v: Verdict) -> str:
    """Ours against R, for a picture's title."""
    return (
        f"ours {v.ours.attainment:.2%} vs R {v.r:.2%} ({v.reference.policy}), needs "
        f"{v.required:.2%}: {'meets' if v.meets else 'misses'}; cost {v.cost_ratio:.2f}x "
        f"{v.best.policy}"
    )


if __name__ == "__main__":
    main()
