"""Act: the only code that writes to the Kubernetes API (plus the fetch that feeds observe).

One reconcile of one SAILRun is `fetch -> observe -> decide -> act`:
1. fetch the SAILRun, its Jobs and their pods (label selectors sent, and re-applied client-side);
2. `observe.build_observed` classifies them; `decide(observed, now)` (the planner) returns the
   whole new status and the actions;
3. the status is patched ONCE (status subresource), and only if it changed, *before* any Job
   is created: a crash after the patch and before the create is healed by the next reconcile
   (same name), a crash after the create is healed by observing the Job (no duplicate);
4. the actions run in order: spec ConfigMap / headless Service / Job creates (409 adopts the
   existing object only when its controller UID is this run's, else it is reported), deletes
   of finished Jobs (Background propagation), core/v1 Events on the SAILRun.

The client is the official `kubernetes` package used synchronously (the kopf wiring calls
`reconcile_run` in a worker thread); its configuration is built explicitly from the
settings, never from the environment at import time.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sail_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from sail_api.status import TERMINAL_STATES, RunState, SAILRunStatus
from sail_operator.kube.jobs import (
    LABEL_MANAGED_BY,
    LABEL_RUN,
    build_headless_service,
    build_phase_job,
    build_spec_configmap,
    compute_gpus_per_pod,
)
from sail_operator.kube.observe import build_observed, is_owned_by, parse_time
from sail_operator.kube.settings import MANAGED_BY, OperatorSettings
from sail_operator.metrics import OperatorMetrics, build_run_snapshot
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    Observed,
    RequeueAfter,
)

log = logging.getLogger(__name__)

EVENT_MESSAGE_LIMIT = 1024
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a stuck API call must not wedge a reconcile forever
RETRY_AFTER_ERROR_SECONDS = 5.0

DecideFn = Callable[[Observed, datetime], Decision]


class ApiError(Exception):
    """A non-2xx answer of the API server, with its status code and reason."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {body[:300]}")
        self.status = status
        self.reason = reason
        self.body = body


class KubeApi:
    """Tiny JSON REST layer over kubernetes.client.ApiClient (its TLS, auth and proxies)."""

    def __init__(self, api_client: Any) -> None:
        self._client = api_client

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, post = self._client.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(method, url, headers, body, post, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        text = response.data.decode() if isinstance(response.data, bytes) else str(response.data or "")
        if not 200 <= response.status < 300:
            reason = response.reason or ""
            try:
                reason = json.loads(text).get("reason") or reason
            except (ValueError, AttributeError):
                pass
            raise ApiError(response.status, str(reason), text)
        return json.loads(text) if text else {}

    def close(self) -> None:
        self._client.close()


def build_kube_api(settings: OperatorSettings) -> KubeApi:
    """A client configured from the settings: a kubeconfig file given explicitly, or in-cluster."""
    from kubernetes import client, config  # imported here: the planner-only paths never need it

    configuration = client.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                                client_configuration=configuration, persist_config=False)
    else:
        config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, settings.reconcile_workers)
    # Resolve the proxy (from the environment unless the kubeconfig names one) once, here: the
    # client's token-refresh hook re-assigns `host` before every request, and with an env-derived
    # proxy that re-reads the whole environment each time (~10% of the operator's CPU per request).
    configuration.proxy = configuration.proxy
    return KubeApi(client.ApiClient(configuration))


# ------------------------------------------------------------------ paths


def run_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/{plural}" + (f"/{quote(name)}" if name else "")


def job_path(namespace: str, name: str | None = None) -> str:
    return f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs" + (f"/{quote(name)}" if name else "")


def run_selector(run_name: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}={run_name}"


# ------------------------------------------------------------------ writes


