"""The decision being drafted: a copy of the observed status, the actions so far, and the
bookkeeping every policy module shares (set a condition, emit an event, the history entry).

Each policy function takes the `Draft` as its first argument and changes only it (the
observed state is read-only), so what a rule may change is in its signature, not hidden in
a class. `decide.py` makes one Draft per call and turns it into the `Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sail_api.phases import Phase
from sail_api.status import (
    MAX_ITERATION_HISTORY,
    ConditionType,
    IterationRecord,
    PhaseRecord,
    SAILRunStatus,
)
from sail_operator.planner.conditions import condition_is, set_condition
from sail_operator.planner.model import (
    Action,
    AttemptObservation,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    Observed,
)
from sail_operator.planner.steps import Step, compute_phase_order, read_cursor

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class Draft:
    observed: Observed
    now: datetime
    status: SAILRunStatus = field(init=False)
    actions: list[Action] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # Jobs a rewind deletes: never adopted, names not reused

    def __post_init__(self) -> None:
        self.status = self.observed.status.model_copy(deep=True)

    def cond(self, type_: ConditionType, status: str, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.observed.generation, self.now
        )

    def event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type=type_, reason=reason, message=message))

    def was(self, type_: ConditionType, status: str = "True") -> bool:
        """What the *observed* status said (before this decision changed anything)."""
        return condition_is(self.observed.status, type_, status)

    def cursor(self) -> Step | None:
        return read_cursor(self.status)

    def deleting(self) -> set[str]:
        return {a.name for a in self.actions if isinstance(a, DeletePhaseJob)}

    def attempts_of(self, step: Step, *, owned: bool) -> list[AttemptObservation]:
        """The observed attempts of `step` (ours or foreign ones), less those a rewind drops."""
        return [o for o in self.observed.attempts
                if o.iteration == step.iteration and o.phase == step.phase and o.owned == owned
                and o.name not in self.dropped]

    def record(self, iteration: int, phase: Phase) -> PhaseRecord:
        """The history entry of one phase, created on first use; history stays bounded."""
        it = next((r for r in self.status.iterations if r.iteration == iteration), None)
        if it is None:
            it = IterationRecord(iteration=iteration)
            self.status.iterations.append(it)
            self.status.iterations.sort(key=lambda r: r.iteration)
            self.status.iterations = self.status.iterations[-MAX_ITERATION_HISTORY:]
        rec = next((p for p in it.phases if p.phase == phase.value), None)
        if rec is None:
            rec = PhaseRecord(phase=phase.value, result="Running", attempts=1)
            it.phases.append(rec)
            order = compute_phase_order(iteration)
            it.phases.sort(key=lambda p: order.get(p.phase, 99))
        return rec

    def finish(self) -> Decision:
        """Every condition was re-evaluated for this generation: stamp it, and hand the decision out."""
        self.status.observed_generation = self.observed.generation
        for cond in self.status.conditions:
            cond.observed_generation = self.observed.generation
        return Decision(status=self.status, actions=tuple(self.actions))
