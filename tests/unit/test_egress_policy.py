"""networkPolicy.egress in the operator's config: off by default; on, the model's policy
limits where its server may connect (DNS and public HTTPS unless the config says more)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.operator.builders.policies import build_network_policy
from modelplane.operator.config import ConfigError, OperatorConfig, load_config


def load(tmp_path: Path, egress: dict[str, Any]) -> OperatorConfig:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"networkPolicy": {"egress": egress}}))
    return load_config(path)


def allows_https_to(policy: dict[str, Any], address: str) -> bool:
    """Whether an egress rule admits TCP 443 to `address` (ipBlock peers, as the CNI reads)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        ports = rule.get("ports")
        if ports and not any(p["protocol"] == "TCP" and p["port"] == 443 for p in ports):
            continue
        if "to" not in rule:
            return True
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block is None:
                continue
            network = ipaddress.ip_network(block["cidr"])
            if ip.version != network.version or ip not in network:
                continue
            if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_by_default_a_model_may_connect_anywhere() -> None:
    policy = build_network_policy("chat", "models", OperatorConfig())
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]


def test_switched_on_only_dns_and_public_https_leave_the_pod(tmp_path: Path) -> None:
    policy = build_network_policy("chat", "models", load(tmp_path, {"enabled": True}))
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns = policy["spec"]["egress"][0]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert allows_https_to(policy, "18.154.227.7")  # a hub's CDN
    assert allows_https_to(policy, "2600:9000:2000::1")
    for internal in ("169.254.169.254", "10.96.0.1", "172.20.3.4", "192.168.1.10",
                     "100.64.0.10", "127.0.0.1", "fd00:ec2::254", "fe80::1", "::1"):  # fmt: skip
        assert not allows_https_to(policy, internal), internal
    kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)


def test_the_config_replaces_the_destinations(tmp_path: Path) -> None:
    mirror = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "hub"}}}],
        "ports": [{"port": 8080}],
    }
    policy = build_network_policy(
        "chat", "models", load(tmp_path, {"enabled": True, "allowTo": [mirror]})
    )
    assert policy["spec"]["egress"] == [{**mirror, "ports": [{"protocol": "TCP", "port": 8080}]}]
    assert not allows_https_to(policy, "18.154.227.7")
    kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ({"ports": [{"port": 0}]}, "port"),
        ({"ports": [{"protocol": "ICMP", "port": 1}]}, "protocol"),
        ({"to": [{}]}, "a peer needs"),
    ],
)
def test_a_bad_egress_rule_is_refused_with_a_reason(
    tmp_path: Path, rule: dict[str, Any], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        load(tmp_path, {"enabled": True, "allowTo": [rule]})
