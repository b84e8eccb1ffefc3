"""planner/success.py: a succeeded attempt's record, metrics, checkpoint and the cursor moving on."""

from __future__ import annotations

from dataclasses import replace

from sail_api.phases import Phase, PhaseSummary
from sail_api.spec import RoundGateSpec
from sail_api.status import BestCheckpointStatus, PhaseRecord, RunState, SAILRunStatus
from sail_operator.planner.draft import Draft
from sail_operator.planner.model import DeletePhaseJob, RequeueAfter
from sail_operator.planner.steps import Step
from sail_operator.planner.success import (
    SUMMARY_WAIT_SECONDS,
    apply_round_gate,
    compute_manifest_uri,
    compute_phase_metrics,
    find_checkpoint_uri,
    record_success,
)
from tests.unit.test_planner_decide import ROOT, T0, done, make_spec, observe, summary


def shard(k: int, **metrics: float) -> PhaseSummary:
    return PhaseSummary(phase=Phase.GENERATE, iteration=1, shard=f"{k}/2", outcome="committed",
                        manifest_uri=f"{ROOT}/iter-001/generate/shard-{k:05d}-of-00002/_SUCCESS.json",
                        metrics=metrics)


def test_metrics_are_the_mean_over_the_shards_that_reported_each():
    assert compute_phase_metrics((shard(0, images=1.0, fails=2.0), shard(1, images=3.0))) == {
        "fails": 2.0, "images": 2.0}
    assert compute_phase_metrics(()) == {}


def test_the_manifest_is_the_one_file_or_the_phase_folder_of_several_shards():
    assert compute_manifest_uri(()) is None
    one = summary(0, Phase.TRAIN)
    assert compute_manifest_uri((one,)) == one.manifest_uri
    assert compute_manifest_uri((shard(1), shard(0))) == f"{ROOT}/iter-001/generate"


def test_the_checkpoint_is_what_the_train_summary_names_else_the_layouts_model_folder():
    named = (summary(2, Phase.TRAIN, extra={"model_uri": "s3://elsewhere/m"}),)
    assert find_checkpoint_uri(named, ROOT, 2) == "s3://elsewhere/m"
    assert find_checkpoint_uri((summary(2, Phase.TRAIN),), ROOT, 2) == f"{ROOT}/iter-002/train/model"
    assert find_checkpoint_uri((summary(2, Phase.TRAIN),), None, 2) is None


def test_no_summary_yet_waits_and_records_nothing():
    obs = replace(done(0, Phase.MIXUP), summaries=())
    draft = Draft(observe(attempts=[obs]), T0)
    assert not record_success(draft, make_spec(), Step(0, Phase.MIXUP), obs)
    assert draft.actions == [RequeueAfter(seconds=SUMMARY_WAIT_SECONDS)] and draft.status.iterations == []


def test_a_success_is_recorded_its_job_deleted_and_the_cursor_moves_on():
    status = SAILRunStatus(current_iteration=0, current_phase="train")
    obs = done(0, Phase.TRAIN, metrics={"loss": 0.5})
    draft = Draft(observe(status=status, attempts=[obs]), T0)
    assert record_success(draft, make_spec(), Step(0, Phase.TRAIN), obs)
    [record] = draft.status.iterations[0].phases
    assert (record.result, record.metrics, record.duration_seconds) == ("Succeeded", {"loss": 0.5}, 10.0)
    assert draft.status.checkpoint.iteration == 0
    assert DeletePhaseJob(name=obs.name) in draft.actions
    assert (draft.status.current_iteration, draft.status.current_phase) == (1, "generate")


def test_a_regressed_round_stops_the_run_on_its_best_checkpoint():
    gate = RoundGateSpec(metric="heldout_margin_vs_base", tolerance=0.1)
    best = BestCheckpointStatus(uri=f"{ROOT}/iter-000/train/model", iteration=0, metric=gate.metric, value=0.5)
    status = SAILRunStatus(state=RunState.RUNNING, best_checkpoint=best)
    draft = Draft(observe(status=status), T0)
    record = PhaseRecord(phase="train", result="Succeeded", attempts=1, metrics={gate.metric: 0.2})
    assert apply_round_gate(draft, gate, 1, record)
    assert (draft.status.state, draft.status.current_iteration) == (RunState.SUCCEEDED, 1)
    assert "best checkpoint: iteration 0" in draft.status.message
    kept = Draft(observe(status=status), T0)
    fine = PhaseRecord(phase="train", result="Succeeded", attempts=1, metrics={gate.metric: 0.45})
    assert not apply_round_gate(kept, gate, 1, fine) and kept.status.state == RunState.RUNNING
