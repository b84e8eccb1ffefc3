"""The operator against a strict API (tests/peers/kube.py): what a cluster user meets in week one.

Each test pins one of issue 14's findings (and failed on the code before the fix): a run deleted
and re-created under the same name while garbage collection removes the old one's children; the
old Job's pods; spec edits; a spec the API server refuses; two operator processes at once; the
cause of a failure; expected API errors and vanished Jobs. The peer garbage-collects owned
objects, refuses invalid names/label values (422) and stale writes (409), and its Job controller
applies each Job's own podFailurePolicy.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import kmock
import pytest

from sail_api.phases import Phase
from sail_operator.kube.act import ApiError, apply_decision, build_kube_api
from sail_operator.kube.observe import build_observed
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.decide import decide
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.builders.sailrun_objects import planned_jobs
from tests.integration.test_operator_kube import conditions, wait_state
from tests.peers.kube import Scripted, wait_for

NS = "default"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"


def _delete(cluster, path: str, propagation: str) -> None:
    cluster.client.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                            "propagationPolicy": propagation})


def _run_path(name: str) -> str:
    return f"/apis/sail.dev/v1alpha1/namespaces/{NS}/sailruns/{name}"


def _reason_of(cluster, name: str, kind: str) -> str | None:
    return conditions(cluster.get_run(NS, name)).get(kind, {}).get("reason")


# ------------------------------------------------------------------ 1. delete and re-create


def test_recreate_under_the_same_name_waits_for_garbage_collection_then_runs(
        kube_cluster, job_controller, operator_process):
    """`kubectl delete -f x.yaml && kubectl apply -f x.yaml` while the old Jobs are still being collected."""
    squatter = build_job_name("rho", 0, Phase.MIXUP, 1)
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.emulator.gc_paused = True  # a slow collector: the old run's children stay for now
    # the old run: its first Job exists (suspended in a queue) when the user deletes the run
    kube_cluster.create_run(build_run("rho", rounds=0, queueName="q"))
    wait_for(lambda: kube_cluster.client.get(f"{JOBS}/{squatter}"), 30, "the old run's first Job")
    _delete(kube_cluster, _run_path("rho"), "Background")
    new = kube_cluster.create_run(build_run("rho", rounds=0))

    wait_for(lambda: _reason_of(kube_cluster, "rho", "Running") == "WaitingForOldJob", 30, "rho to wait")
    time.sleep(2.5)  # several reconciles while GC is stalled
    run = kube_cluster.get_run(NS, "rho")
    assert run["status"]["state"] == "Pending" and "garbage-collected" in run["status"]["message"]
    waits = [e for e in kube_cluster.events(NS, "rho") if e["reason"] == "WaitingForOldJob"
             and e["involvedObject"]["uid"] == new["metadata"]["uid"]]
    assert len(waits) == 1  # one event, not one per reconcile
    assert kube_cluster.job_creations() == [squatter]  # nothing of the new run's yet, and never adopted

    kube_cluster.emulator.gc_paused = False
    run = wait_state(kube_cluster, "rho", "Succeeded", op)
    assert run["metadata"]["uid"] == new["metadata"]["uid"]
    assert run["status"]["restarts"] == {"app": 0, "infra": 0}
    assert Counter(kube_cluster.job_creations())[squatter] == 2  # the old run's, then the new run's own


def test_recreate_after_an_orphaning_delete_skips_the_orphaned_jobs_name(
        kube_cluster, job_controller, operator_process):
    """`kubectl delete --cascade=orphan`: GC never removes the Job; the new run uses the next attempt."""
    orphan = build_job_name("sigma", 0, Phase.MIXUP, 1)
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("sigma", rounds=0, queueName="q"))
    wait_for(lambda: kube_cluster.client.get(f"{JOBS}/{orphan}"), 30, "the old run's first Job")
    _delete(kube_cluster, _run_path("sigma"), "Orphan")
    kube_cluster.create_run(build_run("sigma", rounds=0))

    run = wait_state(kube_cluster, "sigma", "Succeeded", op)
    assert kube_cluster.client.get(f"{JOBS}/{orphan}")["spec"]["suspend"] is True  # left alone, not adopted
    assert build_job_name("sigma", 0, Phase.MIXUP, 2) in kube_cluster.job_creations()
    assert run["status"]["restarts"] == {"app": 0, "infra": 0}
    assert any("orphaned" in e["message"] for e in kube_cluster.events(NS, "sigma"))


# ------------------------------------------------------------------ 2. pods by controller UID


def test_pods_left_by_a_deleted_job_of_the_same_name_are_not_the_new_jobs(
        kube_cluster, job_controller, operator_process):
    """A leftover exit-65 pod of an older Job must not turn an ordinary app failure into NonRetryable."""
    name = build_job_name("tau", 0, Phase.MIXUP, 1)
    labels = {"app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "tau", "sail.dev/iteration": "0",
              "sail.dev/phase": "mixup", "sail.dev/attempt": "1", "batch.kubernetes.io/job-name": name,
              "job-name": name, "batch.kubernetes.io/controller-uid": "uid-of-a-deleted-job",
              "controller-uid": "uid-of-a-deleted-job"}
    kube_cluster.client.create(f"/api/v1/namespaces/{NS}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0-old", "namespace": NS, "labels": labels},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": {
            "exitCode": 65, "reason": "Error", "message": "bad spec of an older run"}}}]},
    })
    failed_once: set[str] = set()

    def first_mixup_fails(job: dict[str, Any]) -> Scripted | None:
        if job["metadata"]["name"] == name and name not in failed_once:
            failed_once.add(name)
            return Scripted(exit_code=1, message="mixup crashed")
        return None

    job_controller(mode="instant", script=first_mixup_fails)
    op = operator_process().start()
    kube_cluster.create_run(build_run("tau", rounds=0))
    run = wait_state(kube_cluster, "tau", "Succeeded", op)
    assert run["status"]["restarts"] == {"app": 1, "infra": 0}


# ------------------------------------------------------------------ 3. spec edits


def _spec_json(cluster, run: str) -> dict[str, Any]:
    return json.loads(cluster.client.get(f"/api/v1/namespaces/{NS}/configmaps/{run}-spec")["data"]["spec.json"])


def test_spec_edits_reach_the_trainer_or_are_refused_by_name_and_rounds_extend_a_finished_run(
        kube_cluster, job_controller, operator_process):
    job_controller(mode="instant", delay=0.6)
    op = operator_process().start()
    kube_cluster.create_run(build_run("ups", rounds=1))
    wait_for(lambda: kube_cluster.job_creations(), 30, "the first Job")
    kube_cluster.patch_run(NS, "ups", {"spec": {"performance": {"channelsLast": True}, "sail": {"alpha": 0.5}}})

    wait_for(lambda: _spec_json(kube_cluster, "ups")["performance"]["channelsLast"], 30,
             "the execution edit to reach the spec ConfigMap")
    wait_for(lambda: _reason_of(kube_cluster, "ups", "Validated") == "EditRefused", 30, "the alpha edit refused")
    validated = conditions(kube_cluster.get_run(NS, "ups"))["Validated"]
    assert validated["status"] == "False" and "spec.sail.alpha" in validated["message"]
    assert _spec_json(kube_cluster, "ups")["algorithm"]["sail"]["alpha"] == 0.25  # the run goes on as it started
    run = wait_state(kube_cluster, "ups", "Succeeded", op)
    refused = [e for e in kube_cluster.events(NS, "ups") if e["reason"] == "EditRefused"]
    assert len(refused) == 1 and "spec.sail.alpha" in refused[0]["message"]

    kube_cluster.patch_run(NS, "ups", {"spec": {"sail": {"alpha": 0.25, "rounds": 2}}})  # revert, extend
    wait_for(lambda: kube_cluster.get_run(NS, "ups")["status"]["currentIteration"] == 2
             and kube_cluster.run_state(NS, "ups") == "Succeeded", 60, "ups extended to round 2")
    run = kube_cluster.get_run(NS, "ups")
    assert kube_cluster.job_creations() == planned_jobs("ups", 2)
    assert conditions(run)["Validated"]["status"] == "True"
    assert [r["iteration"] for r in run["status"]["iterations"]] == [0, 1, 2]


# ------------------------------------------------------------------ 4. refusals


def test_a_spec_the_api_server_would_refuse_is_rejected_before_any_job(
        kube_cluster, job_controller, operator_process):
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("phi", rounds=0, queueName="team a!"))
    kube_cluster.create_run(build_run("chi", rounds=0, resources={"train": {"requests": {"cpu": "4"},
                                                                            "limits": {"cpu": "2"}}}))
    for name, field in (("phi", "spec.queueName"), ("chi", "spec.resources.train.requests")):
        validated = wait_for(lambda n=name: conditions(kube_cluster.get_run(NS, n)).get("Validated"), 30,
                             f"{name} judged")
        assert validated["status"] == "False" and field in validated["message"], validated
    assert kube_cluster.job_creations() == []
    assert op.alive


def test_a_create_the_api_server_refuses_fails_the_run_once_without_a_loop(
        kube_cluster, job_controller, operator_process):
    """An admission webhook (or any 4xx but 409) says no: a clear failure, no budget, no retry every 5 s."""
    kube_cluster.emulator.admission = lambda plural, body: (
        "Jobs must set a cost-center label" if plural == "jobs" else None)
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("psi", rounds=0))
    run = wait_state(kube_cluster, "psi", "Failed", op)
    time.sleep(3)  # a looping operator would POST again and again
    run = kube_cluster.get_run(NS, "psi")
    assert conditions(run)["Failed"]["reason"] == "RefusedByApiServer"
    assert "cost-center" in run["status"]["message"]
    assert run["status"]["restarts"] == {"app": 0, "infra": 0}
    assert len(kube_cluster.job_creations()) == 1
    assert [e["reason"] for e in kube_cluster.events(NS, "psi") if e["type"] == "Warning"] == ["RefusedByApiServer"]
    kube_cluster.emulator.admission = None
    kube_cluster.patch_run(NS, "psi", {"spec": {"failurePolicy": {"appRetries": 3}}})  # an edit re-opens it
    wait_state(kube_cluster, "psi", "Succeeded", op)


# ------------------------------------------------------------------ 5. two operators


def _duplicates(cluster) -> tuple[int, int, int]:
    """(duplicate Job POSTs, duplicate events, backwards status writes) seen by the API."""
    posts = Counter(cluster.job_creations())
    duplicate_posts = sum(count - 1 for count in posts.values())
    events = Counter((e["involvedObject"]["name"], e["reason"], e["message"]) for e in cluster.events(NS))
    duplicate_events = sum(count - 1 for count in events.values())
    backwards = 0
    last: dict[str, tuple[int, int]] = {}
    for run, status in cluster.emulator.status_writes:
        progress = ((status.get("progress") or {}).get("completedPhases") or 0,
                    len([p for r in status.get("iterations") or [] for p in r.get("phases") or []
                         if p.get("result") == "Succeeded"]))
        if run in last and progress < last[run]:
            backwards += 1
        last[run] = max(progress, last.get(run, progress))
    return duplicate_posts, duplicate_events, backwards


@pytest.mark.slow  # the failover waits out the 15 s Lease
def test_two_operator_processes_with_leader_election_do_everything_once(
        kube_cluster, job_controller, operator_process):
    job_controller(mode="instant", delay=0.2)
    first = operator_process("--no-standalone", "--lease-namespace", NS).start()
    second = operator_process("--no-standalone", "--lease-namespace", NS).start()
    names = [f"pair{i}" for i in range(4)]
    for name in names:
        kube_cluster.create_run(build_run(name, rounds=1))
    for name in names:
        wait_state(kube_cluster, name, "Succeeded", first, timeout=150)
    assert _duplicates(kube_cluster) == (0, 0, 0)
    assert sorted(kube_cluster.job_creations()) == sorted(j for n in names for j in planned_jobs(n, 1))
    lease = kube_cluster.client.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/sail-operator")
    assert lease["spec"]["holderIdentity"]
    assert first.alive and second.alive
    leaders = [op for op in (first, second) if "became the leader" in op.logs()]
    assert len(leaders) == 1, "exactly one process became the leader"
    # the leader dies without releasing the Lease (SIGKILL): the other takes over after the
    # Lease's duration by its own clock, and finishes new work
    leader, survivor = leaders[0], second if leaders[0] is first else first
    leader.kill()
    kube_cluster.create_run(build_run("late", rounds=0))
    wait_state(kube_cluster, "late", "Succeeded", survivor, timeout=180)
    assert "became the leader" in survivor.logs()
    assert _duplicates(kube_cluster) == (0, 0, 0)


def test_a_stale_status_write_is_refused_before_anything_is_created(kube_cluster):
    """The resourceVersion precondition: a write planned from an old object gets 409, nothing after it runs."""
    settings = OperatorSettings(kubeconfig=str(kube_cluster.kubeconfig))
    stale = kube_cluster.create_run(build_run("omega", rounds=0))
    kube_cluster.patch_run(NS, "omega", {"metadata": {"labels": {"touched": "yes"}}})  # someone moved on
    observed = build_observed(stale, [], [], settings)
    now = datetime.now(UTC)
    decision = decide(observed, now)
    assert decision.creates  # the stale planner wants to create the first Job
    api = build_kube_api(settings)
    try:
        with pytest.raises(ApiError) as refused:
            apply_decision(api, stale, observed, decision, settings, now, {}, None, decide)
    finally:
        api.close()
    assert refused.value.status == 409
    assert kube_cluster.job_creations() == [] and kube_cluster.events(NS, "omega") == []


# ------------------------------------------------------------------ 6. causes


def test_failure_messages_name_oom_eviction_and_preemption(kube_cluster, job_controller, operator_process):
    scripts = {
        build_job_name("oom", 0, Phase.MIXUP, 1): Scripted(exit_code=137, container_reason="OOMKilled", message=""),
        build_job_name("evict", 0, Phase.MIXUP, 1): Scripted(
            exit_code=137, pod_reason="Evicted", pod_message="The node was low on resource: memory.", message=""),
    }
    job_controller(mode="instant", script=lambda job: scripts.get(job["metadata"]["name"]))
    op = operator_process().start()
    kube_cluster.create_run(build_run("oom", rounds=0))
    kube_cluster.create_run(build_run("evict", rounds=0))
    for name, words in (("oom", "OOMKilled"), ("evict", "evicted")):
        wait_state(kube_cluster, name, "Succeeded", op)
        failures = [e["message"] for e in kube_cluster.events(NS, name) if e["reason"] == "PhaseFailed"]
        assert failures and words in failures[0], failures
        assert "backoff limit" in failures[0]  # the Job controller's words stay, after the cause
    run = kube_cluster.get_run(NS, "evict")
    assert run["status"]["restarts"] == {"app": 0, "infra": 1}  # an eviction is the cluster's, not the app's
    # the failed attempt's Job went once its cause was in status, before the retry (no failed Job lingers)
    order = [(r.action, r.name or (r.data.get("metadata") or {}).get("name")) for r in kube_cluster.requests()
             if r.resource is not None and r.resource.plural == "jobs" and r.action in (
                 kmock.action.CREATE, kmock.action.DELETE)]
    first, retry = build_job_name("evict", 0, Phase.MIXUP, 1), build_job_name("evict", 0, Phase.MIXUP, 2)
    assert order.index((kmock.action.DELETE, first)) < order.index((kmock.action.CREATE, retry))


def test_a_preempted_pod_is_replaced_by_the_jobs_own_policy(kube_cluster, job_controller, operator_process):
    """podFailurePolicy Ignore on DisruptionTarget: the Job controller replaces the pod; no retry spent."""
    name = build_job_name("pre", 0, Phase.MIXUP, 1)
    job_controller(mode="instant", script=lambda job: Scripted(exit_code=143, disrupted=True)
                   if job["metadata"]["name"] == name else None)
    op = operator_process().start()
    kube_cluster.create_run(build_run("pre", rounds=0))
    run = wait_state(kube_cluster, "pre", "Succeeded", op)
    assert run["status"]["restarts"] == {"app": 0, "infra": 0}
    assert Counter(kube_cluster.job_creations())[name] == 1


# ------------------------------------------------------------------ 7. errors, storage.uri, vanished Jobs


def test_expected_api_errors_are_warnings_without_tracebacks(kube_cluster, job_controller, operator_process):
    faults = iter([500, 429, 500])

    def brownout(request: kmock.Request) -> int | None:
        if request.resource is not None and request.resource.plural == "sailruns" and request.subresource == "status":
            return next(faults, None)
        return None

    kube_cluster.emulator.faults = brownout
    job_controller(mode="instant")
    op = operator_process().start()
    kube_cluster.create_run(build_run("xi", rounds=0))
    wait_state(kube_cluster, "xi", "Succeeded", op)
    logs = op.logs()
    assert re.search(r"WARNING sail_operator\.kube\.handlers: reconcile of default/xi: HTTP 500", logs), logs[-3000:]
    assert "Traceback" not in logs and " ERROR " not in logs


def test_storage_uri_edit_is_refused_by_the_operator_and_a_vanished_job_is_recreated_with_an_event(
        kube_cluster, job_controller, operator_process):
    job_controller(mode="instant", delay=1.0)
    op = operator_process().start()
    kube_cluster.create_run(build_run("nu", rounds=0))
    first = build_job_name("nu", 0, Phase.MIXUP, 1)
    wait_for(lambda: kube_cluster.client.get(f"{JOBS}/{first}"), 30, "the first Job")
    kube_cluster.patch_run(NS, "nu", {"spec": {"storage": {"uri": "s3://runs/elsewhere"}}})
    kube_cluster.client.delete(f"{JOBS}/{first}")  # someone deletes the running Job
    run = wait_state(kube_cluster, "nu", "Succeeded", op)

    assert "spec.storage.uri" in conditions(run)["Validated"]["message"]
    bodies = [r.data for r in kube_cluster.requests_of("jobs", kmock.action.CREATE)]
    assert all("s3://runs/nu" in b["spec"]["template"]["spec"]["containers"][0]["command"] for b in bodies)
    assert Counter(kube_cluster.job_creations())[first] == 2  # re-created under the same name
    assert any(e["reason"] == "JobRecreated" and first in e["message"] for e in kube_cluster.events(NS, "nu"))
