"""observe: Jobs and pods (plain API dicts) -> the attempts the planner sees. Table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sail_api.phases import Phase
from sail_operator.kube.observe import build_attempt, build_observed, parse_termination_message
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import AttemptState, FailureCause
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

UID = "run-uid-1"
SUMMARY = {"phase": "train", "iteration": 1, "outcome": "committed", "manifestUri": "s3://b/r/iter-001/train/_SUCCESS.json",
           "metrics": {"loss": 0.25}}


def job(name: str = "r1-i001-train-a1", *, conditions: list[dict] | None = None, owner: str = UID,
        active: int = 0, ready: int | None = None, suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name, "namespace": "ns", "creationTimestamp": "2026-11-25T10:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "r1",
                       "sail.dev/iteration": "1", "sail.dev/phase": "train", "sail.dev/attempt": "1"},
            "ownerReferences": [{"kind": "SAILRun", "name": "r1", "uid": owner, "controller": True}],
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], "active": active,
                   **({"ready": ready} if ready is not None else {}), **status},
    }


def pod(exit_code: int | None = None, message: str = "", *, job_name: str = "r1-i001-train-a1",
        conditions: list[dict] | None = None, reason: str | None = None, running: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if running:
        state = {"running": {"startedAt": "2026-11-25T10:00:30Z"}}
    elif exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "message": message, "startedAt": "2026-11-25T10:00:30Z",
                                "finishedAt": "2026-11-25T10:05:00Z"}}
    status: dict[str, Any] = {"containerStatuses": [{"name": "trainer", "state": state}],
                              "conditions": conditions or []}
    if reason:
        status["reason"] = reason
    return {"metadata": {"name": f"{job_name}-0-abcde", "labels": {
        "app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "r1", "batch.kubernetes.io/job-name": job_name}},
        "status": status}


def failed(reason: str, message: str = "") -> list[dict]:
    return [{"type": "Failed", "status": "True", "reason": reason, "message": message,
             "lastTransitionTime": "2026-11-25T10:05:01Z"}]


COMPLETE = [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-25T10:05:01Z"}]


@pytest.mark.parametrize(
    ("the_job", "pods", "state", "cause"),
    [
        (job(conditions=COMPLETE, completionTime="2026-11-25T10:05:01Z"), [pod(0, json.dumps(SUMMARY))],
         AttemptState.SUCCEEDED, None),
        (job(active=1, ready=1), [pod(running=True)], AttemptState.RUNNING, None),
        (job(active=1, ready=0), [], AttemptState.PENDING, None),
        (job(suspend=True), [], AttemptState.PENDING, None),
        (job(conditions=[{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]), [],
         AttemptState.PENDING, None),
        (job(conditions=failed("BackoffLimitExceeded")), [pod(1, "boom")], AttemptState.FAILED, FailureCause.APP),
        (job(conditions=failed("BackoffLimitExceeded")), [pod(75, "")], AttemptState.FAILED, FailureCause.INFRA),
        (job(conditions=failed("PodFailurePolicy", "Container trainer ... exit code 64 matching FailJob rule")),
         [pod(64, "")], AttemptState.FAILED, FailureCause.NON_RETRYABLE),
        (job(conditions=failed("PodFailurePolicy", "matching FailJob rule at index 1")), [],
         AttemptState.FAILED, FailureCause.NON_RETRYABLE),
        (job(conditions=failed("BackoffLimitExceeded")),
         [pod(137, conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}])],
         AttemptState.FAILED, FailureCause.INFRA),
        (job(conditions=failed("BackoffLimitExceeded")), [pod(reason="Evicted")], AttemptState.FAILED,
         FailureCause.INFRA),
        (job(conditions=failed("DeadlineExceeded", "Job was active longer than specified deadline")), [pod(137)],
         AttemptState.FAILED, FailureCause.DEADLINE),
    ],
    ids=[
        "complete job with a summary: succeeded",
        "active and ready pod: running",
        "active but not ready: pending",
        "suspended by Kueue (spec.suspend): pending, spends nothing",
        "Suspended condition: pending",
        "exit 1: app failure",
        "TRANSIENT exit code: infra failure",
        "exit 64 via podFailurePolicy: non-retryable",
        "FailJob rule without pods left: still non-retryable",
        "preempted pod (DisruptionTarget): infra",
        "evicted pod: infra",
        "activeDeadlineSeconds passed: deadline",
    ],
)
def test_attempt_classification(the_job, pods, state, cause):
    attempt = build_attempt(the_job, pods, UID)
    assert attempt is not None
    assert attempt.state is state
    assert attempt.cause is cause


def test_summary_times_and_identity_are_read():
    attempt = build_attempt(job(conditions=COMPLETE, completionTime="2026-11-25T10:05:01Z"),
                            [pod(0, json.dumps(SUMMARY))], UID)
    assert (attempt.iteration, attempt.phase, attempt.attempt) == (1, Phase.TRAIN, 1)
    assert attempt.summaries[0].metrics == {"loss": 0.25}
    assert attempt.created_at.isoformat() == "2026-11-25T10:00:00+00:00"
    assert attempt.started_at.isoformat() == "2026-11-25T10:00:30+00:00"
    assert attempt.finished_at.isoformat() == "2026-11-25T10:05:01+00:00"
    assert attempt.owned


def test_a_job_owned_by_another_uid_is_reported_not_owned():
    assert build_attempt(job(owner="someone-else"), [], UID).owned is False


@pytest.mark.parametrize(
    "message",
    ["", "Traceback (most recent call last):\n  ...", '{"phase": "train"', '{"phase": "nope", "iteration": 1}', None,
     '{"phase": "train", "iteration": -1, "outcome": "committed"}'],
    ids=["empty", "logs via FallbackToLogsOnError", "truncated JSON", "unknown phase", "missing", "invalid field"],
)
def test_garbage_termination_messages_are_ignored(message):
    assert parse_termination_message(message) is None


def test_pods_of_other_jobs_do_not_leak_summaries():
    other = pod(0, json.dumps(SUMMARY), job_name="r1-i001-train-a2")
    attempt = build_attempt(job(conditions=COMPLETE), [other], UID)
    assert attempt.summaries == ()


def test_jobs_with_broken_labels_are_skipped():
    broken = job()
    broken["metadata"]["labels"]["sail.dev/phase"] = "dance"
    assert build_attempt(broken, [], UID) is None


def run_object(spec: dict[str, Any], status: Any = None) -> dict[str, Any]:
    return {**build_sailrun_dict("r1", spec, namespace="ns", uid=UID, generation=3), "status": status}


GOOD_SPEC = build_spec_body(storage="s3://bkt/runs/r1")


def test_observed_filters_children_by_labels_client_side():
    foreign = job("x-i001-train-a1")
    foreign["metadata"]["labels"]["sail.dev/run"] = "x"
    unmanaged = job("r1-i001-train-a9")
    unmanaged["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    observed = build_observed(run_object(GOOD_SPEC), [job(), foreign, unmanaged], [], OperatorSettings())
    assert [a.name for a in observed.attempts] == ["r1-i001-train-a1"]
    assert observed.generation == 3 and observed.spec is not None and observed.spec_error is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({**GOOD_SPEC, "sail": {"rounds": -1}}, "spec.sail.rounds"),
        ({**GOOD_SPEC, "surprise": 1}, "spec.surprise"),
        ({k: v for k, v in GOOD_SPEC.items() if k != "model"}, "spec.model"),
        ({**GOOD_SPEC, "template": {"image": "evil.example/x:1"}}, "spec.template.image"),
        ({**GOOD_SPEC, "storage": {"uri": "/host/path"}}, "spec.storage.uri"),
        ("not a mapping", "spec"),
    ],
    ids=["out-of-range value", "unknown field", "missing field", "image outside the policy",
         "host path storage", "spec is not an object"],
)
def test_a_bad_spec_becomes_a_spec_error_naming_the_field(spec, fragment):
    observed = build_observed(run_object(spec), [], [], OperatorSettings())
    assert observed.spec is None
    assert fragment in observed.spec_error


def test_a_mangled_status_is_planned_from_scratch_not_a_crash():
    observed = build_observed(run_object(GOOD_SPEC, status={"state": "Exploded", "restarts": "many"}), [], [],
                              OperatorSettings())
    assert observed.status.state == "Pending"


def test_the_trainers_error_is_part_of_the_failure_message():
    summary = {"phase": "train", "iteration": 1, "outcome": "failed", "exitCode": 1,
               "error": "spec.sail.train.microBatch: too large for this GPU"}
    attempt = build_attempt(job(conditions=failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")),
                            [pod(1, json.dumps(summary))], UID)
    assert attempt.message.startswith("spec.sail.train.microBatch: too large")
    assert "backoff limit" in attempt.message


def test_a_job_that_kueue_evicted_before_it_failed_is_an_infra_failure():
    conditions = [{"type": "Suspended", "status": "False", "reason": "JobResumed",
                   "message": "Job resumed after WorkloadEvictedByPreemption"}] + failed("BackoffLimitExceeded")
    attempt = build_attempt(job(conditions=conditions), [pod(1)], UID)
    assert attempt.cause is FailureCause.INFRA


def test_a_cluster_run_needs_a_storage_uri():
    spec = {k: v for k, v in GOOD_SPEC.items() if k != "storage"}
    from sail_operator.policy import OperatorPolicy

    settings = OperatorSettings(policy=OperatorPolicy(require_s3_storage=False))
    observed = build_observed(run_object(spec), [], [], settings)
    assert observed.spec is None and "spec.storage.uri" in observed.spec_error
