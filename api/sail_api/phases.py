"""Phases, exit codes, the phase summary, and the one phase command line.

Both executors (Kubernetes Jobs and local processes) start a phase with exactly the
argument list built here; only the program prefix and the environment differ
(an Indexed Job's pod gets JOB_COMPLETION_INDEX from Kubernetes, the local executor
sets the same variable per shard process).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, Literal

from pydantic import Field

from sail_api.spec import ApiModel


class Phase(StrEnum):
    GENERATE = "generate"
    ANNOTATE = "annotate"
    MIXUP = "mixup"
    TRAIN = "train"
    EVALUATE = "evaluate"


STEP0_PHASES: tuple[Phase, ...] = (Phase.MIXUP, Phase.TRAIN)
ROUND_PHASES: tuple[Phase, ...] = (Phase.GENERATE, Phase.ANNOTATE, Phase.MIXUP, Phase.TRAIN)
SHARDED_PHASES = frozenset({Phase.GENERATE, Phase.ANNOTATE, Phase.EVALUATE})


def phases_of_iteration(iteration: int, evaluate: bool = False) -> tuple[Phase, ...]:
    """Step 0 encodes the seed pairs (mixup) and trains; every round runs all four phases. With
    `evaluate` (spec.evaluation set) every iteration ends with the evaluate phase."""
    phases = STEP0_PHASES if iteration == 0 else ROUND_PHASES
    return (*phases, Phase.EVALUATE) if evaluate else phases


class ExitCode(IntEnum):
    """Exit codes of `sail-trainer`; the operator maps them to retry budgets.

    BAD_SPEC and BAD_DATA are non-retryable (podFailurePolicy FailJob). TRANSIENT counts
    against the infrastructure budget (storage unreachable, throttled). Any other non-zero
    code is an application failure and is retried within the app budget.
    """

    OK = 0
    FAILURE = 1
    BAD_SPEC = 64
    BAD_DATA = 65
    TRANSIENT = 75


NON_RETRYABLE_EXIT_CODES = frozenset({ExitCode.BAD_SPEC, ExitCode.BAD_DATA})

SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes for Indexed Jobs; by the local executor otherwise
TERMINATION_LOG_ENV = "SAIL_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
SPEC_MOUNT_PATH = "/etc/sail/spec.json"
TERMINATION_MESSAGE_LIMIT = 4096  # Kubernetes truncates termination messages at 4096 bytes


def build_phase_args(
    phase: Phase, run_uri: str, iteration: int, spec_path: str, shards: int | None = None
) -> list[str]:
    """Arguments after the program name (`sail-trainer`) for one phase attempt.

    `shards` is set for sharded phases; the shard index comes from JOB_COMPLETION_INDEX.
    """
    args = [phase.value, "--run", run_uri, "--iteration", str(iteration), "--spec", spec_path]
    if shards is not None:
        args += ["--shards", str(shards)]
    return args


Outcome = Literal["committed", "already_committed", "failed"]


class PhaseSummary(ApiModel):
    """What a phase reports through the termination message (kept under 4096 bytes)."""

    phase: Phase = Field(description="Phase that ran.")
    iteration: int = Field(ge=0, description="Iteration.")
    shard: str | None = Field(None, description="'k/n' for sharded phases.")
    outcome: Outcome = Field(description="committed, already_committed or failed.")
    manifest_uri: str | None = Field(None, description="URI of the committed _SUCCESS.json.")
    metrics: dict[str, float] = Field(default_factory=dict, description="A few key metrics.")
    exit_code: int = Field(0, description="Process exit code.")
    error: str | None = Field(None, description="One-line error naming the field or file at fault.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Small extra facts (e.g. checkpoint URI).")
