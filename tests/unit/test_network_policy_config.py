"""networkPolicy in the operator's config: typed peers, clear refusals, the policy they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.api import contract
from modelplane.operator.builders.policies import build_network_policy
from modelplane.operator.config import ConfigError, OperatorConfig, load_config


def load(tmp_path: Path, network_policy: dict[str, Any]) -> OperatorConfig:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"networkPolicy": network_policy}))
    return load_config(path)


def peers(config: OperatorConfig) -> list[dict[str, Any]]:
    """Who may reach the server port; the admin port (LoRA) admits the operator only, whatever
    the config lists."""
    rules = build_network_policy("chat", "models", config)["spec"]["ingress"]
    rule, admin = rules
    assert rule["ports"] == [{"protocol": "TCP", "port": contract.SERVER_PORT}]
    assert admin == {
        "from": [control_plane(config.network_policy.control_plane_namespace, "operator")],
        "ports": [{"protocol": "TCP", "port": contract.SERVER_ADMIN_PORT}],
    }
    found: list[dict[str, Any]] = rule["from"]
    return found


def control_plane(namespace: str, component: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/part-of": "modelplane",
            }
        },
    }


def test_the_default_policy_admits_the_control_plane_the_namespace_and_monitoring() -> None:
    assert peers(OperatorConfig()) == [
        control_plane("modelplane-system", "operator"),
        control_plane("modelplane-system", "gateway"),
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]


def test_a_replaced_list_keeps_the_control_plane_in_its_namespace(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "controlPlaneNamespace": "platform",
            "allowFrom": [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {"key": "team", "operator": "In", "values": ["ml", "obs"]}
                        ]
                    }
                },
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            ],
        },
    )
    assert peers(config) == [
        control_plane("platform", "operator"),
        control_plane("platform", "gateway"),
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["ml", "obs"]}]
            }
        },
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
    ]


@pytest.mark.parametrize(
    ("network_policy", "message"),
    [
        ({"allowFrom": [{}]}, "a peer needs podSelector, namespaceSelector or ipBlock"),
        (
            {"allowFrom": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]},
            "either an ipBlock or pod/namespace selectors",
        ),
        ({"allowFrom": [{"podSelectr": {}}]}, "allowFrom.0.podSelectr: Extra inputs"),
        (
            {
                "allowFrom": [
                    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
                ]
            },
            "In on a needs at least one value",
        ),
        (
            {
                "allowFrom": [
                    {"podSelector": {"matchExpressions": [{"key": "a", "operator": "in"}]}}
                ]
            },
            "allowFrom.0.podSelector.matchExpressions.0.operator",
        ),
        ({"controlPlaneNamespace": "Modelplane_System"}, "controlPlaneNamespace"),
    ],
)
def test_a_bad_peer_is_refused_saying_where(
    tmp_path: Path, network_policy: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match="networkPolicy") as raised:
        load(tmp_path, network_policy)
    assert message in str(raised.value)
