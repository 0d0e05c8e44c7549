"""How the e2e suite reaches a cluster: one object, swapped whole for a fake in unit tests.

The fixtures in e2e/conftest.py never call subprocess themselves: they take
the environment probe, the command runner and the port-forwarder from the
`ClusterAccess` in pytest's config stash, which is `REAL` unless a plugin put
another there before collection (e2e/fake_cluster.py does, for
tests/unit/test_e2e_fixtures.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from e2e.environment import Environment, api_problem, detect, skip_reason
from e2e.kube import PortForwarder, Runner, port_forward, run


@dataclass(frozen=True)
class ClusterAccess:
    detect: Callable[[], Environment]  # which tools and cluster this machine has
    api_problem: Callable[[Environment], str | None]  # None when the cluster's API answers
    runner: Runner
    port_forward: PortForwarder

    def why_not_here(self) -> str | None:
        """The reason the e2e suite skips, or None when it can run."""
        env = self.detect()
        return skip_reason(env, lambda: self.api_problem(env))


REAL: Final = ClusterAccess(
    detect=detect,
    api_problem=lambda env: api_problem(env.tools.get("kubectl")),
    runner=run,
    port_forward=port_forward,
)

ACCESS_KEY: Final = pytest.StashKey[ClusterAccess]()


def access_of(config: pytest.Config) -> ClusterAccess:
    return config.stash.get(ACCESS_KEY, REAL)
