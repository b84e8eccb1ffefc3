"""Where the evaluate phase's numbers land: the phase summary (termination message), Prometheus,
`sail status` and the report."""

from __future__ import annotations

from prometheus_client import generate_latest

from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.status import IterationRecord, PhaseRecord, SAILRunStatus
from sail_operator.local.state import LocalState
from sail_operator.metrics import MAX_SCORERS, OperatorMetrics, build_run_snapshot
from sail_operator.report.quality import render_quality_html
from sail_operator.report.table import render_status_text
from sail_trainer.phases.runner import PhaseRequest, summarize


def _eval(pref: float, win: float, result: str = "Succeeded") -> dict:
    return {"phase": "evaluate", "result": result, "metrics": {
        "eval_pref_mean_base": 0.2, "eval_pref_mean_previous": 0.25, "eval_pref_mean_current": pref,
        "eval_pref_win_vs_base": win, "eval_pref_win_vs_previous": 0.5, "eval_samples": 32.0}}


RUN = {"metadata": {"name": "r1", "namespace": "team-a"}, "status": {"iterations": [
    {"iteration": 1, "phases": [_eval(0.3, 0.9)]},
    {"iteration": 0, "phases": [_eval(0.28, 0.7)]},
    {"iteration": 2, "phases": [_eval(0.1, 0.0, result="Failed")]},
]}}


def test_the_summary_keeps_every_evaluation_metric_after_many_others():
    metrics = {f"metric_{i:02d}": float(i) for i in range(20)} | {f"eval_s{i}_mean_current": 0.5 for i in range(6)}
    summary = summarize(PhaseRequest(Phase.EVALUATE, "/r", 1, "/s", 0, 2), PhaseManifest(metrics=metrics),
                        "committed", "/r/x")
    assert {f"eval_s{i}_mean_current" for i in range(6)} <= set(summary.metrics)
    assert summary.shard == "0/2"


def test_gauges_show_the_latest_succeeded_evaluate_per_scorer():
    snapshot = build_run_snapshot(RUN)
    assert snapshot.eval_scores == {("pref", "base"): 0.2, ("pref", "previous"): 0.25, ("pref", "current"): 0.3}
    assert snapshot.eval_win_rates == {("pref", "base"): 0.9, ("pref", "previous"): 0.5}
    metrics = OperatorMetrics()
    metrics.index.put(snapshot)
    body = generate_latest(metrics.registry).decode()
    assert 'sail_run_eval_score{model="current",namespace="team-a",run="r1",scorer="pref"} 0.3' in body
    assert 'sail_run_eval_win_rate{against="base",namespace="team-a",run="r1",scorer="pref"} 0.9' in body


def test_scorer_labels_are_bounded():
    metrics = {f"eval_s{i:02d}_mean_current": 1.0 for i in range(30)}
    run = {"status": {"iterations": [{"iteration": 0, "phases": [
        {"phase": "evaluate", "result": "Succeeded", "metrics": metrics}]}]}}
    assert len(build_run_snapshot(run).eval_scores) == MAX_SCORERS


def _state() -> LocalState:
    iterations = [IterationRecord(iteration=r["iteration"], phases=[PhaseRecord.model_validate(p) for p in r["phases"]])
                  for r in RUN["status"]["iterations"]]
    return LocalState(name="demo", storage_uri="/runs/demo", spec={"sail": {"rounds": 2}, "evaluation": {"count": 32}},
                      status=SAILRunStatus(iterations=iterations))


def test_status_shows_evaluate_rows_and_a_scorer_table():
    text = render_status_text(_state())
    assert "evaluate  Succeeded" in text
    assert "pref 0.3 (base 0.2, wins 90%/50%)" in text
    assert "Scorers, round 1 against the base on the same held-out prompts and seeds: pref 0.3 vs base 0.2" in text
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()
            if line.startswith(("base ", "step 0 ", "round 1 "))}
    assert rows["base"][1:3] == ["0.2", "-"]
    assert rows["step 0"][2:] == ["0.28", "70%", "/", "50%"]
    assert rows["round 1"][2:] == ["0.3", "90%", "/", "50%"]


def test_the_report_has_the_scorer_table():
    page = render_quality_html(_state(), None)
    assert "<table id=scorers>" in page and "<td>90% / 50%</td>" in page
