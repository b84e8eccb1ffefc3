"""`decide(observed, now) -> Decision`: the one planner behind both executors.

Pure: no I/O, no clock (``now`` is passed in), no randomness (backoff jitter is derived
from the run uid and the attempt's Job name), no kopf/kubernetes imports. The executor
writes ``Decision.status`` first and then performs ``Decision.actions`` in order, so an
attempt is always recorded in status before its Job (or process) exists.

Where the run is ("the cursor") is ``status.currentIteration`` / ``status.currentPhase``:
the phase in progress, not yet succeeded. ``status.current`` is the latest attempt of that
phase; while backing off it still names the failed attempt and ``status.backoffUntil`` is
set, which is also how a failure is counted exactly once across repeated calls.

This module is the orchestrator: it decides which rule applies, in which order; each rule
lives in its policy module (docs/dev/planner.md lists them):

- ``steps.py``       the plan: steps, their order, the cursor, the next step, shards/nodes
- ``validity.py``    invalid specs, refused pinned edits, creates the API server refused
- ``rewind.py``      first start, ``spec.startIteration`` rewinds, extending a finished run
- ``attempts.py``    create / adopt / recreate attempts, foreign Jobs, cleanup
- ``success.py``     a succeeded attempt: record, checkpoint, round gate, next step
- ``retry.py``       failure causes -> budgets, backoff
- ``lifecycle.py``   fail, suspend/resume, complete
- ``conditions.py``  condition upsert rules; ``progress.py`` status.progress
- ``draft.py``       the decision being drafted (status copy, actions, history entries)

Choices made here (documented in docs/cli.md too):
- ``spec.suspend`` lets the running attempt finish (its result is recorded) but creates no
  new Job; the state is ``Suspended`` at once.
- ``startIteration`` rewinds whenever a spec generation not yet observed carries it (the
  brief: once per spec generation). Clear it after the rewind took effect, or a later edit
  of another field rewinds again. A new ``startIteration`` re-opens a ``Succeeded`` run too.
- Raising ``sail.rounds`` extends the run, also a ``Succeeded`` one (event ``Extended``).
- A finished run (Succeeded, Failed) only refuses pinned edits and cleans its Jobs up,
  unless one of the re-opening rules above (or an edited spec after an invalid one) applies.
"""

from __future__ import annotations

from datetime import datetime

from sail_api.resolved import compute_algorithm_digest
from sail_api.spec import SAILRunSpec
from sail_api.status import TERMINAL_STATES
from sail_operator.estimate import build_cost_status
from sail_operator.planner.attempts import (
    GC_WAIT_SECONDS,
    MISSING_GRACE_SECONDS,
    REASON_JOB_RECREATED,
    REASON_WAITING_FOR_OLD_JOB,
    adopt,
    backoff_or_retry,
    cleanup_finished_attempts,
    create,
    first_attempt,
    handle_missing,
    may_create,
    note_running,
    wait_for_old_child,
)
from sail_operator.planner.conditions import add_base_conditions, find_condition, set_condition
from sail_operator.planner.draft import NORMAL, WARNING, Draft
from sail_operator.planner.lifecycle import apply_suspend, complete
from sail_operator.planner.model import AttemptObservation, AttemptState, Decision, Observed
from sail_operator.planner.progress import compute_progress
from sail_operator.planner.retry import compute_backoff_seconds, compute_jitter_fraction, count_failure
from sail_operator.planner.rewind import REASON_EXTENDED, extend, rewind, start, wants_extension, wants_rewind
from sail_operator.planner.steps import (
    Step,
    build_plan,
    compute_shards,
    compute_step_index,
    compute_total_phases,
)
from sail_operator.planner.success import (
    SUMMARY_WAIT_SECONDS,
    compute_manifest_uri,
    compute_phase_metrics,
    record_success,
)
from sail_operator.planner.timefmt import format_time, parse_time
from sail_operator.planner.validity import (
    REASON_EDIT_REFUSED,
    REASON_REFUSED_BY_API_SERVER,
    accept_spec,
    fail_refused_create,
    refuse_pinned_edits,
    reject_invalid_spec,
    reopens_after_invalid_spec,
)

