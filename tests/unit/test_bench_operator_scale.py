"""bench/operator_scale.py: the latency arithmetic on hand-made stamps, and one tiny run of the benchmark
against the kmock emulator with the instant Job controller (2 runs, step 0 only)."""

from __future__ import annotations

import json

from bench import operator_scale as scale
from bench.common import percentile


def test_latency_is_completion_to_the_same_runs_next_job():
    stamps = [
        scale.Stamp(0.0, "create", "a-i000-mixup-a1", "a"),
        scale.Stamp(0.1, "create", "b-i000-mixup-a1", "b"),
        scale.Stamp(1.0, "complete", "a-i000-mixup-a1"),
        scale.Stamp(1.5, "complete", "b-i000-mixup-a1"),
        scale.Stamp(1.6, "create", "b-i000-train-a1", "b"),
        scale.Stamp(2.5, "create", "a-i000-train-a1", "a"),
        scale.Stamp(3.0, "complete", "a-i000-train-a1"),  # a run's last Job: no next Job, no latency
    ]
    assert [round(x, 6) for x in scale.compute_latencies(stamps)] == [1.5, 0.1]
    assert [round(x, 6) for x in scale.compute_job_runtimes(stamps)] == [1.0, 1.4, 0.5]


def test_percentile_is_nearest_rank():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([], 50) is None


def test_sum_metric_adds_every_labelled_sample():
    text = ('x_count{handler="run"} 3.0\nx_count{handler="job"} 2.0\nx_count_other 9.0\n# HELP x_count\n')
    assert scale.sum_metric(text, "x_count") == 5.0


def test_operator_scale_bench_runs_two_runs_to_success(tmp_path):
    out = tmp_path / "scale.json"

    assert scale.main(["--n", "2", "--rounds", "0", "--timeout", "120", "--out", str(out)]) == 0

    row = json.loads(out.read_text())["rows"][0]
    assert row["succeeded"] == 2 and row["jobs_created"] == 4 and row["transitions"] == 2, row
    assert row["latency_p99_s"] is not None and row["operator_cpu_s"] > 0 and row["operator_peak_rss_mib"] > 10


def test_match_selector_is_equality_of_every_term():
    labels = {"app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "a"}
    assert scale.match_selector(labels, "app.kubernetes.io/managed-by=sail-operator,sail.dev/run=a")
    assert not scale.match_selector(labels, "app.kubernetes.io/managed-by=sail-operator,sail.dev/run=b")
    assert scale.match_selector(labels, "sail.dev/run==a")


def test_reaction_time_is_completion_to_the_next_get_of_the_run():
    stamps = [
        scale.Stamp(0.0, "create", "a-i000-mixup-a1", "a"),
        scale.Stamp(0.5, "get_run", "a", "a"),
        scale.Stamp(1.0, "complete", "a-i000-mixup-a1"),
        scale.Stamp(1.25, "get_run", "a", "a"),
        scale.Stamp(2.0, "get_run", "a", "a"),
    ]
    assert scale.compute_reaction_times(stamps) == [0.25]
