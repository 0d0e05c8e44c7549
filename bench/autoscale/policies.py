"""The policies compared in the simulator: ours, and four the field uses, each from its docs.

Ours is the real `modelplane.operator.autoscaler.decide`, fed the same
observations the operator builds from `/metrics` (the simulated replicas
export vLLM's gauges and its TTFT histogram buckets).

The baselines are written from their documented behaviour, with the
settings the comparison names; each class cites what it follows. All share
the simulator's bounds and start-up delays. Simplification common to all:
metrics are read fresh at each evaluation (no Prometheus scrape lag), which
favours the baselines that read through Prometheus.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from bench.autoscale.model import TTFT_BUCKETS, ClusterView, Policy
from modelplane.operator.autoscaler import (
    AutoscalingSpec,
    Histogram,
    MetricsSnapshot,
    PolicyState,
    ReplicaObservation,
    decide,
    held_for_wake_up,
    observe,
)

HPA_TOLERANCE = 0.1


class HpaBehavior:
    """The HPA's default `behavior`, which both the HPA and KEDA (through its HPA) get.

    Scale up by at most the larger of 4 pods and 100% per 15 s period; scale
    down only to the highest recommendation of the last 300 s
    (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/horizontal-pod-autoscaler-v2/).
    """

    stabilization_s = 300.0

    def __init__(self) -> None:
        self.recommendations: deque[tuple[float, int]] = deque()

    def apply(self, now: float, current: int, recommendation: int) -> int:
        self.recommendations.append((now, recommendation))
        while self.recommendations[0][0] < now - self.stabilization_s:
            self.recommendations.popleft()
        if recommendation > current:
            return min(recommendation, max(current + 4, 2 * current))
        return min(current, max(n for _, n in self.recommendations))


class Ours(Policy):
    """modelplane's policy (operator/modelplane/operator/autoscaler), evaluated every 10 s.

    It sees demand only as the operator does: through the gateway's last demand
    write (time and held count, at most once per demand interval, made when a
    request is held; never the simulator's live held count), on its 10 s timer
    and, while no replica is ready, at the write itself (the operator watches
    the resource, and a write it has not answered wakes it at once). The count
    sizes a start from zero while the wake-up it belongs to is under way.
    """

    name = "ours"
    interval_s = 10.0

    def __init__(self, spec: AutoscalingSpec) -> None:
        self.spec = spec
        self.min_replicas = spec.min_replicas
        self.max_replicas = spec.max_replicas
        self.state = PolicyState()
        self.previous: dict[int, MetricsSnapshot] = {}
        self.last_reason = ""

    def _observations(self, view: ClusterView) -> list[ReplicaObservation]:
        observations = []
        current: dict[int, MetricsSnapshot] = {}
        for r in view.ready:
            cumulative, total = [], 0
            for count in r.ttft_counts:
                total += count
                cumulative.append(float(total))
            snapshot = MetricsSnapshot(
                waiting=r.waiting,
                running=r.running,
                kv_cache_usage=r.kv_usage,
                ttft=Histogram(TTFT_BUCKETS, tuple(cumulative)),
                finished=float(r.completed),
                at=view.now,
            )
            current[r.idx] = snapshot
            observations.append(observe(f"r{r.idx}", snapshot, self.previous.get(r.idx)))
        self.previous = current
        observations.extend(
            ReplicaObservation.still_loading(f"loading{i}") for i in range(view.loading)
        )
        return observations

    def decide(self, view: ClusterView) -> int:
        demand_at, count = view.demand if view.demand is not None else (None, None)
        # The simulator passes every demand write to the policy (its own rule
        # tells stale from new), so the count goes with the wake-up alone.
        held = held_for_wake_up(demand_at, count, False, self.state.woke_at)
        decision = decide(
            self._observations(view),
            view.desired,
            self.spec,
            self.state,
            view.now,
            demand_at=demand_at,
            held_requests=held[0] if held else None,
            held_at=held[1] if held else None,
        )
        self.state = decision.state
        self.last_reason = decision.reason
        return decision.desired_replicas

    def on_demand(self, view: ClusterView) -> int | None:
        # The operator's rule (autoscaling.answers_demand_now): a new demand write
        # is decided at once while no replica is ready; otherwise the timer decides.
        return None if view.ready else self.decide(view)


class Padded(Ours):
    """A reference, not a policy we ship: ours plus a fixed headroom on every count.

    `spare` replicas more, and at least `factor` x what ours asks for (never
    above maxReplicas; zero stays zero). Ours itself decides on the count it
    asked for, not the padded one, so the padding does not feed back into its
    scale-down window. The benchmark's goal takes R, the attainment ours must
    match, from it when it stays within the best baseline's replica-hours.
    """

    def __init__(self, spec: AutoscalingSpec, spare: int, factor: float) -> None:
        super().__init__(spec)
        self.spare = spare
        self.factor = factor
        self.name = f"ours+{spare}" if spare else f"ours x{factor:g}"
        self.asked: int | None = None

    def decide(self, view: ClusterView) -> int:
        if self.asked is not None and view.desired > 0:
            view = replace(view, desired=min(self.asked, view.desired))
        self.asked = super().decide(view)
        return self.padded(self.asked)

    def padded(self, asked: int) -> int:
        if asked == 0:
            return 0
        more = max(asked + self.spare, math.ceil(asked * self.factor - 1e-9))
        return min(self.max_replicas, more)


class HpaUtilization(Policy):
    """Kubernetes HPA on a utilisation metric at 80%, as KServe's standard mode sets it up.

    KServe standard (raw deployment) mode creates an HPA with `scaleMetric: cpu`,
    `scaleTarget: 80` and no scale to zero
    (https://kserve.github.io/website/docs/model-serving/predictive-inference/autoscaling/hpa-autoscaler).
    The HPA algorithm (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/):
    every 15 s, desired = ceil(current x utilisation / target), no change within
    10% tolerance, pods not yet ready count as 0% when scaling up; default
    behaviour: scale up by at most max(4 pods, 100%) per 15 s, scale down to
    the highest recommendation of the last 300 s. Utilisation here is the share
    of time the engine was busy (what CPU utilisation is for a CPU replica and
    DCGM's GPU utilisation is for a GPU one).
    """

    name = "hpa-util80"
    interval_s = 15.0
    target = 0.8

    def __init__(self, min_replicas: int, max_replicas: int) -> None:
        self.min_replicas = max(1, min_replicas)  # no scale to zero in standard mode
        self.max_replicas = max_replicas
        self.busy: dict[int, float] = {}
        self.behavior = HpaBehavior()

    def decide(self, view: ClusterView) -> int:
        utils = []
        for r in view.ready:
            before = self.busy.get(r.idx)
            self.busy[r.idx] = r.busy_s
            if before is not None:
                utils.append(min(1.0, (r.busy_s - before) / self.interval_s))
        current = view.desired
        if not utils:
            recommendation = current
        else:
            ratio = sum(utils) / len(utils) / self.target
            if ratio > 1:  # unready pods count as idle when scaling up
                ratio = sum(utils) / (len(utils) + view.loading) / self.target
            recommendation = current
            if abs(ratio - 1.0) > HPA_TOLERANCE:
                recommendation = math.ceil(
                    ratio * (len(utils) + (view.loading if ratio > 1 else 0))
                )
        recommendation = max(self.min_replicas, min(self.max_replicas, recommendation))
        return self.behavior.apply(view.now, current, recommendation)


class KedaQueue(Policy):
    """KEDA on `vllm:num_requests_waiting`, threshold 5, as vLLM production-stack's example.

    https://docs.vllm.ai/projects/production-stack/en/latest/use_cases/autoscaling-keda.html:
    pollingInterval 15, cooldownPeriod 360, prometheus trigger on
    vllm:num_requests_waiting with threshold '5'; scale to zero adds a
    keep-alive trigger on the router's incoming request rate. KEDA feeds an
    HPA with an AverageValue target (https://keda.sh/docs/latest/concepts/scaling-deployments/):
    desired = ceil(total waiting / 5) with the HPA's default behaviour (300 s
    scale-down stabilisation, +max(4, 100%) per 15 s up); cooldownPeriod only
    governs the last step to zero, after every trigger was inactive that long.
    """

    name = "keda-queue5"
    interval_s = 15.0
    threshold = 5.0
    cooldown_s = 360.0

    def __init__(self, min_replicas: int, max_replicas: int) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.behavior = HpaBehavior()
        self.arrivals: deque[tuple[float, int]] = deque()
        self.last_active: float = 0.0

    def decide(self, view: ClusterView) -> int:
        waiting = sum(r.waiting for r in view.ready)
        self.arrivals.append((view.now, view.arrivals))
        while self.arrivals[0][0] < view.now - 60.0:
            self.arrivals.popleft()
        incoming = view.arrivals > self.arrivals[0][1] or view.held > 0  # rate over 1 min > 0
        if waiting > 0 or incoming:
            self.last_active = view.now
        current = view.desired
        floor = max(1, self.min_replicas)
        if self.min_replicas == 0:
            if not incoming and waiting == 0 and view.now - self.last_active >= self.cooldown_s:
                return 0
            if current == 0:
                return 1 if incoming else 0
        recommendation = math.ceil(waiting / self.threshold)
        if current and abs(waiting / current / self.threshold - 1.0) <= HPA_TOLERANCE:
            recommendation = current
        recommendation = max(floor, min(self.max_replicas, recommendation))
        return self.behavior.apply(view.now, current, recommendation)


class KubeAiMovingAverage(Policy):
    """KubeAI: moving average of in-flight requests over 10 min, target per replica.

    KubeAI's autoscaler (https://www.kubeai.org/how-to/configure-autoscaling/ and
    internal/modelautoscaler/autoscaler.go): every `interval` (10 s) it sums the
    active requests its proxy holds for a model, feeds a simple moving average
    over `timeWindow` (10 min, the window starting filled with zeros), sets
    replicas = ceil(average / targetRequests), and scales down only after
    scaleDownDelaySeconds (default 30) / interval consecutive lower
    recommendations. Its proxy holds requests for a model at zero replicas
    and scales it to one at once. targetRequests is set to the in-flight
    requests one replica carries at the trace's unit load, the way a user would
    tune it (the default, 100, is far past a CPU replica's knee).
    """

    name = "kubeai-avg10m"
    interval_s = 10.0
    window_s = 600.0
    scale_down_delay_s = 30.0

    def __init__(self, min_replicas: int, max_replicas: int, target_requests: float) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.target = target_requests
        self.samples: deque[float] = deque(
            [0.0] * round(self.window_s / self.interval_s),
            maxlen=round(self.window_s / self.interval_s),
        )
        self.consecutive_down = 0

    def decide(self, view: ClusterView) -> int:
        self.samples.append(float(view.in_flight))
        average = sum(self.samples) / len(self.samples)
        wanted = max(self.min_replicas, min(self.max_replicas, math.ceil(average / self.target)))
        current = view.desired
        if wanted < current:
            self.consecutive_down += 1
            if self.consecutive_down < math.ceil(self.scale_down_delay_s / self.interval_s):
                return current
        else:
            self.consecutive_down = 0
        return wanted

    def on_held(self, view: ClusterView) -> int | None:
        return max(1, view.desired)


class AibrixKpa(Policy):
    """AIBrix's KPA on KV-cache usage, target 0.5, stable 180 s / panic 60 s, panic at 2x.

    AIBrix's PodAutoscaler with scalingStrategy KPA and a pod metric source
    gpu_cache_usage_perc / targetValue 0.5, scale-down delay 3m
    (https://github.com/vllm-project/aibrix/blob/main/samples/autoscaling/kpa.yaml),
    computing as pkg/controller/podautoscaler/algorithm/kpa.go and Knative's
    KPA (https://knative.dev/docs/serving/autoscaling/kpa-specific/): desired
    stable/panic pods = ceil(window average of the summed metric / target);
    panic mode starts when the panic-window count is >= 2x the ready pods and
    lasts until a stable window passes without that; in panic the count never
    drops; scale-down is limited to halving (max scale-down rate 2) and
    delayed to the highest desired count of the last 3 minutes.
    """

    name = "aibrix-kpa"
    interval_s = 10.0
    target = 0.5
    stable_s = 180.0
    panic_s = 60.0
    panic_threshold = 2.0
    scale_down_delay_s = 180.0
    max_scale_down_rate = 2.0

    def __init__(self, min_replicas: int, max_replicas: int) -> None:
        self.min_replicas = max(1, min_replicas)  # its metric comes from pods: none, no signal
        self.max_replicas = max_replicas
        self.values: deque[tuple[float, float]] = deque()
        self.panic_since: float | None = None
        self.max_panic_pods = 0
        self.delayed: deque[tuple[float, int]] = deque()

    def decide(self, view: ClusterView) -> int:
        now = view.now
        self.values.append((now, sum(r.kv_usage for r in view.ready)))
        while self.values[0][0] < now - self.stable_s:
            self.values.popleft()
        stable = sum(v for _, v in self.values) / len(self.values)
        recent = [v for t, v in self.values if t >= now - self.panic_s]
        panic = sum(recent) / len(recent)
        ready = max(1, len(view.ready))
        max_down = math.floor(ready / self.max_scale_down_rate)
        dspc = min(max(math.ceil(stable / self.target), max_down), 1000 * ready)
        dppc = min(max(math.ceil(panic / self.target), max_down), 1000 * ready)
        if dppc / ready >= self.panic_threshold:
            if self.panic_since is None:
                self.max_panic_pods = view.desired
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= self.stable_s:
            self.panic_since = None
        desired = dspc
        if self.panic_since is not None:
            self.max_panic_pods = max(self.max_panic_pods, dspc, dppc)
            desired = self.max_panic_pods
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        self.delayed.append((now, desired))
        while self.delayed[0][0] < now - self.scale_down_delay_s:
            self.delayed.popleft()
        return max(n for _, n in self.delayed)


class OracleReactive(Policy):
    """A reference, not a baseline: reads the true offered load, still pays every model load.

    Every 10 s (and at once when requests are held at zero replicas) it asks
    for exactly ceil(offered rate / what one replica serves within the SLO).
    What it misses is what no reactive policy can catch: load that arrives
    while replicas are still loading.
    """

    name = "oracle-reactive"
    interval_s = 10.0

    def __init__(
        self,
        rate: Callable[[float], float],
        per_replica_rps: float,
        min_replicas: int,
        max_replicas: int,
    ) -> None:
        self.rate = rate
        self.per_replica = per_replica_rps
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def decide(self, view: ClusterView) -> int:
        return math.ceil(self.rate(view.now) / self.per_replica - 1e-9)

    def on_held(self, view: ClusterView) -> int | None:
        return max(1, self.decide(view))


class SurpriseBound(OracleReactive):
    """An upper bound on attainment, not a policy: how much a load's first surprise costs.

    It reads the true offered load every second. The moment the load goes
    above anything it has seen (the load it started with counts as seen), it
    runs every replica maxReplicas allows for `idle_s`, and it never drops
    below what the highest load seen needs; with minReplicas 0 it goes to
    zero after `idle_s` without load, like the policies it bounds.
    So its only misses are the requests that arrive while replicas load after
    a rise nothing before predicted. A policy that sizes on what it has seen,
    however well it learns, cannot beat it; only one that keeps replicas for
    load it has never seen (the HPA at maxReplicas, in effect) can.
    """

    name = "surprise-bound"
    interval_s = 1.0

    def __init__(
        self,
        rate: Callable[[float], float],
        per_replica_rps: float,
        min_replicas: int,
        max_replicas: int,
        idle_s: float = 300.0,
    ) -> None:
        super().__init__(rate, per_replica_rps, min_replicas, max_replicas)
        self.idle_s = idle_s
        self.seen = rate(0.0)
        self.busy_at = 0.0
        self.surge_until = -math.inf

    def decide(self, view: ClusterView) -> int:
        rate = self.rate(view.now)
        if rate > 0 or view.held:
            self.busy_at = view.now
        if self.min_replicas == 0 and view.now - self.busy_at >= self.idle_s:
            self.seen = 0.0
            return 0
        if rate > self.seen * 1.01:  # a rise past anything seen, not the curve's creep
            self.surge_until = view.now + self.idle_s
        self.seen = max(self.seen, rate)
        if view.now < self.surge_until:
            return self.max_replicas
        return math.ceil(self.seen / self.per_replica - 1e-9)

    def on_held(self, view: ClusterView) -> int | None:
        return self.decide(view)
