"""The five request traces, as offered load over time in replica units.

A level of 1.0 is `Profile.unit_rps` requests/s: what one replica serves
comfortably, so the same shapes drive the CPU and the GPU calibration.
Arrivals are Poisson with that time-varying rate; prompt and output
lengths come from the profile's lognormal distributions. Each trace is two
hours of traffic: long enough for the slow parts of the policies (10-minute
averages, 5-minute stabilisation windows) to matter, and for a 5x step or a
cold start to be one event in a day rather than the whole of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HOUR = 3600.0


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration_s: float
    level: Callable[[np.ndarray], np.ndarray]  # seconds -> replica units
    peak: float
    min_replicas: int = 1  # 0: the trace is about scaling to and from zero


def step_burst() -> Trace:
    def level(t: np.ndarray) -> np.ndarray:
        return np.where((t >= 0.5 * HOUR) & (t < 1.5 * HOUR), 5.0, 1.0)

    return Trace(
        "step-5x", "1.0 for 30 min, 5x (5.0) for 60 min, 1.0 for 30 min", 2 * HOUR, level, 5.0
    )


def diurnal() -> Trace:
    def level(t: np.ndarray) -> np.ndarray:
        return 0.5 + 3.5 * (1.0 - np.cos(2.0 * math.pi * t / (2 * HOUR))) / 2.0

    return Trace(
        "diurnal", "a day squeezed into 2 h: 0.5 at night, 4.0 at noon", 2 * HOUR, level, 4.0
    )


def poisson_bursts(seed: int) -> Trace:
    rng = np.random.default_rng(seed + 7)
    starts, t = [], 0.0
    while True:
        t += rng.exponential(600.0)
        if t >= 2 * HOUR:
            break
        starts.append((t, t + rng.uniform(60.0, 180.0)))

    def level(times: np.ndarray) -> np.ndarray:
        out = np.full_like(times, 1.5)
        for begin, end in starts:
            out[(times >= begin) & (times < end)] = 4.5
        return out

    return Trace(
        "poisson-bursts",
        f"1.5, with {len(starts)} bursts to 4.5 (3x) of 1-3 min at Poisson times (mean gap 10 min)",
        2 * HOUR,
        level,
        4.5,
    )


def slow_ramp() -> Trace:
    def level(t: np.ndarray) -> np.ndarray:
        return np.minimum(0.5 + 5.5 * t / (100 * 60.0), 6.0)

    return Trace(
        "slow-ramp", "0.5 rising steadily to 6.0 over 100 min, then held", 2 * HOUR, level, 6.0
    )


def idle_then_spike() -> Trace:
    def level(t: np.ndarray) -> np.ndarray:
        light = np.where(t < 10 * 60.0, 0.5, 0.0)
        return np.where((t >= 40 * 60.0) & (t < 110 * 60.0), 4.0, light)

    return Trace(
        "idle-then-spike",
        "0.5 for 10 min, idle 30 min, 4.0 at once for 70 min, idle; minReplicas 0 where supported",
        2 * HOUR,
        level,
        4.0,
        min_replicas=0,
    )


def all_traces(seed: int) -> list[Trace]:
    return [step_burst(), diurnal(), poisson_bursts(seed), slow_ramp(), idle_then_spike()]
