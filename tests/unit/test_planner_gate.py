"""The round gate (spec.roundGate): table cases read as sentences, whole runs played by a perfect executor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sail_api.phases import Phase, PhaseSummary
from sail_api.spec import RoundGateSpec, SAILRunSpec
from sail_api.status import BestCheckpointStatus, RunState, SAILRunStatus
from sail_operator.planner.gate import judge_iteration
from sail_operator.planner.model import (
    CreatePhaseJob,
    EmitEvent,
)
from tests.builders.planner_play import play_to_end
from tests.builders.sailrun_spec import build_spec

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
ROOT = "s3://bucket/runs/demo"
METRIC = "heldout_accuracy_vs_base"


def make_spec(rounds: int = 3, gate: dict | None = None) -> SAILRunSpec:
    return build_spec(storage=ROOT, sail={"rounds": rounds}, roundGate=gate)


def play(spec: SAILRunSpec, accuracy: dict[int, float | None]) -> tuple[SAILRunStatus, list[str], list[EmitEvent]]:
    """Run to the end; train of iteration i reports `accuracy[i]` (None: no held-out metric)."""
    def summary_of(action: CreatePhaseJob) -> PhaseSummary:
        value = accuracy.get(action.iteration) if action.phase is Phase.TRAIN else None
        metrics = {"loss": 0.5} | ({METRIC: value} if value is not None else {})
        return PhaseSummary(phase=action.phase, iteration=action.iteration, outcome="committed",
                            manifest_uri=f"{ROOT}/iter-{action.iteration:03d}/x", metrics=metrics)

    status, created, events = play_to_end(spec, summary_of, now=T0, max_decisions=100)
    return status, [f"{a.iteration}/{a.phase.value}" for a in created], events


def cond(status: SAILRunStatus, type_: str):
    return next((c for c in status.conditions if c.type == type_), None)


def test_without_a_gate_every_round_runs_even_when_it_regresses():
    status, created, _ = play(make_spec(), {0: 0.8, 1: 0.5, 2: 0.4, 3: 0.3})
    assert "3/train" in created and status.best_checkpoint is None and cond(status, "RoundAccepted") is None


def test_a_round_that_regresses_beyond_the_tolerance_stops_the_run_with_the_best_checkpoint():
    status, created, events = play(make_spec(gate={}), {0: 0.70, 1: 0.78, 2: 0.60, 3: 0.9})
    assert created[-1] == "2/train" and "3/generate" not in created, "no Job after the regressed round"
    assert status.state == RunState.SUCCEEDED and status.progress.percent == 100
    assert status.best_checkpoint.iteration == 1 and status.best_checkpoint.value == 0.78
    assert status.best_checkpoint.uri == f"{ROOT}/iter-001/train/model"
    accepted = cond(status, "RoundAccepted")
    assert (accepted.status, accepted.reason) == ("False", "RoundRegressed")
    assert f"{METRIC} fell to 0.6, 0.18 below iteration 1's 0.78 (tolerance 0.02)" in accepted.message
    assert cond(status, "Complete").reason == "StoppedOnRegression"
    warning = [e for e in events if e.reason == "RoundRegressed"]
    assert len(warning) == 1 and warning[0].type == "Warning" and "best checkpoint: iteration 1" in warning[0].message


def test_a_drop_within_the_tolerance_is_accepted():
    status, created, _ = play(make_spec(rounds=2, gate={"tolerance": 0.05}), {0: 0.70, 1: 0.74, 2: 0.70})
    assert "2/train" in created and cond(status, "Complete").reason == "RunComplete"
    assert cond(status, "RoundAccepted").status == "True" and status.best_checkpoint.iteration == 1


def test_continue_records_the_regression_and_runs_every_round():
    status, created, events = play(make_spec(rounds=2, gate={"onRegression": "continue"}), {0: 0.8, 1: 0.6, 2: 0.7})
    assert "2/train" in created and cond(status, "Complete").reason == "RunComplete"
    assert status.best_checkpoint.iteration == 0
    assert [e.message.endswith("continuing (roundGate.onRegression: continue)") for e in events
            if e.reason == "RoundRegressed"] == [True, True]


def test_a_run_without_heldout_metrics_is_never_stopped_and_says_the_gate_cannot_judge():
    status, created, events = play(make_spec(rounds=1, gate={}), {})
    assert "1/train" in created and status.best_checkpoint is None
    assert cond(status, "RoundAccepted").status == "Unknown"
    assert any("cannot judge" in e.message and e.type == "Warning" for e in events)


@pytest.mark.parametrize(("best", "value", "regressed", "best_iteration"), [
    (0.8, 0.79, False, 0), (0.8, 0.77, True, 0), (0.8, 0.85, False, 2), (0.8, 0.8, False, 0)],
    ids=["small drop accepted", "big drop regressed", "improvement is the new best", "tie keeps the earlier"])
def test_judge_iteration(best, value, regressed, best_iteration):
    previous = BestCheckpointStatus(uri="u", iteration=0, metric=METRIC, value=best)
    verdict = judge_iteration(RoundGateSpec(tolerance=0.02), 2, {METRIC: value}, previous)
    assert (verdict.regressed, verdict.best_iteration) == (regressed, best_iteration)
