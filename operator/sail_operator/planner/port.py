"""The executor port: what an executor must be able to do for the planner, and the one `apply`.

Both executors write `Decision.status` first (the Kubernetes one as a status patch, the local
one into its state file), then hand the actions to `apply`, which dispatches them in order to
their port. The port is where an executor's own world starts (Jobs and Events on a cluster,
processes and a terminal locally); what the actions mean and in which order they run is
decided here once.
"""

from __future__ import annotations

from typing import Protocol

from sail_operator.planner.model import CreatePhaseJob, Decision, DeletePhaseJob, EmitEvent, RequeueAfter


class ExecutorPort(Protocol):
    """What `apply` drives. Each method performs one action; none of them decides anything."""

    def create(self, action: CreatePhaseJob) -> bool:
        """Start the attempt (its Job, or its shard processes). False: stop applying this
        decision (the name is taken by someone else; the next round looks again)."""
        ...

    def delete(self, name: str) -> None:
        """Remove a finished (or superseded) attempt by name; a missing one is not an error."""
        ...

    def emit(self, event: EmitEvent) -> None:
        """Tell the user (a core/v1 Event, a line on the terminal); best effort."""
        ...

    def requeue(self, seconds: float) -> None:
        """Look again after at most this long (the executor keeps the shortest)."""
        ...


def apply(decision: Decision, port: ExecutorPort) -> None:
    """Perform `decision.actions` in order on `port` (the status is the caller's to write first)."""
    for action in decision.actions:
        if isinstance(action, CreatePhaseJob):
            if not port.create(action):
                return  # the events after it belong to the round that does create it
        elif isinstance(action, DeletePhaseJob):
            port.delete(action.name)
        elif isinstance(action, EmitEvent):
            port.emit(action)
        elif isinstance(action, RequeueAfter):
            port.requeue(float(action.seconds))



def requeue_seconds(decision: Decision) -> float | None:
    """The shortest RequeueAfter of a decision (None: the planner asked for none)."""
    seconds = [float(a.seconds) for a in decision.actions if isinstance(a, RequeueAfter)]
    return min(seconds) if seconds else None
