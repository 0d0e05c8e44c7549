"""Would a NetworkPolicy let this connection in? networking.k8s.io/v1 ingress, evaluated offline.

No cluster (and so no CNI) runs here, so what a policy-enforcing CNI would
do is computed from the objects, following the API's documented semantics:

- A pod is isolated for ingress when any NetworkPolicy in its namespace
  selects it (spec.podSelector; `{}` selects every pod) and lists Ingress in
  policyTypes (a policy without policyTypes counts as Ingress). A pod no
  policy isolates accepts everything.
- An isolated pod accepts a connection when any ingress rule of any policy
  selecting it admits it: policies add up, none takes away.
- A rule admits a connection when one of its `from` peers matches the source
  (a missing or empty `from`: any source) and one of its `ports` matches the
  destination port (missing or empty `ports`: every port).
- Peers: podSelector alone means pods of the policy's own namespace;
  namespaceSelector alone, every pod of the namespaces it selects; both,
  the pods podSelector selects in those namespaces. ipBlock matches the
  source's IP when the caller gives one (CNIs differ on whether ipBlock
  applies to pod IPs at all; give no IP to leave ipBlock out).
- Ports: a number, or a name looked up in the destination pod's container
  ports (one name may stand for different numbers on different pods); protocol
  TCP unless given; endPort widens a number to a range; no port: every port
  of the protocol.
- Selectors: matchLabels and matchExpressions (In, NotIn, Exists,
  DoesNotExist) must all hold; NotIn and DoesNotExist also match a missing
  label.

What the API server would refuse (an unknown operator, In without values, a
peer with ipBlock and a selector, endPort with a named port) raises
`InvalidPolicyError`, so a broken policy cannot pass for one that denies.
Namespaces carry `kubernetes.io/metadata.name` as every namespace does.

No maintained Python library does this: network-config-analyzer pins PyYAML
and networkx versions the project's constraints exclude, kube-netpol's
simulator ignores namespace labels, illuminatio and policytester need a
running cluster.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
PROTOCOLS: Final = frozenset({"TCP", "UDP", "SCTP"})
OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


class InvalidPolicyError(ValueError):
    """A policy or selector the API server would refuse."""


@dataclass(frozen=True)
class ContainerPort:
    name: str | None
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: where it runs, its labels, its named ports, its IP."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()
    ip: str | None = None

    @classmethod
    def of_workload(cls, workload: Mapping[str, Any], *, ip: str | None = None) -> Pod:
        """The pods a Deployment (or any object with a pod template) would create."""
        template = workload["spec"]["template"]
        ports = tuple(
            ContainerPort(p.get("name"), int(p["containerPort"]), p.get("protocol", "TCP"))
            for container in template["spec"].get("containers", [])
            for p in container.get("ports", [])
        )
        namespace = workload["metadata"].get("namespace", "default")
        labels = template["metadata"].get("labels", {})
        return cls(namespace=namespace, labels=dict(labels), ports=ports, ip=ip)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a metav1.LabelSelector selects an object with `labels` (`{}`: everything)."""
    if selector is None:
        raise InvalidPolicyError("a selector that is null selects nothing; leave the field out")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise InvalidPolicyError(f"unknown selector fields {sorted(unknown)}")
    match_labels = selector.get("matchLabels") or {}
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    return all(_requirement_holds(r, labels) for r in selector.get("matchExpressions") or [])


