"""The operator process against the kmock API server over HTTP, with a stand-in Job controller.

The `job_controller` fixture replaces the kube-controller-manager and the kubelet: in
"instant" mode it marks every Job succeeded at once with a synthetic phase summary in its
pod's termination message (the trainer is not the point of these tests; see
test_operator_trainer.py for the real one). Everything the operator does goes through the
HTTP API; the assertions read the emulator's request log and the objects over HTTP.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from typing import Any

import jsonschema
import kmock
import pytest

from sail_api.crd import build_crd, build_json_schema
from sail_api.phases import Phase
from sail_operator.kube.act import build_kube_api, create_owned
from sail_operator.kube.settings import OperatorSettings
from sail_operator.metrics import METRIC_NAMES
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.builders.sailrun_objects import planned_jobs
from tests.peers.kube import Scripted, wait_for

NS = "default"


def jsonpath(obj: Any, path: str) -> Any:
    for key in path.strip(".").split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def conditions(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (run.get("status") or {}).get("conditions") or []}


def wait_state(cluster, name: str, state: str, op, timeout: float = 90) -> dict[str, Any]:
    try:
        wait_for(lambda: cluster.run_state(NS, name) == state, timeout, f"{name} to be {state}")
    except AssertionError:
        print(op.logs()[-6000:])
        raise
    return cluster.get_run(NS, name)


def test_run_goes_from_step0_through_two_rounds_to_succeeded(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    created = kube_cluster.create_run(build_run("alpha"))

    run = wait_state(kube_cluster, "alpha", "Succeeded", op)

    # every phase Job was POSTed exactly once, in plan order
    assert kube_cluster.job_creations() == planned_jobs("alpha", 2)
    status = run["status"]
    assert status["currentIteration"] == 2
    assert status["progress"]["percent"] == 100
    assert status["checkpoint"]["iteration"] == 2
    assert status["observedGeneration"] == 1
    assert [r["iteration"] for r in status["iterations"]] == [0, 1, 2]
    assert all(p["result"] == "Succeeded" for r in status["iterations"] for p in r["phases"])
    assert status["iterations"][1]["phases"][0]["manifestUri"].startswith("s3://runs/alpha/iter-001/generate")
    # what the operator wrote is valid under the CRD's own schema, and the printer columns resolve
    jsonschema.validate({**run, "metadata": {"name": run["metadata"]["name"]}}, build_json_schema())
    for column in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["name"] not in ("Phase", "Message"):  # no phase in progress once complete
            assert jsonpath(run, column["jsonPath"]) is not None, column["name"]
    conds = conditions(run)
    assert conds["Validated"]["status"] == "True"
    assert conds["Complete"]["status"] == "True"
    assert conds["Running"]["status"] == "False"
    assert conds["Failed"]["status"] == "False"
    assert all(c.get("observedGeneration") == 1 for c in conds.values())
    # the status was written before each Job was created (status patch precedes every Job POST)
    recorded: set[str] = set()
    for request in kube_cluster.requests():
        if request.resource is None:
            continue
        if request.resource.plural == "sailruns" and request.subresource == "status":
            current = (request.data.get("status") or {}).get("current") or {}
            recorded.add(current.get("jobName"))
        elif request.resource.plural == "jobs" and request.action == kmock.action.CREATE:
            assert request.data["metadata"]["name"] in recorded, request.data["metadata"]["name"]
    # Events on the SAILRun for every transition
    events = kube_cluster.events(NS, "alpha")
    reasons = Counter(e["reason"] for e in events)
    assert reasons["PhaseStarted"] == 10 and reasons["PhaseSucceeded"] == 10
    assert reasons["RunComplete"] == 1 and reasons["CheckpointCommitted"] == 3
    assert {e["involvedObject"]["uid"] for e in events} == {created["metadata"]["uid"]}
    # finished Jobs were deleted (after their results were in status), in the background
    deletes = kube_cluster.requests_of("jobs", kmock.action.DELETE)
    assert sorted(r.name for r in deletes) == sorted(planned_jobs("alpha", 2))
    assert all(r.data.get("propagationPolicy") == "Background" for r in deletes)
    # no finalizer (children are owned), and kopf kept no state under its default prefix
    assert not run["metadata"].get("finalizers")
    assert not [key for key in run["metadata"].get("annotations") or {} if key.startswith("kopf.zalando.org")]
    assert op.alive


def _reconciles_by_handler(metrics_text: str) -> dict[str, float]:
    pattern = r'^sail_operator_handler_duration_seconds_count\{handler="([a-z_]+)"\} (\S+)$'
    return {handler: float(count) for handler, count in re.findall(pattern, metrics_text, re.M)}


def test_watch_events_alone_drive_a_run_and_only_job_state_changes_wake_it(
        kube_cluster, job_controller, operator_process):
    """Resync off (600 s): every step is woken by a Job's state change; our own echoes wake nothing."""
    job_controller(mode="instant")
    op = operator_process("--resync-seconds", "600").start()
    kube_cluster.create_run(build_run("watch-only", rounds=1))
    wait_state(kube_cluster, "watch-only", "Succeeded", op, timeout=60)

    assert kube_cluster.job_creations() == planned_jobs("watch-only", 1)
    reconciles = _reconciles_by_handler(op.scrape())
    assert reconciles.get("timer", 0) == 0  # the resync never ran: the watch events did it all
    jobs = len(planned_jobs("watch-only", 1))
    # one wake-up per Job completion plus the run's creation; before the filter it was ~3.7 per Job
    # (our own status PATCH echo, the Job's ADDED, its status updates, its DELETED all woke one)
    assert reconciles.get("job_event", 0) == jobs
    # The run's creation, plus at most a few versions of a status write retried after a 409 on a
    # loaded machine (only the last write's version is remembered as ours); an echo of every own
    # status write would be at least one per Job.
    assert reconciles.get("run_event", 0) < jobs, reconciles


