"""bench/operator_scale.py: the latency arithmetic on hand-made stamps, and one tiny run of the benchmark
against the kmock emulator with the instant Job controller (2 runs, step 0 only)."""

from __future__ import annotations

import json

from bench import operator_scale as scale
from bench.common import percentile
from tests.peers.kube import wait_for


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


def _answers(cluster) -> dict:
    """What the emulator answers to the reads the operator and the bench make, minus per-object ids."""
    client = cluster.client
    ns = "/apis/batch/v1/namespaces/default/jobs"
    selector = "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsail-operator%2Csail.dev%2Frun%3D"

    def names(items: list) -> list[str]:
        return sorted(i["metadata"]["name"] for i in items)

    return {
        "get": client.get(f"{ns}/a-2")["metadata"]["labels"],
        "list_ns": names(client.items(ns)),
        "list_all": names(client.items("/apis/batch/v1/jobs")),
        "list_run_a": names(client.items(ns + selector + "a")),
        "list_run_b": names(client.items(ns + selector + "b")),
        "pods_run_a": names(client.items("/api/v1/namespaces/default/pods" + selector + "a")),
        "other_ns": names(client.items("/apis/batch/v1/namespaces/other/jobs")),
        "pods_all": names(client.items("/api/v1/namespaces/default/pods")),
    }


def _play_requests(cluster) -> None:
    labels = {"app.kubernetes.io/managed-by": "sail-operator"}
    uids = {}
    for run, index, namespace in [("a", 1, "default"), ("a", 2, "default"), ("b", 3, "default"), ("a", 4, "other")]:
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": f"{run}-{index}", "namespace": namespace, "labels": {**labels, "sail.dev/run": run}}, "spec": {}}
        uids[f"{run}-{index}"] = cluster.client.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)[
            "metadata"]["uid"]
    for pod, job in [("a-2-0", None), ("a-1-0", "a-1"), ("b-3-0", "b-3")]:
        owners = [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uids[job], "controller": True}] \
            if job else []
        cluster.client.create("/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": pod, "namespace": "default", "labels": {**labels, "sail.dev/run": pod[0]},
            "ownerReferences": owners}})
    cluster.client.patch("/apis/batch/v1/namespaces/default/jobs/a-2/status", {"status": {"active": 1}})
    # Background propagation: the collector deletes a-1's pod (and only it) a moment later.
    cluster.client.request("DELETE", "/apis/batch/v1/namespaces/default/jobs/a-1",
                           {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
    wait_for(lambda: "a-1-0" not in {p["metadata"]["name"] for p in cluster.client.items(
        "/api/v1/namespaces/default/pods")}, 10, "the deleted Job's pod collected")


def test_the_indexed_emulator_answers_as_kmocks_own_lookup(tmp_path):
    from tests.peers.kube import RESOURCES, KubeCluster

    answers = []
    for indexed in (True, False):
        cluster = KubeCluster(tmp_path / str(indexed))
        (tmp_path / str(indexed)).mkdir()
        cluster.emulator = scale.build_timed_emulator_class(True, indexed=indexed)()
        for key, info in RESOURCES.items():
            cluster.emulator.resources[key] = info
        cluster.start()
        try:
            _play_requests(cluster)
            answers.append(_answers(cluster))
            assert cluster.emulator.created_jobs.qsize() == 4  # every Job POST is handed to the Job controller
        finally:
            cluster.stop()
    assert answers[0] == answers[1]
    assert answers[0]["list_run_a"] == ["a-2"] and answers[0]["list_ns"] == ["a-2", "b-3"]
    assert answers[0]["pods_run_a"] == ["a-2-0"] and answers[0]["other_ns"] == ["a-4"]
    assert answers[0]["pods_all"] == ["a-2-0", "b-3-0"]  # garbage collection: the same answer, by index
