"""Moving the cursor by request: the first start, ``spec.startIteration`` (rewind), and
raising ``sail.rounds`` past a finished run (extend).

- A rewind happens once per spec generation that carries ``startIteration`` and is not yet
  observed: history from that iteration on is dropped and its Jobs are deleted (their names
  are never reused while they linger); the latest checkpoint becomes the model of the
  iteration before.
- An extension re-opens a ``Succeeded`` run at the first phase of the first new round
  (event ``Extended``); lowering ``sail.rounds`` never undoes work.

The questions (does this generation rewind? extend? which Jobs go?) are pure functions of
the observation; `start`, `rewind` and `extend` apply the answers to the draft.
"""

from __future__ import annotations

from sail_api.layout import RunLayout
from sail_api.spec import SAILRunSpec
from sail_api.status import CheckpointStatus, ConditionType, Reason, RunState
from sail_operator.planner.draft import NORMAL, Draft
from sail_operator.planner.model import AttemptObservation, DeletePhaseJob, Observed
from sail_operator.planner.steps import Step, first_step

REASON_EXTENDED = "Extended"


def wants_rewind(observed: Observed, spec: SAILRunSpec) -> bool:
    """startIteration set in a spec generation not yet observed (once per generation)."""
    return spec.start_iteration is not None and observed.generation != observed.status.observed_generation


def wants_extension(observed: Observed, spec: SAILRunSpec) -> bool:
    """`sail.rounds` raised past a Succeeded run's last round (or a new startIteration): the run goes on."""
    old = observed.status
    return old.state == RunState.SUCCEEDED and old.current_iteration is not None \
        and (spec.sail.rounds > old.current_iteration or wants_rewind(observed, spec))


def find_dropped_attempts(attempts: tuple[AttemptObservation, ...], iteration: int) -> list[str]:
    """Our attempts at or after the first phase of `iteration`: a rewind to it deletes them."""
    target = first_step(iteration)
    return [o.name for o in attempts if o.owned and Step(o.iteration, o.phase) >= target]


def compute_checkpoint_before(storage_uri: str | None, iteration: int,
                              current: CheckpointStatus | None) -> CheckpointStatus | None:
    """The latest checkpoint once the cursor is back at `iteration`: the current one if older,
    else the model of iteration - 1 (none before step 0 or without a storage root)."""
    if current is not None and current.iteration < iteration:
        return current
    if iteration > 0 and storage_uri:
        return CheckpointStatus(uri=RunLayout(storage_uri).model_dir(iteration - 1), iteration=iteration - 1, time=None)
    return None


def start(draft: Draft, spec: SAILRunSpec) -> None:
    """The first decision of a run: the cursor at step 0, or at spec.startIteration."""
    first = spec.start_iteration or 0
    step = first_step(first)
    draft.status.current_iteration = step.iteration
    draft.status.current_phase = step.phase.value
    if first:
        draft.event(NORMAL, Reason.REWOUND, f"starting at iteration {first} (spec.startIteration)")
        set_checkpoint_before(draft, spec, first)


def rewind(draft: Draft, spec: SAILRunSpec, iteration: int) -> None:
    """Restart from `iteration`: history from there on is dropped, its Jobs are deleted."""
    for name in find_dropped_attempts(draft.observed.attempts, iteration):
        draft.actions.append(DeletePhaseJob(name=name))
        draft.dropped.add(name)
    target = first_step(iteration)
    draft.status.iterations = [r for r in draft.status.iterations if r.iteration < iteration]
    draft.status.current_iteration = iteration
    draft.status.current_phase = target.phase.value
    draft.status.current = None
    draft.status.backoff_until = None
    set_checkpoint_before(draft, spec, iteration)
    if draft.status.state in (RunState.RETRYING, RunState.PENDING):
        draft.status.state = RunState.RUNNING
    draft.cond(ConditionType.RETRYING, "False", Reason.REWOUND, "")
    draft.status.message = f"rewound to iteration {iteration} (spec.startIteration)"
    draft.event(NORMAL, Reason.REWOUND, draft.status.message)


def set_checkpoint_before(draft: Draft, spec: SAILRunSpec, iteration: int) -> None:
    """After a rewind the latest checkpoint is the model of iteration - 1 (if any)."""
    current = draft.status.checkpoint
    checkpoint = compute_checkpoint_before(spec.storage.uri, iteration, current)
    if checkpoint is current and current is not None:
        return
    draft.status.checkpoint = checkpoint
    if checkpoint is not None:
        draft.cond(ConditionType.CHECKPOINT_AVAILABLE, "True", Reason.REWOUND, checkpoint.uri)
    else:
        draft.cond(ConditionType.CHECKPOINT_AVAILABLE, "False", Reason.NO_CHECKPOINT, "")


def extend(draft: Draft, spec: SAILRunSpec) -> None:
    """Re-open a Succeeded run: at the first new round (rounds raised) or where a rewind puts it."""
    done = draft.observed.status.current_iteration or 0
    draft.status.state = RunState.RUNNING
    if spec.sail.rounds > done:  # (else a new startIteration: the rewind moves the cursor)
        step = first_step(done + 1)
        draft.status.current_iteration = step.iteration
        draft.status.current_phase = step.phase.value
        draft.status.current = None
        draft.status.message = (f"extended: spec.sail.rounds raised to {spec.sail.rounds}, "
                                f"continuing at round {step.iteration}")
        draft.event(NORMAL, REASON_EXTENDED, draft.status.message)
    draft.cond(ConditionType.COMPLETE, "False", REASON_EXTENDED, draft.status.message)