def test_jobs_carry_owner_labels_shards_and_the_spec_configmap(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    created = kube_cluster.create_run(build_run("beta", rounds=1, parallelism={"trainNodes": 2, "gpusPerNode": 0}))
    wait_state(kube_cluster, "beta", "Succeeded", op)

    bodies = {r.data["metadata"]["name"]: r.data for r in kube_cluster.requests_of("jobs", kmock.action.CREATE)}
    generate = bodies[build_job_name("beta", 1, Phase.GENERATE, 1)]
    assert generate["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert generate["spec"]["completionMode"] == "Indexed" and generate["spec"]["completions"] == 2
    assert generate["spec"]["template"]["metadata"]["labels"]["sail.dev/phase"] == "generate"
    env = {e["name"]: e for e in generate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    train = bodies[build_job_name("beta", 1, Phase.TRAIN, 1)]
    assert train["spec"]["completions"] == 2 and train["spec"]["template"]["spec"]["subdomain"] == train["metadata"]["name"]
    services = kube_cluster.requests_of("services", kmock.action.CREATE)
    assert sorted(r.data["metadata"]["name"] for r in services) == sorted(
        build_job_name("beta", i, Phase.TRAIN, 1) for i in (0, 1))
    deleted = kube_cluster.requests_of("services", kmock.action.DELETE)
    assert sorted(r.name for r in deleted) == sorted(r.data["metadata"]["name"] for r in services)
    configmaps = kube_cluster.requests_of("configmaps", kmock.action.CREATE)
    assert configmaps[0].data["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert '"uri": "s3://runs/beta"' in configmaps[0].data["data"]["spec.json"]


def test_bad_run_is_rejected_and_the_operator_keeps_serving(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("broken", sail={"rounds": -3}))
    kube_cluster.create_run(build_run("evil", template={"image": "evil.example/miner:latest"}))
    kube_cluster.create_run(build_run("good", rounds=1))

    wait_state(kube_cluster, "good", "Succeeded", op)
    for name, field_path in (("broken", "spec.sail.rounds"), ("evil", "spec.template.image")):
        run = wait_for(lambda n=name: conditions(kube_cluster.get_run(NS, n)).get("Validated"), 30,
                       f"{name} to get a Validated condition")
        assert run["status"] == "False" and field_path in run["message"]
        warnings = [e for e in kube_cluster.events(NS, name) if e["type"] == "Warning"]
        assert warnings and field_path in warnings[0]["message"]
    assert not [n for n in kube_cluster.job_creations() if n.startswith(("broken-", "evil-"))]
    assert op.alive


def test_failing_phase_is_retried_then_fails_with_a_warning(kube_cluster, job_controller, operator_process):
    def always_fail_mixup(job: dict[str, Any]) -> Scripted | None:
        return Scripted(exit_code=1, message="mixup exploded") if job["metadata"]["labels"]["sail.dev/phase"] == "mixup" else None

    job_controller(mode="instant", script=always_fail_mixup)
    op = operator_process().start()
    kube_cluster.create_run(build_run("gamma", rounds=1))
    run = wait_state(kube_cluster, "gamma", "Failed", op)

    assert kube_cluster.job_creations() == [build_job_name("gamma", 0, Phase.MIXUP, a) for a in (1, 2, 3)]
    assert run["status"]["restarts"]["app"] == 2
    assert conditions(run)["Failed"]["reason"] == "AppRetryBudgetExhausted"
    warnings = [e for e in kube_cluster.events(NS, "gamma") if e["type"] == "Warning"]
    assert any(e["reason"] == "AppRetryBudgetExhausted" for e in warnings)


def test_transient_failure_spends_the_infra_budget_only(kube_cluster, job_controller, operator_process):
    flaky = {build_job_name("delta", 0, Phase.TRAIN, 1)}

    def first_train_is_transient(job: dict[str, Any]) -> Scripted | None:
        return Scripted(exit_code=75, message="storage unreachable") if job["metadata"]["name"] in flaky else None

    job_controller(mode="instant", script=first_train_is_transient)
    op = operator_process().start()
    kube_cluster.create_run(build_run("delta", rounds=0))
    run = wait_state(kube_cluster, "delta", "Succeeded", op)
    assert run["status"]["restarts"] == {"app": 0, "infra": 1}
    assert build_job_name("delta", 0, Phase.TRAIN, 2) in kube_cluster.job_creations()


def test_suspend_stops_new_jobs_and_resume_continues(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("eps", rounds=1, suspend=True))
    wait_state(kube_cluster, "eps", "Suspended", op)
    time.sleep(1.0)  # give a wrong operator the chance to create a Job anyway
    assert kube_cluster.job_creations() == []
    kube_cluster.patch_run(NS, "eps", {"spec": {"suspend": False}})
    run = wait_state(kube_cluster, "eps", "Succeeded", op)
    assert kube_cluster.job_creations() == planned_jobs("eps", 1)
    assert run["status"]["observedGeneration"] == 2


def _series(body: str, run: str) -> list[str]:
    return [line for line in body.splitlines() if not line.startswith("#") and f'run="{run}"' in line]


def test_metrics_are_served_and_per_run_series_vanish_after_deletion(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("zeta", rounds=0))
    wait_state(kube_cluster, "zeta", "Succeeded", op)

    body = wait_for(lambda: (lambda b: b if _series(b, "zeta") else None)(op.scrape()), 30, "per-run series")
    families = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    for name in METRIC_NAMES:
        assert name in families or name.removesuffix("_total") in families, name
    assert 'sail_run_state{namespace="default",run="zeta",state="Succeeded"} 1.0' in body
    assert 'sail_phase_attempts_total{cause="none",phase="train",result="succeeded"} 1.0' in body
    assert "sail_runs_finished_total{result=\"succeeded\"} 1.0" in body
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True,
                              check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr

    with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())["runs"] >= 1  # our probe: runs served

    kube_cluster.delete_run(NS, "zeta")
    wait_for(lambda: not _series(op.scrape(), "zeta"), 30, "zeta's series to vanish")
    assert "sail_runs_finished_total" in op.scrape()  # process counters stay


def _kill_and_restart_until_done(cluster, op, name: str, kills: int, seed: int) -> int:
    rng = random.Random(seed)
    done = 0
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 2.5))
        if cluster.run_state(NS, name) == "Succeeded":
            break
        op.kill()
        done += 1
        op.start()
    return done


@pytest.mark.parametrize("seed", [7])
def test_sigkill_at_random_points_never_duplicates_or_loses_a_phase(
        kube_cluster, job_controller, operator_process, seed):
    job_controller(mode="instant", delay=0.4)
    op = operator_process().start()
    kube_cluster.create_run(build_run("eta", rounds=2))
    kills = _kill_and_restart_until_done(kube_cluster, op, "eta", kills=3, seed=seed)
    run = wait_state(kube_cluster, "eta", "Succeeded", op)

    assert kills >= 1
    creations = kube_cluster.job_creations()
    assert creations == planned_jobs("eta", 2), Counter(creations).most_common(3)
    assert all(p["result"] == "Succeeded" for r in run["status"]["iterations"] for p in r["phases"])


@pytest.mark.heavy  # the 20-kill loop in test_reliability_operator.py runs by default
@pytest.mark.parametrize("seed", [11])
def test_sigkill_many_times(kube_cluster, job_controller, operator_process, seed):
    job_controller(mode="instant", delay=0.3)
    op = operator_process().start()
    kube_cluster.create_run(build_run("theta", rounds=3))
    assert _kill_and_restart_until_done(kube_cluster, op, "theta", kills=10, seed=seed) >= 5
    wait_state(kube_cluster, "theta", "Succeeded", op, timeout=120)
    assert kube_cluster.job_creations() == planned_jobs("theta", 3)


def test_create_on_conflict_adopts_only_an_object_with_our_owner_uid(kube_cluster):
    api = build_kube_api(OperatorSettings(kubeconfig=str(kube_cluster.kubeconfig)))
    owner = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "name": "r", "uid": "uid-1", "controller": True}
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-spec", "namespace": NS, "ownerReferences": [owner]}, "data": {"a": "1"}}
    path = f"/api/v1/namespaces/{NS}/configmaps"
    try:
        assert create_owned(api, path, body, "uid-1").created
        assert create_owned(api, path, body, "uid-1").adopted
        outcome = create_owned(api, path, body, "uid-2")
        assert not outcome.created and not outcome.adopted
        assert "not owned by this SAILRun" in outcome.conflict
    finally:
        api.close()


