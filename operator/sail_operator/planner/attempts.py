"""Attempts of the phase at the cursor: create one (recorded in status first), adopt one that
status lost, recreate a missing one, wait for a foreign one, and clean finished ones up.

- A Job with our name and another owner is never adopted. While it still names an owner
  (an earlier SAILRun of the same name, being garbage-collected) the run waits (Running=False,
  reason ``WaitingForOldJob``, one event); an orphaned one (no owner left: GC never removes
  it) is left alone and this run skips its attempt number.
- Status lagging behind the Jobs (a lost status write): the newer attempt is adopted, never
  created twice. A recorded attempt whose Job is missing is created again under the same
  name, after MISSING_GRACE_SECONDS (its creator may be about to POST it); at once where the
  executor sees every attempt there is (`Observed.attempts_complete`: `sail run` after a crash).
- Finished Jobs behind the cursor are deleted once their results are in status; a run that
  ends Failed keeps its last one for the user to inspect.
"""

from __future__ import annotations

from sail_api.spec import SAILRunSpec
from sail_api.status import TERMINAL_STATES, ConditionType, CurrentAttempt, Reason, RunState
from sail_operator.planner.conditions import find_condition
from sail_operator.planner.draft import NORMAL, WARNING, Draft
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    DeletePhaseJob,
    RequeueAfter,
    build_job_name,
)
from sail_operator.planner.retry import hold_backoff
from sail_operator.planner.steps import Step, compute_nodes, compute_shards
from sail_operator.planner.timefmt import format_time, parse_time

MISSING_GRACE_SECONDS = 10.0  # a recorded attempt's Job missing for less than this may still be on its way
GC_WAIT_SECONDS = 2.0  # garbage collection of a deleted run's children takes about a second
REASON_WAITING_FOR_OLD_JOB = "WaitingForOldJob"
REASON_JOB_RECREATED = "JobRecreated"


def may_create(draft: Draft, spec: SAILRunSpec) -> bool:
    return not spec.suspend and draft.status.state not in TERMINAL_STATES


def skip_orphaned(attempts: tuple[AttemptObservation, ...], step: Step, attempt: int) -> int:
    """Past the attempt numbers of orphaned foreign Jobs of this step (GC never removes those)."""
    taken = {o.attempt for o in attempts if o.orphaned and (o.iteration, o.phase) == (step.iteration, step.phase)}
    while attempt in taken:
        attempt += 1
    return attempt


def first_attempt(draft: Draft, step: Step) -> int:
    """1, or past the attempts a rewind is deleting (their names may linger while they go)."""
    numbers = [o.attempt for o in draft.observed.attempts
               if o.name in draft.dropped and (o.iteration, o.phase) == (step.iteration, step.phase)]
    return max(numbers, default=0) + 1


def create(draft: Draft, spec: SAILRunSpec, step: Step, attempt: int) -> None:
    """Record attempt `attempt` of `step` as current (status is written first), then create it."""
    wanted, attempt = attempt, skip_orphaned(draft.observed.attempts, step, attempt)
    name = build_job_name(draft.observed.name, step.iteration, step.phase, attempt)
    if attempt != wanted:
        draft.event(NORMAL, REASON_WAITING_FOR_OLD_JOB,
                    f"{build_job_name(draft.observed.name, step.iteration, step.phase, wanted)} is an orphaned "
                    f"Job of an earlier SAILRun with this name (no owner: it is kept, never adopted); using {name}")
    status = draft.status
    status.current = CurrentAttempt(job_name=name, iteration=step.iteration, phase=step.phase.value,
                                    attempt=attempt, created_at=format_time(draft.now))
    status.current_iteration = step.iteration
    status.current_phase = step.phase.value
    status.backoff_until = None
    record = draft.record(step.iteration, step.phase)
    record.result = "Running"
    record.attempts = attempt
    if attempt == 1 or record.started_at is None:
        record.started_at = format_time(draft.now)
    draft.actions.append(CreatePhaseJob(name=name, iteration=step.iteration, phase=step.phase, attempt=attempt,
                                        shards=compute_shards(spec, step.phase), nodes=compute_nodes(spec, step.phase)))
    status.state = RunState.RUNNING
    status.message = f"iteration {step.iteration}/{spec.sail.rounds}: {step.phase.value} (attempt {attempt})"
    draft.cond(ConditionType.RUNNING, "True", Reason.PHASE_STARTED, status.message)
    draft.cond(ConditionType.RETRYING, "False", Reason.PHASE_STARTED, "")
    draft.event(NORMAL, Reason.PHASE_STARTED, f"started {name}")


