"""SAILRun status, condition vocabulary and run states.

Status is written by the operator (or the local executor's state file) and read by
`kubectl`, the printer columns, the metrics collector and `sail status`. Conditions
follow the metav1.Condition shape so that generic tooling (kubectl wait) understands them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from sail_api.spec import ApiModel


class RunState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED})


class ConditionType(StrEnum):
    VALIDATED = "Validated"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUSPENDED = "Suspended"
    CHECKPOINT_AVAILABLE = "CheckpointAvailable"
    COMPLETE = "Complete"
    FAILED = "Failed"
    ROUND_ACCEPTED = "RoundAccepted"  # only with spec.roundGate


class Reason(StrEnum):
    """CamelCase reasons shared by conditions and Events."""

    SPEC_VALID = "SpecValid"
    INVALID_SPEC = "InvalidSpec"
    PHASE_STARTED = "PhaseStarted"
    PHASE_SUCCEEDED = "PhaseSucceeded"
    PHASE_FAILED = "PhaseFailed"
    BACKING_OFF = "BackingOff"
    APP_RETRY_BUDGET_EXHAUSTED = "AppRetryBudgetExhausted"
    INFRA_RETRY_BUDGET_EXHAUSTED = "InfraRetryBudgetExhausted"
    NON_RETRYABLE_FAILURE = "NonRetryableFailure"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    SUSPENDED_BY_USER = "SuspendedByUser"
    RESUMED = "Resumed"
    CHECKPOINT_COMMITTED = "CheckpointCommitted"
    NO_CHECKPOINT = "NoCheckpoint"
    RUN_COMPLETE = "RunComplete"
    RUN_FAILED = "RunFailed"
    REWOUND = "Rewound"
    WAITING = "Waiting"
    ROUND_ACCEPTED = "RoundAccepted"
    ROUND_REGRESSED = "RoundRegressed"
    STOPPED_ON_REGRESSION = "StoppedOnRegression"


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    type: ConditionType = Field(description="Condition type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(None, ge=0, description="Spec generation this was computed for.")
    # Required, as in metav1.Condition: generic tooling (kubectl wait, kstatus, Argo CD) reads them.
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(description="Human-readable detail (may be empty).")


class CurrentAttempt(ApiModel):
    job_name: str = Field(description="Name of the Job (or local process tag) of the current attempt.")
    iteration: int = Field(ge=0, description="Iteration of the current attempt (0 = step 0).")
    phase: str = Field(description="Phase of the current attempt.")
    attempt: int = Field(ge=1, description="Attempt number of this phase, from 1.")
    created_at: str | None = Field(None, description="When the attempt was recorded (before the Job is created).")
    started_at: str | None = Field(None, description="When its first pod started running.")


class Restarts(ApiModel):
    app: int = Field(0, ge=0, description="Retries spent after trainer failures.")
    infra: int = Field(0, ge=0, description="Retries spent after infrastructure failures.")


class CheckpointStatus(ApiModel):
    uri: str = Field(description="Committed model folder (diffusers layout).")
    iteration: int = Field(ge=0, description="Iteration that produced it.")
    time: str | None = Field(None, description="RFC 3339 commit time.")


class BestCheckpointStatus(CheckpointStatus):
    metric: str = Field(description="Held-out metric it is best by (spec.roundGate.metric).")
    value: float = Field(description="Its value of that metric.")


class Progress(ApiModel):
    percent: int = Field(0, ge=0, le=100, description="Finished phases / all phases of the run, in percent.")
    completed_phases: int = Field(0, ge=0, description="Phases committed so far.")
    total_phases: int = Field(0, ge=0, description="Phases in the whole run.")


PhaseResult = Literal["Succeeded", "Failed", "Running", "Skipped"]


class PhaseRecord(ApiModel):
    phase: str = Field(description="generate, annotate, mixup, train or evaluate.")
    result: PhaseResult = Field(description="Outcome of the phase.")
    attempts: int = Field(1, ge=1, description="Attempts used.")
    started_at: str | None = Field(None, description="Start of the first attempt.")
    finished_at: str | None = Field(None, description="End of the last attempt.")
    duration_seconds: float | None = Field(None, ge=0, description="Wall time of the successful attempt.")
    queue_wait_seconds: float | None = Field(None, ge=0, description="Job creation to pod start.")
    manifest_uri: str | None = Field(None, description="Committed manifest (_SUCCESS.json) of the phase.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Key metrics (loss, implicit_accuracy...).")


class IterationRecord(ApiModel):
    iteration: int = Field(ge=0, description="Iteration number (0 = step 0).")
    phases: list[PhaseRecord] = Field(default_factory=list, description="Phases in order.")


class CostEstimateStatus(ApiModel):
    """What the run is estimated to cost when accepted (`sail plan FILE` prints the same, per phase)."""

    card: str = Field(description="GPU whose measured throughput the GPU-hours use (e.g. H100).")
    unet_forwards: int = Field(ge=0, description="Latents through a UNet forward, the whole run.")
    unet_backwards: int = Field(ge=0, description="Latents through a UNet backward (training), the whole run.")
    gpu_hours: float = Field(ge=0, description="Estimated GPU-hours of the whole run (VAE and queueing excluded).")
    storage_bytes: int = Field(ge=0, description="Estimated bytes the run stores.")
    storage_objects: int = Field(ge=0, description="Estimated objects (files) the run stores.")
    round_gpu_hours: float = Field(ge=0, description="Estimated GPU-hours of one SAIL round.")
    round_storage_bytes: int = Field(ge=0, description="Estimated bytes stored by one SAIL round.")


MAX_ITERATION_HISTORY = 20  # bounded so the object stays far below etcd's 1.5 MiB


class SAILRunStatus(ApiModel):
    observed_generation: int | None = Field(None, ge=0, description="Last spec generation acted on.")
    state: RunState = Field(RunState.PENDING, description="Pending, Running, Retrying, Suspended, Succeeded, Failed.")
    message: str = Field("", description="Last notable event in words.")
    current_iteration: int | None = Field(None, ge=0, description="Iteration in progress (0 = step 0).")
    current_phase: str | None = Field(None, description="Phase in progress.")
    current: CurrentAttempt | None = Field(None, description="Attempt in progress, recorded before its Job exists.")
    backoff_until: str | None = Field(None, description="No new attempt before this RFC 3339 time.")
    restarts: Restarts = Field(default_factory=Restarts, description="Retry budgets spent.")
    checkpoint: CheckpointStatus | None = Field(None, description="Latest committed model.")
    best_checkpoint: BestCheckpointStatus | None = Field(
        None, description="Committed model with the best held-out metric so far (set with spec.roundGate)."
    )
    progress: Progress = Field(default_factory=Progress, description="Overall progress.")
    iterations: list[IterationRecord] = Field(
        default_factory=list, description=f"History, the last {MAX_ITERATION_HISTORY} iterations."
    )
    spec_digest: str | None = Field(None, description="sha256 of the algorithm spec the run started with.")
    cost_estimate: CostEstimateStatus | None = Field(
        None, description="Estimated cost, computed when the spec is accepted (docs/performance.md)."
    )
    # A list-map keyed on `type` (as `+listType=map` / `+listMapKey=type` on metav1.Condition lists):
    # one entry per type, and server-side apply merges entries by type instead of replacing the list.
    conditions: list[Condition] = Field(
        default_factory=list, description="metav1.Condition list, at most one entry per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
