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
        "at '/operator/logLevel': value must be one of 'debug', 'info', 'warning'",
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
    ({"operator": {"healthPort": 80}}, "at '/operator/healthPort': minimum: got 80, want 1,024"),
    (
        {"operator": {"config": {"imagess": {}}}},
        "at '/operator/config': additional properties 'imagess'",
    ),
    (
        {"operator": {"config": {"startupProbe": {"failureTreshold": 3}}}},
        "at '/operator/config/startupProbe': additional properties 'failureTreshold'",
    ),
    (
        {"operator": {"config": {"accelerators": {"mi300": {"memory": "lots"}}}}},
        "at '/operator/config/accelerators/mi300/memory': 'lots' does not match pattern",
    ),
    (
        {"operator": {"config": {"accelerators": {"l40s": {"quantizations": ["int3"]}}}}},
        "at '/operator/config/accelerators/l40s/quantizations/0': value must be one of",
    ),
    (
        {"operator": {"config": {"drainTimeoutSeconds": "30s"}}},
        "at '/operator/config/drainTimeoutSeconds': got string, want integer",
    ),
    ({"gateway": {"enabled": "true"}}, "at '/gateway/enabled': got string, want boolean"),
    (
        {"gateway": {"defaultRouting": "random"}},
        "at '/gateway/defaultRouting': value must be one of 'least-load', 'prefix', 'round-robin'",
    ),
    ({"gateway": {"requestsPerMinute": 0}}, "at '/gateway/requestsPerMinute': minimum: got 0"),
    (
        {"gateway": {"apiKeys": {"secret": "x"}}},
        "at '/gateway/apiKeys': additional properties 'secret'",
    ),
    (
        {"gateway": {"tenants": {"secret": "x"}}},
        "at '/gateway/tenants': additional properties 'secret'",
    ),
    (
        {"gateway": {"tenants": {"secretKey": "teams/a.yaml"}}},
        "at '/gateway/tenants/secretKey': 'teams/a.yaml' does not match pattern",
    ),
    (
        {"gateway": {"redis": {"failure": "maybe"}}},
        "at '/gateway/redis/failure': value must be one of 'open', 'closed'",
    ),
    (
        {"gateway": {"redis": {"url": "http://redis:6379"}}},
        "at '/gateway/redis/url': 'http://redis:6379' does not match pattern",
    ),
    (
        {"gateway": {"redis": {"urlSecret": {"nam": "x"}}}},
        "at '/gateway/redis/urlSecret': additional properties 'nam'",
    ),
    (
        {"gateway": {"replicaConcurrency": 0}},
        "at '/gateway/replicaConcurrency': minimum: got 0, want 1",
    ),
    (
        {"gateway": {"replicaConcurrency": "8"}},
        "at '/gateway/replicaConcurrency': got string, want null or integer",
    ),
    ({"gateway": {"maxQueuedPerTenant": 0}}, "at '/gateway/maxQueuedPerTenant': minimum: got 0"),
    (
        {"gateway": {"service": {"type": "Ingress"}}},
        "at '/gateway/service/type': value must be one of",
    ),
    (
        {"gateway": {"logFormat": "plain"}},
        "at '/gateway/logFormat': value must be one of 'json', 'text'",
    ),
    ({"monitoring": {"gateway": {"interval": "often"}}}, "at '/monitoring/gateway/interval'"),
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


REFUSED_BY_THE_TEMPLATES: list[tuple[dict[str, Any], str]] = [
    (
        {"operator": {"serviceAccount": {"create": False}}},
        "operator.serviceAccount.name is required when operator.serviceAccount.create is false",
    ),
    (
        {"gateway": {"enabled": True, "serviceAccount": {"create": False}}},
        "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false",
    ),
    # The chart decides these (they also shape the RBAC and the probes).
    (
        {"operator": {"config": {"namespaces": ["ml"]}}},
        "operator.config.namespaces is set by the chart: use operator.watchNamespaces",
    ),
    (
        {"operator": {"config": {"healthPort": 9000}}},
        "operator.config.healthPort is set by the chart: use operator.healthPort",
    ),
    (
        {"operator": {"healthPort": 8080}},
        "operator.healthPort 8080 is also operator.config.metricsPort: give them different ports",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"), REFUSED_BY_THE_TEMPLATES, ids=[m for _, m in REFUSED_BY_THE_TEMPLATES]
)
def test_values_the_schema_cannot_judge_fail_with_a_message(
    values: dict[str, Any], message: str
) -> None:
    result = template(values)
    assert result.returncode != 0, f"helm accepted {values}"
    assert message in result.stderr, result.stderr