def backoff_or_retry(draft: Draft, spec: SAILRunSpec, step: Step, attempt: int) -> None:
    """A counted failure: wait out its backoff, then create the next attempt."""
    if not hold_backoff(draft) and may_create(draft, spec):
        create(draft, spec, step, attempt + 1)


def note_running(draft: Draft, obs: AttemptObservation) -> None:
    """The attempt runs: note when it started; a run not Suspended or Running is Running again."""
    if draft.status.current is not None and obs.started_at and not draft.status.current.started_at:
        draft.status.current.started_at = format_time(obs.started_at)
    if draft.status.state not in (RunState.SUSPENDED, RunState.RUNNING):
        draft.status.state = RunState.RUNNING
        draft.cond(ConditionType.RUNNING, "True", Reason.PHASE_STARTED, draft.status.message)


def adopt(draft: Draft, obs: AttemptObservation) -> None:
    """Status lags behind the Jobs (lost write): take the newer attempt as current, never duplicate it."""
    draft.status.current = CurrentAttempt(
        job_name=obs.name, iteration=obs.iteration, phase=obs.phase.value, attempt=obs.attempt,
        created_at=format_time(obs.created_at) if obs.created_at else format_time(draft.now),
        started_at=format_time(obs.started_at) if obs.started_at else None,
    )
    draft.status.backoff_until = None
    record = draft.record(obs.iteration, obs.phase)
    record.attempts = max(record.attempts, obs.attempt)


def handle_missing(draft: Draft, spec: SAILRunSpec, step: Step, number: int) -> bool:
    """The recorded attempt has no Job: a failure already counted backs off; else (re)create it."""
    if draft.status.backoff_until is not None:
        backoff_or_retry(draft, spec, step, number)
    elif may_create(draft, spec):
        recorded = parse_time(draft.status.current.created_at) if draft.status.current else None
        left = (MISSING_GRACE_SECONDS - (draft.now - recorded).total_seconds()
                if recorded is not None and not draft.observed.attempts_complete else 0.0)
        if left > 0:
            # Just recorded: its creator may be about to POST it (another operator process
            # between its status write and its create). Look again rather than race it.
            draft.actions.append(RequeueAfter(seconds=left))
            return False
        name = build_job_name(draft.observed.name, step.iteration, step.phase, number)
        draft.event(WARNING, REASON_JOB_RECREATED,
                    f"Job {name} (attempt {number}, recorded in status) does not exist: it was deleted, or "
                    "the operator stopped before creating it; creating it again under the same name")
        create(draft, spec, step, number)
    return False


def wait_for_old_child(draft: Draft, what: str) -> None:
    """An earlier SAILRun of this name left `what` behind and GC is removing it: wait, spend nothing."""
    message = (f"waiting for {what} of an earlier SAILRun with this name (another owner UID) to be "
               "garbage-collected; it is never adopted, and this run starts when it is gone")
    old = find_condition(draft.observed.status, ConditionType.RUNNING)
    if old is None or old.reason != REASON_WAITING_FOR_OLD_JOB:
        draft.event(NORMAL, REASON_WAITING_FOR_OLD_JOB, message)
    if draft.status.state not in (RunState.SUSPENDED, RunState.RETRYING):
        draft.status.state = RunState.PENDING
    draft.status.message = message
    draft.cond(ConditionType.RUNNING, "False", REASON_WAITING_FOR_OLD_JOB, message)
    draft.actions.append(RequeueAfter(seconds=GC_WAIT_SECONDS))


def cleanup_finished_attempts(draft: Draft) -> None:
    """Delete our finished Jobs of phases already behind the cursor (their results are in status)."""
    cursor = draft.cursor()
    deleting = draft.deleting()
    for obs in draft.observed.attempts:
        if not obs.owned or obs.name in deleting or obs.name in draft.dropped:
            continue
        if obs.state not in (AttemptState.SUCCEEDED, AttemptState.FAILED):
            continue
        behind = cursor is None or Step(obs.iteration, obs.phase) < cursor
        if behind and draft.status.state != RunState.FAILED:
            draft.actions.append(DeletePhaseJob(name=obs.name))
            deleting.add(obs.name)
