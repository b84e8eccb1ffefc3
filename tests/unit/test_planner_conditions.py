"""planner/conditions.py: upsert rules (transition time moves only on a flip) and the base set. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sail_api.status import ConditionType, Reason, SAILRunStatus
from sail_operator.planner.conditions import (
    BASE_CONDITIONS,
    add_base_conditions,
    condition_is,
    find_condition,
    set_condition,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
RUNNING = ConditionType.RUNNING


def test_a_new_condition_is_appended_with_now_as_its_transition_time():
    [cond] = set_condition([], RUNNING, "True", "PhaseStarted", "go", 3, T0)
    assert (cond.type, cond.status, cond.reason, cond.message) == (RUNNING, "True", "PhaseStarted", "go")
    assert (cond.observed_generation, cond.last_transition_time) == (3, "2026-11-25T10:00:00Z")


def test_same_status_keeps_the_transition_time_but_takes_the_new_reason_and_message():
    first = set_condition([], RUNNING, "True", "PhaseStarted", "a", 1, T0)
    [cond] = set_condition(first, RUNNING, "True", "Other", "b", 2, T1)
    assert (cond.reason, cond.message, cond.observed_generation) == ("Other", "b", 2)
    assert cond.last_transition_time == "2026-11-25T10:00:00Z"


def test_a_flip_moves_the_transition_time_and_leaves_the_others_and_the_input_alone():
    first = set_condition([], ConditionType.VALIDATED, "True", "SpecValid", "", 1, T0)
    first = set_condition(first, RUNNING, "True", "PhaseStarted", "", 1, T0)
    flipped = set_condition(first, RUNNING, "False", "Waiting", "", 1, T1)
    assert [c.type for c in flipped] == [ConditionType.VALIDATED, RUNNING]  # order kept
    assert flipped[1].last_transition_time == "2026-11-25T10:05:00Z"
    assert flipped[0] == first[0]
    assert first[1].status == "True"  # the input list is not changed


def test_base_conditions_are_added_false_once_and_present_ones_are_kept():
    kept = set_condition([], RUNNING, "True", "PhaseStarted", "x", 1, T0)
    out = add_base_conditions(kept, 1, T1)
    assert [c.type for c in out] == list(BASE_CONDITIONS)
    assert out[0] == kept[0]
    by_type = {c.type: c for c in out}
    assert by_type[ConditionType.CHECKPOINT_AVAILABLE].reason == Reason.NO_CHECKPOINT
    assert by_type[ConditionType.FAILED].status == "False" and by_type[ConditionType.FAILED].reason == Reason.WAITING
    assert add_base_conditions(out, 2, T1) == out  # idempotent


def test_find_and_is_read_one_condition():
    status = SAILRunStatus(conditions=set_condition([], RUNNING, "False", "Waiting", "", 1, T0))
    assert find_condition(status, RUNNING).reason == "Waiting"
    assert find_condition(status, ConditionType.FAILED) is None
    assert condition_is(status, RUNNING, "False") and not condition_is(status, RUNNING)
    assert not condition_is(status, ConditionType.FAILED, "False")
