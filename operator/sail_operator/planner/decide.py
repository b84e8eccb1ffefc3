"""`decide(observed, now) -> Decision`: the one planner behind both executors.

Pure: no I/O, no clock (``now`` is passed in), no randomness (backoff jitter is derived
from the run uid and the attempt's Job name), no kopf/kubernetes imports. The executor
writes ``Decision.status`` first and then performs ``Decision.actions`` in order, so an
attempt is always recorded in status before its Job (or process) exists.

Where the run is ("the cursor") is ``status.currentIteration`` / ``status.currentPhase``:
the phase in progress, not yet succeeded. ``status.current`` is the latest attempt of that
phase; while backing off it still names the failed attempt and ``status.backoffUntil`` is
set, which is also how a failure is counted exactly once across repeated calls.

Choices made here (documented in docs/cli.md too):
- An invalid spec sets ``Validated=False`` and state ``Failed`` (reason ``InvalidSpec``),
  with one Warning event; it is never retried. A later *valid* spec re-validates and the
  run continues from where it was (``Failed`` with reason ``InvalidSpec`` is the only
  Failed that re-opens).
- ``spec.suspend`` lets the running attempt finish (its result is recorded) but creates no
  new Job; the state is ``Suspended`` at once.
- ``startIteration`` rewinds whenever a spec generation not yet observed carries it (the
  brief: once per spec generation). Clear it after the rewind took effect, or a later edit
  of another field rewinds again.
- Raising ``sail.rounds`` while the run is not finished extends it; a ``Succeeded`` run stays
  finished.
- A Job with our name and another owner is never adopted: the run fails and says so.
- Metrics of a sharded phase are the mean over the shards that reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sail_api.layout import RunLayout
from sail_api.phases import SHARDED_PHASES, Phase, PhaseSummary, phases_of_iteration
from sail_api.resolved import compute_algorithm_digest
from sail_api.spec import BackoffSpec, SAILRunSpec
from sail_api.status import (
    MAX_ITERATION_HISTORY,
    TERMINAL_STATES,
    CheckpointStatus,
    Condition,
    ConditionType,
    CurrentAttempt,
    IterationRecord,
    PhaseRecord,
    Progress,
    Reason,
    RunState,
    SAILRunStatus,
)
from sail_operator.estimate import build_cost_status
from sail_operator.planner.model import (
    Action,
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    FailureCause,
    Observed,
    RequeueAfter,
    build_job_name,
)

NORMAL = "Normal"
WARNING = "Warning"
SUMMARY_WAIT_SECONDS = 5.0  # a finished Job whose termination messages are not read yet: look again soon
CHECKPOINT_EXTRA_KEYS = ("checkpoint_uri", "checkpointUri", "model_uri", "modelUri")


# ------------------------------------------------------------------ pure helpers (public)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, second precision (what Kubernetes writes)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Inverse of `format_time`; also accepts fractional seconds and +00:00 offsets."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    """One phase of the plan: (iteration, phase), ordered by position in the plan (not by name)."""

    iteration: int
    phase: Phase

    def __lt__(self, other: Step) -> bool:
        return compute_step_index(self) < compute_step_index(other)

    def __le__(self, other: Step) -> bool:
        return compute_step_index(self) <= compute_step_index(other)

    def __gt__(self, other: Step) -> bool:
        return compute_step_index(self) > compute_step_index(other)

    def __ge__(self, other: Step) -> bool:
        return compute_step_index(self) >= compute_step_index(other)


def build_plan(rounds: int) -> tuple[Step, ...]:
    """Step 0 (mixup, train) then rounds 1..K (generate, annotate, mixup, train)."""
    return tuple(Step(i, p) for i in range(rounds + 1) for p in phases_of_iteration(i))


def compute_step_index(step: Step) -> int:
    """Position of a step in any plan that contains it (plans only grow at the end)."""
    if step.iteration == 0:
        return phases_of_iteration(0).index(step.phase)
    before = len(phases_of_iteration(0)) + len(phases_of_iteration(1)) * (step.iteration - 1)
    return before + phases_of_iteration(step.iteration).index(step.phase)


def compute_total_phases(rounds: int) -> int:
    return len(build_plan(rounds))


def compute_jitter_fraction(key: str) -> float:
    """A deterministic stand-in for a random number in [-1, 1): keeps `decide` pure."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def compute_backoff_seconds(policy: BackoffSpec, attempt: int, key: str) -> float:
    """initial x factor^(attempt-1), +- jitter (derived from `key`), capped at max_seconds."""
    base = policy.initial_seconds * policy.factor ** max(attempt - 1, 0)
    jittered = base * (1.0 + policy.jitter * compute_jitter_fraction(key))
    return max(0.0, min(policy.max_seconds, jittered))


