"""Observe: turn what the API server holds (a SAILRun, its Jobs, their pods) into planner facts.

Pure functions over plain API dicts: `act.py` fetches the objects, this module classifies
them, `planner.decide` decides. Nothing here writes, sleeps or reads a clock.

Classification of a finished attempt (docs/operating.md, "What it does"; one small error vocabulary):
- infra: a pod was disrupted (DisruptionTarget: preemption, eviction, taint manager, node
  shutdown), evicted, lost with its node, or exited with the TRANSIENT code (storage
  unreachable); a Job suspended by Kueue is *pending*, not failed.
- deadline: the Job passed activeDeadlineSeconds (counted against the app budget by the planner).
- non_retryable: the pod exited with a bad-spec / bad-data code (podFailurePolicy FailJob).
- app: anything else.
Label selectors are applied client-side as well (the emulator in tests ignores them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sail_api.phases import NON_RETRYABLE_EXIT_CODES, ExitCode, Phase, PhaseSummary
from sail_api.spec import SAILRun, SAILRunSpec
from sail_api.status import SAILRunStatus
from sail_operator.kube.jobs import LABEL_ATTEMPT, LABEL_ITERATION, LABEL_MANAGED_BY, LABEL_PHASE, LABEL_RUN
from sail_operator.kube.settings import MANAGED_BY, OperatorSettings
from sail_operator.planner.model import AttemptObservation, AttemptState, FailureCause, Observed
from sail_operator.policy import compute_policy_violations

log = logging.getLogger(__name__)

INFRA_POD_REASONS = frozenset({
    "Evicted", "Preempting", "NodeLost", "NodeShutdown", "Terminated", "UnexpectedAdmissionError",
    "OutOfpods", "OutOfcpu", "OutOfmemory", "Shutdown",
})
INFRA_CONDITION_REASONS = frozenset({"PreemptionByScheduler", "DeletionByTaintManager", "EvictionByEvictionAPI",
                                     "DeletionByPodGC", "TerminationByKubelet"})
# A Job that Kueue suspended (evicted, preempted) before it failed: its failure is the cluster's.
KUEUE_EVICTION_MARKERS = ("Evict", "Preempt", "Kueue", "Workload")


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 from the API ('2026-11-25T10:00:00Z'); None for anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(((obj.get("metadata") or {}).get("labels")) or {})


def select_run_children(objs: Iterable[Mapping[str, Any]], run_name: str) -> list[Mapping[str, Any]]:
    """Client-side label filter: ours (managed-by) and of this run."""
    return [
        obj for obj in objs
        if _labels(obj).get(LABEL_MANAGED_BY) == MANAGED_BY and _labels(obj).get(LABEL_RUN) == run_name
    ]


def is_owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(isinstance(ref, Mapping) and ref.get("uid") == uid for ref in refs)


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in ((job.get("status") or {}).get("conditions")) or []:
        if isinstance(condition, Mapping) and condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _terminated_states(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    states = []
    for status in ((pod.get("status") or {}).get("containerStatuses")) or []:
        if not isinstance(status, Mapping):
            continue
        for key in ("state", "lastState"):
            terminated = ((status.get(key) or {}) or {}).get("terminated")
            if isinstance(terminated, Mapping):
                states.append(terminated)
                break
    return states


def parse_termination_message(message: Any) -> PhaseSummary | None:
    """A phase's JSON summary; None for empty, truncated or foreign text (logs via FallbackToLogs)."""
    if not isinstance(message, str) or not message.strip().startswith("{"):
        return None
    try:
        return PhaseSummary.model_validate(json.loads(message))
    except (ValueError, ValidationError) as error:
        log.debug("ignoring a termination message that is not a phase summary: %s", error)
        return None


def collect_summaries(pods: Iterable[Mapping[str, Any]]) -> tuple[PhaseSummary, ...]:
    summaries: list[PhaseSummary] = []
    for pod in pods:
        for terminated in _terminated_states(pod):
            summary = parse_termination_message(terminated.get("message"))
            if summary is not None:
                summaries.append(summary)
    return tuple(sorted(summaries, key=lambda s: s.shard or ""))


