"""The e2e suite's room check (e2e/capacity.py): what the scheduler would see, and the message.

Pure functions over `kubectl get -o json` shapes, on tables: which nodes
count, what pods reserve (init containers included), which pods are left
out, and the skip message a user reads when the kind node is too small.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from e2e.capacity import (
    NOTHING,
    Need,
    Part,
    Resources,
    capacity_problem,
    free_per_node,
    pod_requests,
    schedulable,
)
from e2e.suite import chart_values, default_need

GI = Decimal(1024**3)


def node(name: str = "kind", cpu: str = "8", memory: str = "32Gi", **spec: Any) -> dict[str, Any]:
    ready = spec.pop("ready", "True")
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def pod(
    cpu: str, memory: str, *, on: str = "kind", namespace: str = "default", phase: str = "Running"
) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {
            "nodeName": on,
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        },
        "status": {"phase": phase},
    }


def res(cpu: str, memory_gib: str) -> Resources:
    return Resources(Decimal(cpu), Decimal(memory_gib) * GI)


def test_quantities_are_read_as_kubernetes_writes_them() -> None:
    assert Resources.of({"cpu": "500m", "memory": "16323412Ki"}) == Resources(
        Decimal("0.5"), Decimal(16323412 * 1024)
    )
    assert Resources.of({"cpu": "2", "memory": "1G"}) == Resources(Decimal(2), Decimal(10**9))
    assert Resources.of(None) == NOTHING
    assert str(res("4.6", "16.9375")) == "4.6 CPU and 16.94 GiB"


def test_a_pod_reserves_its_containers_or_its_largest_init_container() -> None:
    body = pod("1", "1Gi")
    body["spec"]["containers"].append({"resources": {"requests": {"cpu": "250m"}}})
    assert pod_requests(body) == res("1.25", "1")
    body["spec"]["initContainers"] = [{"resources": {"requests": {"memory": "3Gi"}}}]
    assert pod_requests(body) == res("1.25", "3")
    assert pod_requests({"spec": {"containers": [{"name": "no-requests"}]}}) == NOTHING


@pytest.mark.parametrize(
    ("body", "counts"),
    [
        (node(), True),
        (node(ready="False"), False),
        (node(unschedulable=True), False),
        (
            node(taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
            False,
        ),
        (node(taints=[{"key": "gpu", "effect": "PreferNoSchedule"}]), True),
    ],
    ids=["ready", "not ready", "cordoned", "NoSchedule taint", "PreferNoSchedule taint"],
)
def test_which_nodes_can_take_the_suite_s_pods(body: dict[str, Any], counts: bool) -> None:
    assert schedulable(body) is counts


def test_free_room_is_allocatable_minus_running_pods_outside_the_suite_s_namespaces() -> None:
    pods = [
        pod("950m", "340Mi", namespace="kube-system"),
        pod("2", "8Gi", namespace="modelplane-e2e-models"),  # the suite's own: replaced
        pod("1", "1Gi", phase="Succeeded"),  # finished: reserves nothing
        pod("1", "1Gi", on="elsewhere"),  # on a node that does not count
    ]
    free = free_per_node(
        [node(), node("cordoned", unschedulable=True)],
        pods,
        ignore_namespaces=["modelplane-e2e-models"],
    )
    assert free == {"kind": res("8", "32") - Resources.of({"cpu": "950m", "memory": "340Mi"})}


NEED = Need((Part("model replica", 2, res("2", "8")), Part("operator", 1, res("0.5", "1"))))


def test_enough_room_is_no_problem() -> None:
    assert capacity_problem({"kind": res("5", "20")}, NEED) is None


def test_too_little_room_says_what_there_is_and_what_is_needed() -> None:
    problem = capacity_problem({"kind": res("3", "20")}, NEED)
    assert problem == (
        "the kind nodes have 3 CPU and 20 GiB free (allocatable minus the requests of the pods "
        "running there; kind: 3 CPU and 20 GiB), but the e2e suite needs 4.5 CPU and 17 GiB at "
        "its peak: 2 x model replica (2 CPU and 8 GiB), 1 x operator (0.5 CPU and 1 GiB). "
        "Give Docker more CPUs and memory (Docker Desktop: Settings > Resources) or free room "
        "on the nodes, and run again."
    )


@pytest.mark.parametrize(
    "free",
    [
        {"a": res("3", "7"), "b": res("1.5", "12")},  # neither holds one replica
        {"a": res("5", "9"), "b": res("0.5", "9")},  # a holds one, nothing holds the second
    ],
    ids=["no node holds one", "one node holds one"],
)
def test_room_split_over_nodes_that_cannot_hold_the_replicas_is_a_problem(
    free: dict[str, Resources],
) -> None:
    problem = capacity_problem(free, NEED)
    assert problem is not None
    assert problem.startswith(
        "the kind nodes cannot each take whole pods: 2 x model replica (2 CPU and 8 GiB)"
    )
    assert "though together they have" in problem


def test_replicas_on_different_nodes_fit() -> None:
    assert capacity_problem({"a": res("2.5", "9"), "b": res("2.5", "9")}, NEED) is None


def test_no_schedulable_node_is_a_problem() -> None:
    problem = capacity_problem({}, NEED)
    assert problem is not None and "no node can take the suite's pods" in problem
    assert "4.5 CPU and 17 GiB" in problem


def test_the_suite_s_need_comes_from_the_samples_and_the_chart_values() -> None:
    need = default_need()
    parts = {p.what: p for p in need.parts}
    assert parts["model replica"].count == 2
    assert parts["model replica"].each == res("2", "8")  # what the CPU samples request
    chart = chart_values({})
    assert parts["operator"].each == Resources.of(chart["operator"]["resources"]["requests"])
    assert parts["gateway"].count == 1  # the suite installs one gateway replica
    assert need.largest.what == "model replica"