def test_a_foreign_job_with_our_name_is_never_adopted(kube_cluster, job_controller, operator_process):
    created = kube_cluster.create_run(build_run("iota", rounds=0))
    squatter = build_job_name("iota", 0, Phase.MIXUP, 1)
    kube_cluster.client.create(f"/apis/batch/v1/namespaces/{NS}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": squatter, "namespace": NS, "labels": {
            "app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "iota", "sail.dev/iteration": "0",
            "sail.dev/phase": "mixup", "sail.dev/attempt": "1"},
            "ownerReferences": [{"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "name": "iota",
                                 "uid": "an-older-run-with-the-same-name", "controller": True}]},
        "spec": {"suspend": True, "template": {"spec": {"containers": []}}},
    })
    job_controller(mode="instant")
    op = operator_process().start()
    wait_for(lambda: conditions(kube_cluster.get_run(NS, "iota")).get("Running", {}).get("reason")
             == "WaitingForOldJob", 60, "iota to wait for the squatter")
    time.sleep(1.5)  # a few reconciles: still one event, still no POST of our own
    assert kube_cluster.job_creations() == [squatter]  # only the squatter's own POST: never adopted
    assert [e["reason"] for e in kube_cluster.events(NS, "iota")] == ["WaitingForOldJob"]
    kube_cluster.client.delete(f"/apis/batch/v1/namespaces/{NS}/jobs/{squatter}")  # what GC does
    run = wait_state(kube_cluster, "iota", "Succeeded", op)
    assert run["status"]["restarts"] == {"app": 0, "infra": 0}
    assert created["metadata"]["uid"] != "an-older-run-with-the-same-name"


