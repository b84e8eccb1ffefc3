"""Properties of `decide` under arbitrary interleavings (hypothesis).

A simulated executor writes status, then performs only a prefix of the actions when it
"crashes"; a simulated Job controller moves Jobs to running, success (summary sometimes
late) or failure with any cause. Whatever happens: no Job is created while one with that
name exists, every created attempt is in the status written before it, budgets are never
overspent, and once Jobs stop failing the run finishes with every phase recorded once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sail_api.phases import PhaseSummary
from sail_api.status import RunState, SAILRunStatus
from sail_operator.planner.decide import build_plan, decide
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    DeletePhaseJob,
    FailureCause,
    Observed,
)
from tests.builders.sailrun_spec import build_spec

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SPEC = build_spec(
    sail={"rounds": 2}, parallelism={"generateShards": 2},
    failurePolicy={"appRetries": 3, "infraRetries": 4, "backoff": {"initialSeconds": 5, "maxSeconds": 60}},
)
CAUSES = [FailureCause.APP, FailureCause.INFRA, FailureCause.DEADLINE]


class World:
    def __init__(self) -> None:
        self.status = SAILRunStatus()
        self.jobs: dict[str, AttemptObservation] = {}
        self.now = T0
        self.created: list[str] = []

    def reconcile(self, crash_after: int | None) -> None:
        observed = Observed(name="run", namespace="ns", uid="u", generation=1, spec=SPEC, spec_error=None,
                            status=self.status, attempts=tuple(self.jobs.values()))
        decision = decide(observed, self.now)
        self.status = decision.status  # written first
        actions = decision.actions if crash_after is None else decision.actions[:crash_after]
        for action in actions:
            if isinstance(action, CreatePhaseJob):
                assert action.name not in self.jobs, f"created {action.name} while it exists"
                assert self.status.current is not None and self.status.current.job_name == action.name
                self.jobs[action.name] = AttemptObservation(
                    name=action.name, iteration=action.iteration, phase=action.phase, attempt=action.attempt,
                    state=AttemptState.PENDING, created_at=self.now)
                self.created.append(action.name)
            elif isinstance(action, DeletePhaseJob):
                self.jobs.pop(action.name, None)
        policy = SPEC.failure_policy
        assert self.status.restarts.app <= policy.app_retries
        assert self.status.restarts.infra <= policy.infra_retries

    def move_job(self, name: str, outcome: str, cause: FailureCause) -> None:
        job = self.jobs[name]
        if job.state in (AttemptState.SUCCEEDED, AttemptState.FAILED):
            if outcome == "summary" and job.state == AttemptState.SUCCEEDED and not job.summaries:
                self.jobs[name] = replace(job, summaries=(self._summary(job),))
            return
        if outcome == "run":
            self.jobs[name] = replace(job, state=AttemptState.RUNNING, started_at=self.now)
        elif outcome in ("succeed", "summary"):
            summaries = (self._summary(job),) if outcome == "summary" else ()
            self.jobs[name] = replace(job, state=AttemptState.SUCCEEDED, finished_at=self.now, summaries=summaries)
        else:
            self.jobs[name] = replace(job, state=AttemptState.FAILED, finished_at=self.now, cause=cause,
                                      message="simulated")

    @staticmethod
    def _summary(job: AttemptObservation) -> PhaseSummary:
        return PhaseSummary(phase=job.phase, iteration=job.iteration, outcome="committed",
                            manifest_uri=f"s3://b/run/iter-{job.iteration:03d}/{job.phase.value}/_SUCCESS.json",
                            metrics={"loss": 0.5})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_duplicate_jobs_no_overspent_budget_and_the_run_finishes(data):
    world = World()
    for _ in range(data.draw(st.integers(10, 120), label="chaos steps")):
        if world.status.state in (RunState.SUCCEEDED, RunState.FAILED):
            break
        kind = data.draw(st.sampled_from(["reconcile", "crash", "job", "job", "tick"]))
        if kind == "reconcile":
            world.reconcile(None)
        elif kind == "crash":
            world.reconcile(data.draw(st.integers(0, 3)))
        elif kind == "tick":
            world.now += timedelta(seconds=data.draw(st.integers(1, 120)))
        elif world.jobs:
            name = data.draw(st.sampled_from(sorted(world.jobs)))
            outcome = data.draw(st.sampled_from(["run", "succeed", "summary", "summary", "fail"]))
            world.move_job(name, outcome, data.draw(st.sampled_from(CAUSES)))
    if world.status.state == RunState.FAILED:
        assert "budget exhausted" in world.status.message
        return
    for _ in range(500):  # calm: every Job now succeeds with its summary
        if world.status.state == RunState.SUCCEEDED:
            break
        world.reconcile(None)
        for name in list(world.jobs):
            world.move_job(name, "summary", FailureCause.APP)
        world.now += timedelta(seconds=61)
    if world.status.state == RunState.FAILED:
        assert "budget exhausted" in world.status.message
        return
    assert world.status.state == RunState.SUCCEEDED
    recorded = [(r.iteration, p.phase, p.result) for r in world.status.iterations for p in r.phases]
    assert recorded == [(s.iteration, s.phase.value, "Succeeded") for s in build_plan(2)]
    assert world.status.progress.percent == 100
