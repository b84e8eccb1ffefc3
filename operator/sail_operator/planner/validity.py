"""Whether the spec is accepted: invalid specs, refused edits of pinned fields, creates the API
server refused, and which Failed runs a new spec re-opens.

- An invalid spec sets ``Validated=False`` and state ``Failed`` (reason ``InvalidSpec``), with
  one Warning event; it is never retried. A later *valid* spec re-validates and the run goes
  on from where it was (``Failed`` with reason ``InvalidSpec`` is the only Failed that re-opens
  on its own).
- An edit of a field the run is pinned to (algorithm fields, ``storage.uri``) is refused:
  ``Validated=False`` reason ``EditRefused`` naming the field, one Warning event; the run goes
  on as it started, and reverting the edit clears the condition.
- The API server refusing to create a child (4xx other than 409) is the user's mistake: the
  run fails at once (reason ``RefusedByApiServer``), no retry budget is spent, and it re-opens
  only when the spec is edited (a new generation).
"""

from __future__ import annotations

from sail_api.phases import Phase
from sail_api.status import ConditionType, Reason, RunState
from sail_operator.planner.conditions import find_condition
from sail_operator.planner.draft import NORMAL, WARNING, Draft
from sail_operator.planner.lifecycle import fail
from sail_operator.planner.model import Observed

REASON_EDIT_REFUSED = "EditRefused"
REASON_REFUSED_BY_API_SERVER = "RefusedByApiServer"


def reopens_after_invalid_spec(observed: Observed) -> bool:
    """A run Failed on its spec (or a refused create, once the spec is edited) may go on now."""
    failed = find_condition(observed.status, ConditionType.FAILED)
    if observed.status.state != RunState.FAILED or failed is None or failed.status != "True":
        return False
    if failed.reason == REASON_REFUSED_BY_API_SERVER:  # only an edit can change the API server's verdict
        return observed.generation != observed.status.observed_generation
    return failed.reason == Reason.INVALID_SPEC


def describe_pinned_refusal(changes: tuple[str, ...]) -> str:
    return ("refused edit of " + "; ".join(changes) + ": these fields are fixed for the life of a run "
            "(its committed outputs depend on them); the run goes on as it started. Revert the edit, "
            "or create a new SAILRun (another name) for the new settings")


def reject_invalid_spec(draft: Draft, message: str) -> None:
    """Validated=False; the run fails (a Succeeded run stays Succeeded); one event per new message."""
    old_cond = find_condition(draft.observed.status, ConditionType.VALIDATED)
    if old_cond is None or old_cond.status != "False" or old_cond.message != message:
        draft.event(WARNING, Reason.INVALID_SPEC, f"spec rejected, not retried until it is edited: {message}")
    draft.cond(ConditionType.VALIDATED, "False", Reason.INVALID_SPEC, message)
    if draft.status.state == RunState.SUCCEEDED:
        return
    draft.status.state = RunState.FAILED
    draft.status.message = f"invalid spec: {message}"
    draft.cond(ConditionType.FAILED, "True", Reason.INVALID_SPEC, message)
    draft.cond(ConditionType.RUNNING, "False", Reason.INVALID_SPEC, message)
    draft.cond(ConditionType.RETRYING, "False", Reason.INVALID_SPEC, "")


def fail_refused_create(draft: Draft, message: str) -> None:
    """A create the API server refused (4xx): a user mistake, failed at once, no budget spent."""
    current = draft.status.current
    what = f"Job {current.job_name}" if current is not None else "a child object"
    text = (f"the API server refused to create {what}: {message}; fix the spec and apply it again "
            "(no retry budget was spent)")
    if current is not None:
        draft.record(current.iteration, Phase(current.phase)).result = "Failed"
    draft.cond(ConditionType.VALIDATED, "False", REASON_REFUSED_BY_API_SERVER, text)
    fail(draft, REASON_REFUSED_BY_API_SERVER, text)


def refuse_pinned_edits(draft: Draft) -> None:
    """An edit of a pinned field is refused out loud (once), not silently ignored."""
    changes = draft.observed.pinned_changes
    if not changes:
        return
    message = describe_pinned_refusal(changes)
    old = find_condition(draft.observed.status, ConditionType.VALIDATED)
    if old is None or old.reason != REASON_EDIT_REFUSED or old.message != message:
        draft.event(WARNING, REASON_EDIT_REFUSED, message)
    draft.cond(ConditionType.VALIDATED, "False", REASON_EDIT_REFUSED, message)


def accept_spec(draft: Draft) -> None:
    """Validated=True (an event when it was False); a run Failed on its spec runs again."""
    if not draft.was(ConditionType.VALIDATED):
        if draft.was(ConditionType.VALIDATED, "False"):
            draft.event(NORMAL, Reason.SPEC_VALID, "spec is valid again: the run continues")
        draft.cond(ConditionType.VALIDATED, "True", Reason.SPEC_VALID, "spec accepted")
    if reopens_after_invalid_spec(draft.observed):
        draft.status.state = RunState.RUNNING
        draft.cond(ConditionType.FAILED, "False", Reason.SPEC_VALID, "")