def _owned_job_body(run: dict[str, Any], name: str, iteration: int, phase: Phase) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": run["metadata"]["name"],
              "sail.dev/iteration": str(iteration), "sail.dev/phase": phase.value, "sail.dev/attempt": "1"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": labels,
            "ownerReferences": [{"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "name": run["metadata"]["name"],
                                 "uid": run["metadata"]["uid"], "controller": True}]},
        "spec": {"template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "trainer", "command": [
                                  "sail-trainer", phase.value, "--run", f"s3://runs/{run['metadata']['name']}"]}]}}},
    }


def test_crash_after_the_status_write_and_before_the_create(kube_cluster, job_controller, operator_process):
    """The previous operator recorded attempt 1 of step-0 mixup and died before POSTing its Job."""
    kube_cluster.create_run(build_run("kappa", rounds=0))
    name = build_job_name("kappa", 0, Phase.MIXUP, 1)
    kube_cluster.client.patch(f"/apis/sail.dev/v1alpha1/namespaces/{NS}/sailruns/kappa/status", {"status": {
        "state": "Running", "currentIteration": 0, "currentPhase": "mixup", "observedGeneration": 1,
        "current": {"jobName": name, "iteration": 0, "phase": "mixup", "attempt": 1,
                    "createdAt": "2026-11-25T10:00:00Z"},
        "iterations": [{"iteration": 0, "phases": [{"phase": "mixup", "result": "Running", "attempts": 1}]}],
    }})
    job_controller(mode="instant")
    op = operator_process().start()
    wait_state(kube_cluster, "kappa", "Succeeded", op)
    assert kube_cluster.job_creations() == planned_jobs("kappa", 0)


