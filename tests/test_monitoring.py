"""The monitoring files operators load (alert rules, Grafana dashboard) are valid and name only real metrics.

promtool (Debian's `prometheus` package) checks and unit-tests the rules; where it is missing the tests skip with
the reason, unless TUNEKEEPER_REQUIRE_PROMTOOL=1 (set by .ci/run, which installs it) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tunekeeper.daemon.metrics import Metrics

ROOT = Path(__file__).parent.parent
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "tunekeeper.rules.yml"
RULE_TESTS = MONITORING / "tunekeeper.rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\b((?:tunekeeper|process)_[a-z0-9_]+)")
SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created", "_info")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("TUNEKEEPER_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (TUNEKEEPER_REQUIRE_PROMTOOL=1) but not on PATH", pytrace=False)
        pytest.skip("no promtool (Debian package prometheus)")
    return found


def exported_names() -> set[str]:
    """Every sample name the daemon's /metrics can carry."""
    families = re.findall(r"^# TYPE (\S+) ", Metrics().render().decode(), flags=re.MULTILINE)
    return {family + suffix for family in families for suffix in SAMPLE_SUFFIXES}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_each_alert_fires_on_its_fault_and_not_beside_it() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=MONITORING, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts == tested


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_the_files_name_only_metrics_the_daemon_exports(source: str) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(named) >= 5, f"the scan found too few metrics in the {source}: {named}"
    unknown = sorted(named - exported_names())
    assert not unknown, f"the {source} use metrics /metrics does not export: {unknown}"


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "tunekeeper"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
