"""The simulator's world: replicas with continuous batching, a gateway, a clock.

A replica is a vLLM engine reduced to what decides time to first token:

* Each engine step takes `step_base_s + step_per_seq_s * decoding` seconds
  plus the prefill work scheduled in it; every decoding request gets one
  token per step (continuous batching), and at most `chunk_tokens` worth of
  prefill work joins a step (chunked prefill), first come first served.
* Prefill work of a prompt of p tokens is `prefill_per_token_s * p +
  prefill_per_token2_s * p**2` (attention makes long prompts dearer per token).
  Its first token comes out at the end of the step that finishes its prefill,
  together with every other prompt finished in that step; a request that
  arrives during a step waits for the next one.
* A request is admitted while fewer than `max_num_seqs` run and its whole
  context (prompt + output) fits in the `kv_tokens` cache; others wait in
  the engine's queue. (vLLM admits on the prompt alone and pre-empts on
  overflow; reserving the output up front lands near the same steady state
  without modelling pre-emption.)
* A new replica serves nothing for `startup_s` (the model load), and a
  removed one finishes what it holds before it stops costing.

Steps are not simulated one by one: between two events (an arrival, a
prefill or a decode finishing) the batch is constant, so the engine's
progress is a rate, and each replica keeps two running counters (decode
steps done, prefill work done) that requests compare against. That keeps
the cost per request to a few heap operations, so hours of traffic for
five policies and five traces take seconds.

The gateway routes each request to the ready replica with the fewest
requests in it (the gateway's least-load balancing) and holds requests
while no replica is ready (scale from zero).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# The gateway's --demand-interval (DemandThrottle): at most one demand write per model
# this often, made when a request is held.
DEMAND_INTERVAL_S = 2.0

# vLLM's own TTFT histogram buckets (vllm/v1/metrics/buckets.py), so the policy
# reads the simulated replicas exactly as it reads real ones.
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, math.inf,
)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """One calibration: an engine, its model, its workload and its SLO."""

    name: str
    step_base_s: float
    step_per_seq_s: float
    prefill_per_token_s: float
    prefill_per_token2_s: float
    chunk_tokens: int
    max_num_seqs: int
    kv_tokens: int
    startup_s: float
    # Prompt and output lengths: lognormal(median, sigma) clipped to [lo, hi].
    prompt: tuple[float, float, int, int]
    output: tuple[float, float, int, int]
    slo_ttft_s: float
    # Requests/s one replica serves comfortably (about 70% of its saturation
    # rate on this workload): the unit in which traces are written.
    unit_rps: float
    source: str = ""
    # Where `startup_s` goes, as (phase, seconds); empty: one opaque delay.
    startup_phases: tuple[tuple[str, float], ...] = ()

    @property
    def startup_note(self) -> str:
        """The start-up's phases in one line, or where the figure comes from."""
        if not self.startup_phases:
            return "no breakdown"
        return ", ".join(f"{name} {secs:g}s" for name, secs in self.startup_phases)

    def prefill_work(self, prompt: int) -> float:
        return self.prefill_per_token_s * prompt + self.prefill_per_token2_s * prompt * prompt


@dataclass
class Workload:
    """The requests of one run, as parallel arrays (id = index)."""

    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival)


def lognormal_lengths(
    rng: np.random.Generator, n: int, spec: tuple[float, float, int, int]
) -> np.ndarray:
    median, sigma, lo, hi = spec
    raw = rng.lognormal(math.log(median), sigma, n)
    return np.clip(np.rint(raw), lo, hi).astype(np.int64)


def make_workload(
    rate: Callable[[np.ndarray], np.ndarray],
    peak_rate: float,
    duration_s: float,
    profile: Profile,
    seed: int,
) -> Workload:
    """Poisson arrivals with time-varying rate (by thinning) and lengths from the profile."""
    rng = np.random.default_rng(seed)
    n_max = rng.poisson(peak_rate * duration_s)
    candidates = np.sort(rng.uniform(0.0, duration_s, n_max))
    keep = rng.uniform(0.0, peak_rate, n_max) < rate(candidates)
    arrival = candidates[keep]
    return Workload(
        arrival=arrival,
        prompt=lognormal_lengths(rng, len(arrival), profile.prompt),
        output=lognormal_lengths(rng, len(arrival), profile.output),
    )


