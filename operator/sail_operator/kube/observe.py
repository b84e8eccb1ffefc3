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
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sail_api.phases import Phase, PhaseSummary
from sail_api.resolved import DIGEST_EXCLUDED_SAIL_FIELDS, ResolvedRun
from sail_api.spec import SAILRun, SAILRunSpec
from sail_api.status import SAILRunStatus
from sail_api.validation import RunFileError, check_run, validate_run_document
from sail_operator.kube.jobs import (
    LABEL_ATTEMPT,
    LABEL_ITERATION,
    LABEL_MANAGED_BY,
    LABEL_PHASE,
    LABEL_RUN,
    SPEC_FILE_KEY,
)
from sail_operator.kube.settings import MANAGED_BY, OperatorSettings
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    FailureCause,
    Observed,
    compute_failure_cause,
)
from sail_operator.planner.timefmt import parse_time
from sail_operator.policy import OperatorPolicy, compute_policy_violations

log = logging.getLogger(__name__)

INFRA_POD_REASONS = frozenset({
    "Evicted", "Preempting", "NodeLost", "NodeShutdown", "Terminated", "UnexpectedAdmissionError",
    "OutOfpods", "OutOfcpu", "OutOfmemory", "Shutdown",
})
INFRA_CONDITION_REASONS = frozenset({"PreemptionByScheduler", "DeletionByTaintManager", "EvictionByEvictionAPI",
                                     "DeletionByPodGC", "TerminationByKubelet"})
# A Job that Kueue suspended (evicted, preempted) before it failed: its failure is the cluster's.
KUEUE_EVICTION_MARKERS = ("Evict", "Preempt", "Kueue", "Workload")


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


