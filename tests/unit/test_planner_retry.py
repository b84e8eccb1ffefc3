"""planner/retry.py: failure cause -> budget, counting a failure once, backoff. Pure (a Draft in, changed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sail_api.phases import Phase, PhaseSummary
from sail_api.status import ConditionType, Reason, RunState, SAILRunStatus
from sail_operator.planner.draft import Draft
from sail_operator.planner.model import DeletePhaseJob, FailureCause, RequeueAfter
from sail_operator.planner.retry import (
    choose_budget,
    compute_backoff_seconds,
    compute_failure_reason,
    compute_jitter_fraction,
    compute_wait_seconds,
    count_failure,
    describe_failure,
    hold_backoff,
)
from sail_operator.planner.timefmt import format_time, parse_time
from tests.unit.test_planner_decide import T0, failed, make_spec, observe, started


@pytest.mark.parametrize(("cause", "budget", "limit", "field"), [
    (FailureCause.APP, "app", 1, "appRetries"),
    (FailureCause.DEADLINE, "app", 1, "appRetries"),
    (FailureCause.INFRA, "infra", 2, "infraRetries"),
])
def test_the_cause_picks_the_budget(cause, budget, limit, field):
    chosen = choose_budget(cause, make_spec().failure_policy)
    assert (chosen.name, chosen.limit, chosen.field_name) == (budget, limit, field)


def test_a_deadline_is_reported_as_such_every_other_failure_as_phase_failed():
    assert compute_failure_reason(FailureCause.DEADLINE) == Reason.DEADLINE_EXCEEDED
    assert compute_failure_reason(FailureCause.INFRA) == Reason.PHASE_FAILED


def test_backoff_grows_exponentially_is_capped_and_jitter_is_deterministic():
    policy = make_spec().failure_policy.backoff
    assert compute_backoff_seconds(policy, 1, "k") == compute_backoff_seconds(policy, 1, "k")
    assert 8 <= compute_backoff_seconds(policy, 1, "k") <= 12
    assert 32 <= compute_backoff_seconds(policy, 3, "k") <= 48
    assert compute_backoff_seconds(policy, 30, "k") == 600
    fractions = {round(compute_jitter_fraction(f"uid:{n}"), 6) for n in range(50)}
    assert len(fractions) == 50 and all(-1 <= f < 1 for f in fractions)


def test_the_wait_is_what_is_left_of_the_backoff_and_none_once_it_is_over():
    until = format_time(T0 + timedelta(seconds=30))
    assert compute_wait_seconds(until, T0) == 30
    assert compute_wait_seconds(until, T0 + timedelta(seconds=30)) is None
    assert compute_wait_seconds(None, T0) is None


def test_the_failure_message_is_the_attempts_else_the_first_shard_error():
    assert describe_failure(failed(0, Phase.MIXUP, message="oom")) == "oom"
    shard = PhaseSummary(phase=Phase.GENERATE, iteration=1, outcome="failed", error="disk full")
    assert describe_failure(replace(failed(1, Phase.GENERATE, message=""), summaries=(shard,))) == "disk full"
    assert describe_failure(failed(0, Phase.MIXUP, message="")) == "no message"


def draft_with_failure(cause=FailureCause.APP, restarts=None) -> tuple[Draft, bool]:
    status = started()
    if restarts:
        status.restarts.app = restarts
    obs = failed(0, Phase.MIXUP, cause=cause)
    draft = Draft(observe(status=status, attempts=[obs]), T0)
    return draft, count_failure(draft, make_spec(), 0, Phase.MIXUP, obs)


def test_a_retryable_failure_spends_one_retry_sets_the_backoff_and_deletes_the_failed_job():
    draft, retry = draft_with_failure()
    assert retry and draft.status.restarts.app == 1 and draft.status.state == RunState.RETRYING
    assert 8 <= (parse_time(draft.status.backoff_until) - T0).total_seconds() <= 12  # 10 s +- 20% jitter
    assert DeletePhaseJob(name=failed(0, Phase.MIXUP).name) in draft.actions
    assert next(c for c in draft.status.conditions if c.type == ConditionType.RETRYING).reason == Reason.BACKING_OFF


def test_an_exhausted_budget_fails_the_run_naming_the_spec_field():
    draft, retry = draft_with_failure(restarts=1)
    assert not retry and draft.status.state == RunState.FAILED
    assert "failurePolicy.appRetries=1" in draft.status.message
    assert draft.status.restarts.app == 1 and draft.status.backoff_until is None


def test_a_non_retryable_failure_fails_at_once_and_spends_nothing():
    draft, retry = draft_with_failure(cause=FailureCause.NON_RETRYABLE)
    assert not retry and draft.status.state == RunState.FAILED
    assert (draft.status.restarts.app, draft.status.restarts.infra) == (0, 0)
    assert not any(isinstance(a, DeletePhaseJob) for a in draft.actions)  # a Failed run keeps its last Job


def test_holding_a_backoff_requeues_for_the_rest_and_marks_a_running_run_retrying():
    status = SAILRunStatus(state=RunState.RUNNING, backoff_until=format_time(T0 + timedelta(seconds=7)))
    draft = Draft(observe(status=status), T0)
    assert hold_backoff(draft)
    assert draft.actions == [RequeueAfter(seconds=7)] and draft.status.state == RunState.RETRYING
    over = Draft(observe(status=status), T0 + timedelta(seconds=8))
    assert not hold_backoff(over) and over.actions == [] and over.status.state == RunState.RUNNING