LOADING, READY, DRAINING, GONE = 0, 1, 2, 3


class Replica:
    """One engine; see the module docstring for the model."""

    __slots__ = (
        "busy_s",
        "chunk_end",
        "chunk_work",
        "completed",
        "d_start_sum",
        "decode",
        "decode_steps",
        "idx",
        "kv_prompt_sum",
        "kv_reserved",
        "last_t",
        "next_t",
        "prefill",
        "prefill_done",
        "prefill_enqueued",
        "rate_d",
        "rate_p",
        "ready_at",
        "started_at",
        "state",
        "stopped_at",
        "ttft_counts",
        "version",
        "waiting",
    )

    def __init__(self, idx: int, now: float, startup_s: float) -> None:
        self.idx = idx
        self.state = LOADING
        self.started_at = now
        self.ready_at = now + startup_s
        self.stopped_at: float | None = None
        self.waiting: deque[int] = deque()
        self.prefill: deque[tuple[float, int]] = deque()  # (prefill counter at done, id)
        self.decode: list[tuple[float, int]] = []  # heap of (decode counter at done, id)
        self.prefill_done = 0.0
        self.prefill_enqueued = 0.0
        self.chunk_end = -1.0  # prefill counter at the end of the step in progress (-1: none)
        self.chunk_work = 0.0  # prefill work in that step
        self.decode_steps = 0.0
        self.rate_d = 0.0
        self.rate_p = 0.0
        self.last_t = now
        self.next_t = math.inf  # when its pending engine event fires
        self.version = 0
        self.kv_reserved = 0
        self.kv_prompt_sum = 0
        self.d_start_sum = 0.0
        self.busy_s = 0.0
        self.completed = 0
        self.ttft_counts = [0] * len(TTFT_BUCKETS)

    @property
    def running(self) -> int:
        return len(self.prefill) + len(self.decode)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.prefill) + len(self.decode)


@dataclass
class ReplicaView:
    """What a policy may read from one ready replica (its /metrics, in effect)."""

    idx: int
    waiting: int
    running: int
    kv_usage: float
    busy_s: float  # cumulative seconds with work (for utilisation-style metrics)
    completed: int  # requests finished (vllm:request_success_total)
    ttft_counts: tuple[int, ...]  # cumulative, per TTFT_BUCKETS (not cumulative over le)


@dataclass
class ClusterView:
    now: float
    desired: int
    ready: list[ReplicaView]
    loading: int
    held: int  # requests held at the gateway (no ready replica), live
    # The gateway's demand Lease as the operator reads it: (time, count held
    # then) of its last write, at most one per DEMAND_INTERVAL_S, when a request
    # is held; never removed. None before the first.
    demand: tuple[float, int] | None
    in_flight: int  # every request not finished: held, waiting, running
    arrivals: int  # requests that have arrived so far (a counter)


class Policy:
    """A scaling policy under test: `decide` is called every `interval_s`."""

    name = "policy"
    interval_s = 10.0
    min_replicas = 1
    max_replicas = 10

    def decide(self, view: ClusterView) -> int:
        raise NotImplementedError

    def on_held(self, view: ClusterView) -> int | None:
        """Called when a request is held with no replica at all; may answer at once."""
        return None

    def on_demand(self, view: ClusterView) -> int | None:
        """Called when the gateway writes its demand Lease (`view.demand`); may answer
        at once, as an operator watching the resource can."""
        return None


class HoldReplicas(Policy):
    """Never scales: single-replica calibration runs and the sim-vs-real twin."""

    name = "hold"
    interval_s = 1e9

    def decide(self, view: ClusterView) -> int:
        return view.desired


