"""Writes the operator made that its watch-fed indexes have not shown yet.

Children and status are read from in-memory indexes fed by watch events,
which arrive a little after each write. Without this, a reconcile running
between a write and its event would see the old state and write again (or
try to create a child that exists). An expectation overlays the index until
the index shows the same thing, or until it expires (then the index is
trusted again, so a change made by someone else is never hidden for long).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.operator.reconcile.children_plan import ChildKey
from modelplane.operator.reconcile.observed import ObservedChild

OwnerKey = tuple[str, str]  # (namespace, name) of the LLMDeployment


@dataclass
class _Expected:
    value: Any
    until: float


class Expectations:
    def __init__(self, ttl_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_seconds
        self._clock = clock
        self._children: dict[OwnerKey, dict[ChildKey, _Expected]] = {}
        self._status: dict[OwnerKey, _Expected] = {}

    def expect_child(self, owner: OwnerKey, key: ChildKey, child: ObservedChild | None) -> None:
        """`child` as written; None: deleted."""
        until = self._clock() + self._ttl
        self._children.setdefault(owner, {})[key] = _Expected(child, until)

    def children(
        self, owner: OwnerKey, observed: Mapping[ChildKey, ObservedChild]
    ) -> dict[ChildKey, ObservedChild]:
        """The observed children with the still-unconfirmed writes laid over them."""
        merged = dict(observed)
        pending = self._children.get(owner, {})
        now = self._clock()
        for key, expected in list(pending.items()):
            seen = observed.get(key)
            confirmed = (
                seen is None if expected.value is None else _same_child(seen, expected.value)
            )
            if confirmed or expected.until < now:
                del pending[key]
            elif expected.value is None:
                merged.pop(key, None)
            else:
                merged[key] = expected.value
        if not pending:
            self._children.pop(owner, None)
        return merged

    def expect_status(self, owner: OwnerKey, status: Mapping[str, Any]) -> None:
        """A status patch written; it joins one still unconfirmed (two writers: the
        reconciler and the autoscaler), the later value of a field winning."""
        now = self._clock()
        pending = self._status.get(owner)
        earlier = pending.value if pending is not None and pending.until >= now else {}
        self._status[owner] = _Expected({**earlier, **status}, now + self._ttl)

    def status(self, owner: OwnerKey, current: Mapping[str, Any]) -> dict[str, Any]:
        """The observed status with the unconfirmed status patch laid over it."""
        expected = self._status.get(owner)
        if expected is None:
            return dict(current)
        patch: dict[str, Any] = expected.value
        confirmed = all(current.get(k) == v for k, v in patch.items() if v is not None) and all(
            k not in current for k, v in patch.items() if v is None
        )
        if confirmed or expected.until < self._clock():
            del self._status[owner]
            return dict(current)
        merged = {**current, **patch}
        return {k: v for k, v in merged.items() if v is not None}

    def forget(self, owner: OwnerKey) -> None:
        self._children.pop(owner, None)
        self._status.pop(owner, None)


def _same_child(seen: ObservedChild | None, expected: ObservedChild) -> bool:
    if seen is None or seen.spec_hash != expected.spec_hash:
        return False
    if expected.deployment is not None:
        return seen.deployment is not None and (
            seen.deployment.spec_replicas == expected.deployment.spec_replicas
        )
    return True
