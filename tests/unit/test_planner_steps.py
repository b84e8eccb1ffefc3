"""planner/steps.py: the plan, the order of its steps, the cursor and the step after it. Pure."""

from __future__ import annotations

import pytest

from sail_api.phases import Phase
from sail_api.status import SAILRunStatus
from sail_operator.planner.steps import (
    Step,
    build_plan,
    compute_nodes,
    compute_phase_order,
    compute_shards,
    compute_step_index,
    compute_total_phases,
    first_step,
    next_step,
    read_cursor,
)
from tests.builders.sailrun_spec import build_spec

G, A, M, T = Phase.GENERATE, Phase.ANNOTATE, Phase.MIXUP, Phase.TRAIN


def test_the_plan_is_step_0_then_every_round_in_paper_order():
    assert build_plan(1) == (Step(0, M), Step(0, T), Step(1, G), Step(1, A), Step(1, M), Step(1, T))
    assert [compute_total_phases(k) for k in (0, 1, 3)] == [2, 6, 14]


def test_steps_are_ordered_by_the_plan_not_by_phase_name():
    plan = build_plan(2)
    assert sorted(reversed(plan)) == list(plan)
    assert Step(1, Phase.GENERATE) < Step(1, Phase.ANNOTATE) < Step(1, Phase.MIXUP) < Step(2, Phase.GENERATE)
    assert Step(0, Phase.TRAIN) >= Step(0, Phase.MIXUP)


@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_walking_next_step_from_the_first_visits_the_plan_and_the_index_is_the_position(rounds):
    plan = build_plan(rounds)
    walked = [first_step(0)]
    while len(walked) < len(plan):
        walked.append(next_step(walked[-1]))
    assert tuple(walked) == plan
    assert [compute_step_index(s) for s in plan] == list(range(len(plan)))


def test_the_step_after_a_train_is_the_first_phase_of_the_next_round():
    assert next_step(Step(0, T)) == Step(1, G)
    assert next_step(Step(2, T)) == Step(3, G)
    assert next_step(Step(2, A)) == Step(2, M)
    assert first_step(0) == Step(0, M) and first_step(4) == Step(4, G)


def test_the_cursor_is_read_from_status_and_absent_before_start_and_after_the_end():
    assert read_cursor(SAILRunStatus()) is None
    assert read_cursor(SAILRunStatus(current_iteration=2, current_phase=None)) is None
    assert read_cursor(SAILRunStatus(current_iteration=2, current_phase="annotate")) == Step(2, A)


def test_an_iterations_history_order_follows_its_phases():
    assert compute_phase_order(0) == {"mixup": 0, "train": 1, "evaluate": 2}
    assert compute_phase_order(3) == {"generate": 0, "annotate": 1, "mixup": 2, "train": 3, "evaluate": 4}


def test_only_sampling_phases_are_sharded_and_only_train_spans_nodes():
    spec = build_spec(parallelism={"generateShards": 3, "annotateShards": 2, "trainNodes": 4})
    assert [compute_shards(spec, p) for p in (G, A, M, T)] == [3, 2, None, None]
    assert [compute_nodes(spec, p) for p in (G, A, M, T)] == [1, 1, 1, 4]
