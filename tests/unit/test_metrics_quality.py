"""Prometheus: the latest held-out accuracy and judge trust of a run, read from its status at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest

from sail_operator.metrics import OperatorMetrics, build_run_snapshot


def _phase(phase: str, result: str = "Succeeded", **metrics: float) -> dict:
    return {"phase": phase, "result": result, "metrics": metrics}


RUN = {
    "metadata": {"name": "r1", "namespace": "team-a"},
    "spec": {"model": {"uri": "s3://b/sd15"}},
    "status": {"state": "Running", "iterations": [
        {"iteration": 1, "phases": [_phase("annotate", judge_trust=0.7),
                                    _phase("train", heldout_accuracy=0.6, heldout_accuracy_vs_base=0.75)]},
        {"iteration": 0, "phases": [_phase("train", heldout_accuracy=0.7, heldout_accuracy_vs_base=0.7)]},
        {"iteration": 2, "phases": [_phase("annotate", judge_trust=0.55),
                                    _phase("train", result="Failed", heldout_accuracy=0.1)]},
    ]},
}


def test_gauges_show_the_latest_succeeded_train_and_annotate():
    snapshot = build_run_snapshot(RUN)
    assert snapshot.heldout_accuracy == {"base": 0.75, "reference": 0.6}, "iteration 2's train failed"
    assert snapshot.judge_trust == 0.55
    metrics = OperatorMetrics()
    metrics.index.put(snapshot)
    body = generate_latest(metrics.registry).decode()
    assert 'sail_run_heldout_accuracy{against="base",namespace="team-a",run="r1"} 0.75' in body
    assert 'sail_run_heldout_accuracy{against="reference",namespace="team-a",run="r1"} 0.6' in body
    assert 'sail_run_judge_trust{namespace="team-a",run="r1"} 0.55' in body


def test_a_run_without_heldout_numbers_exports_no_quality_series():
    snapshot = build_run_snapshot({"metadata": {"name": "r2"}, "status": {"iterations": "garbage"}})
    metrics = OperatorMetrics()
    metrics.index.put(snapshot)
    body = generate_latest(metrics.registry).decode()
    assert "# TYPE sail_run_judge_trust gauge" in body and 'sail_run_judge_trust{' not in body
