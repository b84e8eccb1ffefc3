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
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sail_api.resolved import ResolvedRun
from sail_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from sail_api.status import TERMINAL_STATES, RunState, SAILRunStatus
from sail_operator.kube.jobs import (
    LABEL_MANAGED_BY,
    LABEL_RUN,
    SPEC_FILE_KEY,
    build_headless_service,
    build_phase_job,
    build_spec_configmap,
    coerce_run,
    compute_gpus_per_pod,
    spec_configmap_name,
)
from sail_operator.kube.observe import build_observed, is_owned_by, read_pinned_run
from sail_operator.kube.settings import MANAGED_BY, OperatorSettings
from sail_operator.metrics import OperatorMetrics, build_run_snapshot
from sail_operator.planner import timefmt
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    Decision,
    EmitEvent,
    Observed,
)
from sail_operator.planner.port import apply
from sail_operator.planner.timefmt import format_time

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
    stamp = format_time(now)
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


def patch_status(api: KubeApi, namespace: str, name: str, patch: dict[str, Any],
                 resource_version: str | None = None) -> dict[str, Any]:
    """Merge-patch the status; with `resource_version`, only if the run is still at that version.

    The precondition is what makes a second operator (a zombie replica, a laptop) harmless: it
    planned from an object that has changed since, so its write gets 409 Conflict before it
    creates anything, and nothing moves backwards.
    """
    body = dict(patch)
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return api.request("PATCH", run_path(namespace, name, "status"), body=body,
                       content_type="application/merge-patch+json")


# A create the API server refuses for what it holds (the spec's values, an admission policy):
# the user's to fix. 404 (namespace going away), 408, 409 and 429 are not verdicts on the object.
REFUSAL_STATUSES = frozenset({400, 403, 422})


@dataclass
class CreateOutcome:
    created: bool = False
    adopted: bool = False
    conflict: str | None = None  # the object exists but belongs to someone else
    refused: str | None = None   # the API server refused the object (REFUSAL_STATUSES): its words
    existing: dict[str, Any] | None = None  # the object found on a 409


def describe_refusal(error: ApiError) -> str:
    """The API server's own message (it names the field), else the status line."""
    try:
        message = json.loads(error.body).get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {error.status} {error.reason}: {message or error.body[:300]}"


def create_owned(api: KubeApi, path: str, body: dict[str, Any], uid: str | None) -> CreateOutcome:
    """POST; on 409 adopt only an object whose ownerReference UID is ours, else report a conflict."""
    name = body["metadata"]["name"]
    try:
        api.request("POST", path, body=body)
        return CreateOutcome(created=True)
    except ApiError as error:
        if error.status in REFUSAL_STATUSES:
            return CreateOutcome(refused=f"{body['kind']} {name}: {describe_refusal(error)}")
        if error.status != 409:
            raise
    existing = api.request("GET", f"{path}/{quote(name)}")
    if is_owned_by(existing, uid):
        return CreateOutcome(adopted=True, existing=existing)
    return CreateOutcome(conflict=f"{body['kind']} {name!r} already exists and is not owned by this SAILRun "
                                  f"(uid {uid}); it is never adopted", existing=existing)


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


def fetch_spec_configmap(api: KubeApi, namespace: str, run_name: str) -> dict[str, Any] | None:
    try:
        return api.request("GET", core_path(namespace, "configmaps", spec_configmap_name(run_name)))
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _record_attempts(metrics: OperatorMetrics, memory: MetricsMemory, namespace: str,
                     attempts: Iterable[AttemptObservation], jobs_by_name: Mapping[str, Mapping]) -> None:
    for attempt in attempts:
        if not attempt.finished:
            continue
        key = f"{namespace}/{attempt.name}"
        if key in memory.counted_attempts:
            continue
        memory.counted_attempts.add(key)
        job = jobs_by_name.get(attempt.name) or {}
        pods = int((job.get("spec") or {}).get("completions") or 1)
        result = "succeeded" if attempt.state is AttemptState.SUCCEEDED else "failed"
        cause = attempt.cause.value if attempt.cause else None
        metrics.record_attempt(namespace, attempt.phase.value, result, cause, attempt.duration_seconds,
                               attempt.queue_wait_seconds,
                               compute_gpus_per_pod(job) * pods)


