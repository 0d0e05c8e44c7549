"""The chart's alerts, checked and unit-tested by promtool (real Prometheus code).

alerts_test.yaml feeds synthetic series to every alert, with cases that fire
and cases that must not; promtool compares the alerts (labels and rendered
annotations) with what the file expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.chart.helm import CHART, find, render
from tests.monitoring.prometheus import promtool

ALERTS = CHART / "files" / "alerts.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_alert_file() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_checks_the_rules_the_chart_installs(tmp_path: Path) -> None:
    values = {"monitoring": {"alerts": {"enabled": True}, "operator": {"enabled": True}}}
    rule = find(render(values), "PrometheusRule")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    result = promtool("check", "rules", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_says_what_happened_and_what_to_do() -> None:
    names = [r["alert"] for r in alert_rules()]
    assert names == [
        "ModelplaneTTFTAboveTarget",
        "ModelplaneHighErrorRatio",
        "ModelplaneReplicasAtMaxQueueGrowing",
        "ModelplaneKVCacheNearlyFull",
        "ModelplaneServerRestarting",
        "ModelplaneOperatorDown",
        "ModelplaneTenantBudgetNearlySpent",
        "ModelplaneTenantThrottled",
    ]
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert rule["annotations"]["runbook"].endswith("."), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    cases = [
        case
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} never stays silent"


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
