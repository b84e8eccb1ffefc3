"""`status.progress`: how many phases of the plan are done, from the cursor alone.

The cursor is the phase in progress, so the phases before it are done; past the last round
(or with no cursor on a finished run) all of them are. Pure.
"""

from __future__ import annotations

from sail_api.status import Progress
from sail_operator.planner.steps import Step, compute_step_index, compute_total_phases


def compute_progress(rounds: int, cursor: Step | None, evaluate: bool = False) -> Progress:
    """Completed phases and percent (rounded down) of a run of `rounds` rounds at `cursor`."""
    total = compute_total_phases(rounds, evaluate)
    done = total if cursor is None or cursor.iteration > rounds else compute_step_index(cursor, evaluate)
    done = min(done, total)
    return Progress(percent=(100 * done) // total if total else 100, completed_phases=done, total_phases=total)
