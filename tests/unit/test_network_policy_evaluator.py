"""The offline NetworkPolicy evaluator (tests/support/network_policy.py) against the API's rules.

Each case is one sentence of the networking.k8s.io/v1 documentation turned
into a connection that must be admitted or refused; the chart's policy test
relies on every one of them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.network_policy import (
    Cluster,
    ContainerPort,
    InvalidPolicyError,
    Pod,
    selects,
)

WEB = Pod("shop", {"app": "web"}, (ContainerPort("http", 8080), ContainerPort("dns", 53, "UDP")))
FRIEND = Pod("shop", {"role": "friend"})
STRANGER = Pod("shop", {"role": "stranger"})
OUTSIDER = Pod("elsewhere", {"role": "friend"})
MONITOR = Pod("monitoring", {"app": "prometheus"})


def policy(
    ingress: list[dict[str, Any]] | None,
    *,
    name: str = "p",
    namespace: str = "shop",
    pod_selector: dict[str, Any] | None = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": "web"}}}
    if pod_selector is not None:
        spec["podSelector"] = pod_selector
    if ingress is not None:
        spec["ingress"] = ingress
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def friends(**rule: Any) -> dict[str, Any]:
    return {"from": [{"podSelector": {"matchLabels": {"role": "friend"}}}], **rule}


def test_a_pod_no_policy_selects_accepts_everything() -> None:
    other = policy([], pod_selector={"matchLabels": {"app": "db"}})
    elsewhere = policy([], namespace="elsewhere", pod_selector={})
    assert Cluster([other, elsewhere]).ingress(OUTSIDER, WEB, 8080)


def test_a_selecting_policy_without_rules_refuses_everything() -> None:
    verdict = Cluster([policy(None, types=["Ingress"])]).ingress(FRIEND, WEB, 8080)
    assert not verdict and "isolated by p" in verdict.reason


def test_an_egress_only_policy_does_not_isolate_for_ingress() -> None:
    assert Cluster([policy(None, types=["Egress"])]).ingress(STRANGER, WEB, 8080)


def test_a_policy_without_policy_types_isolates_for_ingress() -> None:
    assert not Cluster([policy([])]).ingress(STRANGER, WEB, 8080)


def test_policies_add_up() -> None:
    from_friends = policy([friends()], name="friends")
    from_monitoring = policy(
        [{"from": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}], name="obs"
    )
    cluster = Cluster([from_friends, from_monitoring], {"monitoring": {"team": "obs"}})
    assert cluster.ingress(FRIEND, WEB, 8080).reason == "admitted by friends ingress[0]"
    assert cluster.ingress(MONITOR, WEB, 8080).reason == "admitted by obs ingress[0]"
    assert not cluster.ingress(STRANGER, WEB, 8080)


@pytest.mark.parametrize("rule", [{}, {"from": []}])
def test_a_rule_without_peers_admits_every_source(rule: dict[str, Any]) -> None:
    assert Cluster([policy([rule])]).ingress(OUTSIDER, WEB, 8080)


def test_a_pod_selector_alone_means_the_policy_s_own_namespace() -> None:
    cluster = Cluster([policy([friends()])])
    assert cluster.ingress(FRIEND, WEB, 8080)
    assert not cluster.ingress(OUTSIDER, WEB, 8080)  # same labels, other namespace
    assert not cluster.ingress(STRANGER, WEB, 8080)


def test_a_namespace_selector_alone_admits_every_pod_there() -> None:
    cluster = Cluster(
        [policy([{"from": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}])],
        {"monitoring": {"team": "obs"}},
    )
    assert cluster.ingress(MONITOR, WEB, 8080)
    assert cluster.ingress(Pod("monitoring", {}), WEB, 8080)
    assert not cluster.ingress(FRIEND, WEB, 8080)  # its own namespace lacks the label


def test_both_selectors_in_one_peer_must_both_hold() -> None:
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}},
    }
    cluster = Cluster([policy([{"from": [peer]}])])
    assert cluster.ingress(MONITOR, WEB, 8080)
    assert not cluster.ingress(Pod("monitoring", {"app": "grafana"}), WEB, 8080)
    assert not cluster.ingress(Pod("elsewhere", {"app": "prometheus"}), WEB, 8080)


def test_the_two_selectors_as_two_peers_admit_either() -> None:
    peers = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {"matchLabels": {"app": "prometheus"}}},
    ]
    cluster = Cluster([policy([{"from": peers}])])
    assert cluster.ingress(Pod("monitoring", {"app": "grafana"}), WEB, 8080)
    assert cluster.ingress(Pod("shop", {"app": "prometheus"}), WEB, 8080)
    assert not cluster.ingress(Pod("elsewhere", {"app": "prometheus"}), WEB, 8080)


def test_every_namespace_carries_its_name_label() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}
    cluster = Cluster([policy([{"from": [peer]}])], {"elsewhere": {"team": "x"}})
    assert cluster.ingress(OUTSIDER, WEB, 8080)
    assert cluster.namespace_labels("elsewhere") == {
        "team": "x",
        "kubernetes.io/metadata.name": "elsewhere",
    }


@pytest.mark.parametrize(
    ("expression", "labels", "expected"),
    [
        ({"key": "tier", "operator": "In", "values": ["a", "b"]}, {"tier": "b"}, True),
        ({"key": "tier", "operator": "In", "values": ["a"]}, {"tier": "b"}, False),
        ({"key": "tier", "operator": "In", "values": ["a"]}, {}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["a"]}, {"tier": "b"}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["a"]}, {"tier": "a"}, False),
        ({"key": "tier", "operator": "Exists"}, {"tier": ""}, True),
        ({"key": "tier", "operator": "Exists"}, {}, False),
        ({"key": "tier", "operator": "DoesNotExist"}, {}, True),
        ({"key": "tier", "operator": "DoesNotExist"}, {"tier": "a"}, False),
    ],
)
def test_match_expressions(
    expression: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert selects({"matchExpressions": [expression]}, labels) is expected


def test_match_labels_and_expressions_must_all_hold() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "Exists"}],
    }
    assert selects(selector, {"app": "web", "tier": "1"})
    assert not selects(selector, {"app": "web"})
    assert not selects(selector, {"app": "api", "tier": "1"})
    assert selects({}, {"anything": "at all"})


@pytest.mark.parametrize(
    ("ports", "port", "protocol", "expected"),
    [
        (None, 9999, "TCP", True),
        ([], 9999, "UDP", True),
        ([{"port": 8080}], 8080, "TCP", True),
        ([{"port": 8080}], 8081, "TCP", False),
        ([{"port": 8080}], 8080, "UDP", False),  # TCP unless the entry says otherwise
        ([{"port": 53, "protocol": "UDP"}], 53, "UDP", True),
        ([{"protocol": "UDP"}], 5353, "UDP", True),  # no port: every port of the protocol
        ([{"protocol": "UDP"}], 5353, "TCP", False),
        ([{"port": 8000, "endPort": 8100}], 8100, "TCP", True),
        ([{"port": 8000, "endPort": 8100}], 8101, "TCP", False),
        ([{"port": "http"}], 8080, "TCP", True),  # the target's container port named http
        ([{"port": "http"}], 80, "TCP", False),
        ([{"port": "dns", "protocol": "UDP"}], 53, "UDP", True),
        ([{"port": "dns"}], 53, "TCP", False),  # the name is UDP on the pod
        ([{"port": "grpc"}], 8080, "TCP", False),  # no such port name on the target
        ([{"port": 1}, {"port": "http"}], 8080, "TCP", True),  # any entry will do
    ],
)
def test_ports(
    ports: list[dict[str, Any]] | None, port: int, protocol: str, expected: bool
) -> None:
    rule = friends() if ports is None else friends(ports=ports)
    assert bool(Cluster([policy([rule])]).ingress(FRIEND, WEB, port, protocol)) is expected


def test_one_port_name_means_each_pod_s_own_number() -> None:
    other = Pod("shop", {"app": "web"}, (ContainerPort("http", 9090),))
    cluster = Cluster([policy([friends(ports=[{"port": "http"}])])])
    assert cluster.ingress(FRIEND, other, 9090)
    assert not cluster.ingress(FRIEND, other, 8080)


def test_ip_blocks_match_the_source_address_when_given() -> None:
    block = {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
    cluster = Cluster([policy([{"from": [block]}])])
    assert cluster.ingress(Pod("any", ip="10.2.3.4"), WEB, 8080)
    assert not cluster.ingress(Pod("any", ip="10.1.3.4"), WEB, 8080)
    assert not cluster.ingress(Pod("any", ip="192.168.0.1"), WEB, 8080)
    assert not cluster.ingress(Pod("any"), WEB, 8080)


def test_pod_of_workload_reads_the_pod_template() -> None:
    deployment = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "ports": [{"name": "http", "containerPort": 8080}]},
                        {"name": "b", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
                    ]
                },
            }
        },
    }
    assert Pod.of_workload(deployment) == Pod(
        "shop", {"app": "web"}, (ContainerPort("http", 8080), ContainerPort(None, 53, "UDP"))
    )


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ({"from": [{}]}, "needs podSelector, namespaceSelector or ipBlock"),
        ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}, "ipBlock"),
        (
            {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "in"}]}}]},
            "unknown operator 'in'",
        ),
        (
            {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]},
            "needs at least one value",
        ),
        (
            {
                "from": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "a", "operator": "Exists", "values": ["x"]}
                            ]
                        }
                    }
                ]
            },
            "takes no values",
        ),
        ({"from": [{"podSelector": {"matchLabel": {"a": "b"}}}]}, "unknown selector fields"),
        ({"ports": [{"port": "http", "endPort": 9000}]}, "endPort needs a numbered port"),
        ({"ports": [{"port": 9000, "endPort": 8000}]}, "below port"),
        ({"ports": [{"port": "8080"}]}, "a name needs a letter"),
        ({"ports": [{"port": 8080, "protocol": "tcp"}]}, "protocol 'tcp'"),
    ],
)
def test_what_the_api_server_would_refuse_is_an_error(rule: dict[str, Any], why: str) -> None:
    """A malformed policy raises rather than quietly denying (which would look like a pass)."""
    with pytest.raises(InvalidPolicyError, match=why):
        Cluster([policy([rule])]).ingress(FRIEND, WEB, 8080)