def describe_pod_failures(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """What the kubelet and scheduler say happened to each failed pod, in words a user acts on.

    The Job's own condition only says "Job has reached the specified backoff limit"; the failed
    Job and its pods are deleted after a later success, so this is all that remains of the cause.
    """
    causes: list[str] = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name")
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if isinstance(condition, Mapping) and condition.get("type") == "DisruptionTarget" \
                    and condition.get("status") == "True":
                why = str(condition.get("reason") or "disrupted")
                what = "preempted" if "Preempt" in why else "evicted" if "Evict" in why else "disrupted"
                causes.append(f"pod {name} was {what} ({why}: {condition.get('message') or 'no message'})")
                break
        else:
            if status.get("reason") in INFRA_POD_REASONS:
                causes.append(f"pod {name} was {'evicted' if status.get('reason') == 'Evicted' else 'lost'} "
                              f"({status.get('reason')}: {status.get('message') or 'no message'})")
        for container in status.get("containerStatuses") or []:
            terminated = ((container.get("state") or {}).get("terminated") or {}) if isinstance(container, Mapping) \
                else {}
            if terminated.get("reason") == "OOMKilled":
                causes.append(f"container {container.get('name')} of pod {name} was OOMKilled (exit "
                              f"{terminated.get('exitCode')}): it ran out of memory; raise the phase's "
                              "spec.resources.<phase>.limits.memory or lower its batch sizes")
    return causes


def classify_failure(job: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> tuple[FailureCause, str]:
    """Which retry budget a failed Job spends, and a message naming why."""
    cause, message = _classify_failure(job, pods)
    causes = describe_pod_failures(pods)
    return cause, "; ".join([*causes, message]) if causes else message


def _classify_failure(job: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> tuple[FailureCause, str]:
    failed = _condition(job, "Failed") or {}
    reason = str(failed.get("reason") or "")
    message = str(failed.get("message") or "")
    codes = _exit_codes(pods)
    if reason == "DeadlineExceeded":
        return FailureCause.DEADLINE, message or "the Job passed activeDeadlineSeconds"
    by_cause: dict[FailureCause | None, list[int]] = {}
    for code in sorted(codes):  # the exit-code table the local executor uses too
        by_cause.setdefault(compute_failure_cause(code), []).append(code)
    non_retryable = by_cause.get(FailureCause.NON_RETRYABLE, [])
    if non_retryable or (reason == "PodFailurePolicy" and "FailJob" in message):
        code = non_retryable[0] if non_retryable else None
        return FailureCause.NON_RETRYABLE, message or f"trainer exited with non-retryable code {code}"
    if any(_pod_was_disrupted(pod) for pod in pods):
        return FailureCause.INFRA, message or "a pod was disrupted (preemption, eviction or node loss)"
    if FailureCause.INFRA in by_cause:
        return FailureCause.INFRA, message or f"trainer exited with TRANSIENT code {by_cause[FailureCause.INFRA][0]}"
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


LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LEGACY_LABEL_CONTROLLER_UID = "controller-uid"


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The UID of an object's controller: its controller ownerReference, else the Job controller's label."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid"):
            return str(ref["uid"])
    labels = _labels(obj)
    uid = labels.get(LABEL_CONTROLLER_UID) or labels.get(LEGACY_LABEL_CONTROLLER_UID)
    return str(uid) if uid else None


def _pods_of(job: Mapping[str, Any], identity: tuple[int, Phase, int], pods: Iterable[Mapping[str, Any]]) -> list:
    """The pods of this very Job: matched by the Job's UID (what the Job controller's own selector
    uses), never by name alone -- a deleted and re-created Job has the same name, and the old
    one's pods may still be around while garbage collection removes them."""
    meta = job.get("metadata") or {}
    job_uid, job_name = meta.get("uid"), meta.get("name")
    iteration, phase, attempt = identity
    selected = []
    for pod in pods:
        labels = _labels(pod)
        owner = _controller_uid(pod)
        if owner is not None:
            if job_uid is not None and owner == job_uid:
                selected.append(pod)
            continue
        by_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if by_name is not None:  # a pod that names no controller UID at all (hand-made): by name
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
    job_pods = _pods_of(job, identity, pods)
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
        orphaned=not is_owned_by(job, run_uid) and _controller_uid_of_owner(job) is None,
    )


def _controller_uid_of_owner(obj: Mapping[str, Any]) -> str | None:
    """UID of the controller ownerReference (None: no owner left, e.g. `--cascade=orphan`)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("uid"):
            return str(ref["uid"])
    return None


def format_validation_error(error: ValidationError) -> str:
    """'spec.sail.rounds: Input should be ...; ...' -- every field at fault, by its wire name."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', 'invalid')}" if location else str(item.get("msg")))
    return "; ".join(parts)


def compute_cluster_violations(run: SAILRun, policy: OperatorPolicy) -> list[str]:
    """The rules only a cluster has, in one place: the admin policy, and storage the pods share."""
    problems = compute_policy_violations(run.spec, policy, run.metadata.namespace)
    if not run.spec.storage.uri:
        problems.append("spec.storage.uri is required on a cluster: the s3:// prefix where the run keeps "
                        "its artifacts and checkpoints")
    return problems


def admit_run(document: Mapping[str, Any], policy: OperatorPolicy | None) -> tuple[SAILRun | None, list[str]]:
    """The verdict `sail validate` and the operator share: (run, []) or (None or run, problems).

    The object is read strictly, as the API server and `sail validate` read it
    (`validate_run_document`), then judged by `check_run`: semantics and the API server's rules
    for names and label values, plus the cluster's rules when a policy is given.
    """
    try:
        run = validate_run_document(dict(document))
    except RunFileError as error:
        return None, list(error.problems)
    cluster_rules = None if policy is None else (lambda parsed: compute_cluster_violations(parsed, policy))
    return run, check_run(run, cluster_rules)


