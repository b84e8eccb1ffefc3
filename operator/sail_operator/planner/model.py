"""Types shared by the planner and both executors: what was observed, what to do.

The executor *observes* (SAILRun spec and status, the attempts that exist as Jobs or
processes with their outcomes), calls `decide(observed, now)`, then *acts*: it writes the
returned status first (so the attempt about to start is recorded before its Job exists),
then performs the actions in order. Actions are frozen dataclasses named as verbs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass as serialisable_dataclass

from sail_api.phases import NON_RETRYABLE_EXIT_CODES, ExitCode, Phase, PhaseSummary
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


def compute_failure_cause(code: int) -> FailureCause | None:
    """A phase process's exit code -> the retry budget its failure spends (None: success).

    The one table both executors use: the local executor for each shard process, the
    Kubernetes executor for each terminated container (the Job's podFailurePolicy says the
    same with `NON_RETRYABLE_EXIT_CODES`). The codes themselves are `sail_api.phases.ExitCode`.
    """
    if code == ExitCode.OK:
        return None
    if code in NON_RETRYABLE_EXIT_CODES:
        return FailureCause.NON_RETRYABLE
    if code == ExitCode.TRANSIENT:
        return FailureCause.INFRA
    return FailureCause.APP


# Where the trainer's train summary names the model folder it committed (PhaseSummary.extra).
CHECKPOINT_SUMMARY_KEY = "model_uri"


@dataclass(frozen=True)
class CheckpointUri:
    """The model folder a train attempt committed (a storage URI), typed rather than a dict key."""

    uri: str

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def from_summaries(cls, summaries: Iterable[PhaseSummary]) -> CheckpointUri | None:
        """The first summary that names a committed model folder; None when none does."""
        return next((cls(str(s.extra[CHECKPOINT_SUMMARY_KEY])) for s in summaries
                     if s.extra.get(CHECKPOINT_SUMMARY_KEY)), None)


@serialisable_dataclass(frozen=True, config=ConfigDict(alias_generator=to_camel, populate_by_name=True,
                                                       extra="forbid"))
class AttemptObservation:
    """One phase attempt that exists now (a Job, or a local process and its result).

    The one attempt type of both executors: the Kubernetes observe step builds it from a Job
    and its pods; the local executor keeps it in its state file as it is (a pydantic dataclass:
    camelCase JSON, the same keys the state file always had).
    """

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
    shards: int | None = None   # Indexed Job completions / local shard processes (None: one, unsharded)
    owned: bool = True  # False: a Job with our name but another owner UID (never adopt it)
    # A foreign Job (owned False) with no controller owner left (`--cascade=orphan`): garbage
    # collection will never remove it, so its name is skipped; a foreign Job that still names
    # an owner (an earlier SAILRun of this name) is being collected, so the run waits for it.
    orphaned: bool = False

    @property
    def finished(self) -> bool:
        return self.state in (AttemptState.SUCCEEDED, AttemptState.FAILED)

    @property
    def duration_seconds(self) -> float | None:
        """Running time (first start to finish); None until both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def queue_wait_seconds(self) -> float | None:
        """Time from creation to the first start (Kueue admission, scheduling, a free worker)."""
        if self.created_at is None or self.started_at is None:
            return None
        return (self.started_at - self.created_at).total_seconds()

    @property
    def checkpoint(self) -> CheckpointUri | None:
        """The model folder this (train) attempt committed, as its summaries name it."""
        return CheckpointUri.from_summaries(self.summaries)


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
    # True when `attempts` is everything that exists (the local executor: one process owns every
    # attempt), so a recorded attempt missing from it is gone for sure and is re-created at once;
    # on a cluster another operator process may be about to POST it (a grace period applies).
    attempts_complete: bool = False


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
