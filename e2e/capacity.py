"""Is there room on the cluster for the e2e suite? A pure decision over `kubectl get -o json`.

The suite runs CPU model replicas that each request what the sample asks
(2 CPUs and 8 GiB), beside the operator, the gateway and small test pods. On
a kind node that is too small the replicas stay Pending and every test times
out after many minutes; checked first, that becomes one skip that says what
is missing. Free room is what the scheduler sees: each schedulable node's
allocatable CPU and memory minus the requests of the pods already on it
(pods of the suite's own namespaces are left out: the suite replaces them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from kubernetes.utils import parse_quantity

GIB: Final = Decimal(1024**3)
TAINTS_THAT_KEEP_PODS_OFF: Final = frozenset({"NoSchedule", "NoExecute"})


def _quantity(value: object) -> Decimal:
    """A quantity in base units, in every form Kubernetes writes (kubernetes' own parser)."""
    return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Resources:
    cpu: Decimal  # cores
    memory: Decimal  # bytes

    @classmethod
    def of(cls, quantities: Mapping[str, Any] | None) -> Resources:
        """From a `requests`/`allocatable` map; what it does not name counts as 0."""
        quantities = quantities or {}
        return cls(_quantity(quantities.get("cpu", 0)), _quantity(quantities.get("memory", 0)))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def times(self, count: int) -> Resources:
        return Resources(self.cpu * count, self.memory * count)

    def holds(self, other: Resources) -> bool:
        return self.cpu >= other.cpu and self.memory >= other.memory

    def __str__(self) -> str:
        return f"{_number(self.cpu)} CPU and {_number(self.memory / GIB)} GiB"


NOTHING: Final = Resources(Decimal(0), Decimal(0))


def _number(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')).normalize():f}"


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """What the scheduler reserves for a pod: its containers' requests, or its largest
    init container's where that is more."""
    spec = pod.get("spec", {})
    containers = [
        Resources.of(c.get("resources", {}).get("requests")) for c in spec.get("containers", [])
    ]
    inits = [
        Resources.of(c.get("resources", {}).get("requests")) for c in spec.get("initContainers", [])
    ]
    total = sum(containers, NOTHING)
    return Resources(
        max([total.cpu, *(i.cpu for i in inits)]),
        max([total.memory, *(i.memory for i in inits)]),
    )


def schedulable(node: Mapping[str, Any]) -> bool:
    """Ready, not cordoned, and no taint that keeps ordinary pods off."""
    spec, status = node.get("spec", {}), node.get("status", {})
    if spec.get("unschedulable"):
        return False
    if any(t.get("effect") in TAINTS_THAT_KEEP_PODS_OFF for t in spec.get("taints", [])):
        return False
    ready = [c for c in status.get("conditions", []) if c.get("type") == "Ready"]
    return bool(ready) and ready[0].get("status") == "True"


def free_per_node(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    ignore_namespaces: Iterable[str] = (),
) -> dict[str, Resources]:
    """Allocatable minus what running pods request, for each schedulable node."""
    ignored = set(ignore_namespaces)
    free = {
        node["metadata"]["name"]: Resources.of(node.get("status", {}).get("allocatable"))
        for node in nodes
        if schedulable(node)
    }
    for pod in pods:
        where = pod.get("spec", {}).get("nodeName")
        finished = pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
        if where in free and not finished and pod["metadata"].get("namespace") not in ignored:
            free[where] = free[where] - pod_requests(pod)
    return free


@dataclass(frozen=True)
class Part:
    what: str
    count: int
    each: Resources


@dataclass(frozen=True)
class Need:
    """What the suite runs at once at its busiest."""

    parts: tuple[Part, ...]

    @property
    def total(self) -> Resources:
        return sum((p.each.times(p.count) for p in self.parts), NOTHING)

    @property
    def largest(self) -> Part:
        return max(self.parts, key=lambda p: (p.each.memory, p.each.cpu))

    def __str__(self) -> str:
        return ", ".join(f"{p.count} x {p.what} ({p.each})" for p in self.parts)


def capacity_problem(free: Mapping[str, Resources], need: Need) -> str | None:
    """Why the suite cannot fit on these nodes, or None when it can."""
    advice = (
        "Give Docker more CPUs and memory (Docker Desktop: Settings > Resources) or free "
        "room on the nodes, and run again."
    )
    if not free:
        return (
            "no node can take the suite's pods (none is Ready, uncordoned and free of "
            f"NoSchedule/NoExecute taints); it needs {need.total} of allocatable room. {advice}"
        )
    have = sum(free.values(), NOTHING)
    per_node = "; ".join(f"{name}: {room}" for name, room in sorted(free.items()))
    largest = need.largest
    if not have.holds(need.total):
        return (
            f"the kind nodes have {have} free (allocatable minus the requests of the pods "
            f"running there; {per_node}), but the e2e suite needs {need.total} at its peak: "
            f"{need}. {advice}"
        )
    left = _placed(free, largest)
    rest = need.total - largest.each.times(largest.count)
    if left is None or not sum(left.values(), NOTHING).holds(rest):
        return (
            f"the kind nodes cannot each take whole pods: {largest.count} x {largest.what} "
            f"({largest.each}) do not fit on them side by side ({per_node}), though together "
            f"they have {have}. {advice}"
        )
    return None


def _placed(free: Mapping[str, Resources], part: Part) -> dict[str, Resources] | None:
    """The room left once each of `part`'s pods went to the node with the most room left
    (None when one does not fit anywhere)."""
    room = dict(free)
    for _ in range(part.count):
        fits = [name for name, left in room.items() if left.holds(part.each)]
        if not fits:
            return None
        best = max(fits, key=lambda name: (room[name].memory, room[name].cpu))
        room[best] = room[best] - part.each
    return room