def _record_run(metrics: OperatorMetrics, raw: Mapping[str, Any], old: SAILRunStatus,
                new: SAILRunStatus) -> None:
    if not raw.get("status") and new.current is not None:
        metrics.runs_created.inc()
    if new.state in TERMINAL_STATES and old.state not in TERMINAL_STATES:
        metrics.record_run_finished("succeeded" if new.state is RunState.SUCCEEDED else "failed")
    snapshot = build_run_snapshot({**raw, "status": new.model_dump(mode="json", by_alias=True)})
    metrics.index.put(snapshot)


def pin_run(raw: Mapping[str, Any], configmap: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The run as its children must be built: with the storage root it started with.

    A refused `storage.uri` edit (observe: pinned changes) must not move the Jobs to a new root.
    """
    pinned = read_pinned_run(configmap)
    uri = ((raw.get("spec") or {}).get("storage") or {}).get("uri")
    if pinned is None or pinned.storage.uri == uri:
        return raw
    spec = dict(raw.get("spec") or {})
    spec["storage"] = {**(spec.get("storage") or {}), "uri": pinned.storage.uri}
    return {**raw, "spec": spec}


def ensure_spec_configmap(api: KubeApi, raw: Mapping[str, Any], observed: Observed,
                          existing: Mapping[str, Any] | None) -> str | None:
    """Create the `{run}-spec` ConfigMap, or bring ours up to date; a conflict message, or None.

    Execution fields (`performance`, `sail.rounds`, storage endpoint) reach the trainer from the
    next attempt on; the pinned fields (`observed.pinned_changes`: algorithm, `storage.uri`) stay
    as the run started while their edit is refused. An orphaned one (no owner left) is taken over: it is ours by name and label,
    and its whole content is rewritten.
    """
    namespace, uid = raw["metadata"]["namespace"], raw["metadata"].get("uid")
    body = build_spec_configmap(coerce_run(raw))
    path = core_path(namespace, "configmaps")
    pinned = read_pinned_run(existing) if existing is not None and is_owned_by(existing, uid) else None
    if pinned is not None and observed.pinned_changes:  # execution edits go through, pinned fields stay
        wanted = ResolvedRun.model_validate_json(body["data"][SPEC_FILE_KEY])
        algorithm = pinned.algorithm.model_copy(deep=True)
        algorithm.sail.rounds = wanted.algorithm.sail.rounds
        storage = wanted.storage.model_copy(update={"uri": pinned.storage.uri})
        merged = wanted.model_copy(update={"algorithm": algorithm, "storage": storage})
        body["data"] = {SPEC_FILE_KEY: merged.to_json()}
    if existing is None:
        outcome = create_owned(api, path, body, uid)
        if outcome.refused:
            raise _Refused(outcome.refused)
        if outcome.created:
            return None
        existing = outcome.existing
    owned = is_owned_by(existing or {}, uid)
    orphaned = not owned and not ((existing or {}).get("metadata") or {}).get("ownerReferences")
    if not owned and not orphaned:
        return f"ConfigMap {body['metadata']['name']} still belongs to an earlier SAILRun of this name"
    if orphaned or (existing or {}).get("data") != body["data"]:
        update = {"data": body["data"]}
        if orphaned:
            update["metadata"] = {k: body["metadata"][k] for k in ("labels", "ownerReferences")}
        api.request("PATCH", f"{path}/{quote(body['metadata']['name'])}", body=update,
                    content_type="application/merge-patch+json")
        log.info("run %s/%s: updated ConfigMap %s", namespace, raw["metadata"]["name"], body["metadata"]["name"])
    return None


class _Refused(Exception):
    """The API server refused a child object (REFUSAL_STATUSES); the message is its words."""


def _create_phase(api: KubeApi, raw: Mapping[str, Any], observed: Observed, action: CreatePhaseJob,
                  settings: OperatorSettings, result: ReconcileResult, configmap: Mapping[str, Any] | None) -> bool:
    """Create the attempt's children; False on a name conflict. Raises `_Refused` when the API
    server refuses one of them."""
    namespace = raw["metadata"]["namespace"]
    uid = raw["metadata"].get("uid")
    conflict = ensure_spec_configmap(api, raw, observed, configmap)
    pinned = coerce_run(pin_run(raw, configmap))  # parsed once for the Service and the Job
    children = []
    service = build_headless_service(pinned, action, settings.master_port)
    if service is not None:
        children.append((core_path(namespace, "services"), service))
    children.append((job_path(namespace), build_phase_job(pinned, action, settings)))
    for path, body in [] if conflict else children:
        outcome = create_owned(api, path, body, uid)
        if outcome.refused:
            raise _Refused(outcome.refused)
        conflict = outcome.conflict
        if conflict:
            break
        if body["kind"] == "Job":
            if outcome.created:
                result.created.append(action.name)
                log.info("run %s/%s: created Job %s", namespace, raw["metadata"]["name"], action.name)
            else:
                log.info("run %s/%s: adopted existing Job %s (same owner UID)",
                         namespace, raw["metadata"]["name"], action.name)
    if conflict:
        # A race with garbage collection (the planner saw nothing yet): the next reconcile sees
        # the object and waits with a condition; no event from here (it would repeat).
        log.warning("run %s/%s: %s; looking again shortly", namespace, raw["metadata"]["name"], conflict)
        result.requeue_after = RETRY_AFTER_ERROR_SECONDS / 2
        return False
    return True


def apply_decision(api: KubeApi, raw: Mapping[str, Any], observed: Observed, decision: Decision,
                   settings: OperatorSettings, now: datetime, jobs: Mapping[str, Mapping] | None = None,
                   configmap: Mapping[str, Any] | None = None, decide: DecideFn | None = None
                   ) -> ReconcileResult:
    """Write the status (once, if changed, at the version we read), then perform the actions in order.

    When the API server refuses a create (`REFUSAL_STATUSES`) and `decide` is given, the refusal
    becomes an observed fact: the planner decides again with it and that decision is applied.
    """
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    result = ReconcileResult()
    version = (raw.get("metadata") or {}).get("resourceVersion")
    patch = build_status_patch(raw.get("status"), decision.status)
    if patch is None and any(isinstance(a, (CreatePhaseJob, EmitEvent)) for a in decision.actions):
        # Nothing to change, but a create or an event must still be planned from the current
        # object: the empty write only asserts the version (a stale one gets 409 and does nothing).
        patch = {"status": {}}
    if patch is not None:
        # raises (409 on a stale version): nothing is created without the record
        written = patch_status(api, namespace, name, patch, version)
        result.status_written = True
        result.written_version = (written.get("metadata") or {}).get("resourceVersion") or None
    port = KubePort(api, raw, observed, settings, now, jobs or {}, configmap, result)
    try:
        apply(decision, port)
    except _Refused as refusal:
        if decide is None:
            raise ApiError(422, "Invalid", str(refusal)) from refusal
        log.warning("run %s/%s: the API server refused %s", namespace, name, refusal)
        refused = replace(observed, status=decision.status, create_refusal=str(refusal))
        stored = {**raw, "status": decision.status.model_dump(mode="json", by_alias=True),
                  "metadata": {**raw["metadata"], "resourceVersion": result.written_version or version}}
        second = apply_decision(api, stored, refused, decide(refused, now), settings, now, jobs, configmap)
        second.created = result.created + second.created
        second.events = result.events + second.events
        return second
    return result


@dataclass
class KubePort:
    """The executor port on a cluster (`planner.port.ExecutorPort`): Jobs, Services, Events.

    `create` raises `_Refused` when the API server refuses a child; `apply_decision` turns that
    into an observed fact and decides again.
    """

    api: KubeApi
    raw: Mapping[str, Any]
    observed: Observed
    settings: OperatorSettings
    now: datetime
    jobs: Mapping[str, Mapping]
    configmap: Mapping[str, Any] | None
    result: ReconcileResult

    def create(self, action: CreatePhaseJob) -> bool:
        return _create_phase(self.api, self.raw, self.observed, action, self.settings, self.result, self.configmap)

    def delete(self, name: str) -> None:
        if self.settings.delete_finished_jobs:
            namespace = self.raw["metadata"]["namespace"]
            delete_job(self.api, namespace, name)
            _delete_service_of(self.api, namespace, self.jobs.get(name))
            self.result.deleted.append(name)

    def emit(self, event: EmitEvent) -> None:
        post_event(self.api, self.raw, event, self.now)
        self.result.events.append(event.reason)

    def requeue(self, seconds: float) -> None:
        seconds = max(self.settings.requeue_floor_seconds, seconds)
        current = self.result.requeue_after
        self.result.requeue_after = seconds if current is None else min(current, seconds)


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
    configmap = fetch_spec_configmap(api, namespace, name)
    observed = build_observed(raw, jobs, pods, settings, configmap)
    moment = now or timefmt.now()
    decision = decide(observed, moment)
    jobs_by_name = {str((job.get("metadata") or {}).get("name")): job for job in jobs}
    result = apply_decision(api, raw, observed, decision, settings, moment, jobs_by_name, configmap, decide)
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
    "build_kube_api", "build_status_patch", "create_owned", "delete_job", "list_runs",
    "reconcile_run",
]
