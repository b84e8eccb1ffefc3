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
- Raising ``sail.rounds`` extends the run, also a ``Succeeded`` one: it re-opens at the first
  phase of the first new round (event ``Extended``). Lowering it never undoes work.
- A new ``startIteration`` re-opens a ``Succeeded`` run too (the rewind moves the cursor).
- A Job with our name and another owner is never adopted. While it still names an owner (an
  earlier SAILRun of the same name, being garbage-collected) the run waits (Running=False,
  reason ``WaitingForOldJob``, one event); an orphaned one (no owner left: GC never removes
  it) is left alone and this run skips its attempt number.
- An edit of a field the run is pinned to (algorithm fields, ``storage.uri``) is refused:
  ``Validated=False`` reason ``EditRefused`` naming the field, one Warning event; the run goes
  on as it started, and reverting the edit clears the condition.
- The API server refusing to create a child (4xx other than 409) is the user's mistake: the
  run fails at once (reason ``RefusedByApiServer``), no retry budget is spent, and it re-opens
  only when the spec is edited (a new generation).
- Metrics of a sharded phase are the mean over the shards that reported.
- ``spec.roundGate`` (opt-in) judges each train by its held-out metric (``planner/gate.py``):
  a regressed round stops the run as ``Succeeded`` (reason ``StoppedOnRegression``) with
  ``status.bestCheckpoint``, or is only flagged (``onRegression: continue``).
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
MISSING_GRACE_SECONDS = 10.0  # a recorded attempt's Job missing for less than this may still be on its way
GC_WAIT_SECONDS = 2.0  # garbage collection of a deleted run's children takes about a second
REASON_WAITING_FOR_OLD_JOB = "WaitingForOldJob"
REASON_EDIT_REFUSED = "EditRefused"
REASON_REFUSED_BY_API_SERVER = "RefusedByApiServer"
REASON_EXTENDED = "Extended"
REASON_JOB_RECREATED = "JobRecreated"
CHECKPOINT_EXTRA_KEY = "model_uri"  # where the trainer's train summary names the model folder it committed


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
        return compute_step_index(self, True) < compute_step_index(other, True)

    def __le__(self, other: Step) -> bool:
        return compute_step_index(self, True) <= compute_step_index(other, True)

    def __gt__(self, other: Step) -> bool:
        return compute_step_index(self, True) > compute_step_index(other, True)

    def __ge__(self, other: Step) -> bool:
        return compute_step_index(self, True) >= compute_step_index(other, True)


def build_plan(rounds: int, evaluate: bool = False) -> tuple[Step, ...]:
    """Step 0 (mixup, train) then rounds 1..K (generate, annotate, mixup, train); each iteration
    then evaluate when `evaluate` (spec.evaluation set)."""
    return tuple(Step(i, p) for i in range(rounds + 1) for p in phases_of_iteration(i, evaluate))


def compute_step_index(step: Step, evaluate: bool = False) -> int:
    """Position of a step in any plan that contains it (plans only grow at the end); comparisons
    use the plan with evaluate, whose order of the other phases is the same."""
    evaluate = evaluate or step.phase is Phase.EVALUATE
    if step.iteration == 0:
        return phases_of_iteration(0, evaluate).index(step.phase)
    before = len(phases_of_iteration(0, evaluate)) + len(phases_of_iteration(1, evaluate)) * (step.iteration - 1)
    return before + phases_of_iteration(step.iteration, evaluate).index(step.phase)