def validate_run(raw: Mapping[str, Any], settings: OperatorSettings) -> tuple[SAILRunSpec | None, str | None]:
    """(spec, None) or (None, message naming the field and the fix); never raises."""
    body = {key: raw.get(key) for key in ("apiVersion", "kind", "metadata", "spec")}
    body["apiVersion"] = body["apiVersion"] or "sail.dev/v1alpha1"
    body["kind"] = body["kind"] or "SAILRun"
    try:
        run, problems = admit_run(body, settings.policy)
    except Exception as error:  # noqa: BLE001  (a bad object must never crash the operator)
        return None, f"spec: {error}"
    if problems or run is None:
        return None, "; ".join(problems) or "spec did not validate"
    return run.spec, None


def parse_status(raw: Mapping[str, Any]) -> SAILRunStatus:
    """Our own status back; a mangled status (someone edited it) restarts from the storage truth."""
    try:
        return SAILRunStatus.model_validate(raw.get("status") or {})
    except ValidationError as error:
        log.warning("status of %s does not parse (%s); planning from an empty status",
                    (raw.get("metadata") or {}).get("name"), format_validation_error(error))
        return SAILRunStatus()


def _flatten(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{path}.{key}"))
        return out
    return {path: value}


def read_pinned_run(configmap: Mapping[str, Any] | None) -> ResolvedRun | None:
    """The resolved run the `{run}-spec` ConfigMap holds (what the run's Jobs read); None if unreadable."""
    text = ((configmap or {}).get("data") or {}).get(SPEC_FILE_KEY)
    if not isinstance(text, str):
        return None
    try:
        return ResolvedRun.model_validate_json(text)
    except ValidationError as error:
        log.warning("ignoring an unreadable %s ConfigMap: %s", SPEC_FILE_KEY, format_validation_error(error))
        return None


def compute_pinned_changes(spec: SAILRunSpec, pinned: ResolvedRun | None) -> tuple[str, ...]:
    """Fields fixed for the life of a run that `spec` changes: `spec.path: old -> new` each.

    The algorithm (what the committed outputs were computed with; `sail.rounds` excepted, it may
    grow) and `storage.uri` (the run root: a new one would split the run in two).
    """
    if pinned is None:
        return ()
    old = _flatten(pinned.algorithm.model_dump(mode="json", by_alias=True), "spec")
    new = _flatten(spec.algorithm().model_dump(mode="json", by_alias=True), "spec")
    for excluded in DIGEST_EXCLUDED_SAIL_FIELDS:
        old.pop(f"spec.sail.{excluded}", None)
        new.pop(f"spec.sail.{excluded}", None)
    old["spec.storage.uri"], new["spec.storage.uri"] = pinned.storage.uri, spec.storage.uri
    return tuple(f"{path}: {json.dumps(old.get(path))} -> {json.dumps(new.get(path))}"
                 for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path))


def build_observed(
    raw: Mapping[str, Any],
    jobs: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    settings: OperatorSettings,
    spec_configmap: Mapping[str, Any] | None = None,
) -> Observed:
    """Everything `decide` needs about one SAILRun, from API objects only.

    `spec_configmap`: the `{run}-spec` ConfigMap if it exists. Ours, it pins the fields the run
    started with; still owned by an earlier SAILRun of this name, it blocks creation until
    garbage collection removes it; orphaned (no owner), the operator takes it over on create.
    """
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
    blocked_by, pinned_changes = None, ()
    if spec_configmap is not None:
        if is_owned_by(spec_configmap, uid):
            if spec is not None:
                pinned_changes = compute_pinned_changes(spec, read_pinned_run(spec_configmap))
        elif _controller_uid_of_owner(spec_configmap) is not None:
            blocked_by = f"ConfigMap {(spec_configmap.get('metadata') or {}).get('name')}"
    return Observed(
        name=name, namespace=meta.get("namespace"), uid=uid, generation=int(meta.get("generation") or 1),
        spec=spec, spec_error=spec_error, status=parse_status(raw), attempts=tuple(attempts),
        blocked_by=blocked_by, pinned_changes=pinned_changes,
    )
