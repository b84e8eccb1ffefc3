"""Types shared by the planner and both executors: what was observed, what to do.

The executor *observes* (SAILRun spec and status, the attempts that exist as Jobs or
processes with their outcomes), calls `decide(observed, now)`, then *acts*: it writes the
returned status first (so the attempt about to start is recorded before its Job exists),
then performs the actions in order. Actions are frozen dataclasses named as verbs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sail_api.phases import Phase, PhaseSummary
from sail_api.spec import SAILRunSpec
from sail_api.status import SAILRunStatus


class AttemptState(StrEnum):
    PENDING = "pending"      # created, no pod running yet (or suspended by Kueue)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FailureCause(StrEnum):
    APP = "app"                      # trainer failed: spends the app budget
    INFRA = "infra"                  # preemption, eviction, node loss, Kueue eviction, transient exit code
    NON_RETRYABLE = "non_retryable"  # bad spec / bad data exit codes: fail the run at once
    DEADLINE = "deadline"            # activeDeadlineSeconds exceeded: counted as app


@dataclass(frozen=True)
class AttemptObservation:
    """One phase attempt that exists now (a Job, or a local process and its result)."""

    name: str
    iteration: int
    phase: Phase
    attempt: int
    state: AttemptState
    cause: FailureCause | None = None
    message: str = ""
    summaries: tuple[PhaseSummary, ...] = ()  # one per shard that reported (termination messages)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    owned: bool = True  # False: a Job with our name but another owner UID (never adopt it)
    # A foreign Job (owned False) with no controller owner left (`--cascade=orphan`): garbage
    # collection will never remove it, so its name is skipped; a foreign Job that still names
    # an owner (an earlier SAILRun of this name) is being collected, so the run waits for it.
    orphaned: bool = False


@dataclass(frozen=True)
class Observed:
    name: str
    namespace: str | None
    uid: str | None
    generation: int
    spec: SAILRunSpec | None           # None when the spec did not validate
    spec_error: str | None             # the precise validation message when it did not
    status: SAILRunStatus
    attempts: tuple[AttemptObservation, ...] = ()
    # A child of ours by name (the `{run}-spec` ConfigMap) still owned by an earlier SAILRun of
    # this name: garbage collection is removing it; nothing is created until it is gone.
    blocked_by: str | None = None
    # Fields the run is pinned to that the spec now changes (algorithm fields, storage.uri),
    # each `spec.path: old -> new`; the edit is refused (the run goes on as it started).
    pinned_changes: tuple[str, ...] = ()
    # The API server refused to create a child of the attempt in `status.current` (a 4xx other
    # than 409, e.g. 422 Invalid): its words. A user mistake: the run fails clearly, no budget spent.
    create_refusal: str | None = None


# ------------------------------------------------------------------ actions


@dataclass(frozen=True)
class CreatePhaseJob:
    name: str
    iteration: int
    phase: Phase
    attempt: int
    shards: int | None = None   # Indexed Job completions for sharded phases
    nodes: int = 1              # multi-node train


@dataclass(frozen=True)
class DeletePhaseJob:
    name: str


@dataclass(frozen=True)
class EmitEvent:
    type: str      # "Normal" or "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class RequeueAfter:
    seconds: float


Action = CreatePhaseJob | DeletePhaseJob | EmitEvent | RequeueAfter


@dataclass(frozen=True)
class Decision:
    status: SAILRunStatus                 # the whole new status: write it (once) before acting
    actions: tuple[Action, ...] = field(default_factory=tuple)

    @property
    def creates(self) -> tuple[CreatePhaseJob, ...]:
        return tuple(a for a in self.actions if isinstance(a, CreatePhaseJob))


def build_job_name(run: str, iteration: int, phase: Phase, attempt: int) -> str:
    """`{run}-i{NNN}-{phase}-a{A}`: at most 40 + 19 characters for names that fit in 63."""
    return f"{run}-i{iteration:03d}-{phase.value}-a{attempt}"