@dataclass
class RunResult:
    policy: str
    trace: str
    ttft: np.ndarray  # per request, seconds (inf if never served by the end)
    arrival: np.ndarray
    replica_seconds: float
    scaling_events: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, ready, loading)

    def attainment(self, slo_s: float) -> float:
        return float(np.mean(self.ttft <= slo_s)) if len(self.ttft) else 1.0


class Cluster:
    """Replicas, the gateway and the policy on one event clock."""

    def __init__(self, profile: Profile, workload: Workload, policy: Policy, initial: int) -> None:
        self.demand: tuple[float, int] | None = None  # the gateway's last demand write
        self.p = profile
        self.w = workload
        self.policy = policy
        self.replicas: list[Replica] = []
        self.ready: list[Replica] = []  # the ones the gateway routes to
        self.events: list[tuple[float, int, int, int]] = []  # (time, seq, kind, arg)
        self.seq = 0
        self.now = 0.0
        self.held: deque[int] = deque()
        self.finished = 0
        self.next_arrival = 0
        self.desired = 0
        self.scaling_events = 0
        self.first_token = np.full(len(workload), math.inf)
        self.last_finish = np.full(len(workload), math.inf)
        self.samples: list[tuple[float, int, int]] = []
        self.prompt = workload.prompt.tolist()
        self.open_arrivals = workload.arrival.tolist()  # closed-loop ones come as events
        self.output = workload.output.tolist()
        self.work = [profile.prefill_work(int(x)) for x in self.prompt]
        self.max_chunk_work = profile.prefill_per_token_s * profile.chunk_tokens
        self._scale_to(initial, ready_now=True)

    # -- events -----------------------------------------------------------
    _REPLICA, _READY, _TICK, _SAMPLE, _ARRIVE = 0, 1, 2, 3, 4

    def _push(self, t: float, kind: int, arg: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, arg))

    def run(self, duration_s: float, sample_s: float = 10.0, grace_s: float = 3600.0) -> RunResult:
        """Offer the workload until `duration_s`, then let the replicas finish it."""
        arrivals = self.open_arrivals
        n = len(arrivals)
        self._push(self.policy.interval_s, self._TICK, 0)
        self._push(0.0, self._SAMPLE, 0)
        events = self.events
        while True:
            t_arr = arrivals[self.next_arrival] if self.next_arrival < n else math.inf
            t_evt = events[0][0] if events else math.inf
            if t_arr <= t_evt:
                if t_arr == math.inf:
                    break
                self.now = t_arr
                self._arrive(self.next_arrival)
                self.next_arrival += 1
                continue
            if t_evt > duration_s + grace_s:
                break
            t, _, kind, arg = heapq.heappop(events)
            self.now = t
            if kind == self._REPLICA:
                r = self.replicas[arg >> 32]
                if (arg & 0xFFFFFFFF) == r.version:
                    r.next_t = math.inf
                    self._on_replica(r)
            elif kind == self._READY:
                self._on_ready(self.replicas[arg])
            elif kind == self._ARRIVE:
                self._arrive(arg)
            elif kind == self._TICK and t < duration_s:
                self._apply(self.policy.decide(self.view()))
                self._push(t + self.policy.interval_s, self._TICK, 0)
            elif kind == self._SAMPLE and t < duration_s:
                ready = sum(1 for r in self.replicas if r.state == READY)
                loading = sum(1 for r in self.replicas if r.state == LOADING)
                self.samples.append((t, ready, loading))
                self._push(t + sample_s, self._SAMPLE, 0)
            if self.next_arrival >= n and self.finished >= n and t >= duration_s:
                break
        cost = sum(
            max(
                0.0,
                min(r.stopped_at if r.stopped_at is not None else duration_s, duration_s)
                - r.started_at,
            )
            for r in self.replicas
        )
        ttft = self.first_token - self.w.arrival
        return RunResult(
            self.policy.name, "", ttft, self.w.arrival, cost, self.scaling_events, self.samples
        )

    def _drained(self) -> bool:
        return self.finished >= len(self.w)

    # -- gateway ----------------------------------------------------------
    def _arrive(self, rid: int) -> None:
        best: Replica | None = None
        least = 1 << 62
        for r in self.ready:
            load = len(r.waiting) + len(r.prefill) + len(r.decode)
            if load < least:
                best, least = r, load
        if best is None:
            self.held.append(rid)
            # The gateway's DemandThrottle: one write per interval, on a held request.
            if self.demand is None or self.now - self.demand[0] >= DEMAND_INTERVAL_S:
                self.demand = (self.now, len(self.held))
                answer = self.policy.on_demand(self.view())
                if answer is not None:
                    self._apply(answer)
            if len(self.held) == 1:
                answer = self.policy.on_held(self.view())
                if answer is not None:
                    self._apply(answer)
            return
        self._enqueue(best, rid)

    def _enqueue(self, r: Replica, rid: int) -> None:
        self._advance(r)
        r.waiting.append(rid)
        self._admit(r)
        self._reschedule(r)

    # -- replica engine ---------------------------------------------------
    def _advance(self, r: Replica) -> None:
        dt = self.now - r.last_t
        if dt > 0:
            r.decode_steps += dt * r.rate_d
            r.prefill_done += dt * r.rate_p
            if r.prefill or r.decode:
                r.busy_s += dt
            r.last_t = self.now

    def _admit(self, r: Replica) -> None:
        p = self.p
        while r.waiting:
            rid = r.waiting[0]
            need = self.prompt[rid] + self.output[rid]
            if r.running >= p.max_num_seqs or r.kv_reserved + need > p.kv_tokens:
                return
            r.waiting.popleft()
            r.kv_reserved += need
            r.kv_prompt_sum += self.prompt[rid]
            r.prefill_enqueued = max(r.prefill_enqueued, r.prefill_done) + self.work[rid]
            r.prefill.append((r.prefill_enqueued, rid))

    def _reschedule(self, r: Replica) -> None:
        p = self.p
        n_dec = len(r.decode)
        if r.chunk_end < 0 and r.prefill:
            backlog = r.prefill_enqueued - r.prefill_done
            if backlog > 1e-12:
                r.chunk_work = min(backlog, self.max_chunk_work)
                r.chunk_end = r.prefill_done + r.chunk_work
        if r.chunk_end >= 0:
            step = p.step_base_s + p.step_per_seq_s * n_dec + r.chunk_work
            r.rate_p = r.chunk_work / step
        else:
            step = p.step_base_s + p.step_per_seq_s * n_dec
            r.rate_p = 0.0
        r.rate_d = 1.0 / step if n_dec else 0.0
        t_next = math.inf
        if r.chunk_end >= 0:
            t_next = self.now + max(0.0, r.chunk_end - r.prefill_done) / r.rate_p
        if r.decode:
            t_next = min(t_next, self.now + max(0.0, r.decode[0][0] - r.decode_steps) / r.rate_d)
        if abs(t_next - r.next_t) < 1e-9:
            return  # the pending event still stands (most arrivals mid-step)
        r.next_t = t_next
        r.version = (r.version + 1) & 0xFFFFFFFF
        if t_next < math.inf:
            self._push(t_next, self._REPLICA, (r.idx << 32) | r.version)

    def _on_replica(self, r: Replica) -> None:
        self._advance(r)
        eps = 1e-9
        if r.chunk_end >= 0 and r.prefill_done >= r.chunk_end - eps:
            r.prefill_done = r.chunk_end
            r.chunk_end = -1.0
            while r.prefill and r.prefill[0][0] <= r.prefill_done + eps:
                _, rid = r.prefill.popleft()
                self.first_token[rid] = self.now
                ttft = self.now - self.w.arrival[rid]
                r.ttft_counts[bisect_left(TTFT_BUCKETS, ttft)] += 1
                remaining = self.output[rid] - 1
                if remaining <= 0:
                    self._finish(r, rid)
                else:
                    heapq.heappush(r.decode, (r.decode_steps + remaining, rid))
                    r.d_start_sum += r.decode_steps
        while r.decode and r.decode[0][0] <= r.decode_steps + eps:
            done_at, rid = heapq.heappop(r.decode)
            r.d_start_sum -= done_at - (self.output[rid] - 1)
            self._finish(r, rid)
        self._admit(r)
        self._reschedule(r)
        if r.state == DRAINING and r.outstanding == 0:
            r.state = GONE
            r.stopped_at = self.now

    def _finish(self, r: Replica, rid: int) -> None:
        r.kv_reserved -= self.prompt[rid] + self.output[rid]
        r.kv_prompt_sum -= self.prompt[rid]
        r.completed += 1
        self.finished += 1
        self.last_finish[rid] = self.now
        self.on_finish(rid)

    def on_finish(self, rid: int) -> None:
        """Hook for closed-loop clients (calibration): called when a request completes."""

    def arrive_later(self, rid: int, at: float) -> None:
        """Schedule request `rid` to arrive at `at` (closed-loop clients)."""
        self.w.arrival[rid] = at
        self._push(at, self._ARRIVE, rid)

    def kv_used(self, r: Replica) -> int:
        generated = len(r.decode) * r.decode_steps - r.d_start_sum + len(r.decode)
        return int(r.kv_prompt_sum + max(0.0, generated))

    # -- scaling ----------------------------------------------------------
    def _alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.state in (LOADING, READY)]

    def _apply(self, desired: int) -> None:
        desired = max(self.policy.min_replicas, min(self.policy.max_replicas, desired))
        if desired != self.desired:
            self.scaling_events += 1
        self._scale_to(desired)

    def _scale_to(self, desired: int, ready_now: bool = False) -> None:
        self.desired = desired
        alive = self._alive()
        for _ in range(desired - len(alive)):
            r = Replica(len(self.replicas), self.now, 0.0 if ready_now else self.p.startup_s)
            self.replicas.append(r)
            if ready_now:
                self._on_ready(r)
            else:
                self._push(r.ready_at, self._READY, r.idx)
        excess = len(alive) - desired
        if excess > 0:
            # Like a ReplicaSet: not-ready pods go first, then the least busy.
            victims = sorted(alive, key=lambda r: (r.state == READY, r.outstanding, -r.idx))
            for r in victims[:excess]:
                if r.state == READY:
                    self.ready.remove(r)
                self._advance(r)
                if r.state == LOADING or r.outstanding == 0:
                    r.state = GONE
                    r.stopped_at = self.now
                else:
                    r.state = DRAINING

    def _on_ready(self, r: Replica) -> None:
        if r.state != LOADING:
            return
        r.state = READY
        self.ready.append(r)
        r.last_t = self.now
        while self.held:
            self._arrive(self.held.popleft())

    def view(self) -> ClusterView:
        ready = []
        for r in self.replicas:
            if r.state == READY:
                self._advance(r)
                ready.append(
                    ReplicaView(
                        idx=r.idx,
                        waiting=len(r.waiting),
                        running=r.running,
                        kv_usage=self.kv_used(r) / self.p.kv_tokens,
                        busy_s=r.busy_s,
                        completed=r.completed,
                        ttft_counts=tuple(r.ttft_counts),
                    )
                )
        loading = sum(1 for r in self.replicas if r.state == LOADING)
        in_flight = self.next_arrival - self.finished
        return ClusterView(
            self.now,
            self.desired,
            ready,
            loading,
            len(self.held),
            self.demand,
            in_flight,
            self.next_arrival,
        )


def simulate(
    profile: Profile,
    workload: Workload,
    policy: Policy,
    duration_s: float,
    initial: int,
) -> RunResult:
    return Cluster(profile, workload, policy, initial).run(duration_s)


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q * 100)) if arr.size else math.nan
