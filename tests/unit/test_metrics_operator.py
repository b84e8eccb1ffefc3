"""Operator metrics: exact names, bounded labels, per-run gauges built at scrape time."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from prometheus_client import generate_latest

from sail_operator.metrics import (
    CAUSES,
    HANDLERS,
    METRIC_NAMES,
    MODEL_NAME_MAX,
    PHASES,
    OperatorMetrics,
    build_model_labels,
    build_registry,
    build_run_snapshot,
    start_metrics_server,
)

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
        f'sail_run_info{{model="sd15",model_digest="{hashlib.sha256(b"s3://b/sd15").hexdigest()[:12]}",'
        'namespace="team-a",run="r1"} 1.0',
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


def test_a_model_uri_is_never_a_label_only_a_short_name_and_a_digest():
    """Issue 15 item 9: 20 runs with a 1 MB model URI made a 20 MB scrape; credentials in a URI leaked."""
    metrics = OperatorMetrics()
    huge = "s3://alice:hunter2@private-models/" + "x" * 1_000_000
    for index in range(20):
        run = {**RUN, "metadata": {"name": f"r{index}", "namespace": "team-a"},
               "spec": {"model": {"uri": huge + str(index)}, "sail": {"rounds": 3}}}
        metrics.index.put(build_run_snapshot(run))
    body = scrape(metrics)
    assert len(body) < 64_000, len(body)
    assert "hunter2" not in body and "private-models" not in body
    names = {build_model_labels(huge + str(i)) for i in range(20)}
    assert len(names) == 20, "the digest tells apart models whose short names are equal"
    assert all(len(name) <= MODEL_NAME_MAX and len(digest) == 12 for name, digest in names)
    assert build_model_labels("") == ("", "")
    assert build_model_labels("s3://models/sd15/")[0] == "sd15"


def test_labelled_counters_exist_at_zero_before_their_first_event():
    """Issue 14 item 9: a series born at its first event shows increase() 0 for that event."""
    metrics = OperatorMetrics()
    body = scrape(metrics)
    for result in ("succeeded", "failed"):
        assert value(body, f'sail_runs_finished_total{{result="{result}"}}') == 0.0
    for phase in PHASES:
        assert value(body, f'sail_phase_attempts_total{{cause="none",phase="{phase}",result="succeeded"}}') == 0.0
        for cause in CAUSES:
            assert value(body, f'sail_phase_attempts_total{{cause="{cause}",phase="{phase}",result="failed"}}') == 0.0
        assert value(body, f'sail_phase_duration_seconds_count{{phase="{phase}"}}') == 0.0
        assert value(body, f'sail_phase_queue_wait_seconds_count{{phase="{phase}"}}') == 0.0
    for handler in HANDLERS:
        assert value(body, f'sail_operator_handler_errors_total{{handler="{handler}"}}') == 0.0
        assert value(body, f'sail_operator_handler_duration_seconds_count{{handler="{handler}"}}') == 0.0
    assert "sail_gpu_seconds_total{" not in body, "no namespace is known yet"
    metrics.index.put(build_run_snapshot(RUN))
    body = scrape(metrics)
    for phase in PHASES:
        assert value(body, f'sail_gpu_seconds_total{{namespace="team-a",phase="{phase}"}}') == 0.0


def test_process_metrics_are_exported():
    body = scrape(OperatorMetrics())
    for name in ("process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds"):
        assert value(body, name) > 0, name


def test_metrics_listen_on_loopback_unless_told():
    """Issue 15 item 9: /metrics is unauthenticated; `sail operator` off the chart keeps it local."""
    from sail_operator.kube.entry import build_parser

    assert build_parser().parse_args([]).metrics_address == "127.0.0.1"
    server = start_metrics_server(0, OperatorMetrics())
    try:
        httpd = server[0] if isinstance(server, tuple) else server
        assert httpd.server_address[0] == "127.0.0.1"
    finally:
        httpd.shutdown()
        httpd.server_close()
