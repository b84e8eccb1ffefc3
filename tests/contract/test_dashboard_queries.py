"""The Grafana dashboard: structure, every query valid PromQL (checked by promtool), and every
query naming only metrics the operator exports.

Grafana has no package here, so its JSON is checked structurally. Each panel query and template
variable query is wrapped as a recording rule and fed to `promtool check rules` after replacing
Grafana's macros ($__rate_interval, $__range) with durations. The metric-name helpers at the top are
shared with the alert tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract.test_chart_render import ALL_OPTIONS_VALUES, CHART_DIR, objects_of_kind, render_objects

DASHBOARD_FILE = CHART_DIR / "files" / "grafana" / "sail-operator.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install prometheus (scripts/test-deps.sh does it when root)",
)

# What the operator exports (docs/operating.md "Metrics", issue 7): name -> (type, labels). Cross-checked
# against sail_operator.metrics.METRIC_NAMES once that module exists.
OPERATOR_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "sail_runs_created_total": ("counter", frozenset()),
    "sail_runs_finished_total": ("counter", frozenset({"result"})),
    "sail_phase_attempts_total": ("counter", frozenset({"phase", "result", "cause"})),
    "sail_gpu_seconds_total": ("counter", frozenset({"namespace", "phase"})),
    "sail_operator_handler_errors_total": ("counter", frozenset({"handler"})),
    "sail_phase_duration_seconds": ("histogram", frozenset({"phase"})),
    "sail_phase_queue_wait_seconds": ("histogram", frozenset({"phase"})),
    "sail_operator_handler_duration_seconds": ("histogram", frozenset({"handler"})),
    "sail_operator_watch_last_event_timestamp_seconds": ("gauge", frozenset()),
    "sail_run_info": ("gauge", frozenset({"namespace", "run", "model", "model_digest"})),
    "sail_run_state": ("gauge", frozenset({"namespace", "run", "state"})),
    "sail_run_current_iteration": ("gauge", frozenset({"namespace", "run"})),
    "sail_run_target_iterations": ("gauge", frozenset({"namespace", "run"})),
    "sail_run_progress_ratio": ("gauge", frozenset({"namespace", "run"})),
    "sail_run_last_checkpoint_timestamp_seconds": ("gauge", frozenset({"namespace", "run"})),
    "sail_run_phase_started_timestamp_seconds": ("gauge", frozenset({"namespace", "run", "phase"})),
    "sail_run_restarts": ("gauge", frozenset({"namespace", "run", "cause"})),
    "sail_run_heldout_accuracy": ("gauge", frozenset({"namespace", "run", "against"})),
    "sail_run_judge_trust": ("gauge", frozenset({"namespace", "run"})),
    "sail_run_eval_score": ("gauge", frozenset({"namespace", "run", "scorer", "model"})),
    "sail_run_eval_win_rate": ("gauge", frozenset({"namespace", "run", "scorer", "against"})),
}
# Series Prometheus adds itself for every target (not exported by the operator).
PROMETHEUS_SYNTHETIC = {"up"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "bool", "inf", "nan", "atan2",
    # aggregation operators may stand before their `by (...)` clause instead of before "("
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(r"\1", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in PROMQL_KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exported_series() -> set[str]:
    """Every series name a scrape of the operator can contain (histogram and counter suffixes expanded)."""
    series = set()
    for name, (kind, _) in OPERATOR_METRICS.items():
        series.add(name)
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return series


def series_family(series: str) -> str:
    """The exported metric a series belongs to (strips _bucket/_sum/_count of histograms)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and OPERATOR_METRICS.get(base, ("",))[0] == "histogram":
            return base
    return series


def labels_in(expr: str) -> dict[str, set[str]]:
    """metric name -> label names used in its matchers, e.g. {"sail_run_state": {"state"}}."""
    found: dict[str, set[str]] = {}
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\{([^{}]*)\}", _STRING.sub(lambda m: m.group(0).replace("{", "(").replace("}", ")"), expr)):
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2)))
        found.setdefault(match.group(1), set()).update(labels)
    return found


