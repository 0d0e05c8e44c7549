"""Wrong values fail at install with a message naming the value (values.schema.json).

Each case is rendered by the real helm binary, which validates the values
against the chart's schema before rendering anything.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import template

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"operator": {"replicass": 2}}, "at '/operator': additional properties 'replicass'"),
    ({"operator": {"replicas": 3}}, "at '/operator/replicas': maximum: got 3, want 2"),
    ({"operator": {"replicas": "2"}}, "at '/operator/replicas': got string, want integer"),
    (
        {"operator": {"logLevel": "loud"}},
        "at '/operator/logLevel': value must be one of 'debug', 'info', 'warning', 'error'",
    ),
    (
        {"operator": {"watchNamespaces": ["ML_Team"]}},
        "at '/operator/watchNamespaces/0': 'ML_Team' does not match pattern",
    ),
    (
        {"operator": {"watchNamespaces": "ml"}},
        "at '/operator/watchNamespaces': got string, want array",
    ),
    (
        {"operator": {"image": {"pullPolicy": "Sometimes"}}},
        "at '/operator/image/pullPolicy': value must be one of",
    ),
    (
        {"operator": {"resources": {"limits": {"memory": "lots"}}}},
        "at '/operator/resources/limits/memory'",
    ),
    ({"operator": {"healthPort": 8080}}, "at '/operator/healthPort'"),
    ({"gateway": {"enabled": True}}, "at '/gateway/enabled': value must be false"),
    (
        {"monitoring": {"modelServers": {"kind": "Probe"}}},
        "at '/monitoring/modelServers/kind': value must be one of 'PodMonitor', 'ServiceMonitor'",
    ),
    (
        {"monitoring": {"modelServers": {"interval": "15 seconds"}}},
        "at '/monitoring/modelServers/interval': '15 seconds' does not match pattern",
    ),
    (
        {"monitoring": {"dashboards": {"labelValue": 1}}},
        "at '/monitoring/dashboards/labelValue': got number, want string",
    ),
    (
        {"monitoring": {"dashboards": {"label": "not a label"}}},
        "at '/monitoring/dashboards/label': 'not a label' does not match pattern",
    ),
    (
        {"monitoring": {"alerts": {"enabled": "yes"}}},
        "at '/monitoring/alerts/enabled': got string, want boolean",
    ),
    (
        {"monitoring": {"labels": {"release": 7}}},
        "at '/monitoring/labels/release': got number, want string",
    ),
    ({"monitoringg": {}}, "additional properties 'monitoringg' not allowed"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_bad_value_fails_with_a_message_naming_it(values: dict[str, Any], message: str) -> None:
    result = template(values)
    assert result.returncode != 0, f"helm accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_a_service_account_that_is_not_created_must_be_named() -> None:
    result = template({"operator": {"serviceAccount": {"create": False}}})
    assert result.returncode != 0
    assert "operator.serviceAccount.name is required" in result.stderr
