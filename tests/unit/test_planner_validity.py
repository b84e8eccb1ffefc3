"""planner/validity.py and lifecycle.py: invalid specs, refused edits and creates, fail/suspend/complete."""

from __future__ import annotations

from dataclasses import replace

from sail_api.phases import Phase
from sail_api.status import ConditionType, Reason, RunState, SAILRunStatus
from sail_operator.planner.conditions import set_condition
from sail_operator.planner.draft import Draft
from sail_operator.planner.lifecycle import apply_suspend, complete
from sail_operator.planner.model import DeletePhaseJob
from sail_operator.planner.validity import (
    REASON_EDIT_REFUSED,
    REASON_REFUSED_BY_API_SERVER,
    fail_refused_create,
    refuse_pinned_edits,
    reject_invalid_spec,
    reopens_after_invalid_spec,
)
from tests.unit.test_planner_decide import T0, attempt, cond, events, make_spec, observe, started


def failed_on(reason: str, observed_generation: int = 1) -> SAILRunStatus:
    conditions = set_condition([], ConditionType.FAILED, "True", reason, "x", 1, T0)
    return SAILRunStatus(state=RunState.FAILED, conditions=conditions, observed_generation=observed_generation)


def test_only_a_spec_failure_or_an_edited_refused_create_reopens():
    assert reopens_after_invalid_spec(observe(status=failed_on(Reason.INVALID_SPEC)))
    assert not reopens_after_invalid_spec(observe(status=failed_on(Reason.APP_RETRY_BUDGET_EXHAUSTED)))
    assert not reopens_after_invalid_spec(observe(status=failed_on(REASON_REFUSED_BY_API_SERVER), generation=1))
    assert reopens_after_invalid_spec(observe(status=failed_on(REASON_REFUSED_BY_API_SERVER), generation=2))
    assert not reopens_after_invalid_spec(observe(status=SAILRunStatus(state=RunState.RUNNING)))


def test_an_invalid_spec_fails_a_running_run_but_not_a_succeeded_one_and_warns_once():
    draft = Draft(observe(spec_error="spec.sail.rounds: must be >= 0"), T0)
    reject_invalid_spec(draft, "spec.sail.rounds: must be >= 0")
    assert draft.status.state == RunState.FAILED and len(events(draft)) == 1
    again = Draft(observe(status=draft.status, spec_error="same"), T0)
    reject_invalid_spec(again, "spec.sail.rounds: must be >= 0")
    assert events(again) == []
    done = Draft(observe(status=SAILRunStatus(state=RunState.SUCCEEDED), spec_error="bad"), T0)
    reject_invalid_spec(done, "bad")
    assert done.status.state == RunState.SUCCEEDED and cond(done.status, "Validated").status == "False"


def test_a_refused_create_fails_the_attempt_without_spending_a_retry():
    draft = Draft(replace(observe(status=started()), create_refusal="422: spec.template.image invalid"), T0)
    fail_refused_create(draft, "422: spec.template.image invalid")
    assert draft.status.state == RunState.FAILED and draft.status.restarts.app == 0
    assert draft.status.iterations[0].phases[0].result == "Failed"
    assert "no retry budget was spent" in cond(draft.status, "Failed").message


def test_a_pinned_edit_is_refused_once_naming_the_field():
    pinned = replace(observe(status=started()), pinned_changes=("spec.sail.beta: 5000 -> 1",))
    draft = Draft(pinned, T0)
    refuse_pinned_edits(draft)
    assert cond(draft.status, "Validated").reason == REASON_EDIT_REFUSED
    assert "spec.sail.beta: 5000 -> 1" in events(draft)[0].message
    again = Draft(replace(pinned, status=draft.status), T0)
    refuse_pinned_edits(again)
    assert events(again) == []


def test_suspend_then_resume_flip_the_state_and_the_condition():
    draft = Draft(observe(status=SAILRunStatus(state=RunState.RUNNING)), T0)
    apply_suspend(draft, make_spec(suspend=True))
    assert draft.status.state == RunState.SUSPENDED and cond(draft.status, "Suspended").status == "True"
    resumed = Draft(observe(status=draft.status), T0)
    apply_suspend(resumed, make_spec())
    assert resumed.status.state == RunState.RUNNING and cond(resumed.status, "Suspended").status == "False"


def test_complete_deletes_running_attempts_of_rounds_the_spec_no_longer_has():
    draft = Draft(observe(attempts=[attempt(2, Phase.GENERATE), attempt(1, Phase.TRAIN)]), T0)
    complete(draft, make_spec())
    assert draft.status.state == RunState.SUCCEEDED and draft.status.current_iteration == 1
    assert [a for a in draft.actions if isinstance(a, DeletePhaseJob)] == [DeletePhaseJob(attempt(2, Phase.GENERATE).name)]
