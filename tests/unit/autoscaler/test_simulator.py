"""The simulator's building blocks: the replica model behaves like an engine, runs repeat.

Fast checks of bench/autoscale/model.py and friends (the full comparison is
`make bench-autoscale`): continuous batching raises throughput with
concurrency until the engine saturates, a full KV cache makes requests wait,
a new replica serves nothing while it loads, a seed fixes a run, the
policy's state stays annotation-sized through bursts, ours wakes on the
gateway's demand write, the surprise bound runs all out only after a
surprise, and the padded reference pads without feeding back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.autoscale.model import ClusterView, Policy, Workload, make_workload, simulate
from bench.autoscale.policies import Ours, Padded, SurpriseBound
from bench.autoscale.profiles import CPU, closed_loop
from modelplane.operator.autoscaler import AutoscalingSpec, AutoscalingTargets, PolicyState


def test_throughput_grows_with_concurrency_until_the_engine_saturates() -> None:
    shape = (128, 48)
    rps = {c: closed_loop(CPU, c, shape)[0] for c in (1, 4, 16, 32, 64)}
    ttft = {c: closed_loop(CPU, c, shape)[2] for c in (1, 64)}
    assert rps[1] < rps[4] < rps[16] < rps[32]
    assert rps[64] < 1.25 * rps[32]  # saturated: more clients, little more work done
    assert ttft[64] > 5 * ttft[1]  # and they wait for it


def test_a_full_kv_cache_makes_requests_wait() -> None:
    tiny = replace(CPU, kv_tokens=1000)
    roomy = closed_loop(CPU, 16, (128, 48))
    cramped = closed_loop(tiny, 16, (128, 48))  # room for 5 requests of 176 tokens
    assert cramped[0] < roomy[0]
    assert cramped[2] > roomy[2]


# What a user would write for a model that may scale to zero.
TO_ZERO = AutoscalingSpec(
    min_replicas=0,
    max_replicas=10,
    targets=AutoscalingTargets(
        ttft_p95_seconds=1.0, queue_depth_per_replica=4, kv_cache_utilization=0.8
    ),
)


class ScaleToTwoAtStart(Policy):
    name = "two"
    interval_s = 1.0

    def decide(self, view: ClusterView) -> int:
        return 2


def test_a_new_replica_serves_nothing_while_it_loads() -> None:
    rate = 3.0
    profile = replace(CPU, startup_s=30.6)
    workload = make_workload(lambda t: np.full_like(t, rate), rate, 120.0, profile, seed=5)
    result = simulate(profile, workload, ScaleToTwoAtStart(), 120.0, initial=1)
    ready = {t: r for t, r, _ in result.samples}
    loading = {t: n for t, _, n in result.samples}
    assert ready[10.0] == 1 and loading[10.0] == 1  # asked for at 1 s, loads 30.6 s
    assert ready[40.0] == 2 and loading[40.0] == 0
    assert result.replica_seconds == 120.0 + (120.0 - 1.0)


def test_a_seed_fixes_the_run() -> None:
    def run(seed: int) -> tuple[int, float, float, int]:
        rate = lambda t: np.where(t < 300, 4.0, 16.0)  # noqa: E731
        workload = make_workload(rate, 16.0, 900.0, CPU, seed)
        spec = AutoscalingSpec(
            targets=AutoscalingTargets(ttft_p95_seconds=1.0, kv_cache_utilization=0.8)
        )
        result = simulate(CPU, workload, Ours(spec), 900.0, initial=1)
        return len(workload), result.attainment(1.0), result.replica_seconds, result.scaling_events

    first = run(3)
    assert first == run(3)
    assert first[0] != run(4)[0]
    assert first[3] > 0  # the policy under test did scale


def test_workload_lengths_follow_the_profile() -> None:
    w: Workload = make_workload(lambda t: np.full_like(t, 50.0), 50.0, 200.0, CPU, seed=1)
    median, _, lo, hi = CPU.prompt
    assert lo <= w.prompt.min() and w.prompt.max() <= hi
    assert abs(float(np.median(w.prompt)) - median) < 0.1 * median
    assert abs(len(w) - 50 * 200) < 4 * (50 * 200) ** 0.5  # Poisson count


class Recording(Ours):
    """Ours, keeping the size of the state it would store after every decision."""

    sizes: list[int]

    def decide(self, view: ClusterView) -> int:
        desired = super().decide(view)
        self.sizes = [*getattr(self, "sizes", []), len(self.state.to_json())]
        return desired


def test_the_policy_state_stays_small_through_bursts_and_a_scale_from_zero() -> None:
    """20 minutes of 3x bursts every 2 minutes, then idle to zero and a cold spike."""

    def rate(t: np.ndarray) -> np.ndarray:
        bursts = np.where((t % 120) < 40, 18.0, 6.0)
        return np.where(t < 1200, bursts, np.where(t < 1600, 0.0, 16.0))

    workload = make_workload(rate, 18.0, 1800.0, CPU, seed=2)
    policy = Recording(TO_ZERO)
    result = simulate(CPU, workload, policy, 1800.0, initial=2)
    assert len(policy.state.bursts) >= 2  # it did see recurring bursts
    assert min(n for t, _, n in result.samples if t >= 1600) == 0 or 0 in [
        r for t, r, _ in result.samples if 1200 < t < 1600
    ]
    assert max(policy.sizes) < 4096  # bytes of JSON in an annotation


def test_the_surprise_bound_runs_all_out_only_after_a_surprise() -> None:
    level = {0.0: 6.0, 100.0: 6.0, 200.0: 30.0, 700.0: 6.0, 800.0: 30.0}

    def rate(t: float) -> float:
        return level[max(k for k in level if k <= t)]

    bound = SurpriseBound(rate, per_replica_rps=5.0, min_replicas=1, max_replicas=10)

    def at(now: float) -> int:
        view = ClusterView(now, 2, [], 0, 0, None, 0, 0)
        return bound.decide(view)

    assert at(100.0) == 2  # the load it started with is no surprise
    assert at(200.0) == 10  # 5x, never seen: everything at once
    assert at(600.0) == 6  # after the surge: what the highest load seen needs
    assert at(700.0) == 6  # the load fell: it keeps that
    assert at(800.0) == 6  # 30 req/s again is no surprise


class Asking(Ours):
    """Ours, keeping when it asked for how many replicas."""

    asks: list[tuple[float, int]]

    def decide(self, view: ClusterView) -> int:
        desired = super().decide(view)
        self.asks = [*getattr(self, "asks", []), (view.now, desired)]
        return desired


def test_ours_wakes_on_the_gateways_demand_write_not_on_its_next_tick() -> None:
    """Idle, then 8 req/s from t=1005: the first held request's demand write wakes the
    model at once, and the next writes, 2 s apart, carry the held count that sizes it
    (with a capacity learned before), all before the operator's next 10 s tick."""

    def rate(t: np.ndarray) -> np.ndarray:
        return np.where(t >= 1005.0, 8.0, 0.0)

    workload = make_workload(rate, 8.0, 1100.0, CPU, seed=3)
    policy = Asking(TO_ZERO)
    policy.state = PolicyState(capacity_rps=2.4)  # learned in an earlier life of the model
    simulate(CPU, workload, policy, 1100.0, initial=0)
    first_request = float(workload.arrival[0])
    woke_at, woke_to = next((t, n) for t, n in policy.asks if n > 0)
    assert (woke_at, woke_to) == (first_request, 1)
    sized_at, sized_to = next((t, n) for t, n in policy.asks if n > 1)
    assert sized_at < 1010.0 and sized_at % 10 != 0  # a demand write, not a tick
    assert sized_to >= 2


def test_the_padded_reference_adds_its_headroom_to_what_ours_asks_for() -> None:
    spec = AutoscalingSpec(
        min_replicas=0, max_replicas=6, targets=AutoscalingTargets(ttft_p95_seconds=1.0)
    )
    spare = Padded(spec, spare=1, factor=1.0)
    scaled = Padded(spec, spare=0, factor=1.5)
    assert [spare.padded(n) for n in (0, 1, 3, 6)] == [0, 2, 4, 6]
    assert [scaled.padded(n) for n in (0, 1, 3, 4, 5)] == [0, 2, 5, 6, 6]
    assert (spare.name, scaled.name) == ("ours+1", "ours x1.5")
