"""The plan: which (iteration, phase) steps a run has, in which order, and where the cursor is.

The one place in the planner that knows the phase sequence (`phases_of_iteration`): step 0
runs (mixup, train), every round 1..K runs (generate, annotate, mixup, train). A new phase
(or a new order) changes `sail_api.phases` and, if it needs shards or nodes, the two
`compute_*` functions below; every other planner module asks this one.

Pure: values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sail_api.phases import SHARDED_PHASES, Phase, phases_of_iteration
from sail_api.spec import SAILRunSpec
from sail_api.status import SAILRunStatus


@dataclass(frozen=True)
class Step:
    """One phase of the plan: (iteration, phase), ordered by position in the plan (not by name)."""

    iteration: int
    phase: Phase

    def __lt__(self, other: Step) -> bool:
        return compute_step_index(self, True) < compute_step_index(other, True)

    def __le__(self, other: Step) -> bool:
        return compute_step_index(self, True) <= compute_step_index(other, True)

    def __gt__(self, other: Step) -> bool:
        return compute_step_index(self, True) > compute_step_index(other, True)

    def __ge__(self, other: Step) -> bool:
        return compute_step_index(self, True) >= compute_step_index(other, True)


def build_plan(rounds: int, evaluate: bool = False) -> tuple[Step, ...]:
    """Step 0 (mixup, train) then rounds 1..K (generate, annotate, mixup, train); each iteration
    ends with evaluate when `evaluate` (spec.evaluation set)."""
    return tuple(Step(i, p) for i in range(rounds + 1) for p in phases_of_iteration(i, evaluate))


def compute_step_index(step: Step, evaluate: bool = False) -> int:
    """Position of a step in any plan that contains it (plans only grow at the end). Comparisons
    use the plan with evaluate, whose order of the other phases is the same."""
    evaluate = evaluate or step.phase is Phase.EVALUATE
    if step.iteration == 0:
        return phases_of_iteration(0, evaluate).index(step.phase)
    before = len(phases_of_iteration(0, evaluate)) + len(phases_of_iteration(1, evaluate)) * (step.iteration - 1)
    return before + phases_of_iteration(step.iteration, evaluate).index(step.phase)


def compute_total_phases(rounds: int, evaluate: bool = False) -> int:
    return len(build_plan(rounds, evaluate))


def first_step(iteration: int) -> Step:
    """The first phase of `iteration` (where a start, a rewind or an extension puts the cursor)."""
    return Step(iteration, phases_of_iteration(iteration)[0])


def next_step(step: Step, evaluate: bool = False) -> Step:
    """The step after `step`: the next phase of its iteration, else the first of the next one."""
    phases = phases_of_iteration(step.iteration, evaluate)
    index = phases.index(step.phase)
    if index + 1 < len(phases):
        return Step(step.iteration, phases[index + 1])
    return first_step(step.iteration + 1)


def read_cursor(status: SAILRunStatus) -> Step | None:
    """The phase in progress (not yet succeeded), or None before the start and after the end."""
    if status.current_phase is None or status.current_iteration is None:
        return None
    return Step(status.current_iteration, Phase(status.current_phase))


def compute_phase_order(iteration: int) -> dict[str, int]:
    """Phase name -> its position in `iteration` (how an iteration's history is sorted)."""
    return {p.value: n for n, p in enumerate(phases_of_iteration(iteration, True))}


def compute_shards(spec: SAILRunSpec, phase: Phase) -> int | None:
    """Indexed-Job completions of a sharded phase; None for a phase that runs as one process."""
    if phase not in SHARDED_PHASES:
        return None
    if phase is Phase.GENERATE:
        return spec.parallelism.generate_shards
    if phase is Phase.EVALUATE:
        return spec.evaluation.shards if spec.evaluation else 1
    return spec.parallelism.annotate_shards


def compute_nodes(spec: SAILRunSpec, phase: Phase) -> int:
    """Nodes of one attempt: the train phase may span several, every other phase runs on one."""
    return spec.parallelism.train_nodes if phase is Phase.TRAIN else 1