def test_crash_after_the_create_adopts_the_job_without_a_second_post(kube_cluster, job_controller, operator_process):
    """The Job exists (ours by UID) but the status never heard of it: adopt it, never duplicate."""
    run = kube_cluster.create_run(build_run("lamda", rounds=0))
    name = build_job_name("lamda", 0, Phase.MIXUP, 1)
    kube_cluster.client.create(f"/apis/batch/v1/namespaces/{NS}/jobs", _owned_job_body(run, name, 0, Phase.MIXUP))
    job_controller(mode="instant")
    op = operator_process().start()
    wait_state(kube_cluster, "lamda", "Succeeded", op)
    assert kube_cluster.job_creations() == planned_jobs("lamda", 0)  # the first is the test's own POST
    assert Counter(kube_cluster.job_creations())[name] == 1


def test_kueue_queue_holds_jobs_until_admitted(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")  # plays a Job only once it is unsuspended
    op = operator_process().start()
    kube_cluster.create_run(build_run("mu", rounds=0, queueName="gpu-queue"))
    for name in planned_jobs("mu", 0):
        path = f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
        job = wait_for(lambda p=path: kube_cluster.client.get(p), 30, f"Job {name}")
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert job["spec"]["suspend"] is True
        assert kube_cluster.run_state(NS, "mu") == "Running"
        writes = len(kube_cluster.requests_of("sailruns", kmock.action.UPDATE))
        time.sleep(1.5)  # quiescence: a waiting run is not rewritten over and over (no watch echo loop)
        assert len(kube_cluster.requests_of("sailruns", kmock.action.UPDATE)) == writes
        kube_cluster.client.patch(path, {"spec": {"suspend": False}})  # what Kueue does on admission
    wait_state(kube_cluster, "mu", "Succeeded", op)
    assert kube_cluster.job_creations() == planned_jobs("mu", 0)
