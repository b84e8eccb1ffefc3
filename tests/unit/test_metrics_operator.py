"""Operator metrics: exact names, bounded labels, per-run gauges built at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest

from sail_operator.metrics import METRIC_NAMES, OperatorMetrics, build_registry, build_run_snapshot

RUN = {
    "metadata": {"name": "r1", "namespace": "team-a"},
    "spec": {"model": {"uri": "s3://b/sd15"}, "sail": {"rounds": 3}},
    "status": {"state": "Running", "currentIteration": 2, "progress": {"percent": 40},
               "checkpoint": {"uri": "s3://b/r/iter-001/train/model", "iteration": 1, "time": "2026-11-25T10:00:00Z"},
               "current": {"jobName": "r1-i002-generate-a1", "iteration": 2, "phase": "generate", "attempt": 1,
                           "createdAt": "2026-11-25T10:01:00Z", "startedAt": "2026-11-25T10:02:00Z"},
               "restarts": {"app": 1, "infra": 4}},
}


def value(body: str, series: str) -> float:
    [line] = [line for line in body.splitlines() if line.startswith(series + " ")]
    return float(line.rsplit(" ", 1)[1])


def scrape(metrics: OperatorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_documented_name_is_exposed():
    body = generate_latest(build_registry()).decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in body or f"# TYPE {name.removesuffix('_total')} " in body, name


def test_per_run_gauges_follow_the_index_and_vanish_on_removal():
    metrics = OperatorMetrics()
    metrics.index.put(build_run_snapshot(RUN))
    body = scrape(metrics)
    expected = [
        'sail_run_info{model="s3://b/sd15",namespace="team-a",run="r1"} 1.0',
        'sail_run_state{namespace="team-a",run="r1",state="Running"} 1.0',
        'sail_run_state{namespace="team-a",run="r1",state="Failed"} 0.0',
        'sail_run_current_iteration{namespace="team-a",run="r1"} 2.0',
        'sail_run_target_iterations{namespace="team-a",run="r1"} 3.0',
        'sail_run_progress_ratio{namespace="team-a",run="r1"} 0.4',
        'sail_run_restarts{cause="infra",namespace="team-a",run="r1"} 4.0',
    ]
    for line in expected:
        assert line in body, line
    assert value(body, 'sail_run_last_checkpoint_timestamp_seconds{namespace="team-a",run="r1"}') == \
        datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()
    assert value(body, 'sail_run_phase_started_timestamp_seconds{namespace="team-a",phase="generate",run="r1"}') == \
        datetime(2026, 11, 25, 10, 2, tzinfo=UTC).timestamp()
    metrics.index.remove("team-a", "r1")
    assert 'run="r1"' not in scrape(metrics)


def test_label_values_stay_bounded():
    metrics = OperatorMetrics()
    metrics.record_attempt("team-a", "dance", "exploded", "gremlins", duration=10.0, queue_wait=2.0, gpus=2.0)
    metrics.record_attempt("team-a", "train", "succeeded", None, duration=100.0, queue_wait=5.0, gpus=8.0)
    body = scrape(metrics)
    assert 'sail_phase_attempts_total{cause="other",phase="other",result="other"} 1.0' in body
    assert 'sail_phase_attempts_total{cause="none",phase="train",result="succeeded"} 1.0' in body
    assert 'sail_gpu_seconds_total{namespace="team-a",phase="train"} 800.0' in body
    assert 'sail_phase_duration_seconds_count{phase="train"} 1.0' in body
    assert 'sail_phase_queue_wait_seconds_count{phase="train"} 1.0' in body


def test_a_half_valid_run_still_gets_a_snapshot():
    snapshot = build_run_snapshot({"metadata": {"name": "bad", "namespace": "ns"}, "spec": "garbage",
                                   "status": {"progress": {"percent": "lots"}, "currentIteration": "x"}})
    assert (snapshot.name, snapshot.state, snapshot.progress_ratio, snapshot.current_iteration) == \
        ("bad", "Pending", 0.0, None)
