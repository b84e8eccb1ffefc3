"""The seam both executors share: one exit-code table, one attempt type, one time module, one apply()."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sail_api.phases import ExitCode, Phase, PhaseSummary
from sail_api.status import SAILRunStatus
from sail_operator.kube.observe import classify_failure
from sail_operator.local.state import LocalState
from sail_operator.local.supervisor import ShardProcess, judge_shard
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CheckpointUri,
    CreatePhaseJob,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    FailureCause,
    RequeueAfter,
    compute_failure_cause,
)
from sail_operator.planner.port import apply, requeue_seconds
from sail_operator.planner.timefmt import format_time, parse_time

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FAILED_JOB = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                         "message": ""}]}}


def _pod(exit_code: int) -> dict:
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]}}


def _local_cause(code: int, tmp_path: Path) -> FailureCause | None:
    shard = ShardProcess(index=0, process=None, summary_path=tmp_path / "s.json", log_path=tmp_path / "l.log")  # type: ignore[arg-type]
    summary = PhaseSummary(phase=Phase.MIXUP, iteration=0, outcome="committed")
    verdict = judge_shard(shard, code, summary)
    return None if verdict is None else verdict[0]


# ------------------------------------------------------------------ exit codes


@pytest.mark.parametrize("code", [ExitCode.FAILURE, ExitCode.BAD_SPEC, ExitCode.BAD_DATA, ExitCode.TRANSIENT, 2, 137])
def test_both_executors_map_an_exit_code_to_the_same_budget(code, tmp_path):
    """A shard process (local) and a terminated container (kube) with the same code spend the same budget."""
    kube_cause, _ = classify_failure(FAILED_JOB, [_pod(int(code))])
    assert _local_cause(int(code), tmp_path) is kube_cause is compute_failure_cause(int(code))


def test_the_one_table_names_each_trainer_code():
    assert compute_failure_cause(ExitCode.OK) is None
    assert {compute_failure_cause(c) for c in (ExitCode.BAD_SPEC, ExitCode.BAD_DATA)} == {FailureCause.NON_RETRYABLE}
    assert compute_failure_cause(ExitCode.TRANSIENT) is FailureCause.INFRA
    assert compute_failure_cause(ExitCode.FAILURE) is FailureCause.APP


# ------------------------------------------------------------------ the attempt type


def test_an_attempt_keeps_its_state_file_keys_and_computes_its_durations():
    attempt = AttemptObservation(name="r-i000-mixup-a1", iteration=0, phase=Phase.MIXUP, attempt=1,
                                 state=AttemptState.SUCCEEDED, created_at=T0, started_at=T0 + timedelta(seconds=3),
                                 finished_at=T0 + timedelta(seconds=10), shards=2)
    assert (attempt.queue_wait_seconds, attempt.duration_seconds) == (3.0, 7.0)
    state = LocalState(name="r", storage_uri="/r", attempts={attempt.name: attempt})
    text = state.model_dump_json(by_alias=True)
    assert '"createdAt"' in text and '"finishedAt"' in text
    assert LocalState.model_validate_json(text).attempts[attempt.name] == attempt


def test_a_state_file_written_before_the_one_attempt_type_still_reads():
    """The keys the old local AttemptRecord wrote (no owned/orphaned) load into AttemptObservation."""
    old = ('{"name": "r", "storageUri": "/r", "attempts": {"a": {"name": "a", "iteration": 0, "phase": "mixup", '
           '"attempt": 1, "shards": null, "state": "failed", "cause": "app", "message": "boom", "summaries": [], '
           '"createdAt": "2026-11-25T10:00:00Z", "startedAt": null, "finishedAt": "2026-11-25T10:01:00Z"}}}')
    attempt = LocalState.model_validate_json(old).attempts["a"]
    assert attempt.cause is FailureCause.APP and attempt.finished_at == T0 + timedelta(minutes=1)
    assert attempt.finished and attempt.duration_seconds is None


def test_an_unfinished_attempt_has_no_duration():
    running = AttemptObservation(name="a", iteration=0, phase=Phase.MIXUP, attempt=1, state=AttemptState.RUNNING,
                                 created_at=T0)
    assert running.duration_seconds is None and running.queue_wait_seconds is None and not running.finished


def test_the_checkpoint_is_typed_and_read_from_the_train_summary():
    summaries = (PhaseSummary(phase=Phase.TRAIN, iteration=1, outcome="committed"),
                 PhaseSummary(phase=Phase.TRAIN, iteration=1, outcome="committed",
                              extra={"model_uri": "s3://b/r/iter-001/train/model"}))
    attempt = AttemptObservation(name="a", iteration=1, phase=Phase.TRAIN, attempt=1, state=AttemptState.SUCCEEDED,
                                 summaries=summaries)
    assert attempt.checkpoint == CheckpointUri("s3://b/r/iter-001/train/model")
    assert str(attempt.checkpoint) == "s3://b/r/iter-001/train/model"
    assert CheckpointUri.from_summaries(summaries[:1]) is None


# ------------------------------------------------------------------ time


def test_times_round_trip_and_unreadable_ones_are_none():
    assert format_time(T0) == "2026-11-25T10:00:00Z"
    assert parse_time(format_time(T0)) == T0
    assert parse_time("2026-11-25T10:00:00.5+00:00") == T0 + timedelta(seconds=0.5)
    assert parse_time("2026-11-25T10:00:00") == T0  # no offset: UTC
    assert format_time(datetime(2026, 11, 25, 10, 0)) == "2026-11-25T10:00:00Z"  # naive: UTC
    for bad in (None, "", "yesterday", 5):
        assert parse_time(bad) is None


# ------------------------------------------------------------------ apply


class RecordingPort:
    """The executor port as a list of what was asked of it (no executor behind it)."""

    def __init__(self, create_ok: bool = True) -> None:
        self.calls: deque[tuple] = deque()
        self.create_ok = create_ok

    def create(self, action: CreatePhaseJob) -> bool:
        self.calls.append(("create", action.name))
        return self.create_ok

    def delete(self, name: str) -> None:
        self.calls.append(("delete", name))

    def emit(self, event: EmitEvent) -> None:
        self.calls.append(("emit", event.reason))

    def requeue(self, seconds: float) -> None:
        self.calls.append(("requeue", seconds))


def _decision() -> Decision:
    return Decision(status=SAILRunStatus(), actions=(
        DeletePhaseJob("r-i000-mixup-a1"),
        CreatePhaseJob("r-i000-train-a1", 0, Phase.TRAIN, 1),
        EmitEvent("Normal", "PhaseStarted", "train"),
        RequeueAfter(2),
    ))


def test_apply_performs_the_actions_in_order_on_the_port():
    port = RecordingPort()
    apply(_decision(), port)
    assert list(port.calls) == [("delete", "r-i000-mixup-a1"), ("create", "r-i000-train-a1"),
                                ("emit", "PhaseStarted"), ("requeue", 2.0)]


def test_a_create_the_port_cannot_do_stops_the_rest_of_the_decision():
    port = RecordingPort(create_ok=False)
    apply(_decision(), port)
    assert list(port.calls) == [("delete", "r-i000-mixup-a1"), ("create", "r-i000-train-a1")]


def test_the_shortest_requeue_wins():
    decision = Decision(status=SAILRunStatus(), actions=(RequeueAfter(5), RequeueAfter(1.5)))
    assert requeue_seconds(decision) == 1.5
    assert requeue_seconds(Decision(status=SAILRunStatus())) is None
