"""Failure messages carry the cause the kubelet/scheduler reported (OOMKilled, eviction, preemption)."""

from __future__ import annotations

from sail_operator.kube.observe import classify_failure
from sail_operator.planner.model import FailureCause

FAILED_JOB = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                         "message": "Job has reached the specified backoff limit"}]}}


def pod(name="p-0", exit_code=137, container_reason="Error", **status) -> dict:
    return {"metadata": {"name": name}, "status": {"phase": "Failed", **status, "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": exit_code, "reason": container_reason}}}]}}


def test_oom_killed_names_the_container_and_the_fix():
    cause, message = classify_failure(FAILED_JOB, [pod(container_reason="OOMKilled")])
    assert cause is FailureCause.APP
    assert "trainer of pod p-0 was OOMKilled (exit 137)" in message and "limits.memory" in message
    assert message.endswith("Job has reached the specified backoff limit")


def test_eviction_and_preemption_read_as_such_and_spend_the_infra_budget():
    evicted = pod(reason="Evicted", message="The node was low on resource: memory.")
    cause, message = classify_failure(FAILED_JOB, [evicted])
    assert cause is FailureCause.INFRA and "pod p-0 was evicted (Evicted: The node was low on resource" in message
    preempted = pod(conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                 "message": "preempted by a higher-priority pod"}])
    cause, message = classify_failure(FAILED_JOB, [preempted])
    assert cause is FailureCause.INFRA and "was preempted (PreemptionByScheduler" in message


def test_an_ordinary_failure_keeps_the_job_controllers_words():
    assert classify_failure(FAILED_JOB, [pod(exit_code=1)]) == (
        FailureCause.APP, "Job has reached the specified backoff limit")
