"""The test peer is as strict as the real thing where it matters (tests/peers/kube.py).

A lenient peer hides bugs a cluster shows: the Job controller must apply each Job's *own*
podFailurePolicy (reusing the operator's constant let a wrong rule pass), and the API must
refuse the names and label values a real API server refuses.
"""

from __future__ import annotations

from sail_api.phases import Phase
from sail_operator.kube.jobs import build_phase_job, coerce_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import CreatePhaseJob, build_job_name
from tests.builders.sailrun_objects import build_sailrun_object
from tests.peers.kube import PodResult, Scripted, compute_invalid_fields, compute_job_status

RUN = {**build_sailrun_object("r1"), "metadata": {"name": "r1", "namespace": "ns", "uid": "uid-1"}}


def operator_job() -> dict:
    action = CreatePhaseJob(name=build_job_name("r1", 0, Phase.MIXUP, 1), iteration=0, phase=Phase.MIXUP, attempt=1)
    job = build_phase_job(coerce_run(RUN), action, OperatorSettings())
    job["metadata"]["namespace"] = "ns"
    return job


def failed(code: int, **scripted) -> PodResult:
    return PodResult(0, code, "", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", Scripted(exit_code=code, **scripted),
                     name="p-0")


def reason(status: dict) -> str:
    return next(c["reason"] for c in status["conditions"] if c["type"] == "Failed")


def test_the_job_controller_applies_the_jobs_own_pod_failure_policy():
    job = operator_job()
    assert reason(compute_job_status(job, [failed(65)])) == "PodFailurePolicy"
    assert reason(compute_job_status(job, [failed(1)])) == "BackoffLimitExceeded"
    job["spec"]["podFailurePolicy"]["rules"] = [r for r in job["spec"]["podFailurePolicy"]["rules"]
                                                if r["action"] != "FailJob"]  # a wrong policy shows
    assert reason(compute_job_status(job, [failed(65)])) == "BackoffLimitExceeded"
    disrupted = failed(143, disrupted=True)
    assert "conditions" in compute_job_status(job, [disrupted]) and compute_job_status(job, [disrupted])["failed"] == 0


def test_the_api_refuses_invalid_names_and_label_values():
    job = operator_job()
    assert compute_invalid_fields(job, "jobs") == []
    job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team a!"
    assert any("team a!" in p for p in compute_invalid_fields(job, "jobs"))
    long_name = {"metadata": {"name": "x" * 64}}
    assert compute_invalid_fields(long_name, "configmaps") == []
    assert compute_invalid_fields(long_name, "jobs")  # a Job name must also fit a label value
    assert compute_invalid_fields({"metadata": {"name": "Upper"}}, "configmaps")
