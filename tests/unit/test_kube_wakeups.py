"""wakeups: which watch events wake a reconcile; and why skipping the others is safe.

Table-driven for the pure filters; then a property over `decide`: the reconcile the filter
skips (the echo of our own status write, with the Jobs that write led to) would decide
nothing new, whatever the run went through before.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sail_api.phases import PhaseSummary
from sail_api.status import SAILRunStatus
from sail_operator.kube.wakeups import (
    compute_job_signal,
    job_event_matters,
    run_event_version,
    run_wakeup_is_own_echo,
)
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    DeletePhaseJob,
    EmitEvent,
    FailureCause,
    Observed,
)
from tests.builders.sailrun_spec import build_spec


def job(*, conditions: list[dict] | None = None, active: int = 0, start: bool = False,
        suspend: bool = False, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions or [], "active": active, **extra}
    if start:
        status["startTime"] = "2026-11-25T10:00:00Z"
    return {"metadata": {"name": "r1-i000-train-a1", "uid": "job-uid"}, "spec": {"suspend": suspend},
            "status": status}


COMPLETE = [{"type": "Complete", "status": "True"}]
FAILED = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]


@pytest.mark.parametrize(("body", "signal"), [
    pytest.param(job(), "pending", id="a Job without status is pending"),
    pytest.param(job(active=1, start=True), "running+started", id="an active Job with a start time runs"),
    pytest.param(job(active=1), "running", id="an active Job without a start time runs, not started"),
    pytest.param(job(suspend=True, active=0), "pending", id="a suspended (Kueue) Job is pending"),
    pytest.param(job(conditions=COMPLETE, active=0, succeeded=1), "succeeded", id="Complete is succeeded"),
    pytest.param(job(conditions=FAILED, failed=1), "failed", id="Failed is failed"),
])
def test_the_job_signal_is_the_planners_view_of_the_job(body, signal):
    assert compute_job_signal(body) == signal


@pytest.mark.parametrize(("event", "previous", "current", "matters"), [
    pytest.param("ADDED", None, "pending", False, id="our own new Job: the reconcile that created it planned it"),
    pytest.param(None, None, "pending", False, id="a pending Job in the initial listing: the run's own listing covers it"),
    pytest.param("ADDED", None, "succeeded", True, id="a Job first seen finished (e.g. after a restart) wakes"),
    pytest.param(None, None, "running", True, id="a Job first seen running wakes"),
    pytest.param("MODIFIED", "pending", "pending", False, id="a status update that keeps the state is skipped"),
    pytest.param("MODIFIED", "pending", "running", True, id="pending to running wakes (start time in status)"),
    pytest.param("MODIFIED", "running", "running+started", True, id="a start time appearing wakes"),
    pytest.param("MODIFIED", "running", "succeeded", True, id="reaching Complete wakes"),
    pytest.param("MODIFIED", "pending", "failed", True, id="reaching Failed wakes"),
    pytest.param("MODIFIED", "succeeded", "succeeded", False, id="updates after the end are skipped"),
    pytest.param("DELETED", "succeeded", "succeeded", False, id="our cleanup of a finished Job is skipped"),
    pytest.param("DELETED", "failed", "failed", False, id="deleting a Job whose failure we saw is skipped"),
    pytest.param("DELETED", "running", "running", True, id="a running Job deleted by someone wakes"),
    pytest.param("DELETED", None, "pending", True, id="a Job deleted before we ever saw it wakes"),
])
def test_which_job_events_wake_a_reconcile(event, previous, current, matters):
    assert job_event_matters(event, previous, current) is matters


@pytest.mark.parametrize(("versions", "own", "echo"), [
    pytest.param(["7"], "7", True, id="the echo of our own write is skipped"),
    pytest.param(["7", "7"], "7", True, id="two coalesced echoes of our own write are skipped"),
    pytest.param(["8"], "7", False, id="a newer version (someone's edit) reconciles"),
    pytest.param(["7", "8"], "7", False, id="an edit coalesced with our echo reconciles"),
    pytest.param(["7", None], "7", False, id="a Job event coalesced with our echo reconciles"),
    pytest.param([None], "7", False, id="a timer or Job wake-up always reconciles"),
    pytest.param(["7"], None, False, id="nothing written yet by this process: reconcile"),
    pytest.param([], "7", False, id="no wake-up recorded: reconcile"),
])
def test_only_pure_echoes_of_our_status_write_are_skipped(versions, own, echo):
    assert run_wakeup_is_own_echo(versions, own) is echo


def test_the_run_version_comes_from_the_watched_object():
    assert run_event_version({"metadata": {"resourceVersion": "42"}}) == "42"
    assert run_event_version({"metadata": {}}) is None


# ------------------------------------------------------------------ skipping the echo is safe

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SPEC = build_spec(
    sail={"rounds": 2}, parallelism={"generateShards": 2},
    failurePolicy={"appRetries": 3, "infraRetries": 4, "backoff": {"initialSeconds": 5, "maxSeconds": 60}},
)


def observe(status: SAILRunStatus, jobs: dict[str, AttemptObservation]) -> Observed:
    return Observed(name="run", namespace="ns", uid="u", generation=1, spec=SPEC, spec_error=None,
                    status=status, attempts=tuple(jobs.values()))


def perform(jobs: dict[str, AttemptObservation], actions: tuple, now: datetime) -> None:
    for action in actions:
        if isinstance(action, CreatePhaseJob):
            jobs[action.name] = AttemptObservation(name=action.name, iteration=action.iteration, phase=action.phase,
                                                   attempt=action.attempt, state=AttemptState.PENDING,
                                                   created_at=now)
        elif isinstance(action, DeletePhaseJob):
            jobs.pop(action.name, None)


def move(job_obs: AttemptObservation, outcome: str, now: datetime) -> AttemptObservation:
    if job_obs.state in (AttemptState.SUCCEEDED, AttemptState.FAILED):
        return job_obs
    if outcome == "run":
        return replace(job_obs, state=AttemptState.RUNNING, started_at=now)
    if outcome == "succeed":
        summary = PhaseSummary(phase=job_obs.phase, iteration=job_obs.iteration, outcome="committed",
                               manifest_uri=f"s3://b/run/iter-{job_obs.iteration:03d}/x/_SUCCESS.json")
        return replace(job_obs, state=AttemptState.SUCCEEDED, finished_at=now, summaries=(summary,))
    if outcome == "late-summary":
        return replace(job_obs, state=AttemptState.SUCCEEDED, finished_at=now)
    return replace(job_obs, state=AttemptState.FAILED, finished_at=now, cause=FailureCause.APP, message="x")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_echo_of_our_own_status_write_decides_nothing_new(data):
    """After a reconcile wrote status S and acted, reconciling S with the resulting Jobs changes nothing."""
    status, jobs, now = SAILRunStatus(), {}, T0
    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        kind = data.draw(st.sampled_from(["reconcile", "job", "job", "tick"]))
        if kind == "tick":
            now += timedelta(seconds=data.draw(st.integers(1, 90)))
        elif kind == "job" and jobs:
            name = data.draw(st.sampled_from(sorted(jobs)))
            jobs[name] = move(jobs[name], data.draw(st.sampled_from(["run", "succeed", "late-summary", "fail"])), now)
        else:
            decision = decide(observe(status, jobs), now)
            wrote = decision.status != status
            status = decision.status
            perform(jobs, decision.actions, now)
            if not wrote:
                continue
            echo = decide(observe(status, jobs), now + timedelta(milliseconds=300))
            assert echo.status == status
            assert not [a for a in echo.actions if isinstance(a, CreatePhaseJob | EmitEvent)], echo.actions