def compute_shards(spec: SAILRunSpec, phase: Phase) -> int | None:
    if phase not in SHARDED_PHASES:
        return None
    if phase is Phase.GENERATE:
        return spec.parallelism.generate_shards
    return spec.parallelism.annotate_shards


def compute_phase_metrics(summaries: tuple[PhaseSummary, ...]) -> dict[str, float]:
    """Mean of each metric over the shards that reported it (one shard: its metrics)."""
    sums: dict[str, list[float]] = {}
    for summary in summaries:
        for key, value in summary.metrics.items():
            sums.setdefault(key, []).append(float(value))
    return {key: sum(values) / len(values) for key, values in sorted(sums.items())}


def compute_manifest_uri(summaries: tuple[PhaseSummary, ...]) -> str | None:
    """The phase's _SUCCESS.json; for several shards, the phase folder that holds theirs."""
    uris = sorted(s.manifest_uri for s in summaries if s.manifest_uri)
    if not uris:
        return None
    if len(uris) == 1:
        return uris[0]
    return uris[0].rsplit("/", 2)[0]


def set_condition(
    conditions: list[Condition], type_: ConditionType, status: str, reason: str, message: str,
    generation: int, now: datetime,
) -> list[Condition]:
    """Upsert a condition; lastTransitionTime changes only when `status` flips."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        time = cond.last_transition_time if cond.status == status else format_time(now)
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=time))
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=format_time(now)))
    return out


def find_condition(status: SAILRunStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


# ------------------------------------------------------------------ the planner


def decide(observed: Observed, now: datetime) -> Decision:
    """The next status and actions for one SAILRun (see the module docstring)."""
    return _Planner(observed, now).run()


@dataclass
class _Planner:
    observed: Observed
    now: datetime
    status: SAILRunStatus = field(init=False)
    actions: list[Action] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # Jobs a rewind deletes: never adopted, names not reused

    def __post_init__(self) -> None:
        self.status = self.observed.status.model_copy(deep=True)

    # -------------------------------------------------------------- entry

    def run(self) -> Decision:
        old = self.observed.status
        spec = self.observed.spec
        if spec is None or self.observed.spec_error:
            self._invalid(self.observed.spec_error or "spec did not validate")
        elif old.state in TERMINAL_STATES and not self._reopens_after_invalid_spec():
            self._cleanup_finished_attempts()
        else:
            self._valid(spec)
        self.status.observed_generation = self.observed.generation
        for cond in self.status.conditions:  # every condition was re-evaluated for this generation
            cond.observed_generation = self.observed.generation
        return Decision(status=self.status, actions=tuple(self.actions))

    # -------------------------------------------------------------- conditions, events

    def _cond(self, type_: ConditionType, status: str, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.observed.generation, self.now
        )

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type=type_, reason=reason, message=message))

    def _was(self, type_: ConditionType, status: str = "True") -> bool:
        cond = find_condition(self.observed.status, type_)
        return cond is not None and cond.status == status

    # -------------------------------------------------------------- invalid spec

    def _invalid(self, message: str) -> None:
        old_cond = find_condition(self.observed.status, ConditionType.VALIDATED)
        if old_cond is None or old_cond.status != "False" or old_cond.message != message:
            self._event(WARNING, Reason.INVALID_SPEC, f"spec rejected, not retried until it is edited: {message}")
        self._cond(ConditionType.VALIDATED, "False", Reason.INVALID_SPEC, message)
        if self.status.state == RunState.SUCCEEDED:
            return
        self.status.state = RunState.FAILED
        self.status.message = f"invalid spec: {message}"
        self._cond(ConditionType.FAILED, "True", Reason.INVALID_SPEC, message)
        self._cond(ConditionType.RUNNING, "False", Reason.INVALID_SPEC, message)
        self._cond(ConditionType.RETRYING, "False", Reason.INVALID_SPEC, "")

    def _reopens_after_invalid_spec(self) -> bool:
        failed = find_condition(self.observed.status, ConditionType.FAILED)
        return (
            self.observed.status.state == RunState.FAILED
            and failed is not None and failed.status == "True" and failed.reason == Reason.INVALID_SPEC
        )

    # -------------------------------------------------------------- valid spec

    def _valid(self, spec: SAILRunSpec) -> None:
        if not self._was(ConditionType.VALIDATED):
            if self._was(ConditionType.VALIDATED, "False"):
                self._event(NORMAL, Reason.SPEC_VALID, "spec is valid again: the run continues")
            self._cond(ConditionType.VALIDATED, "True", Reason.SPEC_VALID, "spec accepted")
        if self._reopens_after_invalid_spec():
            self.status.state = RunState.RUNNING
            self._cond(ConditionType.FAILED, "False", Reason.SPEC_VALID, "")
        if self.status.spec_digest is None:
            self.status.spec_digest = compute_algorithm_digest(spec.algorithm())
        if self.status.cost_estimate is None:  # issue 18: the estimate `sail plan` prints, once, on acceptance
            self.status.cost_estimate = build_cost_status(spec)
        self._ensure_base_conditions()
        if self.status.current_iteration is None:
            self._start(spec)
        elif spec.start_iteration is not None and self.observed.generation != self.observed.status.observed_generation:
            self._rewind(spec, spec.start_iteration)
        self._apply_suspend(spec)
        self._advance(spec)
        self._cleanup_finished_attempts()
        self._update_progress(spec)

    def _ensure_base_conditions(self) -> None:
        for type_ in (ConditionType.RUNNING, ConditionType.RETRYING, ConditionType.SUSPENDED,
                      ConditionType.CHECKPOINT_AVAILABLE, ConditionType.COMPLETE, ConditionType.FAILED):
            if find_condition(self.status, type_) is None:
                reason = Reason.NO_CHECKPOINT if type_ == ConditionType.CHECKPOINT_AVAILABLE else Reason.WAITING
                self._cond(type_, "False", reason, "")

    def _start(self, spec: SAILRunSpec) -> None:
        first = spec.start_iteration or 0
        self.status.current_iteration = first
        self.status.current_phase = phases_of_iteration(first)[0].value
        if first:
            self._event(NORMAL, Reason.REWOUND, f"starting at iteration {first} (spec.startIteration)")
            self._set_checkpoint_before(spec, first)

    def _rewind(self, spec: SAILRunSpec, iteration: int) -> None:
        """Restart from `iteration`: history from there on is dropped, its Jobs are deleted."""
        target = Step(iteration, phases_of_iteration(iteration)[0])
        for obs in self.observed.attempts:
            if obs.owned and Step(obs.iteration, obs.phase) >= target:
                self.actions.append(DeletePhaseJob(name=obs.name))
                self.dropped.add(obs.name)
        self.status.iterations = [r for r in self.status.iterations if r.iteration < iteration]
        self.status.current_iteration = iteration
        self.status.current_phase = target.phase.value
        self.status.current = None
        self.status.backoff_until = None
        self._set_checkpoint_before(spec, iteration)
        if self.status.state in (RunState.RETRYING, RunState.PENDING):
            self.status.state = RunState.RUNNING
        self._cond(ConditionType.RETRYING, "False", Reason.REWOUND, "")
        self.status.message = f"rewound to iteration {iteration} (spec.startIteration)"
        self._event(NORMAL, Reason.REWOUND, self.status.message)

    def _set_checkpoint_before(self, spec: SAILRunSpec, iteration: int) -> None:
        """After a rewind the latest checkpoint is the model of iteration - 1 (if any)."""
        if self.status.checkpoint is not None and self.status.checkpoint.iteration < iteration:
            return
        if iteration > 0 and spec.storage.uri:
            uri = RunLayout(spec.storage.uri).model_dir(iteration - 1)
            self.status.checkpoint = CheckpointStatus(uri=uri, iteration=iteration - 1, time=None)
            self._cond(ConditionType.CHECKPOINT_AVAILABLE, "True", Reason.REWOUND, uri)
        else:
            self.status.checkpoint = None
            self._cond(ConditionType.CHECKPOINT_AVAILABLE, "False", Reason.NO_CHECKPOINT, "")

    # -------------------------------------------------------------- suspend

    def _apply_suspend(self, spec: SAILRunSpec) -> None:
        if spec.suspend:
            if self.status.state != RunState.SUSPENDED:
                self._event(NORMAL, Reason.SUSPENDED_BY_USER,
                            "suspended: the running phase finishes, no new Job starts")
            self.status.state = RunState.SUSPENDED
            self.status.message = "suspended by spec.suspend"
            self._cond(ConditionType.SUSPENDED, "True", Reason.SUSPENDED_BY_USER, self.status.message)
            self._cond(ConditionType.RUNNING, "False", Reason.SUSPENDED_BY_USER, "")
        elif self.status.state == RunState.SUSPENDED:
            self._event(NORMAL, Reason.RESUMED, "resumed: spec.suspend is false")
            self.status.state = RunState.RUNNING
            self.status.message = "resumed"
            self._cond(ConditionType.SUSPENDED, "False", Reason.RESUMED, "")

    # -------------------------------------------------------------- progression

    def _cursor(self) -> Step | None:
        if self.status.current_phase is None or self.status.current_iteration is None:
            return None
        return Step(self.status.current_iteration, Phase(self.status.current_phase))

    def _advance(self, spec: SAILRunSpec) -> None:
        """Handle the phase at the cursor; on success move on and handle the next one."""
        for _ in range(compute_total_phases(spec.sail.rounds) + 1):
            cursor = self._cursor()
            if cursor is None or cursor.iteration > spec.sail.rounds:
                self._complete(spec)
                return
            if not self._handle_step(spec, cursor):
                return

    def _handle_step(self, spec: SAILRunSpec, step: Step) -> bool:
        """True when the step succeeded and the cursor moved on."""
        current = self.status.current
        if current is not None and (current.iteration, current.phase) != (step.iteration, step.phase.value):
            current = None
        number = current.attempt if current else 0
        foreign = [o for o in self._attempts_of(step, owned=False) if o.attempt >= number]
        if foreign:
            self._fail(Reason.RUN_FAILED, f"Job {foreign[0].name} exists but is not owned by this SAILRun "
                       "(another owner UID): it is never adopted; delete it or rename the run")
            return False
        mine = [o for o in self._attempts_of(step, owned=True) if o.attempt >= number]
        latest = max(mine, key=lambda o: o.attempt, default=None)
        if latest is not None and latest.attempt > number:
            self._adopt(latest)
            number = latest.attempt
            current = self.status.current
        if number == 0:
            if self._may_create(spec):
                self._create(spec, step, self._first_attempt(step))
            return False
        obs = latest if latest is not None and latest.attempt == number else None
        if obs is None:
            return self._handle_missing(spec, step, number)
        if obs.state in (AttemptState.PENDING, AttemptState.RUNNING):
            self._running(obs)
            return False
        if obs.state == AttemptState.SUCCEEDED:
            return self._succeeded(spec, step, obs)
        return self._failed(spec, step, obs)

    def _attempts_of(self, step: Step, *, owned: bool) -> list[AttemptObservation]:
        return [o for o in self.observed.attempts
                if o.iteration == step.iteration and o.phase == step.phase and o.owned == owned
                and o.name not in self.dropped]

    def _first_attempt(self, step: Step) -> int:
        """1, or past the attempts a rewind is deleting (their names may linger while they go)."""
        numbers = [o.attempt for o in self.observed.attempts
                   if o.name in self.dropped and (o.iteration, o.phase) == (step.iteration, step.phase)]
        return max(numbers, default=0) + 1

    def _may_create(self, spec: SAILRunSpec) -> bool:
        return not spec.suspend and self.status.state not in TERMINAL_STATES

    def _adopt(self, obs: AttemptObservation) -> None:
        """Status lags behind the Jobs (lost write): take the newer attempt as current, never duplicate it."""
        self.status.current = CurrentAttempt(
            job_name=obs.name, iteration=obs.iteration, phase=obs.phase.value, attempt=obs.attempt,
            created_at=format_time(obs.created_at) if obs.created_at else format_time(self.now),
            started_at=format_time(obs.started_at) if obs.started_at else None,
        )
        self.status.backoff_until = None
        record = self._record(obs.iteration, obs.phase)
        record.attempts = max(record.attempts, obs.attempt)

    def _handle_missing(self, spec: SAILRunSpec, step: Step, number: int) -> bool:
        """The recorded attempt has no Job: a failure already counted backs off; else (re)create it."""
        if self.status.backoff_until is not None:
            self._backoff_or_retry(spec, step, number)
        elif self._may_create(spec):
            self._create(spec, step, number)
        return False

    def _create(self, spec: SAILRunSpec, step: Step, attempt: int) -> None:
        name = build_job_name(self.observed.name, step.iteration, step.phase, attempt)
        self.status.current = CurrentAttempt(
            job_name=name, iteration=step.iteration, phase=step.phase.value, attempt=attempt,
            created_at=format_time(self.now),
        )
        self.status.current_iteration = step.iteration
        self.status.current_phase = step.phase.value
        self.status.backoff_until = None
        record = self._record(step.iteration, step.phase)
        record.result = "Running"
        record.attempts = attempt
        if attempt == 1 or record.started_at is None:
            record.started_at = format_time(self.now)
        nodes = spec.parallelism.train_nodes if step.phase is Phase.TRAIN else 1
        self.actions.append(CreatePhaseJob(name=name, iteration=step.iteration, phase=step.phase,
                                           attempt=attempt, shards=compute_shards(spec, step.phase), nodes=nodes))
        self.status.state = RunState.RUNNING
        self.status.message = f"iteration {step.iteration}/{spec.sail.rounds}: {step.phase.value} (attempt {attempt})"
        self._cond(ConditionType.RUNNING, "True", Reason.PHASE_STARTED, self.status.message)
        self._cond(ConditionType.RETRYING, "False", Reason.PHASE_STARTED, "")
        self._event(NORMAL, Reason.PHASE_STARTED, f"started {name}")

    def _running(self, obs: AttemptObservation) -> None:
        if self.status.current is not None and obs.started_at and not self.status.current.started_at:
            self.status.current.started_at = format_time(obs.started_at)
        if self.status.state not in (RunState.SUSPENDED, RunState.RUNNING):
            self.status.state = RunState.RUNNING
            self._cond(ConditionType.RUNNING, "True", Reason.PHASE_STARTED, self.status.message)

    # -------------------------------------------------------------- success

    def _succeeded(self, spec: SAILRunSpec, step: Step, obs: AttemptObservation) -> bool:
        if not obs.summaries:
            self.status.message = f"{obs.name} finished; waiting for its summary"
            self.actions.append(RequeueAfter(seconds=SUMMARY_WAIT_SECONDS))
            return False
        record = self._record(step.iteration, step.phase)
        record.result = "Succeeded"
        record.attempts = obs.attempt
        record.finished_at = format_time(obs.finished_at or self.now)
        if obs.started_at and obs.finished_at:
            record.duration_seconds = max(0.0, (obs.finished_at - obs.started_at).total_seconds())
        if obs.created_at and obs.started_at:
            record.queue_wait_seconds = max(0.0, (obs.started_at - obs.created_at).total_seconds())
        record.manifest_uri = compute_manifest_uri(obs.summaries)
        record.metrics = compute_phase_metrics(obs.summaries)
        if step.phase is Phase.TRAIN:
            self._checkpoint(spec, step.iteration, obs)
        self._event(NORMAL, Reason.PHASE_SUCCEEDED, f"{obs.name} succeeded")
        self.actions.append(DeletePhaseJob(name=obs.name))  # after its result is in status (written first)
        self._move_past(spec, step)
        return True

    def _checkpoint(self, spec: SAILRunSpec, iteration: int, obs: AttemptObservation) -> None:
        uri = next((str(s.extra[k]) for s in obs.summaries for k in CHECKPOINT_EXTRA_KEYS if s.extra.get(k)), None)
        if uri is None and spec.storage.uri:
            uri = RunLayout(spec.storage.uri).model_dir(iteration)
        if uri is None:
            return
        self.status.checkpoint = CheckpointStatus(uri=uri, iteration=iteration,
                                                  time=format_time(obs.finished_at or self.now))
        self._cond(ConditionType.CHECKPOINT_AVAILABLE, "True", Reason.CHECKPOINT_COMMITTED,
                   f"iteration {iteration}: {uri}")
        self._event(NORMAL, Reason.CHECKPOINT_COMMITTED, f"checkpoint of iteration {iteration}: {uri}")

    def _move_past(self, spec: SAILRunSpec, step: Step) -> None:
        phases = phases_of_iteration(step.iteration)
        index = phases.index(step.phase)
        if index + 1 < len(phases):
            nxt = Step(step.iteration, phases[index + 1])
        else:
            nxt = Step(step.iteration + 1, phases_of_iteration(step.iteration + 1)[0])
        self.status.current_iteration = nxt.iteration
        self.status.current_phase = nxt.phase.value
        self.status.current = None
        self.status.backoff_until = None

    def _complete(self, spec: SAILRunSpec) -> None:
        rounds = spec.sail.rounds
        for obs in self.observed.attempts:  # rounds lowered below a running attempt
            if obs.owned and obs.iteration > rounds and obs.state in (AttemptState.PENDING, AttemptState.RUNNING):
                self.actions.append(DeletePhaseJob(name=obs.name))
        self.status.state = RunState.SUCCEEDED
        self.status.current = None
        self.status.current_iteration = rounds
        self.status.current_phase = None
        self.status.backoff_until = None
        self.status.message = f"complete: step 0 and {rounds} round(s)"
        self._cond(ConditionType.COMPLETE, "True", Reason.RUN_COMPLETE, self.status.message)
        self._cond(ConditionType.RUNNING, "False", Reason.RUN_COMPLETE, "")
        self._cond(ConditionType.RETRYING, "False", Reason.RUN_COMPLETE, "")
        self._cond(ConditionType.SUSPENDED, "False", Reason.RUN_COMPLETE, "")
        self._event(NORMAL, Reason.RUN_COMPLETE, self.status.message)

    # -------------------------------------------------------------- failure

    def _failed(self, spec: SAILRunSpec, step: Step, obs: AttemptObservation) -> bool:
        if self.status.backoff_until is not None:  # counted on an earlier call
            self._backoff_or_retry(spec, step, obs.attempt)
            return False
        message = self._failure_message(obs)
        record = self._record(step.iteration, step.phase)
        record.finished_at = format_time(obs.finished_at or self.now)
        cause = obs.cause or FailureCause.APP
        if cause == FailureCause.NON_RETRYABLE:
            record.result = "Failed"
            self._fail(Reason.NON_RETRYABLE_FAILURE, f"{obs.name} failed and will not be retried: {message}")
            return False
        policy = spec.failure_policy
        budget, limit = ("infra", policy.infra_retries) if cause == FailureCause.INFRA else ("app", policy.app_retries)
        spent = getattr(self.status.restarts, budget)
        reason = Reason.DEADLINE_EXCEEDED if cause == FailureCause.DEADLINE else Reason.PHASE_FAILED
        self._event(WARNING, reason, f"{obs.name} failed ({cause.value}): {message}")
        if spent >= limit:
            record.result = "Failed"
            exhausted = (Reason.INFRA_RETRY_BUDGET_EXHAUSTED if budget == "infra"
                         else Reason.APP_RETRY_BUDGET_EXHAUSTED)
            field_name = "infraRetries" if budget == "infra" else "appRetries"
            self._fail(exhausted, f"{budget} retry budget exhausted (failurePolicy.{field_name}={limit}, "
                       f"{spent} spent); last failure: {obs.name}: {message}")
            return False
        setattr(self.status.restarts, budget, spent + 1)
        delay = compute_backoff_seconds(policy.backoff, obs.attempt, f"{self.observed.uid}:{obs.name}")
        self.status.backoff_until = format_time(self.now + timedelta(seconds=delay))
        if self.status.state != RunState.SUSPENDED:
            self.status.state = RunState.RETRYING
        self.status.message = f"{obs.name} failed ({cause.value}): {message}; retry {spent + 1}/{limit} of the {budget} budget"
        self._cond(ConditionType.RETRYING, "True", Reason.BACKING_OFF, self.status.message)
        self._backoff_or_retry(spec, step, obs.attempt)
        return False

    def _backoff_or_retry(self, spec: SAILRunSpec, step: Step, attempt: int) -> None:
        until = parse_time(self.status.backoff_until)
        if until is not None and self.now < until:
            self.actions.append(RequeueAfter(seconds=max((until - self.now).total_seconds(), 0.001)))
            if self.status.state == RunState.RUNNING:  # e.g. resumed while backing off
                self.status.state = RunState.RETRYING
            return
        if self._may_create(spec):
            self._create(spec, step, attempt + 1)

    @staticmethod
    def _failure_message(obs: AttemptObservation) -> str:
        if obs.message:
            return obs.message
        errors = [s.error for s in obs.summaries if s.error]
        return errors[0] if errors else "no message"

    def _fail(self, reason: str, message: str) -> None:
        self.status.state = RunState.FAILED
        self.status.message = message
        self.status.backoff_until = None
        self._cond(ConditionType.FAILED, "True", reason, message)
        self._cond(ConditionType.RUNNING, "False", reason, "")
        self._cond(ConditionType.RETRYING, "False", reason, "")
        self._event(WARNING, reason, message)

    # -------------------------------------------------------------- bookkeeping

    def _record(self, iteration: int, phase: Phase) -> PhaseRecord:
        """The history entry of one phase, created on first use; history stays bounded."""
        it = next((r for r in self.status.iterations if r.iteration == iteration), None)
        if it is None:
            it = IterationRecord(iteration=iteration)
            self.status.iterations.append(it)
            self.status.iterations.sort(key=lambda r: r.iteration)
            self.status.iterations = self.status.iterations[-MAX_ITERATION_HISTORY:]
        rec = next((p for p in it.phases if p.phase == phase.value), None)
        if rec is None:
            rec = PhaseRecord(phase=phase.value, result="Running", attempts=1)
            it.phases.append(rec)
            order = {p.value: n for n, p in enumerate(phases_of_iteration(iteration))}
            it.phases.sort(key=lambda p: order.get(p.phase, 99))
        return rec

    def _cleanup_finished_attempts(self) -> None:
        """Delete our finished Jobs of phases already behind the cursor (their results are in status)."""
        cursor = self._cursor()
        deleting = {a.name for a in self.actions if isinstance(a, DeletePhaseJob)}
        for obs in self.observed.attempts:
            if not obs.owned or obs.name in deleting or obs.name in self.dropped:
                continue
            if obs.state not in (AttemptState.SUCCEEDED, AttemptState.FAILED):
                continue
            behind = cursor is None or Step(obs.iteration, obs.phase) < cursor
            if behind and self.status.state != RunState.FAILED:
                self.actions.append(DeletePhaseJob(name=obs.name))
                deleting.add(obs.name)

    def _update_progress(self, spec: SAILRunSpec) -> None:
        total = compute_total_phases(spec.sail.rounds)
        cursor = self._cursor()
        done = total if cursor is None or cursor.iteration > spec.sail.rounds else compute_step_index(cursor)
        done = min(done, total)
        self.status.progress = Progress(percent=(100 * done) // total if total else 100,
                                        completed_phases=done, total_phases=total)

