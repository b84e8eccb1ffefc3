"""A succeeded attempt: its record (times, metrics, manifest), the checkpoint a train commits,
the round gate's verdict on it, and the cursor moving on.

- A finished Job whose termination messages are not read yet is not a success yet: look
  again in SUMMARY_WAIT_SECONDS.
- Metrics of a sharded phase are the mean over the shards that reported; the manifest URI
  is the one `_SUCCESS.json`, or for several shards the phase folder that holds theirs.
- The checkpoint is the folder the trainer's train summary names (``model_uri``), else the
  run layout's model folder of that iteration.
- ``spec.roundGate`` (opt-in, `gate.py` judges): a regressed round stops the run as
  ``Succeeded`` (reason ``StoppedOnRegression``) with ``status.bestCheckpoint``, or is only
  flagged (``onRegression: continue``).
"""

from __future__ import annotations

from sail_api.layout import RunLayout
from sail_api.phases import Phase, PhaseSummary
from sail_api.spec import RoundGateSpec, SAILRunSpec
from sail_api.status import (
    BestCheckpointStatus,
    CheckpointStatus,
    ConditionType,
    PhaseRecord,
    Reason,
    RunState,
)
from sail_operator.planner.draft import NORMAL, WARNING, Draft
from sail_operator.planner.gate import GateVerdict, is_new_best, judge_iteration, judge_scorers
from sail_operator.planner.model import AttemptObservation, CheckpointUri, DeletePhaseJob, RequeueAfter
from sail_operator.planner.steps import Step, next_step
from sail_operator.planner.timefmt import format_time

SUMMARY_WAIT_SECONDS = 5.0  # a finished Job whose termination messages are not read yet: look again soon


def compute_phase_metrics(summaries: tuple[PhaseSummary, ...]) -> dict[str, float]:
    """Mean of each metric over the shards that reported it (one shard: its metrics)."""
    sums: dict[str, list[float]] = {}
    for summary in summaries:
        for key, value in summary.metrics.items():
            sums.setdefault(key, []).append(float(value))
    return {key: sum(values) / len(values) for key, values in sorted(sums.items())}


def compute_manifest_uri(summaries: tuple[PhaseSummary, ...]) -> str | None:
    """The phase's _SUCCESS.json; for several shards, the phase folder that holds theirs."""
    uris = sorted(s.manifest_uri for s in summaries if s.manifest_uri)
    if not uris:
        return None
    if len(uris) == 1:
        return uris[0]
    return uris[0].rsplit("/", 2)[0]


def find_checkpoint_uri(summaries: tuple[PhaseSummary, ...], storage_uri: str | None, iteration: int) -> str | None:
    """The model folder a train committed: its summary's ``model_uri``, else the layout's."""
    named = CheckpointUri.from_summaries(summaries)
    uri = str(named) if named is not None else None
    if uri is None and storage_uri:
        uri = RunLayout(storage_uri).model_dir(iteration)
    return uri


def record_success(draft: Draft, spec: SAILRunSpec, step: Step, obs: AttemptObservation) -> bool:
    """Record a succeeded attempt; True when the cursor moved on (False: no summary yet, or gate stop)."""
    if not obs.summaries:
        draft.status.message = f"{obs.name} finished; waiting for its summary"
        draft.actions.append(RequeueAfter(seconds=SUMMARY_WAIT_SECONDS))
        return False
    record = draft.record(step.iteration, step.phase)
    record.result = "Succeeded"
    record.attempts = obs.attempt
    record.finished_at = format_time(obs.finished_at or draft.now)
    if obs.duration_seconds is not None:  # the attempt computes them, for both executors alike
        record.duration_seconds = max(0.0, obs.duration_seconds)
    if obs.queue_wait_seconds is not None:
        record.queue_wait_seconds = max(0.0, obs.queue_wait_seconds)
    record.manifest_uri = compute_manifest_uri(obs.summaries)
    record.metrics = compute_phase_metrics(obs.summaries)
    if step.phase is Phase.TRAIN:
        record_checkpoint(draft, spec, step.iteration, obs)
    draft.event(NORMAL, Reason.PHASE_SUCCEEDED, f"{obs.name} succeeded")
    draft.actions.append(DeletePhaseJob(name=obs.name))  # after its result is in status (written first)
    if step.phase is Phase.TRAIN and spec.round_gate is not None \
            and apply_round_gate(draft, spec.round_gate, step.iteration, record):
        return False  # stopped on a regression: the run is complete, its best checkpoint in status
    if step.phase is Phase.EVALUATE and spec.round_gate is not None \
            and apply_scorer_gate(draft, spec.round_gate, step.iteration, record):
        return False
    move_past(draft, step, spec.evaluation is not None)
    return True