def promtool_check_rules(exprs: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on the expressions wrapped as recording rules."""
    rules = [{"record": f"sail:check:{i}", "expr": expr} for i, expr in enumerate(exprs.values())]
    path = tmp_path / "wrapped.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "wrapped", "rules": rules}]}))
    return subprocess.run([PROMTOOL or "promtool", "check", "rules", str(path)],
                          capture_output=True, text=True, check=False, timeout=60)


GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's macros replaced, so plain PromQL tools accept it."""
    for macro, duration in GRAFANA_MACROS.items():
        expr = expr.replace(macro, duration)
    return expr


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def panel_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """'<panel title> <refId>' -> expr for every query target of every panel."""
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} {target['refId']}"] = target["expr"]
    return queries


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Variable name -> the series selector inside its label_values(...) query."""
    selectors = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: expected label_values(selector, label), got {query}"
            assert match.group(2) == variable["name"]
            selectors[variable["name"]] = match.group(1)
    return selectors


# --- the metric registry ---------------------------------------------------------------------------


def test_metric_name_parser_handles_functions_keywords_and_labels() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, phase) (rate(sail_phase_duration_seconds_bucket{phase=~"$p"}[5m])))'
            ' / on (phase) group_left sum without (run) (sail_run_state{state="Running"} == 1) and up offset 5m')
    assert metric_names_in(expr) == {"sail_phase_duration_seconds_bucket", "sail_run_state", "up"}
    assert series_family("sail_phase_duration_seconds_bucket") == "sail_phase_duration_seconds"
    assert series_family("sail_run_info") == "sail_run_info"
    assert labels_in(expr)["sail_run_state"] == {"state"}


def test_documented_metrics_are_the_operators_metric_names() -> None:
    metrics = pytest.importorskip("sail_operator.metrics", reason="sail_operator.metrics (issue 5) has not landed yet")
    exported = getattr(metrics, "METRIC_NAMES", None)
    if exported is None:
        pytest.skip("sail_operator.metrics has no METRIC_NAMES yet")
    # prometheus_client may name counters without _total; accept either spelling.
    normalized = {name if name in OPERATOR_METRICS else f"{name}_total" for name in exported}
    assert normalized == set(OPERATOR_METRICS), (
        f"missing from the operator: {sorted(set(OPERATOR_METRICS) - normalized)}; "
        f"undocumented here: {sorted(normalized - set(OPERATOR_METRICS))}"
    )


def _scraped_families(metrics: Any) -> dict[str, tuple[str, frozenset[str]]]:
    """Scrape a real OperatorMetrics registry with one run and one attempt recorded: name -> (type, labels)."""
    operator = metrics.OperatorMetrics()
    operator.index.put(metrics.RunSnapshot(
        namespace="ml", name="sd15", model="s3://models/sd15", state="Running", current_iteration=1,
        target_iterations=3, progress_ratio=0.25, last_checkpoint_timestamp=1.0e9,
        phase_started={"generate": 1.0e9}, restarts={"app": 1, "infra": 0},
        heldout_accuracy={"base": 0.7, "reference": 0.6}, judge_trust=0.65,
        eval_scores={("pickscore", "current"): 21.5}, eval_win_rates={("pickscore", "base"): 0.6}))
    operator.runs_created.inc()
    operator.record_attempt("ml", "generate", "succeeded", None, 60.0, 5.0, 1.0)
    operator.record_run_finished("failed")
    operator.handler_errors.labels("reconcile").inc()
    operator.handler_duration.labels("reconcile").observe(0.01)
    operator.watch_last_event.set(1.0e9)
    families: dict[str, tuple[str, frozenset[str]]] = {}
    for family in operator.registry.collect():
        if family.name.startswith("process_"):
            continue  # prometheus_client's standard process metrics, documented as such
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        families[name] = (family.type, frozenset(labels))
    return families


def test_documented_metrics_match_a_scrape_of_the_operators_registry() -> None:
    """Names, types and label names of every documented metric, from the operator's real registry."""
    metrics = pytest.importorskip("sail_operator.metrics", reason="sail_operator.metrics (issue 5) has not landed yet")
    if not hasattr(metrics, "OperatorMetrics"):
        pytest.skip("sail_operator.metrics has no OperatorMetrics registry yet")
    assert _scraped_families(metrics) == OPERATOR_METRICS


# --- the dashboard ---------------------------------------------------------------------------------


def test_dashboard_has_its_variables_and_panels() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "run", "scorer"}
    assert "$run" in variables["scorer"]["query"]["query"], "scorer choices follow the run choice"
    [per_scorer] = [p for p in dashboard["panels"] if p.get("repeat") == "scorer"]
    assert {"sail_run_eval_score", "sail_run_eval_win_rate"} <= {t["expr"].split("{")[0] for t in per_scorer["targets"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "$namespace" in variables["run"]["query"]["query"], "run choices follow the namespace choice"
    titles = {p["title"] for p in dashboard["panels"]}
    required = {"Runs by state", "Iteration progress per run", "Phase duration p50 / p95", "Queue wait p50 / p95",
                "Phase attempts by cause", "GPU-hours by namespace and phase", "Checkpoint age", "Operator up",
                "Watch event age"}
    assert required <= titles, required - titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "sail-operator"


def test_every_panel_uses_the_datasource_variable_and_fits_the_grid() -> None:
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_per_run_panels_follow_the_namespace_and_run_variables() -> None:
    for title, expr in panel_queries(load_dashboard()).items():
        for name, labels in labels_in(expr).items():
            if OPERATOR_METRICS.get(series_family(name), ("", frozenset()))[1] >= {"namespace", "run"}:
                assert {"namespace", "run"} <= labels, f"{title}: {name} ignores the namespace/run variables"


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = load_dashboard()
    allowed = exported_series() | PROMETHEUS_SYNTHETIC
    used: set[str] = set()
    for title, expr in {**panel_queries(dashboard), **variable_queries(dashboard)}.items():
        names = metric_names_in(as_promql(expr))
        assert names, f"{title}: no metric found in {expr}"
        assert names <= allowed, f"{title}: not exported by the operator: {sorted(names - allowed)}"
        for name, labels in labels_in(expr).items():
            if name in PROMETHEUS_SYNTHETIC:
                continue
            known = OPERATOR_METRICS[series_family(name)][1] | ({"le"} if name.endswith("_bucket") else set())
            assert labels <= known, f"{title}: {name} has no label(s) {sorted(labels - known)}"
        used |= {series_family(n) for n in names}
    missing = set(OPERATOR_METRICS) - used
    assert missing == set(), f"exported but on no panel: {sorted(missing)}"


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    exprs = {k: as_promql(v) for k, v in panel_queries(dashboard).items()}
    exprs |= {f"variable {k}": v for k, v in variable_queries(dashboard).items()}
    result = promtool_check_rules(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@needs_promtool
def test_promtool_wrapper_rejects_a_broken_query(tmp_path: Path) -> None:
    """The check above can fail: promtool really parses what we feed it."""
    result = promtool_check_rules({"broken": "sum by (phase (rate(sail_gpu_seconds_total[5m]))"}, tmp_path)
    assert result.returncode != 0


def test_dashboard_configmap_carries_the_dashboard_file_verbatim() -> None:
    objects = render_objects(ALL_OPTIONS_VALUES)
    (configmap,) = [c for c in objects_of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "SAIL"}
    assert json.loads(configmap["data"]["sail-operator.json"]) == load_dashboard()
