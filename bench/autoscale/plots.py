"""Pictures of the simulator's runs: how each policy reacts to each trace.

One PNG per calibration and trace, one panel per policy, sharing the time
axis: offered load in replica units (grey), ready replicas (solid) and
ready + loading replicas (dashed) on the left axis; TTFT p95 of each 30 s
of arrivals on a log right axis, with the SLO as a red line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np


def write_picture(
    profile_name: str,
    slo_s: float,
    trace_name: str,
    description: str,
    rows: Sequence[Any],
    out: Path,
    goal: str = "",
) -> Path:
    """One PNG: a panel per policy for one calibration and trace; `goal` under the title
    (ours against R, the reference attainment it is judged by)."""
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.1 * len(rows)), sharex=True)
    for ax, row in zip(np.atleast_1d(axes), rows, strict=True):
        _panel(ax, row, slo_s)
    title = f"{profile_name}: {trace_name} ({description})"
    fig.suptitle(f"{title}\n{goal}" if goal else title, fontsize=10, y=0.995)
    fig.supxlabel("minutes")
    fig.tight_layout()
    path = out / f"autoscale-{profile_name}-{trace_name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _panel(ax: Any, row: Any, slo_s: float) -> None:
    bins = np.arange(len(row.load)) * 0.5  # 30 s bins, in minutes
    ax.fill_between(bins, row.load, step="post", color="0.85", label="offered load (replicas)")
    t = np.array([s[0] for s in row.samples]) / 60.0
    ready = np.array([s[1] for s in row.samples])
    loading = np.array([s[2] for s in row.samples])
    ax.step(t, ready, where="post", color="tab:blue", label="ready replicas")
    ax.step(
        t, ready + loading, where="post", color="tab:blue", ls="--", lw=0.8, label="ready + loading"
    )
    ax.set_ylim(0, max(11.0, float(np.nanmax(row.load)) + 1))
    ax.set_ylabel("replicas")
    ax.set_title(
        f"{row.policy}: SLO attainment {row.attainment:.2%}, {row.replica_hours:.2f} replica-h, "
        f"{row.events} scaling events",
        fontsize=9,
        loc="left",
    )
    right = ax.twinx()
    right.plot(bins, row.ttft_bins, color="tab:orange", lw=0.9, label="TTFT p95 (s)")
    right.axhline(slo_s, color="tab:red", lw=0.7, ls=":")
    right.set_yscale("log")
    right.set_ylim(0.01, 1000)
    right.set_ylabel("TTFT p95 (s)")
    if row.policy == "ours":
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="upper left", ncol=4)
