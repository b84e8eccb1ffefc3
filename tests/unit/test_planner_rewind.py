"""planner/rewind.py: the first start, startIteration rewinds and extending a finished run."""

from __future__ import annotations

from dataclasses import replace

from sail_api.phases import Phase
from sail_api.status import (
    CheckpointStatus,
    ConditionType,
    IterationRecord,
    PhaseRecord,
    Reason,
    RunState,
    SAILRunStatus,
)
from sail_operator.planner.draft import Draft
from sail_operator.planner.model import DeletePhaseJob, EmitEvent
from sail_operator.planner.rewind import (
    compute_checkpoint_before,
    extend,
    find_dropped_attempts,
    rewind,
    start,
    wants_extension,
    wants_rewind,
)
from tests.unit.test_planner_decide import ROOT, T0, done, make_spec, observe

G, A, M, T = Phase.GENERATE, Phase.ANNOTATE, Phase.MIXUP, Phase.TRAIN


def test_a_rewind_is_wanted_once_per_generation_that_carries_start_iteration():
    spec = make_spec(sail={"rounds": 3}, startIteration=2)
    assert wants_rewind(observe(spec, SAILRunStatus(observed_generation=1), generation=2), spec)
    assert not wants_rewind(observe(spec, SAILRunStatus(observed_generation=2), generation=2), spec)
    assert not wants_rewind(observe(make_spec(), SAILRunStatus(observed_generation=1), generation=2), make_spec())


def test_only_a_succeeded_run_with_more_rounds_or_a_new_start_iteration_extends():
    finished = SAILRunStatus(state=RunState.SUCCEEDED, current_iteration=1, observed_generation=1)
    more = make_spec(sail={"rounds": 2})
    assert wants_extension(observe(more, finished, generation=2), more)
    assert not wants_extension(observe(make_spec(), finished, generation=2), make_spec())
    rewound = make_spec(startIteration=1)
    assert wants_extension(observe(rewound, finished, generation=2), rewound)
    running = replace(observe(more, finished, generation=2), status=finished.model_copy(update={"state": "Running"}))
    assert not wants_extension(running, more)


def test_a_rewind_drops_our_attempts_from_the_first_phase_of_the_iteration_on():
    attempts = (done(1, T), done(2, G), replace(done(2, A), owned=False), done(3, M))
    assert find_dropped_attempts(attempts, 2) == [done(2, G).name, done(3, M).name]
    assert find_dropped_attempts(attempts, 4) == []


def test_the_checkpoint_before_an_iteration_is_the_model_of_the_one_before():
    older = CheckpointStatus(uri="s3://x/m0", iteration=0, time=None)
    assert compute_checkpoint_before(ROOT, 2, older) is older  # already older: kept
    newer = CheckpointStatus(uri="s3://x/m3", iteration=3, time=None)
    before = compute_checkpoint_before(ROOT, 2, newer)
    assert (before.iteration, before.uri) == (1, f"{ROOT}/iter-001/train/model")
    same = CheckpointStatus(uri="s3://x/m2", iteration=2, time=None)  # the model the rewind redoes
    assert compute_checkpoint_before(ROOT, 2, same).iteration == 1
    assert compute_checkpoint_before(ROOT, 0, newer) is None
    assert compute_checkpoint_before(None, 2, newer) is None


def history(*iterations: int) -> list[IterationRecord]:
    return [IterationRecord(iteration=i, phases=[PhaseRecord(phase="train", result="Succeeded", attempts=1)])
            for i in iterations]


def test_rewind_trims_history_deletes_dropped_jobs_and_moves_the_cursor():
    spec = make_spec(sail={"rounds": 3})
    status = SAILRunStatus(state=RunState.RETRYING, current_iteration=3, current_phase="mixup",
                           iterations=history(0, 1, 2), backoff_until="2026-11-25T10:10:00Z")
    draft = Draft(observe(spec, status, attempts=[done(1, T), done(2, G)]), T0)
    rewind(draft, spec, 2)
    assert [r.iteration for r in draft.status.iterations] == [0, 1]
    assert (draft.status.current_iteration, draft.status.current_phase) == (2, "generate")
    assert draft.status.backoff_until is None and draft.status.state == RunState.RUNNING
    assert draft.dropped == {done(2, G).name} and DeletePhaseJob(done(2, G).name) in draft.actions
    assert draft.status.checkpoint.iteration == 1
    assert EmitEvent("Normal", Reason.REWOUND, "rewound to iteration 2 (spec.startIteration)") in draft.actions


def test_a_new_run_with_start_iteration_starts_there_with_the_checkpoint_before():
    spec = make_spec(sail={"rounds": 3}, startIteration=2)
    draft = Draft(observe(spec), T0)
    start(draft, spec)
    assert (draft.status.current_iteration, draft.status.current_phase) == (2, "generate")
    assert draft.status.checkpoint.uri == f"{ROOT}/iter-001/train/model"
    plain = Draft(observe(make_spec()), T0)
    start(plain, make_spec())
    assert (plain.status.current_iteration, plain.status.current_phase, plain.actions) == (0, "mixup", [])


def test_extending_reopens_at_the_first_phase_of_the_first_new_round():
    spec = make_spec(sail={"rounds": 3})
    finished = SAILRunStatus(state=RunState.SUCCEEDED, current_iteration=1, observed_generation=1)
    draft = Draft(observe(spec, finished, generation=2), T0)
    extend(draft, spec)
    assert (draft.status.state, draft.status.current_iteration, draft.status.current_phase) == \
        (RunState.RUNNING, 2, "generate")
    complete = next(c for c in draft.status.conditions if c.type == ConditionType.COMPLETE)
    assert (complete.status, complete.reason) == ("False", "Extended")
