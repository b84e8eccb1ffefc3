"""A perfect executor for planner tests: every Job the planner creates succeeds at once.

`play_to_end(spec, summary_of)` feeds `decide` its own decisions until the run ends: each created
attempt finishes 9 s after it started with the summary `summary_of(action)` gives, each deleted
one disappears. Pure (no Kubernetes, no processes); returns the final status, the created
actions in order and the events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sail_api.phases import PhaseSummary
from sail_api.spec import SAILRunSpec
from sail_api.status import RunState, SAILRunStatus
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    DeletePhaseJob,
    EmitEvent,
    Observed,
)

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def play_to_end(spec: SAILRunSpec, summary_of: Callable[[CreatePhaseJob], PhaseSummary], *, now: datetime = T0,
                max_decisions: int = 200) -> tuple[SAILRunStatus, list[CreatePhaseJob], list[EmitEvent]]:
    status, jobs, created, events = SAILRunStatus(), {}, [], []
    for _ in range(max_decisions):
        observed = Observed(name="demo", namespace="ns", uid="uid-1", generation=1, spec=spec, spec_error=None,
                            status=status, attempts=tuple(jobs.values()))
        decision = decide(observed, now)
        status = decision.status
        events += [a for a in decision.actions if isinstance(a, EmitEvent)]
        for action in decision.actions:
            if isinstance(action, CreatePhaseJob):
                created.append(action)
                jobs[action.name] = AttemptObservation(
                    name=action.name, iteration=action.iteration, phase=action.phase, attempt=action.attempt,
                    state=AttemptState.SUCCEEDED, created_at=now, started_at=now,
                    finished_at=now + timedelta(seconds=9), summaries=(summary_of(action),))
            elif isinstance(action, DeletePhaseJob):
                jobs.pop(action.name, None)
        if status.state in (RunState.SUCCEEDED, RunState.FAILED):
            return status, created, events
    raise AssertionError("the run did not finish")
