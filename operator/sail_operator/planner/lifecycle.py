"""Run-state transitions that set several conditions together: fail, suspend/resume, complete.

One function per transition, so each state's condition set (Failed=True with Running and
Retrying False, ...) is written once and every rule that ends a run ends it the same way.
"""

from __future__ import annotations

from sail_api.spec import SAILRunSpec
from sail_api.status import ConditionType, Reason, RunState
from sail_operator.planner.draft import NORMAL, WARNING, Draft
from sail_operator.planner.model import AttemptState, DeletePhaseJob


def fail(draft: Draft, reason: str, message: str) -> None:
    """The run ends Failed with `reason` (one Warning event); no backoff is pending any more."""
    draft.status.state = RunState.FAILED
    draft.status.message = message
    draft.status.backoff_until = None
    draft.cond(ConditionType.FAILED, "True", reason, message)
    draft.cond(ConditionType.RUNNING, "False", reason, "")
    draft.cond(ConditionType.RETRYING, "False", reason, "")
    draft.event(WARNING, reason, message)


def apply_suspend(draft: Draft, spec: SAILRunSpec) -> None:
    """spec.suspend: Suspended at once (the running attempt finishes); clearing it resumes."""
    if spec.suspend:
        if draft.status.state != RunState.SUSPENDED:
            draft.event(NORMAL, Reason.SUSPENDED_BY_USER, "suspended: the running phase finishes, no new Job starts")
        draft.status.state = RunState.SUSPENDED
        draft.status.message = "suspended by spec.suspend"
        draft.cond(ConditionType.SUSPENDED, "True", Reason.SUSPENDED_BY_USER, draft.status.message)
        draft.cond(ConditionType.RUNNING, "False", Reason.SUSPENDED_BY_USER, "")
    elif draft.status.state == RunState.SUSPENDED:
        draft.event(NORMAL, Reason.RESUMED, "resumed: spec.suspend is false")
        draft.status.state = RunState.RUNNING
        draft.status.message = "resumed"
        draft.cond(ConditionType.SUSPENDED, "False", Reason.RESUMED, "")


def complete(draft: Draft, spec: SAILRunSpec) -> None:
    """Every round done: Succeeded; attempts of rounds the spec no longer has are deleted."""
    rounds = spec.sail.rounds
    for obs in draft.observed.attempts:  # rounds lowered below a running attempt
        if obs.owned and obs.iteration > rounds and obs.state in (AttemptState.PENDING, AttemptState.RUNNING):
            draft.actions.append(DeletePhaseJob(name=obs.name))
    draft.status.state = RunState.SUCCEEDED
    draft.status.current = None
    draft.status.current_iteration = rounds
    draft.status.current_phase = None
    draft.status.backoff_until = None
    draft.status.message = f"complete: step 0 and {rounds} round(s)"
    draft.cond(ConditionType.COMPLETE, "True", Reason.RUN_COMPLETE, draft.status.message)
    draft.cond(ConditionType.RUNNING, "False", Reason.RUN_COMPLETE, "")
    draft.cond(ConditionType.RETRYING, "False", Reason.RUN_COMPLETE, "")
    draft.cond(ConditionType.SUSPENDED, "False", Reason.RUN_COMPLETE, "")
    draft.event(NORMAL, Reason.RUN_COMPLETE, draft.status.message)