def compute_total_phases(rounds: int, evaluate: bool = False) -> int:
    return len(build_plan(rounds, evaluate))


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
    if phase is Phase.EVALUATE:
        return spec.evaluation.shards if spec.evaluation else 1
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
        elif self.observed.create_refusal is not None:
            self._refused_by_api_server(self.observed.create_refusal)
        elif old.state in TERMINAL_STATES and not self._reopens_after_invalid_spec() \
                and not self._extends_after_success(spec):
            self._refuse_pinned_edits()  # a finished run says no out loud too
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
        if self.observed.status.state != RunState.FAILED or failed is None or failed.status != "True":
            return False
        if failed.reason == REASON_REFUSED_BY_API_SERVER:  # only an edit can change the API server's verdict
            return self.observed.generation != self.observed.status.observed_generation
        return failed.reason == Reason.INVALID_SPEC

    def _refused_by_api_server(self, message: str) -> None:
        """A create the API server refused (4xx): a user mistake, failed at once, no budget spent."""
        current = self.status.current
        what = f"Job {current.job_name}" if current is not None else "a child object"
        text = (f"the API server refused to create {what}: {message}; fix the spec and apply it again "
                "(no retry budget was spent)")
        if current is not None:
            self._record(current.iteration, Phase(current.phase)).result = "Failed"
        self._cond(ConditionType.VALIDATED, "False", REASON_REFUSED_BY_API_SERVER, text)
        self._fail(REASON_REFUSED_BY_API_SERVER, text)

    def _extends_after_success(self, spec: SAILRunSpec) -> bool:
        """`sail.rounds` raised past a Succeeded run's last round (or a new startIteration): the run goes on."""
        old = self.observed.status
        rewinds = spec.start_iteration is not None and self.observed.generation != old.observed_generation
        return old.state == RunState.SUCCEEDED and old.current_iteration is not None \
            and (spec.sail.rounds > old.current_iteration or rewinds)

    # -------------------------------------------------------------- valid spec

    def _valid(self, spec: SAILRunSpec) -> None:
        if not self._was(ConditionType.VALIDATED):
            if self._was(ConditionType.VALIDATED, "False"):
                self._event(NORMAL, Reason.SPEC_VALID, "spec is valid again: the run continues")
            self._cond(ConditionType.VALIDATED, "True", Reason.SPEC_VALID, "spec accepted")
        if self._reopens_after_invalid_spec():
            self.status.state = RunState.RUNNING
            self._cond(ConditionType.FAILED, "False", Reason.SPEC_VALID, "")
        if self._extends_after_success(spec):
            self._extend(spec)
        if self.status.spec_digest is None:
            self.status.spec_digest = compute_algorithm_digest(spec.algorithm())
        self._refuse_pinned_edits()
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

    def _extend(self, spec: SAILRunSpec) -> None:
        done = self.observed.status.current_iteration or 0
        nxt = done + 1
        self.status.state = RunState.RUNNING
        if spec.sail.rounds > done:  # (else a new startIteration: the rewind below moves the cursor)
            self.status.current_iteration = nxt
            self.status.current_phase = phases_of_iteration(nxt)[0].value
            self.status.current = None
            self.status.message = f"extended: spec.sail.rounds raised to {spec.sail.rounds}, continuing at round {nxt}"
            self._event(NORMAL, REASON_EXTENDED, self.status.message)
        self._cond(ConditionType.COMPLETE, "False", REASON_EXTENDED, self.status.message)

    def _refuse_pinned_edits(self) -> None:
        """An edit of a pinned field is refused out loud (once), not silently ignored."""
        changes = self.observed.pinned_changes
        if not changes:
            return
        message = ("refused edit of " + "; ".join(changes) + ": these fields are fixed for the life of a run "
                   "(its committed outputs depend on them); the run goes on as it started. Revert the edit, "
                   "or create a new SAILRun (another name) for the new settings")
        old = find_condition(self.observed.status, ConditionType.VALIDATED)
        if old is None or old.reason != REASON_EDIT_REFUSED or old.message != message:
            self._event(WARNING, REASON_EDIT_REFUSED, message)
        self._cond(ConditionType.VALIDATED, "False", REASON_EDIT_REFUSED, message)

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
        for _ in range(compute_total_phases(spec.sail.rounds, spec.evaluation is not None) + 1):
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
        held = [o for o in self._attempts_of(step, owned=False) if o.attempt >= number and not o.orphaned]
        if held or self.observed.blocked_by:
            what = f"Job {held[0].name}" if held else self.observed.blocked_by
            self._wait_for_old_child(str(what))
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

    def _wait_for_old_child(self, what: str) -> None:
        """An earlier SAILRun of this name left `what` behind and GC is removing it: wait, spend nothing."""
        message = (f"waiting for {what} of an earlier SAILRun with this name (another owner UID) to be "
                   "garbage-collected; it is never adopted, and this run starts when it is gone")
        old = find_condition(self.observed.status, ConditionType.RUNNING)
        if old is None or old.reason != REASON_WAITING_FOR_OLD_JOB:
            self._event(NORMAL, REASON_WAITING_FOR_OLD_JOB, message)
        if self.status.state not in (RunState.SUSPENDED, RunState.RETRYING):
            self.status.state = RunState.PENDING
        self.status.message = message
        self._cond(ConditionType.RUNNING, "False", REASON_WAITING_FOR_OLD_JOB, message)
        self.actions.append(RequeueAfter(seconds=GC_WAIT_SECONDS))

    def _skip_orphaned(self, step: Step, attempt: int) -> int:
        """Past the attempt numbers of orphaned foreign Jobs of this step (GC never removes those)."""
        taken = {o.attempt for o in self.observed.attempts
                 if o.orphaned and (o.iteration, o.phase) == (step.iteration, step.phase)}
        while attempt in taken:
            attempt += 1
        return attempt

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
            recorded = parse_time(self.status.current.created_at) if self.status.current else None
            left = MISSING_GRACE_SECONDS - (self.now - recorded).total_seconds() if recorded is not None else 0.0
            if left > 0:
                # Just recorded: its creator may be about to POST it (another operator process
                # between its status write and its create). Look again rather than race it.
                self.actions.append(RequeueAfter(seconds=left))
                return False
            name = build_job_name(self.observed.name, step.iteration, step.phase, number)
            self._event(WARNING, REASON_JOB_RECREATED,
                        f"Job {name} (attempt {number}, recorded in status) does not exist: it was deleted, or "
                        "the operator stopped before creating it; creating it again under the same name")
            self._create(spec, step, number)
        return False

    def _create(self, spec: SAILRunSpec, step: Step, attempt: int) -> None:
        wanted, attempt = attempt, self._skip_orphaned(step, attempt)
        name = build_job_name(self.observed.name, step.iteration, step.phase, attempt)
        if attempt != wanted:
            self._event(NORMAL, REASON_WAITING_FOR_OLD_JOB,
                        f"{build_job_name(self.observed.name, step.iteration, step.phase, wanted)} is an orphaned "
                        f"Job of an earlier SAILRun with this name (no owner: it is kept, never adopted); "
                        f"using {name}")
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
        if step.phase is Phase.TRAIN and spec.round_gate is not None and self._gate(spec, step.iteration, record):
            return False  # stopped on a regression: the run is complete, its best checkpoint in status
        if step.phase is Phase.EVALUATE and spec.round_gate is not None and self._gate(spec, step.iteration, record,
                                                                                         scorers=True):
            return False
        self._move_past(spec, step)
        return True

    def _gate(self, spec: SAILRunSpec, iteration: int, record: PhaseRecord, scorers: bool = False) -> bool:
        """spec.roundGate (planner/gate.py): best checkpoint, RoundAccepted condition; True when the run stops.
        `scorers`: judge an evaluate phase by roundGate.scorers (acts only on a regression)."""
        from sail_api.status import BestCheckpointStatus
        from sail_operator.planner.gate import is_new_best, judge_iteration, judge_scorers

        gate = spec.round_gate
        assert gate is not None
        if scorers and judge_scorers(gate, iteration, record.metrics) is None:
            return False
        verdict = (judge_scorers(gate, iteration, record.metrics) if scorers
                   else judge_iteration(gate, iteration, record.metrics, self.status.best_checkpoint))
        if verdict is None:
            message = (f"iteration {iteration} reported no {gate.metric} (does the run hold out pairs? "
                       "sail.validation): the round gate cannot judge it")
            self._cond(ConditionType.ROUND_ACCEPTED, "Unknown", Reason.ROUND_ACCEPTED, message)
            self._event(WARNING, Reason.ROUND_ACCEPTED, message)
            return False
        if is_new_best(verdict) and self.status.checkpoint is not None:
            self.status.best_checkpoint = BestCheckpointStatus(
                **self.status.checkpoint.model_dump(), metric=verdict.metric, value=verdict.value)
        message = verdict.describe(gate.tolerance)
        if not verdict.regressed:
            self._cond(ConditionType.ROUND_ACCEPTED, "True", Reason.ROUND_ACCEPTED, message)
            return False
        self._cond(ConditionType.ROUND_ACCEPTED, "False", Reason.ROUND_REGRESSED, message)
        if gate.on_regression == "continue":
            self._event(WARNING, Reason.ROUND_REGRESSED, f"{message}; continuing (roundGate.onRegression: continue)")
            return False
        best = self.status.best_checkpoint
        where = f"iteration {best.iteration} ({best.uri})" if best else "none"
        self._event(WARNING, Reason.ROUND_REGRESSED, f"{message}; stopping, best checkpoint: {where}")
        self.status.state = RunState.SUCCEEDED
        self.status.current, self.status.current_phase, self.status.backoff_until = None, None, None
        self.status.current_iteration = iteration
        self.status.message = f"stopped by the round gate after iteration {iteration}; best checkpoint: {where}"
        self._cond(ConditionType.COMPLETE, "True", Reason.STOPPED_ON_REGRESSION, f"{message}; best checkpoint: {where}")
        for type_ in (ConditionType.RUNNING, ConditionType.RETRYING, ConditionType.SUSPENDED):
            self._cond(type_, "False", Reason.STOPPED_ON_REGRESSION, "")
        return True

    def _checkpoint(self, spec: SAILRunSpec, iteration: int, obs: AttemptObservation) -> None:
        uri = next((str(s.extra[CHECKPOINT_EXTRA_KEY]) for s in obs.summaries if s.extra.get(CHECKPOINT_EXTRA_KEY)), None)
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
        phases = phases_of_iteration(step.iteration, spec.evaluation is not None)
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
        # Its cause is in status now (written before any action): a failed Job left standing while
        # the retry runs trips the cluster's failed-Job alerts. A run that ends Failed keeps its last one.
        self.actions.append(DeletePhaseJob(name=obs.name))
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
            order = {p.value: n for n, p in enumerate(phases_of_iteration(iteration, True))}
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
        evaluate = spec.evaluation is not None
        total = compute_total_phases(spec.sail.rounds, evaluate)
        cursor = self._cursor()
        done = total if cursor is None or cursor.iteration > spec.sail.rounds else compute_step_index(cursor, evaluate)
        done = min(done, total)
        self.status.progress = Progress(percent=(100 * done) // total if total else 100,
                                        completed_phases=done, total_phases=total)

