"""The planner `decide(observed, now)`: table-driven cases whose ids read as sentences.

Pure and fast: no executor, no clock. `play` below acts as a perfect executor (it
writes status, then creates/deletes attempts), so whole runs can be driven too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sail_api.phases import Phase, PhaseSummary
from sail_api.spec import SAILRunSpec
from sail_api.status import MAX_ITERATION_HISTORY, RunState, SAILRunStatus
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    FailureCause,
    Observed,
    RequeueAfter,
    build_job_name,
)
from sail_operator.planner.steps import build_plan
from sail_operator.planner.timefmt import format_time
from tests.builders.sailrun_spec import build_spec_body, merge_spec

T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
RUN = "demo"
ROOT = "s3://bucket/runs/demo"


def make_spec(**overrides) -> SAILRunSpec:
    body = build_spec_body(
        storage=ROOT, sail={"rounds": 1},
        failurePolicy={"appRetries": 1, "infraRetries": 2,
                       "backoff": {"initialSeconds": 10, "maxSeconds": 600, "factor": 2, "jitter": 0.2}},
    )
    return SAILRunSpec.model_validate(merge_spec(body, **overrides))


def observe(spec=None, status=None, attempts=(), generation=1, spec_error=None) -> Observed:
    return Observed(
        name=RUN, namespace="ns", uid="uid-1", generation=generation,
        spec=None if spec_error else (spec or make_spec()), spec_error=spec_error,
        status=status or SAILRunStatus(), attempts=tuple(attempts),
    )


def attempt(iteration, phase, number=1, state=AttemptState.RUNNING, **kw) -> AttemptObservation:
    return AttemptObservation(
        name=build_job_name(RUN, iteration, phase, number), iteration=iteration, phase=phase,
        attempt=number, state=state, created_at=kw.pop("created_at", T0), **kw,
    )


def summary(iteration, phase, **kw) -> PhaseSummary:
    manifest = f"{ROOT}/iter-{iteration:03d}/{phase.value}/_SUCCESS.json"
    return PhaseSummary(phase=phase, iteration=iteration, outcome="committed", manifest_uri=manifest, **kw)


def done(iteration, phase, number=1, **kw) -> AttemptObservation:
    return attempt(iteration, phase, number, AttemptState.SUCCEEDED, started_at=T0 + timedelta(seconds=3),
                   finished_at=T0 + timedelta(seconds=13), summaries=(summary(iteration, phase, **kw),))


def failed(iteration, phase, number=1, cause=FailureCause.APP, message="boom") -> AttemptObservation:
    return attempt(iteration, phase, number, AttemptState.FAILED, cause=cause, message=message,
                   finished_at=T0 + timedelta(seconds=5))


def started(spec=None, generation=1) -> SAILRunStatus:
    """Status after the first decide: step 0 mixup attempt 1 recorded."""
    return decide(observe(spec, generation=generation), T0).status


def events(decision: Decision) -> list[EmitEvent]:
    return [a for a in decision.actions if isinstance(a, EmitEvent)]


def cond(status: SAILRunStatus, type_: str):
    return next(c for c in status.conditions if c.type == type_)


def play(spec: SAILRunSpec, *, fail_first: set[tuple[int, Phase]] = frozenset(), max_steps=200, finish=True):
    """A perfect executor: writes status, creates attempts that succeed at once (or fail once)."""
    status, jobs, created, now = SAILRunStatus(), {}, [], T0
    failed_once: set[tuple[int, Phase]] = set()
    for _ in range(max_steps):
        decision = decide(observe(spec, status, jobs.values()), now)
        status = decision.status
        for action in decision.actions:
            if isinstance(action, CreatePhaseJob):
                assert action.name not in jobs, f"duplicate create of {action.name}"
                created.append(action)
                key = (action.iteration, action.phase)
                if key in fail_first and key not in failed_once:
                    failed_once.add(key)
                    jobs[action.name] = failed(action.iteration, action.phase, action.attempt)
                else:
                    jobs[action.name] = done(action.iteration, action.phase, action.attempt, metrics={"loss": 0.5})
            elif isinstance(action, DeletePhaseJob):
                jobs.pop(action.name, None)
        if status.state in (RunState.SUCCEEDED, RunState.FAILED):
            return status, created
        now += timedelta(seconds=700)
    assert not finish, "run did not finish"
    return status, created


# ------------------------------------------------------------------ whole runs


def test_happy_path_runs_step0_then_each_round_once_in_order():
    status, created = play(make_spec(sail={"rounds": 2}))
    assert [(c.iteration, c.phase) for c in created] == [(s.iteration, s.phase) for s in build_plan(2)]
    assert all(c.attempt == 1 for c in created)
    assert status.state == RunState.SUCCEEDED
    assert cond(status, "Complete").status == "True"
    assert status.progress.percent == 100 and status.progress.total_phases == 10
    assert status.checkpoint.uri == f"{ROOT}/iter-002/train/model" and status.checkpoint.iteration == 2
    assert [r.iteration for r in status.iterations] == [0, 1, 2]
    assert all(p.result == "Succeeded" and p.metrics == {"loss": 0.5} for r in status.iterations for p in r.phases)


def test_a_failure_per_phase_is_retried_within_the_budgets():
    spec = make_spec(failurePolicy={"appRetries": 5})
    status, created = play(spec, fail_first={(0, Phase.TRAIN), (1, Phase.GENERATE)})
    assert status.state == RunState.SUCCEEDED
    assert [c.attempt for c in created if (c.iteration, c.phase) == (0, Phase.TRAIN)] == [1, 2]
    assert status.restarts.app == 2


def test_sharded_phases_carry_the_shard_count_and_train_the_node_count():
    spec = make_spec(parallelism={"generateShards": 4, "annotateShards": 2, "trainNodes": 3})
    _, created = play(spec)
    by_phase = {(c.iteration, c.phase): c for c in created}
    assert by_phase[(1, Phase.GENERATE)].shards == 4
    assert by_phase[(1, Phase.ANNOTATE)].shards == 2
    assert by_phase[(1, Phase.MIXUP)].shards is None
    assert by_phase[(0, Phase.TRAIN)].nodes == 3 and by_phase[(1, Phase.MIXUP)].nodes == 1


# ------------------------------------------------------------------ single decisions


def test_first_decision_records_the_attempt_in_status_and_creates_it():
    decision = decide(observe(), T0)
    name = build_job_name(RUN, 0, Phase.MIXUP, 1)
    assert decision.creates == (CreatePhaseJob(name=name, iteration=0, phase=Phase.MIXUP, attempt=1),)
    assert decision.status.current.job_name == name and decision.status.current.created_at == format_time(T0)
    assert decision.status.state == RunState.RUNNING
    assert cond(decision.status, "Validated").status == "True"
    assert decision.status.observed_generation == 1
    assert decision.status.spec_digest.startswith("sha256:")


@pytest.mark.parametrize(
    "attempts",
    [
        pytest.param([attempt(0, Phase.MIXUP, state=AttemptState.RUNNING)], id="attempt running: wait, do not recreate"),
        pytest.param([attempt(0, Phase.MIXUP, state=AttemptState.PENDING)], id="attempt pending in a queue: wait"),
    ],
)
def test_waits_on_an_attempt_in_flight(attempts):
    decision = decide(observe(status=started(), attempts=attempts), T0 + timedelta(seconds=30))
    assert decision.creates == ()
    assert decision.status.current.attempt == 1


def test_job_finished_but_no_summary_yet_wait_do_not_recreate():
    obs = attempt(0, Phase.MIXUP, state=AttemptState.SUCCEEDED)
    decision = decide(observe(status=started(), attempts=[obs]), T0)
    assert decision.creates == ()
    assert not any(isinstance(a, DeletePhaseJob) for a in decision.actions)
    assert any(isinstance(a, RequeueAfter) for a in decision.actions)
    assert decision.status.current_phase == "mixup"


def test_recorded_attempt_whose_job_is_missing_is_created_with_the_same_name():
    early = decide(observe(status=started()), T0 + timedelta(seconds=1))
    assert early.creates == ()  # just recorded: its creator may be about to POST it (a second operator)
    assert any(isinstance(a, RequeueAfter) for a in early.actions)
    decision = decide(observe(status=started()), T0 + timedelta(seconds=11))
    assert [c.name for c in decision.creates] == [build_job_name(RUN, 0, Phase.MIXUP, 1)]


def test_status_lags_a_running_newer_attempt_adopt_it_and_do_not_create():
    status = started()
    newer = attempt(0, Phase.MIXUP, 2, AttemptState.RUNNING)
    decision = decide(observe(status=status, attempts=[newer]), T0)
    assert decision.creates == ()
    assert decision.status.current.attempt == 2


def test_status_lags_entirely_a_running_first_attempt_is_not_duplicated():
    decision = decide(observe(attempts=[attempt(0, Phase.MIXUP)]), T0)
    assert decision.creates == ()
    assert decision.status.current.job_name == build_job_name(RUN, 0, Phase.MIXUP, 1)


def test_succeeded_train_records_result_checkpoint_then_deletes_and_starts_next():
    status = decide(observe(status=started(), attempts=[done(0, Phase.MIXUP)]), T0).status
    obs = done(0, Phase.TRAIN, metrics={"loss": 0.6, "implicit_accuracy": 0.7})
    decision = decide(observe(status=status, attempts=[obs]), T0 + timedelta(minutes=1))
    rec = decision.status.iterations[0].phases[1]
    assert (rec.phase, rec.result, rec.duration_seconds, rec.queue_wait_seconds) == ("train", "Succeeded", 10.0, 3.0)
    assert rec.metrics == {"implicit_accuracy": 0.7, "loss": 0.6}
    assert rec.manifest_uri == f"{ROOT}/iter-000/train/_SUCCESS.json"
    assert decision.status.checkpoint.uri == f"{ROOT}/iter-000/train/model"
    assert cond(decision.status, "CheckpointAvailable").status == "True"
    assert DeletePhaseJob(name=obs.name) in decision.actions
    assert [c.phase for c in decision.creates] == [Phase.GENERATE]
    assert decision.status.current_iteration == 1


def test_checkpoint_uri_from_the_summary_extra_wins_over_the_layout():
    status = decide(observe(status=started(), attempts=[done(0, Phase.MIXUP)]), T0).status
    obs = done(0, Phase.TRAIN, extra={"model_uri": "s3://elsewhere/model"})
    decision = decide(observe(status=status, attempts=[obs]), T0)
    assert decision.status.checkpoint.uri == "s3://elsewhere/model"


def test_sharded_success_averages_metrics_and_points_at_the_phase_folder():
    spec = make_spec(parallelism={"generateShards": 2})
    status = SAILRunStatus(current_iteration=1, current_phase="generate")
    shards = tuple(
        PhaseSummary(phase=Phase.GENERATE, iteration=1, shard=f"{k}/2", outcome="committed",
                     manifest_uri=f"{ROOT}/iter-001/generate/shard-{k:05d}-of-00002/_SUCCESS.json",
                     metrics={"images": float(k + 1)})
        for k in range(2)
    )
    obs = replace(done(1, Phase.GENERATE), summaries=shards)
    status = decide(observe(spec, status), T0).status
    decision = decide(observe(spec, status, [obs]), T0)
    rec = decision.status.iterations[0].phases[0]
    assert rec.metrics == {"images": 1.5}
    assert rec.manifest_uri == f"{ROOT}/iter-001/generate"


# ------------------------------------------------------------------ failures


FAILURE_CASES = [
    pytest.param(FailureCause.APP, 0, 0, RunState.RETRYING, "app", id="app failure within budget: back off, spend app"),
    pytest.param(FailureCause.DEADLINE, 0, 0, RunState.RETRYING, "app", id="deadline exceeded counts as app failure"),
    pytest.param(FailureCause.INFRA, 0, 0, RunState.RETRYING, "infra", id="preemption spends infra, not app"),
    pytest.param(FailureCause.APP, 1, 0, RunState.FAILED, None, id="app budget spent: fail the run"),
    pytest.param(FailureCause.INFRA, 0, 2, RunState.FAILED, None, id="infra budget spent: fail the run"),
    pytest.param(FailureCause.NON_RETRYABLE, 0, 0, RunState.FAILED, None, id="bad data: fail at once, no retry"),
]


@pytest.mark.parametrize(("cause", "app", "infra", "state", "spent"), FAILURE_CASES)
def test_failures_follow_the_budgets(cause, app, infra, state, spent):
    status = started()
    status.restarts.app, status.restarts.infra = app, infra
    decision = decide(observe(status=status, attempts=[failed(0, Phase.MIXUP, cause=cause, message="exit 1: x")]), T0)
    assert decision.status.state == state
    assert decision.creates == ()
    if spent:
        assert getattr(decision.status.restarts, spent) == 1
        assert decision.status.backoff_until is not None
        assert any(isinstance(a, RequeueAfter) and 8 <= a.seconds <= 12 for a in decision.actions)
        assert cond(decision.status, "Retrying").status == "True"
    else:
        assert decision.status.restarts.app == app and decision.status.restarts.infra == infra
        assert cond(decision.status, "Failed").status == "True"
        warnings = [e for e in events(decision) if e.type == "Warning"]
        assert warnings and "exit 1: x" in warnings[-1].message


def test_exhausted_budget_event_names_the_budget():
    status = started()
    status.restarts.app = 1
    decision = decide(observe(status=status, attempts=[failed(0, Phase.MIXUP)]), T0)
    assert cond(decision.status, "Failed").reason == "AppRetryBudgetExhausted"
    assert any("failurePolicy.appRetries=1" in e.message for e in events(decision))


def test_a_counted_failure_is_not_counted_again_while_backing_off():
    first = decide(observe(status=started(), attempts=[failed(0, Phase.MIXUP)]), T0)
    again = decide(observe(status=first.status, attempts=[failed(0, Phase.MIXUP)]), T0 + timedelta(seconds=1))
    assert again.status.restarts.app == 1
    assert again.creates == ()
    assert again.status.backoff_until == first.status.backoff_until


def test_backoff_expired_creates_the_next_attempt():
    first = decide(observe(status=started(), attempts=[failed(0, Phase.MIXUP)]), T0)
    later = decide(observe(status=first.status, attempts=[failed(0, Phase.MIXUP)]), T0 + timedelta(seconds=20))
    assert [c.attempt for c in later.creates] == [2]
    assert later.status.backoff_until is None and later.status.state == RunState.RUNNING
    assert later.status.iterations[0].phases[0].attempts == 2


def test_job_with_our_name_but_another_owner_is_never_adopted():
    foreign = replace(attempt(0, Phase.MIXUP), owned=False)
    decision = decide(observe(status=started(), attempts=[foreign]), T0)
    assert decision.status.state != RunState.FAILED  # an earlier run's Job being collected: wait, not fail
    assert "garbage-collected" in decision.status.message
    assert decision.creates == () and not any(isinstance(a, DeletePhaseJob) for a in decision.actions)


# ------------------------------------------------------------------ spec problems


def test_invalid_spec_fails_once_with_the_message_and_a_warning():
    decision = decide(observe(spec_error="spec.sail.alpha: must be <= 1"), T0)
    assert decision.status.state == RunState.FAILED
    validated = cond(decision.status, "Validated")
    assert (validated.status, validated.reason) == ("False", "InvalidSpec")
    assert "spec.sail.alpha" in validated.message
    assert [e.type for e in events(decision)] == ["Warning"]
    assert decision.creates == ()
    again = decide(observe(status=decision.status, spec_error="spec.sail.alpha: must be <= 1"), T0)
    assert events(again) == [] and again.creates == ()
    assert cond(again.status, "Validated").last_transition_time == validated.last_transition_time


def test_a_later_valid_spec_revalidates_and_the_run_starts():
    bad = decide(observe(spec_error="spec.sail.alpha: bad"), T0).status
    decision = decide(observe(status=bad, generation=2), T0 + timedelta(minutes=1))
    assert cond(decision.status, "Validated").status == "True"
    assert cond(decision.status, "Failed").status == "False"
    assert decision.status.state == RunState.RUNNING and len(decision.creates) == 1


def test_a_run_failed_for_its_budget_stays_failed():
    status = started()
    status.restarts.app = 1
    dead = decide(observe(status=status, attempts=[failed(0, Phase.MIXUP)]), T0).status
    later = decide(observe(status=dead, generation=2), T0 + timedelta(hours=1))
    assert later.status.state == RunState.FAILED and later.creates == ()


# ------------------------------------------------------------------ suspend, rewind, targets


def test_suspend_lets_the_running_phase_finish_but_creates_nothing_new():
    spec = make_spec(suspend=True)
    decision = decide(observe(spec, started(), [done(0, Phase.MIXUP)], generation=2), T0)
    assert decision.status.state == RunState.SUSPENDED
    assert cond(decision.status, "Suspended").status == "True"
    assert decision.creates == ()
    assert decision.status.iterations[0].phases[0].result == "Succeeded"
    assert any(e.reason == "SuspendedByUser" for e in events(decision))


def test_resume_continues_with_the_next_phase():
    suspended = decide(observe(make_spec(suspend=True), started(), [done(0, Phase.MIXUP)], generation=2), T0).status
    decision = decide(observe(make_spec(), suspended, generation=3), T0)
    assert decision.status.state == RunState.RUNNING
    assert [(c.iteration, c.phase) for c in decision.creates] == [(0, Phase.TRAIN)]
    assert any(e.reason == "Resumed" for e in events(decision))


def test_resume_during_backoff_keeps_retrying_and_waits_for_the_backoff():
    failing = decide(observe(status=started(), attempts=[failed(0, Phase.MIXUP)]), T0).status
    suspended = decide(observe(make_spec(suspend=True), failing, [failed(0, Phase.MIXUP)], generation=2), T0).status
    assert suspended.state == RunState.SUSPENDED
    resumed = decide(observe(make_spec(), suspended, [failed(0, Phase.MIXUP)], generation=3), T0 + timedelta(seconds=1))
    assert resumed.status.state == RunState.RETRYING and resumed.creates == ()
    assert resumed.status.restarts.app == 1


def test_raising_rounds_while_running_extends_the_run():
    status, _ = play(make_spec(sail={"rounds": 0}))
    assert status.state == RunState.SUCCEEDED  # finished runs stay finished ...
    status = SAILRunStatus(current_iteration=1, current_phase="train", state=RunState.RUNNING)
    status = decide(observe(make_spec(sail={"rounds": 1}), status), T0).status
    decision = decide(observe(make_spec(sail={"rounds": 2}), status, [done(1, Phase.TRAIN)], generation=2), T0)
    assert [(c.iteration, c.phase) for c in decision.creates] == [(2, Phase.GENERATE)]  # ... running ones extend
    assert decision.status.progress.total_phases == 10


def test_start_iteration_rewinds_once_per_generation_trims_history_and_emits_rewound():
    status, _ = play(make_spec(sail={"rounds": 3}), max_steps=5, finish=False)
    assert status.current_iteration >= 1
    status.state = RunState.RUNNING
    spec = make_spec(sail={"rounds": 3}, startIteration=1)
    decision = decide(observe(spec, status, generation=2), T0)
    assert any(e.reason == "Rewound" for e in events(decision))
    assert [r.iteration for r in decision.status.iterations] == [0, 1]
    assert decision.status.iterations[1].phases[0].result == "Running"
    assert [(c.iteration, c.phase) for c in decision.creates] == [(1, Phase.GENERATE)]
    assert decision.status.checkpoint.iteration == 0
    again = decide(observe(spec, decision.status, generation=2), T0)
    assert not any(e.reason == "Rewound" for e in events(again))


def test_history_is_bounded():
    status, _ = play(make_spec(sail={"rounds": MAX_ITERATION_HISTORY + 3}), max_steps=1000)
    assert len(status.iterations) == MAX_ITERATION_HISTORY
    assert status.iterations[-1].iteration == MAX_ITERATION_HISTORY + 3


def test_condition_transition_time_changes_only_when_status_flips():
    first = decide(observe(), T0).status
    later = decide(observe(status=first, attempts=[attempt(0, Phase.MIXUP)]), T0 + timedelta(hours=1)).status
    assert cond(later, "Running").last_transition_time == format_time(T0)
    assert all(c.observed_generation == 1 for c in later.conditions)


def test_a_deadline_failure_is_reported_as_deadline_exceeded():
    decision = decide(observe(status=started(), attempts=[failed(0, Phase.MIXUP, cause=FailureCause.DEADLINE)]), T0)
    assert [e.reason for e in events(decision) if e.type == "Warning"] == ["DeadlineExceeded"]
    assert decision.status.restarts.app == 1 and decision.status.restarts.infra == 0


def test_waiting_on_a_running_attempt_emits_no_events_and_changes_nothing():
    status = started()
    decision = decide(observe(status=status, attempts=[attempt(0, Phase.MIXUP)]), T0 + timedelta(minutes=5))
    assert decision.actions == ()
    assert decision.status == status


def test_leftover_finished_jobs_of_earlier_phases_are_deleted():
    status = decide(observe(status=started(), attempts=[done(0, Phase.MIXUP, 2)]), T0).status
    leftovers = [done(0, Phase.MIXUP, 2), failed(0, Phase.MIXUP, 1), attempt(0, Phase.TRAIN)]
    decision = decide(observe(status=status, attempts=leftovers), T0)
    deleted = {a.name for a in decision.actions if isinstance(a, DeletePhaseJob)}
    assert deleted == {build_job_name(RUN, 0, Phase.MIXUP, 1), build_job_name(RUN, 0, Phase.MIXUP, 2)}
    assert decision.creates == ()


def test_lowering_rounds_below_the_current_iteration_completes_the_run():
    status = SAILRunStatus(current_iteration=2, current_phase="generate", state=RunState.RUNNING)
    decision = decide(observe(make_spec(sail={"rounds": 1}), status, [attempt(2, Phase.GENERATE)]), T0)
    assert decision.status.state == RunState.SUCCEEDED
    assert DeletePhaseJob(name=build_job_name(RUN, 2, Phase.GENERATE, 1)) in decision.actions


def test_start_iteration_on_a_new_run_starts_there_with_the_previous_checkpoint():
    decision = decide(observe(make_spec(sail={"rounds": 3}, startIteration=2)), T0)
    assert [(c.iteration, c.phase) for c in decision.creates] == [(2, Phase.GENERATE)]
    assert decision.status.checkpoint.uri == f"{ROOT}/iter-001/train/model"
    assert decision.status.progress.completed_phases == 6


def test_complete_run_reports_complete_once():
    status, _ = play(make_spec(sail={"rounds": 0}))
    again = decide(observe(make_spec(sail={"rounds": 0}), status), T0 + timedelta(hours=1))
    assert again.actions == () and again.status.state == RunState.SUCCEEDED


def test_every_condition_carries_the_generation_just_observed():
    status = started()
    decision = decide(observe(status=status, attempts=[attempt(0, Phase.MIXUP)], generation=4), T0)
    assert {c.observed_generation for c in decision.status.conditions} == {4}
    assert cond(decision.status, "Validated").last_transition_time == format_time(T0)


def test_invalid_edit_of_a_running_run_fails_it_and_a_fix_picks_up_the_running_job():
    running = [attempt(0, Phase.MIXUP)]
    broken = decide(observe(status=started(), attempts=running, generation=2, spec_error="spec.sail.beta: bad"), T0)
    assert broken.status.state == RunState.FAILED and broken.actions[-1].type == "Warning"
    assert not any(isinstance(a, DeletePhaseJob) for a in broken.actions)
    fixed = decide(observe(status=broken.status, attempts=running, generation=3), T0)
    assert fixed.status.state == RunState.RUNNING and fixed.creates == ()
    assert fixed.status.current.job_name == build_job_name(RUN, 0, Phase.MIXUP, 1)


def test_rewind_deletes_the_jobs_of_the_iterations_it_drops_and_continues_attempt_numbers():
    status = SAILRunStatus(current_iteration=2, current_phase="annotate", state=RunState.RUNNING)
    jobs = [attempt(2, Phase.ANNOTATE), done(2, Phase.GENERATE)]
    spec = make_spec(sail={"rounds": 3}, startIteration=2)
    decision = decide(observe(spec, status, jobs, generation=5), T0)
    deleted = {a.name for a in decision.actions if isinstance(a, DeletePhaseJob)}
    assert deleted == {build_job_name(RUN, 2, Phase.ANNOTATE, 1), build_job_name(RUN, 2, Phase.GENERATE, 1)}
    assert [(c.iteration, c.phase, c.attempt) for c in decision.creates] == [(2, Phase.GENERATE, 2)]