def record_checkpoint(draft: Draft, spec: SAILRunSpec, iteration: int, obs: AttemptObservation) -> None:
    uri = find_checkpoint_uri(obs.summaries, spec.storage.uri, iteration)
    if uri is None:
        return
    draft.status.checkpoint = CheckpointStatus(uri=uri, iteration=iteration,
                                               time=format_time(obs.finished_at or draft.now))
    draft.cond(ConditionType.CHECKPOINT_AVAILABLE, "True", Reason.CHECKPOINT_COMMITTED, f"iteration {iteration}: {uri}")
    draft.event(NORMAL, Reason.CHECKPOINT_COMMITTED, f"checkpoint of iteration {iteration}: {uri}")


def move_past(draft: Draft, step: Step, evaluate: bool = False) -> None:
    """The cursor to the step after `step` (past the last round: `decide` completes the run)."""
    nxt = next_step(step, evaluate)
    draft.status.current_iteration = nxt.iteration
    draft.status.current_phase = nxt.phase.value
    draft.status.current = None
    draft.status.backoff_until = None


def apply_scorer_gate(draft: Draft, gate: RoundGateSpec, iteration: int, record: PhaseRecord) -> bool:
    """roundGate.scorers on an evaluate phase: acts only on a regression (True when the run stops);
    an accepted evaluate leaves the train phase's verdict on the round as it is."""
    verdict = judge_scorers(gate, iteration, record.metrics)
    return verdict is not None and _act_on_verdict(draft, gate, verdict)


def apply_round_gate(draft: Draft, gate: RoundGateSpec, iteration: int, record: PhaseRecord) -> bool:
    """spec.roundGate: best checkpoint, RoundAccepted condition; True when the run stops."""
    verdict = judge_iteration(gate, iteration, record.metrics, draft.status.best_checkpoint)
    if verdict is None:
        message = (f"iteration {iteration} reported no {gate.metric} (does the run hold out pairs? "
                   "sail.validation): the round gate cannot judge it")
        draft.cond(ConditionType.ROUND_ACCEPTED, "Unknown", Reason.ROUND_ACCEPTED, message)
        draft.event(WARNING, Reason.ROUND_ACCEPTED, message)
        return False
    if is_new_best(verdict) and draft.status.checkpoint is not None:
        draft.status.best_checkpoint = BestCheckpointStatus(
            **draft.status.checkpoint.model_dump(), metric=verdict.metric, value=verdict.value)
    return _act_on_verdict(draft, gate, verdict)


def _act_on_verdict(draft: Draft, gate: RoundGateSpec, verdict: GateVerdict) -> bool:
    """RoundAccepted and, on a regression, continue or stop as roundGate.onRegression says."""
    message = verdict.describe(gate.tolerance)
    if not verdict.regressed:
        draft.cond(ConditionType.ROUND_ACCEPTED, "True", Reason.ROUND_ACCEPTED, message)
        return False
    draft.cond(ConditionType.ROUND_ACCEPTED, "False", Reason.ROUND_REGRESSED, message)
    if gate.on_regression == "continue":
        draft.event(WARNING, Reason.ROUND_REGRESSED, f"{message}; continuing (roundGate.onRegression: continue)")
        return False
    stop_on_regression(draft, verdict, message)
    return True


def stop_on_regression(draft: Draft, verdict: GateVerdict, message: str) -> None:
    """The gate stops the run: Succeeded at the regressed iteration, its best checkpoint named."""
    best = draft.status.best_checkpoint
    where = f"iteration {best.iteration} ({best.uri})" if best else "none"
    draft.event(WARNING, Reason.ROUND_REGRESSED, f"{message}; stopping, best checkpoint: {where}")
    draft.status.state = RunState.SUCCEEDED
    draft.status.current, draft.status.current_phase, draft.status.backoff_until = None, None, None
    draft.status.current_iteration = verdict.iteration
    draft.status.message = f"stopped by the round gate after iteration {verdict.iteration}; best checkpoint: {where}"
    draft.cond(ConditionType.COMPLETE, "True", Reason.STOPPED_ON_REGRESSION, f"{message}; best checkpoint: {where}")
    for type_ in (ConditionType.RUNNING, ConditionType.RETRYING, ConditionType.SUSPENDED):
        draft.cond(type_, "False", Reason.STOPPED_ON_REGRESSION, "")
