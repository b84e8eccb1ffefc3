"""Retry policy: which budget a failure spends, when the budget is exhausted, how long to back off.

- The cause decides the budget: ``infra`` (preemption, eviction, node loss) spends
  ``failurePolicy.infraRetries``; ``app`` and ``deadline`` spend ``appRetries``;
  ``non_retryable`` (bad spec or data exit codes) fails the run at once.
- A failure is counted exactly once: counting sets ``status.backoffUntil``, and a later
  call that still sees the same failed attempt with it set only waits (or retries).
- Backoff is ``initial x factor^(attempt-1)`` with +- jitter, capped; the jitter is derived
  from the run uid and the Job name, so `decide` stays pure and repeatable.

The budget arithmetic is pure (`choose_budget`, `compute_backoff_seconds`, `compute_wait_seconds`);
`count_failure` and `hold_backoff` apply it to the draft.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sail_api.phases import Phase
from sail_api.spec import BackoffSpec, FailurePolicySpec, SAILRunSpec
from sail_api.status import ConditionType, Reason, RunState
from sail_operator.planner.draft import WARNING, Draft
from sail_operator.planner.lifecycle import fail
from sail_operator.planner.model import AttemptObservation, DeletePhaseJob, FailureCause, RequeueAfter
from sail_operator.planner.timefmt import format_time, parse_time


@dataclass(frozen=True)
class Budget:
    """The retry budget one failure cause spends."""

    name: str              # "app" or "infra": the field of status.restarts it counts in
    limit: int             # retries allowed
    field_name: str        # the spec field that sets the limit (named in the exhausted message)
    exhausted_reason: str  # the Failed reason once it is spent


def choose_budget(cause: FailureCause, policy: FailurePolicySpec) -> Budget:
    """infra failures spend the infra budget; app and deadline failures the app budget."""
    if cause == FailureCause.INFRA:
        return Budget("infra", policy.infra_retries, "infraRetries", Reason.INFRA_RETRY_BUDGET_EXHAUSTED)
    return Budget("app", policy.app_retries, "appRetries", Reason.APP_RETRY_BUDGET_EXHAUSTED)


def compute_failure_reason(cause: FailureCause) -> str:
    return Reason.DEADLINE_EXCEEDED if cause == FailureCause.DEADLINE else Reason.PHASE_FAILED


def compute_jitter_fraction(key: str) -> float:
    """A deterministic stand-in for a random number in [-1, 1): keeps `decide` pure."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def compute_backoff_seconds(policy: BackoffSpec, attempt: int, key: str) -> float:
    """initial x factor^(attempt-1), +- jitter (derived from `key`), capped at max_seconds."""
    base = policy.initial_seconds * policy.factor ** max(attempt - 1, 0)
    jittered = base * (1.0 + policy.jitter * compute_jitter_fraction(key))
    return max(0.0, min(policy.max_seconds, jittered))


def compute_wait_seconds(backoff_until: str | None, now: datetime) -> float | None:
    """Seconds left of a backoff (at least a millisecond), or None when there is none left."""
    until = parse_time(backoff_until)
    if until is None or now >= until:
        return None
    return max((until - now).total_seconds(), 0.001)


def describe_failure(obs: AttemptObservation) -> str:
    """The attempt's own message, else the first shard's error, else "no message"."""
    if obs.message:
        return obs.message
    errors = [s.error for s in obs.summaries if s.error]
    return errors[0] if errors else "no message"


def count_failure(draft: Draft, spec: SAILRunSpec, iteration: int, phase: Phase, obs: AttemptObservation) -> bool:
    """Count a failed attempt once. True: a retry is due (budget spent, backoff set); False: the run failed."""
    message = describe_failure(obs)
    record = draft.record(iteration, phase)
    record.finished_at = format_time(obs.finished_at or draft.now)
    cause = obs.cause or FailureCause.APP
    if cause == FailureCause.NON_RETRYABLE:
        record.result = "Failed"
        fail(draft, Reason.NON_RETRYABLE_FAILURE, f"{obs.name} failed and will not be retried: {message}")
        return False
    policy = spec.failure_policy
    budget = choose_budget(cause, policy)
    spent = getattr(draft.status.restarts, budget.name)
    draft.event(WARNING, compute_failure_reason(cause), f"{obs.name} failed ({cause.value}): {message}")
    if spent >= budget.limit:
        record.result = "Failed"
        fail(draft, budget.exhausted_reason,
             f"{budget.name} retry budget exhausted (failurePolicy.{budget.field_name}={budget.limit}, "
             f"{spent} spent); last failure: {obs.name}: {message}")
        return False
    setattr(draft.status.restarts, budget.name, spent + 1)
    delay = compute_backoff_seconds(policy.backoff, obs.attempt, f"{draft.observed.uid}:{obs.name}")
    draft.status.backoff_until = format_time(draft.now + timedelta(seconds=delay))
    if draft.status.state != RunState.SUSPENDED:
        draft.status.state = RunState.RETRYING
    draft.status.message = (f"{obs.name} failed ({cause.value}): {message}; "
                            f"retry {spent + 1}/{budget.limit} of the {budget.name} budget")
    draft.cond(ConditionType.RETRYING, "True", Reason.BACKING_OFF, draft.status.message)
    # Its cause is in status now (written before any action): a failed Job left standing while
    # the retry runs trips the cluster's failed-Job alerts. A run that ends Failed keeps its last one.
    draft.actions.append(DeletePhaseJob(name=obs.name))
    return True


def hold_backoff(draft: Draft) -> bool:
    """True while `status.backoffUntil` is in the future: look again then (no new attempt yet)."""
    wait = compute_wait_seconds(draft.status.backoff_until, draft.now)
    if wait is None:
        return False
    draft.actions.append(RequeueAfter(seconds=wait))
    if draft.status.state == RunState.RUNNING:  # e.g. resumed while backing off
        draft.status.state = RunState.RETRYING
    return True
