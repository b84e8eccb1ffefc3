"""Observe, the local way: the state file's attempts plus what the supervisor runs -> planner facts.

Pure, like the Kubernetes observe step: `record_finished` folds the attempts the supervisor
reaped into the state, `build_local_observed` builds the `Observed` that `decide` reads. The
in-process tests drive them with stand-in processes; no subprocess is needed to see what the
planner is shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from sail_api.spec import SAILRunSpec
from sail_operator.local.state import LocalState
from sail_operator.planner.model import AttemptObservation, Observed


def record_finished(state: LocalState, finished: Iterable[AttemptObservation]) -> bool:
    """Keep each finished attempt's outcome in the state (by name); True when there was one."""
    changed = False
    for record in finished:
        state.attempts[record.name] = record
        changed = True
    return changed


def build_local_observed(state: LocalState, spec: SAILRunSpec,
                         live: Iterable[AttemptObservation] = ()) -> Observed:
    """What `decide` needs: the state file's status and attempts, the live ones (pending or
    running under the supervisor) taking the place of their recorded copies."""
    attempts = {**state.attempts, **{record.name: record for record in live}}
    return Observed(
        name=state.name, namespace=None, uid=state.uid, generation=state.generation,
        spec=spec, spec_error=None, status=state.status, attempts=tuple(attempts.values()),
        attempts_complete=True,  # this process supervises every attempt of the run: no other creator
    )