# Names this module has always offered; the rules now live in the policy modules above.
__all__ = [
    "GC_WAIT_SECONDS", "MISSING_GRACE_SECONDS", "NORMAL", "REASON_EDIT_REFUSED",
    "REASON_EXTENDED", "REASON_JOB_RECREATED", "REASON_REFUSED_BY_API_SERVER", "REASON_WAITING_FOR_OLD_JOB",
    "SUMMARY_WAIT_SECONDS", "WARNING", "Step", "build_plan", "compute_backoff_seconds", "compute_jitter_fraction",
    "compute_manifest_uri", "compute_phase_metrics", "compute_shards", "compute_step_index", "compute_total_phases",
    "decide", "find_condition", "format_time", "parse_time", "set_condition",
]


def decide(observed: Observed, now: datetime) -> Decision:
    """The next status and actions for one SAILRun (see the module docstring)."""
    draft = Draft(observed, now)
    spec = observed.spec
    if spec is None or observed.spec_error:
        reject_invalid_spec(draft, observed.spec_error or "spec did not validate")
    elif observed.create_refusal is not None:
        fail_refused_create(draft, observed.create_refusal)
    elif observed.status.state in TERMINAL_STATES and not reopens_after_invalid_spec(observed) \
            and not wants_extension(observed, spec):
        refuse_pinned_edits(draft)  # a finished run says no out loud too
        cleanup_finished_attempts(draft)
    else:
        _decide_accepted(draft, spec)
    return draft.finish()


def _decide_accepted(draft: Draft, spec: SAILRunSpec) -> None:
    """A valid spec on a run that goes on: accept, place the cursor, handle the step(s) at it."""
    accept_spec(draft)
    if wants_extension(draft.observed, spec):
        extend(draft, spec)
    if draft.status.spec_digest is None:
        draft.status.spec_digest = compute_algorithm_digest(spec.algorithm())
    refuse_pinned_edits(draft)
    if draft.status.cost_estimate is None:  # issue 18: the estimate `sail plan` prints, once, on acceptance
        draft.status.cost_estimate = build_cost_status(spec)
    draft.status.conditions = add_base_conditions(draft.status.conditions, draft.observed.generation, draft.now)
    if draft.status.current_iteration is None:
        start(draft, spec)
    elif wants_rewind(draft.observed, spec):
        assert spec.start_iteration is not None
        rewind(draft, spec, spec.start_iteration)
    apply_suspend(draft, spec)
    _advance(draft, spec)
    cleanup_finished_attempts(draft)
    draft.status.progress = compute_progress(spec.sail.rounds, draft.cursor(), spec.evaluation is not None)


def _advance(draft: Draft, spec: SAILRunSpec) -> None:
    """Handle the phase at the cursor; on success move on and handle the next one."""
    for _ in range(compute_total_phases(spec.sail.rounds, spec.evaluation is not None) + 1):
        cursor = draft.cursor()
        if cursor is None or cursor.iteration > spec.sail.rounds:
            complete(draft, spec)
            return
        if not _handle_step(draft, spec, cursor):
            return


def _handle_step(draft: Draft, spec: SAILRunSpec, step: Step) -> bool:
    """True when the step succeeded and the cursor moved on."""
    current = draft.status.current
    if current is not None and (current.iteration, current.phase) != (step.iteration, step.phase.value):
        current = None
    number = current.attempt if current else 0
    held = [o for o in draft.attempts_of(step, owned=False) if o.attempt >= number and not o.orphaned]
    if held or draft.observed.blocked_by:
        wait_for_old_child(draft, str(f"Job {held[0].name}" if held else draft.observed.blocked_by))
        return False
    mine = [o for o in draft.attempts_of(step, owned=True) if o.attempt >= number]
    latest = max(mine, key=lambda o: o.attempt, default=None)
    if latest is not None and latest.attempt > number:
        adopt(draft, latest)
        number = latest.attempt
    if number == 0:
        if may_create(draft, spec):
            create(draft, spec, step, first_attempt(draft, step))
        return False
    obs = latest if latest is not None and latest.attempt == number else None
    if obs is None:
        return handle_missing(draft, spec, step, number)
    if obs.state in (AttemptState.PENDING, AttemptState.RUNNING):
        note_running(draft, obs)
        return False
    if obs.state == AttemptState.SUCCEEDED:
        return record_success(draft, spec, step, obs)
    _handle_failure(draft, spec, step, obs)
    return False


def _handle_failure(draft: Draft, spec: SAILRunSpec, step: Step, obs: AttemptObservation) -> None:
    """Count the failure once (a set backoffUntil says it was), then back off or retry."""
    if draft.status.backoff_until is not None or count_failure(draft, spec, step.iteration, step.phase, obs):
        backoff_or_retry(draft, spec, step, obs.attempt)

