"""The planner on what a real cluster shows (issue 14): a re-created run meeting its
predecessor's Jobs, refused creates, refused edits, raised rounds on a finished run.

Pure: `decide` over hand-built observations (helpers shared with test_planner_decide.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sail_api.phases import Phase
from sail_api.status import RunState
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptState,
    DeletePhaseJob,
    FailureCause,
    RequeueAfter,
    build_job_name,
)
from tests.unit.test_planner_decide import (
    RUN,
    T0,
    attempt,
    cond,
    events,
    make_spec,
    observe,
    play,
    started,
)


def test_a_collected_predecessor_job_makes_the_run_wait_with_one_event_then_start():
    held = replace(attempt(0, Phase.MIXUP), owned=False)  # names another (deleted) SAILRun's UID
    first = decide(observe(attempts=[held]), T0)
    assert first.creates == () and first.status.state == RunState.PENDING
    assert cond(first.status, "Running").reason == "WaitingForOldJob"
    assert [e.reason for e in events(first)] == ["WaitingForOldJob"]
    assert any(isinstance(a, RequeueAfter) for a in first.actions)
    again = decide(observe(status=first.status, attempts=[held]), T0 + timedelta(seconds=2))
    assert again.creates == () and events(again) == []  # one event, not one per reconcile
    gone = decide(observe(status=again.status), T0 + timedelta(seconds=4))
    assert [c.name for c in gone.creates] == [build_job_name(RUN, 0, Phase.MIXUP, 1)]
    assert gone.status.restarts.app == gone.status.restarts.infra == 0


def test_an_orphaned_predecessor_job_is_left_alone_and_its_name_skipped():
    orphan = replace(attempt(0, Phase.MIXUP, state=attempt(0, Phase.MIXUP).state), owned=False, orphaned=True)
    decision = decide(observe(attempts=[orphan]), T0)
    assert [c.name for c in decision.creates] == [build_job_name(RUN, 0, Phase.MIXUP, 2)]
    assert decision.status.current.attempt == 2
    assert "orphaned" in " ".join(e.message for e in events(decision))


def test_a_spec_configmap_still_owned_by_the_predecessor_blocks_creation():
    decision = decide(replace(observe(), blocked_by=f"ConfigMap {RUN}-spec"), T0)
    assert decision.creates == () and cond(decision.status, "Running").reason == "WaitingForOldJob"
    assert f"ConfigMap {RUN}-spec" in decision.status.message


def test_a_create_the_api_server_refuses_fails_the_run_once_without_spending_budget():
    recorded = started()
    decision = decide(replace(observe(status=recorded), create_refusal="queueName: Invalid value"), T0)
    status = decision.status
    assert status.state == RunState.FAILED and "Invalid value" in status.message
    assert (cond(status, "Failed").reason, cond(status, "Validated").status) == ("RefusedByApiServer", "False")
    assert status.restarts.app == status.restarts.infra == 0 and decision.creates == ()
    assert [e.reason for e in events(decision)] == ["RefusedByApiServer"]
    quiet = decide(observe(status=status), T0 + timedelta(seconds=5))  # same generation: no loop
    assert quiet.creates == () and events(quiet) == [] and quiet.status.state == RunState.FAILED
    edited = decide(observe(status=quiet.status, generation=2), T0 + timedelta(minutes=1))
    assert [c.attempt for c in edited.creates] == [1] and edited.status.state == RunState.RUNNING


def test_an_edit_of_a_pinned_field_is_refused_naming_it_once_and_the_run_goes_on():
    status, running = started(), [attempt(0, Phase.MIXUP)]
    change = ("spec.sail.alpha: 0.25 -> 0.5",)
    first = decide(replace(observe(status=status, attempts=running, generation=2), pinned_changes=change), T0)
    validated = cond(first.status, "Validated")
    assert (validated.status, validated.reason) == ("False", "EditRefused") and "spec.sail.alpha" in validated.message
    assert [e.reason for e in events(first) if e.type == "Warning"] == ["EditRefused"]
    assert first.status.state == RunState.RUNNING and first.status.observed_generation == 2
    again = decide(replace(observe(status=first.status, attempts=running, generation=2), pinned_changes=change), T0)
    assert [e for e in events(again) if e.reason == "EditRefused"] == []
    reverted = decide(observe(status=again.status, attempts=running, generation=3), T0)
    assert cond(reverted.status, "Validated").status == "True"


def test_raising_rounds_on_a_succeeded_run_extends_it_from_the_next_round():
    status, _ = play(make_spec(sail={"rounds": 1}))
    assert status.state == RunState.SUCCEEDED
    decision = decide(observe(make_spec(sail={"rounds": 2}), status, generation=2), T0)
    assert [(c.iteration, c.phase) for c in decision.creates] == [(2, Phase.GENERATE)]
    assert decision.status.state == RunState.RUNNING and cond(decision.status, "Complete").status == "False"
    assert "Extended" in [e.reason for e in events(decision)]
    finished, _ = play(make_spec(sail={"rounds": 2}))
    assert decide(observe(make_spec(sail={"rounds": 2}), finished), T0).creates == ()  # same rounds: stays done


def test_a_recorded_attempt_whose_job_vanished_is_recreated_under_its_name_with_a_warning():
    recorded = started()  # attempt 1 of step-0 mixup recorded; its Job is gone
    decision = decide(observe(status=recorded), T0 + timedelta(seconds=30))
    assert [c.name for c in decision.creates] == [build_job_name(RUN, 0, Phase.MIXUP, 1)]
    assert "JobRecreated" in [e.reason for e in events(decision) if e.type == "Warning"]


def test_a_failed_attempt_is_deleted_once_its_cause_is_recorded_and_the_retry_still_comes():
    recorded = started()
    failure = attempt(0, Phase.MIXUP, state=AttemptState.FAILED, cause=FailureCause.INFRA, message="evicted")
    first = decide(observe(status=recorded, attempts=[failure]), T0)
    assert "evicted" in first.status.message and first.status.restarts.infra == 1
    assert DeletePhaseJob(name=failure.name) in first.actions
    retry = decide(observe(status=first.status), T0 + timedelta(hours=1))  # the Job is gone
    assert [c.attempt for c in retry.creates] == [2] and retry.status.restarts.infra == 1
    assert "JobRecreated" not in [e.reason for e in events(retry)]


def test_an_edit_of_a_pinned_field_on_a_finished_run_is_refused_too():
    finished, _ = play(make_spec())
    decision = decide(replace(observe(status=finished, generation=2), pinned_changes=("spec.sail.beta: 5000 -> 2",)), T0)
    assert decision.status.state == RunState.SUCCEEDED
    assert cond(decision.status, "Validated").reason == "EditRefused" and decision.status.observed_generation == 2
