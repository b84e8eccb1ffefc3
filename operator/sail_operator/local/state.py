"""The local executor's state file: the run's SAILRunStatus plus the outcomes of its attempts.

It plays the part of the API server for `sail run`: status is written (atomically) before
any process starts, and finished attempts keep their outcome (exit cause, summaries) so a
restarted `sail run` observes exactly what the planner needs. Attempts that were still
running when the executor died are *not* kept: their processes are gone, and the planner
re-creates the recorded attempt under the same name (re-running a phase is always safe,
committed phases exit 0 at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from pydantic import Field

from sail_api.spec import ApiModel, SAILRunSpec
from sail_api.status import Condition, ConditionType, RunState, SAILRunStatus
from sail_operator.planner.model import AttemptObservation

STATE_VERSION = 1


class LocalState(ApiModel):
    """Everything `sail run` needs to resume; `generation` counts spec edits between invocations."""

    version: int = STATE_VERSION
    name: str
    uid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    generation: int = 1
    spec_fingerprint: str | None = None
    storage_uri: str
    source_file: str | None = None
    spec: dict | None = None
    status: SAILRunStatus = Field(default_factory=SAILRunStatus)
    attempts: dict[str, AttemptObservation] = Field(default_factory=dict)  # the planner's attempt type, kept as is


def compute_spec_fingerprint(spec: SAILRunSpec) -> str:
    text = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_state(path: Path) -> LocalState | None:
    """The state file, or None if there is none yet; a corrupt file is an error naming it."""
    if not path.exists():
        return None
    try:
        return LocalState.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable sail state file ({exc}); move it away to start the run afresh") from exc


def save_state(path: Path, state: LocalState) -> None:
    """Write atomically (temp file + rename) so a kill never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(state.model_dump_json(by_alias=True, indent=2))
    os.replace(tmp, path)


def build_resumed_state(state: LocalState, spec: SAILRunSpec) -> LocalState:
    """A state file read at start-up: forget attempts whose process died with the last executor,
    and bump the generation when the spec changed since (the planner keys rewinds on it)."""
    out = state.model_copy(deep=True)
    out.attempts = {k: a for k, a in state.attempts.items() if a.finished}
    fingerprint = compute_spec_fingerprint(spec)
    if out.spec_fingerprint is not None and out.spec_fingerprint != fingerprint:
        out.generation += 1
    out.spec_fingerprint = fingerprint
    return out


def build_retry_of_failed(state: LocalState) -> LocalState:
    """`sail run` again on a Failed run retries it: budgets and the failed phase's attempts are reset.

    (On a cluster Failed is final; locally, running the command again is how one retries.)
    A run failed for an invalid spec is left alone: the planner re-validates it by itself.
    """
    failed = next((c for c in state.status.conditions if c.type == ConditionType.FAILED), None)
    if state.status.state != RunState.FAILED or (failed is not None and failed.reason == "InvalidSpec"):
        return state
    out = state.model_copy(deep=True)
    status = out.status
    step = (status.current_iteration, status.current_phase)
    out.attempts = {k: a for k, a in out.attempts.items() if (a.iteration, a.phase.value) != step}
    status.state = RunState.RUNNING
    status.current = None
    status.backoff_until = None
    status.restarts.app = status.restarts.infra = 0
    status.conditions = [
        Condition(**{**c.model_dump(), "status": "False", "reason": "Retried", "message": "retried by sail run"})
        if c.type == ConditionType.FAILED else c
        for c in status.conditions
    ]
    return out
