"""Which CPUs each local model server's engine may compute on.

vLLM's CPU engine pins its compute threads itself, and left to choose
(`VLLM_CPU_OMP_THREADS_BIND=auto`) every server picks the same cores: two
servers on a 2-core machine both compute on core 0 and leave core 1 idle,
and each one's worker, busy-waiting for its next step, starves the other.
On CI's 2-core machine one of two replicas made no progress for minutes.
So when local mode starts several servers, it gives each a disjoint share
of the CPUs this process may use; one server keeps vLLM's own choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

OMP_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def split_cpus(servers: int, cpus: Sequence[int]) -> list[str | None]:
    """A `VLLM_CPU_OMP_THREADS_BIND` value per server (None: let vLLM choose).

    The CPUs are cut into `servers` contiguous shares as even as possible;
    with more servers than CPUs, servers share CPUs in turn (still better
    than all of them on one).
    """
    if servers <= 1 or not cpus:
        return [None] * servers
    ordered = sorted(cpus)
    if servers >= len(ordered):
        return [str(ordered[i % len(ordered)]) for i in range(servers)]
    base, extra = divmod(len(ordered), servers)
    shares: list[str | None] = []
    start = 0
    for i in range(servers):
        size = base + (1 if i < extra else 0)
        shares.append(",".join(str(c) for c in ordered[start : start + size]))
        start += size
    return shares


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def server_envs(servers: int, environ: Mapping[str, str]) -> list[dict[str, str]]:
    """Environment additions per server; a bind the user set is left alone."""
    if OMP_BIND_ENV in environ:
        return [{} for _ in range(servers)]
    return [
        {} if share is None else {OMP_BIND_ENV: share}
        for share in split_cpus(servers, usable_cpus())
    ]
