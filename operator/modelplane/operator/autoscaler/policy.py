"""The autoscaling decision: observations in, desired replicas and the reason out.

Pure and deterministic (no clock, no I/O), so the operator's timer, the unit
tests and the simulator in `bench/` all run this same code.

How it decides, each tick:

* Every configured target turns the ready replicas' metrics into the number
  of replicas the current load needs; the most demanding one wins and is
  named in the decision.
  - ttftP95Seconds: continuous batching keeps TTFT flat until a replica runs
    out of compute, then it shoots up, so waiting for a breach is too late.
    The policy learns, from the replicas themselves, the request rate at
    which a replica's TTFT p95 nears the target (its knee), and sizes the
    fleet so the arrival level (the mean of the last 30 s) stays under that
    per replica. The estimate drops when the fleet runs hot, and creeps up
    after half a minute of every replica well under all its targets, but
    never past a rate at which the fleet broke the target before (an
    engine that is flat up to a cliff looks cool right below it; see
    `_learn_capacity`). Replicas hot only from a backlog queued before the
    window (held through a start from zero, or left by a burst) teach no
    knee; with none learned yet, half of what they finish at full batch is
    a first estimate. Until the knee is known, a breach scales on the
    highest rate per replica carried cool, or proportionally to the breach.
  - kvCacheUtilization: KV cache in use per replica vs the target.
  - queueDepthPerReplica: requests waiting in the engines, per replica.
  - gpuUtilization: the DCGM exporter's utilisation, when present.
* Up: immediately, to the need. A burst (bursts.py) is a jump of the arrival
  rate by `BURST_FACTOR` beyond Poisson noise within one model load time, or
  a need of that many times the replicas asked for: acted on at once, even
  while replicas load (the ready ones keep their backlog; new ones are sized
  to carry the arrivals), and its peak is kept in capacity until an hour
  passes without a burst, so one that comes back lands on running replicas.
* Loading replicas (model loads take minutes) are neither capacity nor
  measured; while they load, more are added only if the need grows past
  what the last scale-up was sized for. From zero, the gateway's held
  requests over the time since the wake-up size the start.
* Down: only after `scaleDownDelaySeconds` of recorded history, to the
  largest need seen in that window (with 10% headroom), so never below what
  the load needs now; never while requests wait or TTFT runs past the knee;
  never below a burst's kept peak. What was asked for while no replica was
  ready is in that window too: the first one up, holding every request the
  gateway held, must not cancel the others while they load.
* Zero: with `minReplicas: 0`, only after `scaleDownDelaySeconds` without a
  single request (no other rule goes below one replica). Whenever the count
  reaches zero, or the policy finds it there, it records when
  (`zero_since`): the gateway's held demand newer than that wakes the model;
  the annotation that woke it, which the gateway never removes, neither keeps
  it up nor wakes it again.
* Bounds clamp the result and the decision says so (`limited`).
* A replica whose scrape failed is left out and said so; the others stand
  for all ready replicas. With no metrics at all it holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from modelplane.api.llmdeployment import AutoscalingSpec, AutoscalingTargets
from modelplane.operator.autoscaler.bursts import (
    BURST_FACTOR,
    LEVEL_S,
    held_rate,
    horizon,
    learn_load_time,
    level,
    note_rate,
    reserve,
    start_burst,
)
from modelplane.operator.autoscaler.observations import Histogram, ReplicaObservation
from modelplane.operator.autoscaler.state import PolicyState

GROWTH_WHILE_LOADING = 1.25  # while loading, add more only past this x the sized-for need
KNEE_FRACTION = 0.8  # TTFT p95 past this share of the target: the replicas are at their knee
COOL_FRACTION = 0.5  # below this share of the target they have room to spare
CAPACITY_CUT = 0.9  # at the knee, a replica's capacity is taken as this share of its rate
CAPACITY_PROBE = 1.05  # cool replicas near the estimate: believe 5% more per decision
PROBE_LOAD = 0.8  # "near": finishing at least this share of the estimated capacity
PROBE_CEILING = 1.1  # after a breach, probe up to its rate or this x the proven level
MIN_FIRST_TOKENS = 20  # fewer first tokens in the window: no TTFT opinion
TTFT_MAX_STEP = 2.0  # before the knee is known, a breach at most doubles the replicas
HISTORY_GAP_S = 60.0  # no decision for this long: the headroom history starts over
EPSILON = 0.05  # a need of 3.04 replicas is 3, not 4
SATURATED_SHARE = 0.5  # a first knee estimate: this share of a draining replica's completions
BACKLOG_WINDOWS = 2.0  # waiting past this many windows of arrivals: a backlog, not the load
DOWN_HEADROOM = 0.9  # scale down only to where the need fills at most this share
DEFAULT_WINDOW_S = 10.0  # the metrics window when there is no earlier decision

# What drove a decision besides the targets (which go by their spec names).
DRIVER_DEMAND = "demand"
DRIVER_BURST = "burst"
DRIVER_IDLE = "idle"
DRIVER_LOADING = "loading"
DRIVER_NO_METRICS = "noMetrics"

TTFT = "ttftP95Seconds"
KV = "kvCacheUtilization"
QUEUE = "queueDepthPerReplica"
GPU = "gpuUtilization"


@dataclass(frozen=True)
class Decision:
    desired_replicas: int
    driver: str  # the target (spec name) or rule that set desired_replicas
    reason: str  # one line for status.scaleReason and the Event
    limited: bool  # clamped by minReplicas/maxReplicas: the ScalingLimited condition
    state: PolicyState  # store it; pass it to the next decision
    need: float | None = None  # replicas the measured load needs, unrounded


@dataclass(frozen=True)
class _Need:
    driver: str
    replicas: float
    detail: str


def decide(
    observations: Sequence[ReplicaObservation],
    current_replicas: int,
    spec: AutoscalingSpec,
    state: PolicyState,
    now: float,
    demand_at: float | None = None,
    held_requests: int | None = None,
    held_at: float | None = None,
) -> Decision:
    """The replicas to run now. `now` and `demand_at` are seconds on one clock (epoch).

    `demand_at` is when the gateway last held a request because no replica
    was ready (the scale-from-zero annotation); None if it never did.
    `held_requests` is how many it holds now (`modelplane_gateway_held_requests`),
    None when unknown: with it, a start from zero is sized to the demand.
    `held_at` is when it was counted (the annotation's time); None: now.
    """
    delay = float(spec.scale_down_delay_seconds)
    previous = state.last_decision_at
    window = DEFAULT_WINDOW_S
    if previous is not None and now > previous:
        window = now - previous
    if state.last_decision_at is None or now - state.last_decision_at > HISTORY_GAP_S:
        state = replace(state, recording_since=now, recent_needs=(), rates=())
    state = replace(state, last_decision_at=now)

    loading = [o for o in observations if o.loading]
    ready = [o for o in observations if not o.loading]
    measured = [o for o in ready if o.error is None]
    failed = [o for o in ready if o.error is not None]
    coming = max(len(loading), current_replicas - len(ready), 0)
    if not coming:
        state = replace(state, scaled_for=0.0)
    state = learn_load_time(state, coming, now)

    at_zero = not ready and not coming
    demand_pending = demand_at is not None and _demand_is_new(demand_at, state, previous, at_zero)
    active = demand_pending or any(_busy(o) for o in measured)
    if active:
        state = replace(state, last_active_at=now)

    def decision(
        desired: int, driver: str, reason: str, need: float | None, kept: PolicyState | None = None
    ) -> Decision:
        made = _clamped(desired, driver, reason, spec, state if kept is None else kept, need)
        if made.desired_replicas > current_replicas:
            # The load time is measured from the last ask to all of them ready.
            return replace(made, state=replace(made.state, loading_since=now))
        if made.desired_replicas == 0 and (current_replicas > 0 or made.state.zero_since is None):
            # At zero, by whatever rule, or found there: gateway demand newer than
            # this wakes the model, older demand never does.
            return replace(made, state=_to_zero(made.state, now))
        return made

    if at_zero:
        if demand_pending:
            assert demand_at is not None
            state = replace(
                state, scaled_for=1.0, last_scale_up_at=now, woke_at=min(demand_at, now)
            )
            return decision(1, DRIVER_DEMAND, "requests held at the gateway: scaling from zero", 1)
        state, _ = note_rate(state, 0.0, now, window, None)
        return decision(0, DRIVER_IDLE, "no replicas and no demand", 0.0)
    if not ready:
        return _while_all_load(
            state, current_replicas, coming, held_requests, held_at, now, window, delay, decision
        )
    state = replace(state, woke_at=None)
    if not measured:
        errors = "; ".join(f"{o.name}: {o.error}" for o in failed)
        reason = f"no metrics from any ready replica ({errors}); holding {current_replicas}"
        return decision(current_replicas, DRIVER_NO_METRICS, reason, None)

    arrivals = _arrivals(measured, len(failed))
    jumped_from = None
    if arrivals is not None:
        state, jumped_from = note_rate(state, arrivals, now, window, state.capacity_rps)
    # While replicas load, or when the load just jumped, the ready ones carry
    # more than their share: running hot then says nothing about their knee.
    steady = not coming and jumped_from is None
    recent = level(state, now)
    state = _learn_capacity(
        measured,
        spec.scaling_targets,
        state,
        now,
        cool_from=now - window,
        learn_from_hot=steady,
        level_per_replica=recent / len(ready) if recent is not None and steady else None,
    )
    capacity = state.capacity_rps
    # Sized on the level of the last half minute, or on this window's rate
    # when it jumped (a burst is no noise to smooth away).
    sized_on = arrivals if jumped_from is not None else recent
    needs = _needs(measured, len(ready), sized_on, spec.scaling_targets, capacity, state.proven_rps)
    if jumped_from is not None and arrivals is not None:
        needs.extend(
            _burst_need(
                arrivals, jumped_from, len(ready), capacity, state.proven_rps, horizon(state)
            )
        )
    top = max(needs, key=lambda n: n.replicas) if needs else None
    need = top.replicas if top else 0.0
    driver = top.driver if top else DRIVER_NO_METRICS
    wanted = max(math.ceil(need - EPSILON), 1 if active else 0)
    why = top.detail if top else "no target has data yet"
    if failed:
        left_out = ", ".join(f"{o.name} ({o.error})" for o in failed)
        why += f"; left out {left_out}, scaled on the {len(measured)} other(s)"

    last_seen = state.last_active_at
    if last_seen is None:
        last_seen = state.recording_since if state.recording_since is not None else now
    if spec.min_replicas == 0 and not active and now - last_seen >= delay:
        return decision(0, DRIVER_IDLE, f"no requests for {now - last_seen:.0f}s", need)

    # A burst: the arrivals jumped, or the need outgrew every replica asked for
    # (loading ones are no capacity yet, but a need they will cover is no new spike).
    burst = jumped_from is not None or (
        wanted > current_replicas and need >= BURST_FACTOR * max(current_replicas, 1)
    )
    hold = 0.0
    if burst:
        state, hold = start_burst(state, now, delay, arrivals)
    kept = reserve(state, now)
    per_replica = capacity or state.proven_rps
    floor = math.ceil(kept / per_replica - EPSILON) if kept and per_replica else 0
    reserved = ""
    if floor:
        left = (state.burst_until or now) - now
        reserved = (
            f"; after a burst, capacity for {kept:.1f} req/s ({floor} replicas) "
            f"is kept {left:.0f}s more"
        )

    # Scale-down targets keep some headroom over the need (hysteresis): a
    # replica is removed only if the rest carry the load at DOWN_HEADROOM.
    padded = max(math.ceil(need / DOWN_HEADROOM - EPSILON), wanted)
    if capacity is None and state.proven_rps and arrivals is not None:
        # The knee is unknown: never fewer replicas than have been seen to
        # carry this load comfortably (a floor for scale-down, not a reason to grow).
        padded = max(padded, math.ceil(arrivals / state.proven_rps - EPSILON))
    state = state.with_need(now, padded, delay)
    if max(wanted, floor) > current_replicas:
        if coming and not burst and need <= state.scaled_for * GROWTH_WHILE_LOADING:
            reason = (
                f"{coming} replica(s) loading for a need of {state.scaled_for:.1f}; "
                f"need now {need:.1f} ({why}): waiting for them"
            )
            return decision(current_replicas, DRIVER_LOADING, reason, need)
        target = max(wanted, floor)
        if wanted < floor:
            driver, why = DRIVER_BURST, why + reserved
        state = replace(state, scaled_for=max(need, state.scaled_for), last_scale_up_at=now)
        kind = f"burst (holding {hold:.0f}s), " if burst else ""
        return decision(target, driver, f"{kind}{current_replicas} -> {target}: {why}", need)

    if wanted < current_replicas:
        since = state.recording_since if state.recording_since is not None else now
        window_max = state.window_max() or wanted
        # Zero is the idle rule's alone: after scaleDownDelaySeconds without a request.
        target = max(window_max, floor, 1 if spec.min_replicas == 0 else 0)
        if floor >= current_replicas:
            reason = f"holding {current_replicas}, need {wanted} ({why}){reserved}"
            return decision(current_replicas, DRIVER_BURST, reason, need)
        if now - since >= delay and target < current_replicas:
            reason = (
                f"{current_replicas} -> {target}, the largest need of the last "
                f"{delay:.0f}s ({why}){reserved}"
            )
            return decision(target, driver, reason, need)
        wait = delay - (now - since)
        if wait > 0:
            later = f"scale-down possible in {wait:.0f}s"
        elif window_max == 0:
            later = f"zero only after {delay:.0f}s without a request"
        else:
            later = f"the last {delay:.0f}s needed {window_max}"
        reason = f"holding {current_replicas}, need {wanted} ({why}); {later}{reserved}"
        return decision(current_replicas, driver, reason, need)

    return decision(current_replicas, driver, f"steady at {current_replicas}: {why}", need)


def _burst_need(
    arrivals: float,
    before: float,
    ready: int,
    capacity: float | None,
    proven: float | None,
    horizon_s: float,
) -> list[_Need]:
    """What a jump in the arrivals needs, before any replica's TTFT has risen.

    Until new replicas are up, everything above the ready replicas' capacity
    queues on them, and they are busy with that backlog once the new ones
    are ready: the new ones must carry the arrivals by themselves. Without a
    learned knee, a replica takes the most it was seen to carry comfortably
    (or what the ready ones carried just before the jump, if more).
    """
    per_replica = capacity
    if per_replica is None:
        per_replica = max(proven or 0.0, before / ready) or None
    if per_replica is None or arrivals <= ready * per_replica:
        return []
    detail = (
        f"arrivals jumped {arrivals / before:.1f}x in {horizon_s:.0f}s "
        if before > 0
        else f"arrivals jumped in {horizon_s:.0f}s "
    )
    detail += (
        f"({before:.1f} -> {arrivals:.1f} req/s), past the {ready} ready replica(s): "
        f"they keep their backlog, new ones take {per_replica:.2f} req/s each"
    )
    return [_Need(DRIVER_BURST, ready + arrivals / per_replica, detail)]


def _while_all_load(
    state: PolicyState,
    current: int,
    coming: int,
    held: int | None,
    held_at: float | None,
    now: float,
    window: float,
    delay: float,
    decision: Callable[[int, str, str, float | None, PolicyState], Decision],
) -> Decision:
    """Nothing is ready to measure. With the gateway's held count, size to the demand.

    The requests held since the wake-up, over its age, are the arrival rate;
    with a learned per-replica capacity, that is the replicas a start from
    zero needs. They are asked for now, not one model load after the first.
    """
    rate = held_rate(state, held, now if held_at is None else min(held_at, now))
    capacity = state.capacity_rps or state.proven_rps
    holding = f"{coming} replica(s) loading, none ready to measure; holding {current}"
    # What was asked for while nothing could be measured stays in the scale-down
    # window: the first replica to be ready must not cancel the others as they load.
    asked = state.with_need(now, current, delay)
    if rate is None:
        return decision(current, DRIVER_LOADING, holding, None, asked)
    state, jumped_from = note_rate(asked, rate, now, window, capacity)
    if jumped_from is not None:
        state, _ = start_burst(state, now, delay, rate)
    if capacity is None:
        return decision(current, DRIVER_LOADING, holding, None, state)
    need = rate / capacity
    wanted = math.ceil(need - EPSILON)
    why = (
        f"{held} requests held at the gateway, {rate:.1f} req/s; "
        f"a replica takes {capacity:.2f} req/s (learned or proven)"
    )
    if wanted > current and need > state.scaled_for * GROWTH_WHILE_LOADING:
        state = replace(state.with_need(now, wanted, delay), scaled_for=need, last_scale_up_at=now)
        return decision(wanted, DRIVER_DEMAND, f"{current} -> {wanted}: {why}", need, state)
    return decision(current, DRIVER_LOADING, f"{holding} ({why})", need, state)


def _arrivals(measured: Sequence[ReplicaObservation], failed: int) -> float | None:
    """Requests/s coming into the fleet; a replica whose scrape failed counts as average.

    None while a replica is new since the last scrape (it has no rate yet): the
    gateway sends the least-loaded replica the most, so a new one may take
    nearly all of it, and leaving it out would read a jump or a lull that is not there.
    """
    rated = [o.arrived_per_s for o in measured if o.arrived_per_s is not None]
    if not rated or len(rated) < len(measured):
        return None
    return sum(rated) * (len(rated) + failed) / len(rated)


def _demand_is_new(
    demand_at: float, state: PolicyState, previous: float | None, at_zero: bool
) -> bool:
    """Whether the gateway's held demand is news, not an annotation already answered.

    The gateway never removes its annotation. At zero replicas, demand newer
    than the scale to zero wakes the model; when the policy never saw it go
    there (it started at zero, or the state was lost), demand newer than the
    last decision does, and with no decision at all any demand does (it may be
    new; the cost of a stale one is one replica for scaleDownDelaySeconds).
    With replicas, only demand newer than the last decision counts as activity.
    """
    newer_than = [t for t in (state.zero_since, previous) if t is not None]
    if at_zero and state.zero_since is not None:
        return demand_at > state.zero_since
    return not newer_than or demand_at > max(newer_than)


def _to_zero(state: PolicyState, now: float) -> PolicyState:
    """The state of a model that is at zero replicas from `now` on."""
    return replace(state, zero_since=now, recent_needs=(), scaled_for=0.0, rates=())


def _busy(o: ReplicaObservation) -> bool:
    return o.running + o.waiting > 0 or (o.ttft is not None and o.ttft.total > 0)


def _p95(histogram: Histogram | None, minimum: int) -> float | None:
    if histogram is None or histogram.total < minimum:
        return None
    return histogram.quantile(0.95)


def _learn_capacity(
    measured: Sequence[ReplicaObservation],
    targets: AutoscalingTargets,
    state: PolicyState,
    now: float,
    cool_from: float,
    learn_from_hot: bool = True,
    level_per_replica: float | None = None,
) -> PolicyState:
    """Move the knee estimate by what the replicas did in the last window.

    Hot: a replica's TTFT p95 above `KNEE_FRACTION` of the target while the
    fleet's is too (one replica's few first tokens are noisy; the gateway
    spreads the load evenly), or more requests waiting in it than the queue
    target. The replicas could not carry what they were offered: the estimate
    moves halfway down to `CAPACITY_CUT` of the larger of the arrival level per
    replica (`level_per_replica`) and what the hot ones finished; all the way
    when the fleet's p95 broke the target itself. Not at all while
    `learn_from_hot` is off (replicas loading, or the load just jumped), nor
    when every hot replica is only draining an old backlog (`_draining`):
    then, with no estimate yet, `SATURATED_SHARE` of what they finish is the
    first one if it beats the proven level (a start from zero holding its
    first replicas busy for minutes would otherwise teach a knee at a
    fraction of the real one, and size the fleet on it for an hour). When
    the fleet broke the target under a fresh load, that rate is remembered
    as `hot_rps`: the estimate is never probed past it again, for an engine
    whose TTFT stays flat up to a cliff looks cool right below it.

    Cool: every replica's p95, and the fleet's, under `COOL_FRACTION` of the
    target and its KV cache under `KNEE_FRACTION` of the KV target, for at least
    `LEVEL_S` (from `cool_from`, the start of this window). Then the level per
    replica is proven (until a hot window says less), and while the replicas
    finish close to the estimate it rises by `CAPACITY_PROBE` a decision, up
    to `hot_rps` or `PROBE_CEILING` times the proven level, whichever is more.
    """
    if targets.ttft_p95_seconds is None:
        return state
    window_s = max(now - cool_from, 0.0)
    target = targets.ttft_p95_seconds
    knee = KNEE_FRACTION * target
    fleet_p95 = _p95(
        Histogram.merge(o.ttft for o in measured if o.ttft is not None), MIN_FIRST_TOKENS
    )
    fleet_hot = fleet_p95 is not None and fleet_p95 > knee
    fleet_cool = fleet_p95 is not None and fleet_p95 < COOL_FRACTION * target
    q = targets.queue_depth_per_replica
    hot: list[float] = []
    cool: list[float] = []
    fresh = False  # a hot replica offered the load, not only draining a backlog
    for o in measured:
        if o.finished_per_s is None:
            continue
        p95 = _p95(o.ttft, MIN_FIRST_TOKENS)
        if (fleet_hot and p95 is not None and p95 > knee) or (q is not None and o.waiting > q):
            hot.append(o.finished_per_s)
            fresh = fresh or not _draining(o, window_s)
        elif (
            fleet_cool
            and p95 is not None
            and p95 < COOL_FRACTION * target
            and _kv_room(o, targets.kv_cache_utilization)
        ):
            cool.append(o.finished_per_s)
    capacity, proven, hot_rps = state.capacity_rps, state.proven_rps, state.hot_rps
    all_cool = bool(cool) and len(cool) == len(measured)
    cool_since = None
    if all_cool:
        cool_since = state.cool_since if state.cool_since is not None else cool_from
    if hot:
        observed = CAPACITY_CUT * max(level_per_replica or 0.0, sum(hot) / len(hot))
        if not fresh and learn_from_hot:
            # Replicas only working off a backlog older than the window (after a start
            # from zero or a burst) run hot whatever the arrivals: no knee to learn. At
            # full batch they show the most they can finish; with no knee learned yet,
            # take `SATURATED_SHARE` of that, if more than the level proven cool.
            saturated = SATURATED_SHARE * sum(hot) / len(hot)
            if capacity is None and saturated > (proven or 0.0):
                capacity = saturated
        elif learn_from_hot and observed > 0 and (capacity is None or observed < capacity):
            breached = fleet_p95 is not None and fleet_p95 > target
            capacity = observed if capacity is None or breached else (capacity + observed) / 2
            if breached:
                hot_rps = observed / CAPACITY_CUT
            if proven is not None:
                proven = min(proven, capacity)
    elif cool_since is not None and now - cool_since >= LEVEL_S:
        if level_per_replica:
            proven = max(proven or 0.0, level_per_replica)
        carried = sum(cool) / len(cool)
        if capacity is not None and carried >= PROBE_LOAD * capacity:
            ceiling = math.inf
            if hot_rps is not None:
                ceiling = max(hot_rps, PROBE_CEILING * (proven or 0.0))
            capacity = max(capacity, min(capacity * CAPACITY_PROBE, ceiling))
    return replace(
        state, capacity_rps=capacity, proven_rps=proven, cool_since=cool_since, hot_rps=hot_rps
    )


def _draining(o: ReplicaObservation, window_s: float) -> bool:
    """A hot replica only working off an old backlog: it finished more than twice what
    came in, or holds more waiting requests than `BACKLOG_WINDOWS` windows of arrivals."""
    if o.arrived_per_s is None:
        return False
    if o.finished_per_s is not None and o.arrived_per_s < 0.5 * o.finished_per_s:
        return True
    return o.waiting > BACKLOG_WINDOWS * o.arrived_per_s * window_s


def _kv_room(o: ReplicaObservation, kv_target: float | None) -> bool:
    """KV cache comfortably under its target (or no KV target, or no KV metric)."""
    if kv_target is None or o.kv_cache_usage is None:
        return True
    return o.kv_cache_usage <= KNEE_FRACTION * kv_target


def _needs(
    measured: Sequence[ReplicaObservation],
    ready: int,
    arrivals: float | None,
    targets: AutoscalingTargets,
    capacity: float | None,
    proven: float | None = None,
) -> list[_Need]:
    """Replicas needed by each configured target, from the measured replicas.

    A breach before the knee is known scales on the arrivals over the proven
    rate when both are known: requests already queued in an engine stay
    there, so replicas for the backlog itself would come too late to help it.
    """
    carried = None
    if capacity is None and proven is not None and arrivals is not None:
        carried = arrivals / proven
    needs: list[_Need] = []
    running = sum(o.running for o in measured)
    waiting = sum(o.waiting for o in measured)
    fleet_ttft = Histogram.merge(o.ttft for o in measured if o.ttft is not None)
    p95 = _p95(fleet_ttft, MIN_FIRST_TOKENS)

    if targets.ttft_p95_seconds is not None:
        target = targets.ttft_p95_seconds
        if capacity is not None and arrivals is not None:
            needs.append(
                _Need(
                    TTFT,
                    arrivals / capacity,
                    f"{arrivals:.1f} req/s arriving; a replica keeps TTFT p95 under "
                    f"{KNEE_FRACTION * target:g}s up to {capacity:.2f} req/s (learned)",
                )
            )
        if p95 is not None and p95 > KNEE_FRACTION * target:
            replicas = float(ready)  # past the knee: no capacity to give back
            if carried is not None and p95 > target:
                replicas = max(carried, replicas)
            elif capacity is None and p95 > target:
                replicas = max(ready * min(p95 / target, TTFT_MAX_STEP), ready + 1.0)
            needs.append(_Need(TTFT, replicas, f"TTFT p95 {p95:.2f}s vs target {target:g}s"))

    if targets.kv_cache_utilization is not None:
        with_kv = [o.kv_cache_usage for o in measured if o.kv_cache_usage is not None]
        if with_kv:
            # Usage only: waiting requests are counted by the arrival rate, and
            # counting a backlog as KV demand would buy replicas it cannot move to.
            per_replica = sum(with_kv) / len(with_kv)
            needs.append(
                _Need(
                    KV,
                    per_replica / targets.kv_cache_utilization * ready,
                    f"KV cache {per_replica:.2f} per replica vs target "
                    f"{targets.kv_cache_utilization:g}",
                )
            )

    if targets.queue_depth_per_replica is not None:
        q = targets.queue_depth_per_replica
        per_waiting = waiting / len(measured)
        per_running = running / len(measured)
        if per_waiting > q and carried is not None:
            replicas = max(carried, float(ready))
        elif per_waiting > q and capacity is None:
            # Each replica holds what it runs now plus q waiting.
            replicas = ready * (per_running + per_waiting) / (per_running + q)
        elif per_waiting > 0:
            replicas = float(ready)  # requests wait: no capacity to give back
        else:
            replicas = 0.0
        detail = f"{per_waiting:.1f} requests waiting per replica vs target {q:g}"
        needs.append(_Need(QUEUE, replicas, detail))

    if targets.gpu_utilization is not None:
        with_gpu = [o.gpu_utilization for o in measured if o.gpu_utilization is not None]
        if with_gpu:
            util = sum(with_gpu) / len(with_gpu)
            needs.append(
                _Need(
                    GPU,
                    util / targets.gpu_utilization * ready,
                    f"GPU {util:.2f} per replica vs target {targets.gpu_utilization:g}",
                )
            )
    return needs


def _clamped(
    desired: int,
    driver: str,
    reason: str,
    spec: AutoscalingSpec,
    state: PolicyState,
    need: float | None,
) -> Decision:
    if desired > spec.max_replicas:
        capped = f"{reason}; capped at maxReplicas {spec.max_replicas} (wanted {desired})"
        return Decision(spec.max_replicas, driver, capped, True, state, need)
    if desired < spec.min_replicas:
        held = f"{reason}; held at minReplicas {spec.min_replicas} (wanted {desired})"
        return Decision(spec.min_replicas, driver, held, True, state, need)
    return Decision(desired, driver, reason, False, state, need)