def _requirement_holds(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = requirement.get("key"), requirement.get("operator")
    values = list(requirement.get("values") or [])
    if not key:
        raise InvalidPolicyError(f"a matchExpressions entry needs a key: {dict(requirement)}")
    if op not in OPERATORS:
        raise InvalidPolicyError(f"unknown operator {op!r} on {key} (one of {sorted(OPERATORS)})")
    if op in ("In", "NotIn") and not values:
        raise InvalidPolicyError(f"{op} on {key} needs at least one value")
    if op in ("Exists", "DoesNotExist") and values:
        raise InvalidPolicyError(f"{op} on {key} takes no values")
    if op == "In":
        return bool(key in labels and labels[key] in values)
    if op == "NotIn":
        return bool(key not in labels or labels[key] not in values)
    return bool((key in labels) == (op == "Exists"))


def _ingress_isolates(policy: Mapping[str, Any]) -> bool:
    types = policy["spec"].get("policyTypes")
    if types is None:
        return True  # the API server defaults it to Ingress (plus Egress if egress is given)
    unknown = set(types) - {"Ingress", "Egress"}
    if unknown:
        raise InvalidPolicyError(f"unknown policyTypes {sorted(unknown)}")
    return "Ingress" in types


class Cluster:
    """The namespaces (with labels) and NetworkPolicies that decide who reaches whom."""

    def __init__(
        self,
        policies: Iterable[Mapping[str, Any]],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.policies = [p for p in policies if p.get("kind") == "NetworkPolicy"]
        for policy in self.policies:
            if policy.get("apiVersion") != "networking.k8s.io/v1":
                raise InvalidPolicyError(f"not networking.k8s.io/v1: {policy.get('apiVersion')}")
        # Labels of the namespaces that have more than their name label.
        self.namespaces = {name: dict(labels) for name, labels in (namespace_labels or {}).items()}

    def namespace_labels(self, name: str) -> dict[str, str]:
        """A namespace's labels, with the name label the API server puts on every namespace."""
        return {**self.namespaces.get(name, {}), NAMESPACE_NAME_LABEL: name}

    def isolating(self, pod: Pod) -> list[Mapping[str, Any]]:
        """The policies that isolate `pod` for ingress."""
        return [
            p
            for p in self.policies
            if p["metadata"].get("namespace", "default") == pod.namespace
            and _ingress_isolates(p)
            and selects(p["spec"].get("podSelector", {}), pod.labels)
        ]

    def ingress(self, source: Pod, target: Pod, port: int, protocol: str = "TCP") -> Verdict:
        """May `source` open a connection to `target` on `port`/`protocol`?"""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {sorted(PROTOCOLS)}")
        policies = self.isolating(target)
        if not policies:
            return Verdict(True, "no NetworkPolicy isolates the target")
        for policy in policies:
            for index, rule in enumerate(policy["spec"].get("ingress") or []):
                if self._peers_match(rule.get("from"), policy, source) and _ports_match(
                    rule.get("ports"), target, port, protocol
                ):
                    name = policy["metadata"]["name"]
                    return Verdict(True, f"admitted by {name} ingress[{index}]")
        names = ", ".join(p["metadata"]["name"] for p in policies)
        return Verdict(False, f"isolated by {names}; no ingress rule admits it")

    def _peers_match(
        self, peers: list[Mapping[str, Any]] | None, policy: Mapping[str, Any], source: Pod
    ) -> bool:
        if not peers:
            return True
        return any(self._peer_matches(peer, policy, source) for peer in peers)

    def _peer_matches(
        self, peer: Mapping[str, Any], policy: Mapping[str, Any], source: Pod
    ) -> bool:
        pods, namespaces, block = (
            peer.get("podSelector"),
            peer.get("namespaceSelector"),
            peer.get("ipBlock"),
        )
        if block is not None:
            if pods is not None or namespaces is not None:
                raise InvalidPolicyError(
                    "a peer with ipBlock may not have pod or namespace selectors"
                )
            return _in_block(block, source.ip)
        if pods is None and namespaces is None:
            raise InvalidPolicyError(
                f"a peer needs podSelector, namespaceSelector or ipBlock: {peer}"
            )
        if namespaces is None:
            in_namespace = source.namespace == policy["metadata"].get("namespace", "default")
        else:
            in_namespace = selects(namespaces, self.namespace_labels(source.namespace))
        return in_namespace and (pods is None or selects(pods, source.labels))


def _in_block(block: Mapping[str, Any], ip: str | None) -> bool:
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if address not in network:
        return False
    return not any(
        address in ipaddress.ip_network(e, strict=False) for e in block.get("except", [])
    )


def _ports_match(
    ports: list[Mapping[str, Any]] | None, target: Pod, port: int, protocol: str
) -> bool:
    if not ports:
        return True
    return any(_port_matches(entry, target, port, protocol) for entry in ports)


def _port_matches(entry: Mapping[str, Any], target: Pod, port: int, protocol: str) -> bool:
    wanted = entry.get("protocol", "TCP")
    if wanted not in PROTOCOLS:
        raise InvalidPolicyError(f"protocol {wanted!r} is not one of {sorted(PROTOCOLS)}")
    number, end = entry.get("port"), entry.get("endPort")
    if isinstance(number, str):
        if not any(c.isalpha() for c in number):
            raise InvalidPolicyError(f"port {number!r}: a name needs a letter, a number no quotes")
        if end is not None:
            raise InvalidPolicyError(f"endPort needs a numbered port, not the name {number!r}")
        return wanted == protocol and any(
            p.name == number and p.port == port and p.protocol == protocol for p in target.ports
        )
    if wanted != protocol:
        return False
    if number is None:
        if end is not None:
            raise InvalidPolicyError("endPort needs port")
        return True
    first = int(number)
    if end is None:
        return port == first
    if int(end) < first:
        raise InvalidPolicyError(f"endPort {end} is below port {first}")
    return first <= port <= int(end)
