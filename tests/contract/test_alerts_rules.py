"""The SAIL alert rules: promtool checks and unit-tests them, and the chart ships them unchanged.

The rules live once, in charts/sail-operator/files/prometheus/sail-alerts.yaml; the PrometheusRule
template embeds that file. tests/contract/promtool/<alert>.test.yaml holds a `promtool test rules`
case per alert: it fires on a synthetic series and stays silent otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract.test_chart_render import CHART_DIR, objects_of_kind, render_objects
from tests.contract.test_dashboard_queries import (
    OPERATOR_METRICS,
    PROMETHEUS_SYNTHETIC,
    exported_series,
    labels_in,
    metric_names_in,
    series_family,
)

RULES_FILE = CHART_DIR / "files" / "prometheus" / "sail-alerts.yaml"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
REQUIRED_ALERTS = {"SAILRunStuckInPhase", "SAILRunCheckpointStale", "SAILRunRetryStorm", "SAILRunFailed",
                   "SAILOperatorWatchStale", "SAILOperatorDown"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install prometheus (scripts/test-deps.sh does it when root)",
)


def load_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL or "promtool", *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd)


def test_the_required_alerts_exist_with_severity_and_text() -> None:
    rules = load_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert "for" in rule, f"{rule['alert']}: say how long the condition must hold, even 0m"


def test_alert_expressions_name_only_exported_metrics() -> None:
    allowed = exported_series() | PROMETHEUS_SYNTHETIC
    for rule in load_rules():
        names = metric_names_in(rule["expr"])
        assert names and names <= allowed, f"{rule['alert']}: not exported: {sorted(names - allowed)}"
        for name, labels in labels_in(rule["expr"]).items():
            if name not in PROMETHEUS_SYNTHETIC:
                assert labels <= OPERATOR_METRICS[series_family(name)][1], f"{rule['alert']}: {name} {labels}"


def test_prometheus_rule_embeds_the_rules_file_unchanged() -> None:
    (rule,) = objects_of_kind(render_objects({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


@needs_promtool
def test_rules_file_passes_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def _cases(path: Path) -> list[dict[str, Any]]:
    return [case for test in yaml.safe_load(path.read_text())["tests"] for case in test["alert_rule_test"]]


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in sorted(PROMTOOL_TESTS.glob("*.test.yaml")):
        document = yaml.safe_load(path.read_text())
        assert [(PROMTOOL_TESTS / f).resolve() for f in document["rule_files"]] == [RULES_FILE], path.name
        for case in _cases(path):
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == REQUIRED_ALERTS, f"no firing case: {sorted(REQUIRED_ALERTS - firing)}"
    assert silent == REQUIRED_ALERTS, f"no silent case: {sorted(REQUIRED_ALERTS - silent)}"


@needs_promtool
@pytest.mark.parametrize("test_file", sorted(p.name for p in PROMTOOL_TESTS.glob("*.test.yaml")))
def test_promtool_unit_test_passes(test_file: str) -> None:
    result = promtool("test", "rules", test_file, cwd=PROMTOOL_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_test_catches_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: with the stuck-phase threshold raised to 9 h, its firing case breaks."""
    rules = RULES_FILE.read_text()
    assert "> 6 * 3600" in rules
    (tmp_path / "sail-alerts.yaml").write_text(rules.replace("> 6 * 3600", "> 9 * 3600"))
    test = yaml.safe_load((PROMTOOL_TESTS / "stuck-in-phase.test.yaml").read_text())
    test["rule_files"] = ["sail-alerts.yaml"]
    (tmp_path / "stuck.test.yaml").write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", "stuck.test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SAILRunStuckInPhase" in result.stdout + result.stderr
