"""planner/attempts.py: creating, adopting, recreating, waiting for foreign Jobs, cleaning up."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sail_api.phases import Phase
from sail_api.status import CurrentAttempt, RunState, SAILRunStatus
from sail_operator.planner.attempts import (
    GC_WAIT_SECONDS,
    MISSING_GRACE_SECONDS,
    adopt,
    cleanup_finished_attempts,
    create,
    handle_missing,
    skip_orphaned,
    wait_for_old_child,
)
from sail_operator.planner.draft import Draft
from sail_operator.planner.model import CreatePhaseJob, DeletePhaseJob, RequeueAfter, build_job_name
from sail_operator.planner.steps import Step
from sail_operator.planner.timefmt import format_time
from tests.unit.test_planner_decide import RUN, T0, attempt, done, events, failed, make_spec, observe

G, M, T = Phase.GENERATE, Phase.MIXUP, Phase.TRAIN


def test_orphaned_attempt_numbers_of_the_step_are_skipped():
    orphans = (replace(attempt(1, G, 1), owned=False, orphaned=True),
               replace(attempt(1, G, 2), owned=False, orphaned=True),
               replace(attempt(1, T, 3), owned=False, orphaned=True))
    assert skip_orphaned(orphans, Step(1, G), 1) == 3
    assert skip_orphaned(orphans, Step(1, G), 3) == 3  # attempt 3 of another phase is no obstacle


def test_create_records_the_attempt_in_status_then_creates_it_with_its_shards():
    spec = make_spec(sail={"rounds": 2}, parallelism={"generateShards": 3})
    draft = Draft(observe(spec), T0)
    create(draft, spec, Step(1, G), 2)
    name = build_job_name(RUN, 1, G, 2)
    assert draft.status.current == CurrentAttempt(job_name=name, iteration=1, phase="generate", attempt=2,
                                                  created_at=format_time(T0))
    assert CreatePhaseJob(name=name, iteration=1, phase=G, attempt=2, shards=3, nodes=1) in draft.actions
    assert draft.status.iterations[0].phases[0].attempts == 2 and draft.status.state == RunState.RUNNING


def test_a_newer_attempt_than_status_knows_is_adopted():
    draft = Draft(observe(), T0)
    adopt(draft, attempt(0, M, 3, started_at=T0))
    assert (draft.status.current.attempt, draft.status.current.started_at) == (3, format_time(T0))
    assert draft.status.iterations[0].phases[0].attempts == 3 and draft.actions == []


def recorded(created_at) -> SAILRunStatus:
    current = CurrentAttempt(job_name=build_job_name(RUN, 0, M, 1), iteration=0, phase="mixup", attempt=1,
                             created_at=format_time(created_at))
    return SAILRunStatus(state=RunState.RUNNING, current=current, current_iteration=0, current_phase="mixup")


def test_a_missing_job_is_given_a_grace_period_then_created_again_under_its_name():
    draft = Draft(observe(status=recorded(T0)), T0 + timedelta(seconds=4))
    handle_missing(draft, make_spec(), Step(0, M), 1)
    assert draft.actions == [RequeueAfter(seconds=MISSING_GRACE_SECONDS - 4)]
    later = Draft(observe(status=recorded(T0)), T0 + timedelta(seconds=MISSING_GRACE_SECONDS))
    handle_missing(later, make_spec(), Step(0, M), 1)
    assert [e.reason for e in events(later)][0] == "JobRecreated"
    assert [a.name for a in later.actions if isinstance(a, CreatePhaseJob)] == [build_job_name(RUN, 0, M, 1)]


def test_a_missing_attempt_is_created_again_at_once_where_the_executor_sees_every_attempt():
    # `sail run` after a crash: no other process can be creating it, so no grace period.
    seen_all = replace(observe(status=recorded(T0)), attempts_complete=True)
    draft = Draft(seen_all, T0 + timedelta(seconds=1))
    handle_missing(draft, make_spec(), Step(0, M), 1)
    assert not [a for a in draft.actions if isinstance(a, RequeueAfter)]
    assert [a.name for a in draft.actions if isinstance(a, CreatePhaseJob)] == [build_job_name(RUN, 0, M, 1)]


def test_a_foreign_child_being_collected_makes_the_run_wait_and_says_so_once():
    draft = Draft(observe(status=SAILRunStatus(state=RunState.RUNNING)), T0)
    wait_for_old_child(draft, "Job demo-i000-mixup-a1")
    assert draft.status.state == RunState.PENDING and RequeueAfter(seconds=GC_WAIT_SECONDS) in draft.actions
    assert len(events(draft)) == 1
    again = Draft(observe(status=draft.status), T0)
    wait_for_old_child(again, "Job demo-i000-mixup-a1")
    assert events(again) == []


def test_finished_jobs_behind_the_cursor_are_deleted_unless_the_run_failed():
    status = SAILRunStatus(state=RunState.RUNNING, current_iteration=1, current_phase="generate")
    behind = [done(0, M), failed(0, T), replace(done(0, T, 2), owned=False), attempt(1, G)]
    draft = Draft(observe(status=status, attempts=behind), T0)
    cleanup_finished_attempts(draft)
    assert draft.actions == [DeletePhaseJob(done(0, M).name), DeletePhaseJob(failed(0, T).name)]
    failed_run = Draft(observe(status=status.model_copy(update={"state": RunState.FAILED}), attempts=behind), T0)
    cleanup_finished_attempts(failed_run)
    assert failed_run.actions == []