def _exit_codes(pods: Iterable[Mapping[str, Any]]) -> set[int]:
    codes: set[int] = set()
    for pod in pods:
        for terminated in _terminated_states(pod):
            code = terminated.get("exitCode")
            if isinstance(code, int):
                codes.add(code)
    return codes


def _pod_was_disrupted(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("reason") in INFRA_POD_REASONS:
        return True
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "DisruptionTarget" \
                and condition.get("status") == "True":
            return True
    return False


def classify_failure(job: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> tuple[FailureCause, str]:
    """Which retry budget a failed Job spends, and a message naming why."""
    failed = _condition(job, "Failed") or {}
    reason = str(failed.get("reason") or "")
    message = str(failed.get("message") or "")
    codes = _exit_codes(pods)
    if reason == "DeadlineExceeded":
        return FailureCause.DEADLINE, message or "the Job passed activeDeadlineSeconds"
    non_retryable = sorted(code for code in codes if code in {int(c) for c in NON_RETRYABLE_EXIT_CODES})
    if non_retryable or (reason == "PodFailurePolicy" and "FailJob" in message):
        code = non_retryable[0] if non_retryable else None
        return FailureCause.NON_RETRYABLE, message or f"trainer exited with non-retryable code {code}"
    if any(_pod_was_disrupted(pod) for pod in pods):
        return FailureCause.INFRA, message or "a pod was disrupted (preemption, eviction or node loss)"
    if int(ExitCode.TRANSIENT) in codes:
        return FailureCause.INFRA, message or f"trainer exited with TRANSIENT code {int(ExitCode.TRANSIENT)}"
    if reason in INFRA_CONDITION_REASONS or _was_evicted_by_kueue(job):
        return FailureCause.INFRA, message or reason or "the Job was evicted by Kueue"
    return FailureCause.APP, message or (f"trainer exited with code {sorted(codes)}" if codes else reason)


def _was_evicted_by_kueue(job: Mapping[str, Any]) -> bool:
    for condition in ((job.get("status") or {}).get("conditions")) or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Suspended":
            text = f"{condition.get('reason', '')} {condition.get('message', '')}"
            if any(marker in text for marker in KUEUE_EVICTION_MARKERS):
                return True
    return False


def _earliest_pod_start(pods: Iterable[Mapping[str, Any]]) -> datetime | None:
    starts: list[datetime] = []
    for pod in pods:
        for status in ((pod.get("status") or {}).get("containerStatuses")) or []:
            if not isinstance(status, Mapping):
                continue
            for key in ("running", "terminated"):
                started = parse_time(((status.get("state") or {}).get(key) or {}).get("startedAt"))
                if started is not None:
                    starts.append(started)
    return min(starts) if starts else None


def compute_attempt_state(job: Mapping[str, Any]) -> AttemptState:
    status = job.get("status") or {}
    if _condition(job, "Complete") is not None:
        return AttemptState.SUCCEEDED
    if _condition(job, "Failed") is not None:
        return AttemptState.FAILED
    if (job.get("spec") or {}).get("suspend") or _condition(job, "Suspended") is not None:
        return AttemptState.PENDING  # Kueue has not admitted it (or evicted it): waits, spends nothing
    active = int(status.get("active") or 0)
    ready = status.get("ready")
    if active > 0 and (ready is None or int(ready) > 0):
        return AttemptState.RUNNING
    return AttemptState.PENDING


def _identity(job: Mapping[str, Any]) -> tuple[int, Phase, int] | None:
    labels = _labels(job)
    try:
        return int(labels[LABEL_ITERATION]), Phase(labels[LABEL_PHASE]), int(labels[LABEL_ATTEMPT])
    except (KeyError, ValueError):
        return None


def _pods_of(job_name: str, identity: tuple[int, Phase, int], pods: Iterable[Mapping[str, Any]]) -> list:
    iteration, phase, attempt = identity
    selected = []
    for pod in pods:
        labels = _labels(pod)
        by_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if by_name is not None:
            if by_name == job_name:
                selected.append(pod)
        elif (labels.get(LABEL_ITERATION), labels.get(LABEL_PHASE), labels.get(LABEL_ATTEMPT)) == (
            str(iteration), phase.value, str(attempt)
        ):
            selected.append(pod)
    return selected


def build_attempt(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], run_uid: str | None
                  ) -> AttemptObservation | None:
    """One Job (and its pods) as the planner sees it; None for a Job without readable labels."""
    identity = _identity(job)
    meta = job.get("metadata") or {}
    name = meta.get("name")
    if identity is None or not isinstance(name, str):
        log.warning("ignoring Job %r: its sail.dev labels are missing or malformed", name)
        return None
    job_pods = _pods_of(name, identity, pods)
    state = compute_attempt_state(job)
    cause, message = (None, "")
    status = job.get("status") or {}
    finished_at = parse_time(status.get("completionTime"))
    summaries = collect_summaries(job_pods)
    if state is AttemptState.FAILED:
        cause, message = classify_failure(job, job_pods)
        errors = sorted({s.error for s in summaries if s.error})
        if errors:  # the trainer's own words (field or file at fault) beat the Job controller's
            message = f"{'; '.join(errors)} ({message})" if message else "; ".join(errors)
        finished_at = parse_time((_condition(job, "Failed") or {}).get("lastTransitionTime")) or finished_at
    elif state is AttemptState.PENDING and _condition(job, "Suspended") is not None:
        message = str((_condition(job, "Suspended") or {}).get("message") or "suspended (queued by Kueue)")
    started_at = _earliest_pod_start(job_pods)
    if started_at is None and state is not AttemptState.PENDING:
        started_at = parse_time(status.get("startTime"))
    iteration, phase, attempt = identity
    return AttemptObservation(
        name=name, iteration=iteration, phase=phase, attempt=attempt, state=state, cause=cause,
        message=message, summaries=summaries,
        created_at=parse_time(meta.get("creationTimestamp")), started_at=started_at,
        finished_at=finished_at, owned=is_owned_by(job, run_uid),
    )


def format_validation_error(error: ValidationError) -> str:
    """'spec.sail.rounds: Input should be ...; ...' -- every field at fault, by its wire name."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}" if location else str(item.get("msg")))
    return "; ".join(parts)


def validate_run(raw: Mapping[str, Any], settings: OperatorSettings) -> tuple[SAILRunSpec | None, str | None]:
    """(spec, None) or (None, message naming the field and the fix); never raises."""
    body = {key: raw.get(key) for key in ("apiVersion", "kind", "metadata", "spec")}
    body["apiVersion"] = body["apiVersion"] or "sail.dev/v1alpha1"
    body["kind"] = body["kind"] or "SAILRun"
    try:
        parsed = SAILRun.model_validate(body)
    except ValidationError as error:
        return None, format_validation_error(error)
    except Exception as error:  # a bad object must never crash the operator
        return None, f"spec: {error}"
    problems = compute_policy_violations(parsed.spec, settings.policy)
    if not parsed.spec.storage.uri:
        problems.append("spec.storage.uri is required on a cluster: the s3:// prefix where the run keeps "
                        "its artifacts and checkpoints")
    if problems:
        return None, "; ".join(problems)
    return parsed.spec, None


def parse_status(raw: Mapping[str, Any]) -> SAILRunStatus:
    """Our own status back; a mangled status (someone edited it) restarts from the storage truth."""
    try:
        return SAILRunStatus.model_validate(raw.get("status") or {})
    except ValidationError as error:
        log.warning("status of %s does not parse (%s); planning from an empty status",
                    (raw.get("metadata") or {}).get("name"), format_validation_error(error))
        return SAILRunStatus()


def build_observed(
    raw: Mapping[str, Any],
    jobs: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    settings: OperatorSettings,
) -> Observed:
    """Everything `decide` needs about one SAILRun, from API objects only."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name") or "")
    uid = meta.get("uid")
    spec, spec_error = validate_run(raw, settings)
    pods = select_run_children(pods, name)
    attempts = []
    for job in select_run_children(jobs, name):
        attempt = build_attempt(job, pods, uid)
        if attempt is not None:
            attempts.append(attempt)
    attempts.sort(key=lambda a: (a.iteration, a.phase.value, a.attempt))
    return Observed(
        name=name, namespace=meta.get("namespace"), uid=uid, generation=int(meta.get("generation") or 1),
        spec=spec, spec_error=spec_error, status=parse_status(raw), attempts=tuple(attempts),
    )
