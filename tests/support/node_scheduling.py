"""Would the Kubernetes scheduler put this pod on this node? Its filters, in small.

Only the filters a pod spec controls through placement: the nodeSelector
(every label must match exactly), the required node affinity (terms ORed,
the expressions of one term ANDed; In, NotIn, Exists, DoesNotExist, Gt, Lt as
in `k8s.io/component-helpers/scheduling/corev1/nodeaffinity`: NotIn and
DoesNotExist also match a node without the label, Gt and Lt need it to be an
integer), taints (NoSchedule and NoExecute keep out a pod without a matching
toleration; PreferNoSchedule does not) and resource requests against the
node's allocatable amounts. The tests render a Deployment and ask these
questions of realistic nodes instead of comparing the YAML to itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from modelplane.operator.quantities import parse_quantity


@dataclass(frozen=True)
class Node:
    """What the scheduler sees of a node: labels, taints, allocatable resources."""

    labels: Mapping[str, str]
    taints: Sequence[Mapping[str, str]] = ()
    allocatable: Mapping[str, Decimal] = field(default_factory=dict)


def _requirement_holds(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = requirement["key"], requirement["operator"]
    values = list(requirement.get("values", []))
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    raise ValueError(f"unknown node selector operator {op!r}")


def _term_holds(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    expressions = term.get("matchExpressions", [])
    # An empty term selects no node (matchFields are not used here).
    return bool(expressions) and all(_requirement_holds(e, labels) for e in expressions)


def labels_match(pod_spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """The pod's nodeSelector and required node affinity both admit a node with `labels`."""
    selector = pod_spec.get("nodeSelector", {})
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = (
        pod_spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required is None:
        return True
    return any(_term_holds(t, labels) for t in required["nodeSelectorTerms"])


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    if toleration.get("effect") not in (None, "", taint["effect"]):
        return False
    key = toleration.get("key")
    operator = str(toleration.get("operator", "Equal"))
    value = str(toleration.get("value", ""))
    if not key:
        return operator == "Exists"
    if key != taint["key"]:
        return False
    return operator == "Exists" or value == taint.get("value", "")


def taints_tolerated(pod_spec: Mapping[str, Any], taints: Sequence[Mapping[str, str]]) -> bool:
    tolerations = pod_spec.get("tolerations", [])
    return all(
        any(_tolerates(t, taint) for t in tolerations)
        for taint in taints
        if taint["effect"] in ("NoSchedule", "NoExecute")
    )


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """The sum of the containers' requests, in base units."""
    total: dict[str, Decimal] = {}
    for container in pod_spec["containers"]:
        for name, amount in container.get("resources", {}).get("requests", {}).items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(str(amount))
    return total


# A node's disk is the node pool's boot-disk setting, not part of its machine type.
UNMODELLED: Final = frozenset({"ephemeral-storage"})


def shortfall(pod_spec: Mapping[str, Any], node: Node) -> list[str]:
    """Why the scheduler would not place the pod on `node` (empty: it would)."""
    reasons: list[str] = []
    if not labels_match(pod_spec, node.labels):
        reasons.append("node labels do not match the pod's nodeSelector/affinity")
    if not taints_tolerated(pod_spec, node.taints):
        reasons.append("a NoSchedule/NoExecute taint is not tolerated")
    for name, wanted in pod_requests(pod_spec).items():
        have = node.allocatable.get(name, Decimal(0))
        if name not in UNMODELLED and wanted > have:
            reasons.append(f"{name}: requests {wanted}, allocatable {have}")
    return reasons
