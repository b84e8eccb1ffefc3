"""Which watch events can change what the planner decides, so that only those wake a reconcile.

Every watch event used to mean "reconcile this run". Per Job transition that was ~3.7
reconciles (bench/operator_scale.py): the Job's ADDED event (our own create), its status
updates, its DELETED event (our own cleanup) and the MODIFIED echo of our own status PATCH
of the SAILRun. Only one of them carries news: the Job reaching a new state.

Pure functions over plain API dicts; `handlers.Controller` keeps the little memory they
compare against (the last state seen per Job, the resourceVersion our own status write
produced per run). What is deliberately *not* filtered:
- a Job whose planner-visible state changed (pending -> running -> succeeded/failed);
- a Job that disappears before we saw it finish (someone deleted a running Job);
- a Job seen for the first time in a state other than pending (e.g. after a restart);
- any SAILRun change we did not write ourselves (spec edits, deletion, someone else's
  status edit, a version the reconcile that wrote status did not produce).
A missed or filtered event is still recovered by the periodic resync (`resync_seconds`),
which reconciles every run regardless; and a restarted operator has no memory, so it
reconciles every run it lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sail_operator.kube.observe import compute_attempt_state
from sail_operator.planner.model import AttemptState

JobSignal = str  # what the planner can see of a Job on the watch, as one comparable string
TERMINAL_SIGNALS = frozenset({AttemptState.SUCCEEDED.value, AttemptState.FAILED.value})


def compute_job_signal(job: Mapping[str, Any]) -> JobSignal:
    """The Job's planner-visible state: `observe.compute_attempt_state`, plus whether it started.

    The start flag is there because `observe.build_attempt` takes a running attempt's start
    time from `status.startTime`, which the planner copies into the run's status once.
    """
    state = compute_attempt_state(job)
    started = bool((job.get("status") or {}).get("startTime"))
    return state.value if state is not AttemptState.RUNNING or not started else f"{state.value}+started"


def job_event_matters(event_type: str | None, previous: JobSignal | None, current: JobSignal) -> bool:
    """Whether this Job event can change a decision about its run.

    `previous` is the signal last seen for this Job (None: never seen by this process).
    """
    if event_type == "DELETED":
        # Our own cleanup deletes Jobs whose end is already recorded; any other vanishing matters.
        return previous not in TERMINAL_SIGNALS
    if previous == current:
        return False  # e.g. a status update that changed counters only
    if previous is None and current == AttemptState.PENDING.value:
        return False  # a new, not yet started Job: the reconcile that created it planned with it
    return True


def run_event_version(body: Mapping[str, Any]) -> str | None:
    """resourceVersion of a SAILRun as delivered by the watch (None when absent)."""
    version = (body.get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


def run_wakeup_is_own_echo(versions: list[str | None], own_version: str | None) -> bool:
    """True when every coalesced wake-up of a run is the watch echo of our own last status write.

    `versions` holds one entry per wake-up waiting for the run's lock: a SAILRun event's
    resourceVersion, or None for any other cause (a Job event, a timer, a requeue), which
    always reconciles. The reconcile that wrote `own_version` decided with that very object
    (its status is that reconcile's output), so reconciling it again decides nothing new.
    """
    return bool(versions) and own_version is not None and all(v == own_version for v in versions)