def build_event(raw_run: Mapping[str, Any], event: EmitEvent, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about the SAILRun (kubectl describe shows it)."""
    meta = raw_run.get("metadata") or {}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace"),
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: str(meta.get("name"))},
        },
        "involvedObject": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:EVENT_MESSAGE_LIMIT],
        "source": {"component": MANAGED_BY},
        "reportingComponent": "sail.dev/operator",
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def post_event(api: KubeApi, raw_run: Mapping[str, Any], event: EmitEvent, now: datetime) -> None:
    """Events are best effort: a failed post is logged, never fails the reconcile."""
    namespace = (raw_run.get("metadata") or {}).get("namespace")
    try:
        api.request("POST", core_path(namespace, "events"), body=build_event(raw_run, event, now))
    except Exception as error:  # noqa: BLE001  (best effort)
        log.warning("could not post event %s on %s: %s", event.reason, namespace, error)


def strip_nulls(value: Any) -> Any:
    """Drop None values at every depth (how a status looks after a merge patch stored it)."""
    if isinstance(value, Mapping):
        return {key: strip_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [strip_nulls(item) for item in value]
    return value


def build_status_patch(old: Mapping[str, Any] | None, new: SAILRunStatus) -> dict[str, Any] | None:
    """JSON merge patch of the whole status; None when nothing changed (no write, no watch echo)."""
    body = new.model_dump(mode="json", by_alias=True)
    current = dict(old or {})
    # A merge patch deletes null keys at every depth, so the stored status never has them.
    if strip_nulls(current) == strip_nulls(body):
        return None
    patch = dict(body)  # None values delete keys (merge-patch semantics)
    for key in current:
        if key not in patch:
            patch[key] = None
    return {"status": patch}


def patch_status(api: KubeApi, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return api.request("PATCH", run_path(namespace, name, "status"), body=patch,
                       content_type="application/merge-patch+json")


@dataclass
class CreateOutcome:
    created: bool = False
    adopted: bool = False
    conflict: str | None = None  # the object exists but belongs to someone else


def create_owned(api: KubeApi, path: str, body: dict[str, Any], uid: str | None) -> CreateOutcome:
    """POST; on 409 adopt only an object whose ownerReference UID is ours, else report a conflict."""
    name = body["metadata"]["name"]
    try:
        api.request("POST", path, body=body)
        return CreateOutcome(created=True)
    except ApiError as error:
        if error.status != 409:
            raise
    existing = api.request("GET", f"{path}/{quote(name)}")
    if is_owned_by(existing, uid):
        return CreateOutcome(adopted=True)
    return CreateOutcome(conflict=f"{body['kind']} {name!r} already exists and is not owned by this SAILRun "
                                  f"(uid {uid}); delete or rename it")


def delete_job(api: KubeApi, namespace: str, name: str) -> None:
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    try:
        api.request("DELETE", job_path(namespace, name), body=body)
    except ApiError as error:
        if error.status != 404:
            raise


# ------------------------------------------------------------------ reconcile


@dataclass
class ReconcileResult:
    requeue_after: float | None = None
    status_written: bool = False
    written_version: str | None = None  # resourceVersion our status PATCH produced (its watch echo carries it)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    gone: bool = False


@dataclass
class MetricsMemory:
    """Per-process memory so that a finished attempt is counted once by this process."""

    counted_attempts: set[str] = field(default_factory=set)


def fetch_children(api: KubeApi, namespace: str, run_name: str) -> tuple[list[dict], list[dict]]:
    selector = {"labelSelector": run_selector(run_name)}
    jobs = api.request("GET", job_path(namespace), query=selector).get("items") or []
    pods = api.request("GET", core_path(namespace, "pods"), query=selector).get("items") or []
    return jobs, pods


def _record_attempts(metrics: OperatorMetrics, memory: MetricsMemory, namespace: str,
                     attempts: Iterable[AttemptObservation], jobs_by_name: Mapping[str, Mapping]) -> None:
    for attempt in attempts:
        if attempt.state not in (AttemptState.SUCCEEDED, AttemptState.FAILED):
            continue
        key = f"{namespace}/{attempt.name}"
        if key in memory.counted_attempts:
            continue
        memory.counted_attempts.add(key)
        duration = queue_wait = None
        if attempt.started_at and attempt.finished_at:
            duration = (attempt.finished_at - attempt.started_at).total_seconds()
        if attempt.created_at and attempt.started_at:
            queue_wait = (attempt.started_at - attempt.created_at).total_seconds()
        job = jobs_by_name.get(attempt.name) or {}
        pods = int((job.get("spec") or {}).get("completions") or 1)
        result = "succeeded" if attempt.state is AttemptState.SUCCEEDED else "failed"
        cause = attempt.cause.value if attempt.cause else None
        metrics.record_attempt(namespace, attempt.phase.value, result, cause, duration, queue_wait,
                               compute_gpus_per_pod(job) * pods)


def _record_run(metrics: OperatorMetrics, raw: Mapping[str, Any], old: SAILRunStatus,
                new: SAILRunStatus) -> None:
    if not raw.get("status") and new.current is not None:
        metrics.runs_created.inc()
    if new.state in TERMINAL_STATES and old.state not in TERMINAL_STATES:
        metrics.record_run_finished("succeeded" if new.state is RunState.SUCCEEDED else "failed")
    snapshot = build_run_snapshot({**raw, "status": new.model_dump(mode="json", by_alias=True)})
    metrics.index.put(snapshot)


def _create_phase(api: KubeApi, raw: Mapping[str, Any], action: CreatePhaseJob, settings: OperatorSettings,
                  result: ReconcileResult, now: datetime) -> None:
    namespace = raw["metadata"]["namespace"]
    uid = raw["metadata"].get("uid")
    children = [(core_path(namespace, "configmaps"), build_spec_configmap(raw))]
    service = build_headless_service(raw, action, settings.master_port)
    if service is not None:
        children.append((core_path(namespace, "services"), service))
    children.append((job_path(namespace), build_phase_job(raw, action, settings)))
    for path, body in children:
        outcome = create_owned(api, path, body, uid)
        if outcome.conflict:
            log.error("run %s/%s: %s", namespace, raw["metadata"]["name"], outcome.conflict)
            post_event(api, raw, EmitEvent("Warning", "NameConflict", outcome.conflict), now)
            result.events.append("NameConflict")
            result.requeue_after = RETRY_AFTER_ERROR_SECONDS * 6
            return
        if body["kind"] == "Job":
            if outcome.created:
                result.created.append(action.name)
                log.info("run %s/%s: created Job %s", namespace, raw["metadata"]["name"], action.name)
            else:
                log.info("run %s/%s: adopted existing Job %s (same owner UID)",
                         namespace, raw["metadata"]["name"], action.name)


def apply_decision(api: KubeApi, raw: Mapping[str, Any], observed: Observed, decision: Decision,
                   settings: OperatorSettings, now: datetime, jobs: Mapping[str, Mapping] | None = None
                   ) -> ReconcileResult:
    """Write the status (once, if changed), then perform the actions in order."""
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    result = ReconcileResult()
    patch = build_status_patch(raw.get("status"), decision.status)
    if patch is not None:
        written = patch_status(api, namespace, name, patch)  # raises: nothing is created without the record
        result.status_written = True
        result.written_version = (written.get("metadata") or {}).get("resourceVersion") or None
    for action in decision.actions:
        if isinstance(action, CreatePhaseJob):
            _create_phase(api, raw, action, settings, result, now)
        elif isinstance(action, DeletePhaseJob):
            if settings.delete_finished_jobs:
                delete_job(api, namespace, action.name)
                _delete_service_of(api, namespace, (jobs or {}).get(action.name))
                result.deleted.append(action.name)
        elif isinstance(action, EmitEvent):
            post_event(api, raw, action, now)
            result.events.append(action.reason)
        elif isinstance(action, RequeueAfter):
            seconds = max(settings.requeue_floor_seconds, float(action.seconds))
            result.requeue_after = seconds if result.requeue_after is None else min(result.requeue_after, seconds)
    return result


def _delete_service_of(api: KubeApi, namespace: str, job: Mapping[str, Any] | None) -> None:
    subdomain = ((((job or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("subdomain")
    if not subdomain:
        return
    try:
        api.request("DELETE", core_path(namespace, "services", subdomain))
    except ApiError as error:
        if error.status != 404:
            raise


def reconcile_run(
    api: KubeApi,
    namespace: str,
    name: str,
    settings: OperatorSettings,
    metrics: OperatorMetrics,
    decide: DecideFn,
    memory: MetricsMemory | None = None,
    now: datetime | None = None,
) -> ReconcileResult:
    """One level-based pass over one SAILRun. Idempotent: running it twice changes nothing more."""
    try:
        raw = api.request("GET", run_path(namespace, name))
    except ApiError as error:
        if error.status == 404:
            metrics.index.remove(namespace, name)
            return ReconcileResult(gone=True)
        raise
    if (raw.get("metadata") or {}).get("deletionTimestamp"):
        metrics.index.remove(namespace, name)
        return ReconcileResult(gone=True)
    jobs, pods = fetch_children(api, namespace, name)
    observed = build_observed(raw, jobs, pods, settings)
    moment = now or datetime.now(UTC)
    decision = decide(observed, moment)
    jobs_by_name = {str((job.get("metadata") or {}).get("name")): job for job in jobs}
    result = apply_decision(api, raw, observed, decision, settings, moment, jobs_by_name)
    _record_attempts(metrics, memory or MetricsMemory(), namespace, observed.attempts, jobs_by_name)
    _record_run(metrics, raw, observed.status, decision.status)
    return result


def list_runs(api: KubeApi, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All SAILRuns the operator serves (cluster-wide when no namespaces are given)."""
    paths = [run_path(ns) for ns in namespaces] or [f"/apis/{API_GROUP}/{API_VERSION}/{PLURAL}"]
    items: list[dict[str, Any]] = []
    for path in paths:
        items += api.request("GET", path).get("items") or []
    return items


__all__ = [
    "ApiError", "KubeApi", "MetricsMemory", "ReconcileResult", "apply_decision", "build_event",
    "build_kube_api", "build_status_patch", "create_owned", "delete_job", "list_runs", "parse_time",
    "reconcile_run",
]
