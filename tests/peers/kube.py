"""A Kubernetes API for tests: kmock's emulator over real HTTP, plus a stand-in Job controller.

- `SailKubeEmulator` fills the gaps of kmock 0.8 that matter to us: uid,
  resourceVersion, creationTimestamp and generation on create; resourceVersion (and
  generation on spec changes) on patch; status-subresource isolation for SAILRuns and Jobs
  (a status patch changes only `.status`, a main-resource patch never changes it).
- `KubeCluster` runs it on a loopback port in a thread, writes a kubeconfig, and offers a
  small synchronous JSON client for the test's own reads and writes (over HTTP too).
- `JobController` replaces the kube-controller-manager *and the kubelet*: for every Job the
  operator creates it either runs the Job's container command locally ("trainer" mode: the
  real `sail-trainer` as `python -m sail_trainer`, the env of the Job, the spec file taken
  from the ConfigMap, the termination message read back from the file the trainer writes)
  or, in "instant" mode, immediately reports success with a synthetic phase summary. It then
  creates the pods (with their termination messages) and patches the Job's status, as the
  real controllers would. Tests can script failures per Job name.
- `OperatorProcess` runs `python -m sail_operator.kube.entry` against the kubeconfig, so a
  test can SIGKILL and restart it.

Strict where a real API server is strict (a lenient peer hides bugs that a cluster shows):
- names and label values are validated on create (422 Invalid, like the API server's
  DNS-1123 and label-value rules; a Job name must also fit a label value);
- a PATCH that carries `metadata.resourceVersion` is a precondition: 409 Conflict when stale;
- garbage collection: after an owner is deleted (Background propagation, the default except
  for batch/v1 Jobs, whose REST default is Orphan), every object whose owners are all gone is
  deleted, after `gc_delay` seconds and never while `gc_paused` is set (a slow collector);
  Orphan propagation strips the ownerReferences that point at the deleted owner;
- the Job controller gives pods the `batch.kubernetes.io/controller-uid` label and a controller
  ownerReference, and applies each Job's *own* podFailurePolicy (FailJob / Ignore / Count).
Label selectors and watches' resourceVersion are not emulated: the operator filters labels
client-side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import kmock
import pytest

from sail_api.layout import RunLayout
from sail_api.phases import (
    SPEC_MOUNT_PATH,
    TERMINATION_LOG_ENV,
    Phase,
    PhaseSummary,
)

SAILRUNS = "sail.dev/v1alpha1/sailruns"
STATUS_ISOLATED = {"sailruns", "jobs"}
RESOURCES: dict[str, kmock.ResourceInfo] = {
    SAILRUNS: kmock.ResourceInfo(kind="SAILRun", singular="sailrun", namespaced=True, shortnames={"sail"},
                                 verbs={"get", "list", "watch", "create", "patch", "delete"},
                                 subresources={"status"}),
    "batch/v1/jobs": kmock.ResourceInfo(kind="Job", singular="job", namespaced=True,
                                        verbs={"get", "list", "watch", "create", "patch", "delete"},
                                        subresources={"status"}),
    "v1/pods": kmock.ResourceInfo(kind="Pod", singular="pod", namespaced=True,
                                  verbs={"get", "list", "watch", "create", "patch", "delete"}),
    "v1/services": kmock.ResourceInfo(kind="Service", singular="service", namespaced=True,
                                      verbs={"get", "list", "create", "patch", "delete"}),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", singular="configmap", namespaced=True,
                                        verbs={"get", "list", "create", "patch", "delete"}),
    "coordination.k8s.io/v1/leases": kmock.ResourceInfo(kind="Lease", singular="lease", namespaced=True,
                                                        verbs={"get", "list", "create", "patch", "delete"}),
    "v1/events": kmock.ResourceInfo(kind="Event", singular="event", namespaced=True,
                                    verbs={"get", "list", "create", "patch"}),
    # Discovery only: kopf waits for `namespaces` to exist before it starts any watch, but
    # kmock 0.8 cannot serve /api/v1/namespaces itself (a 500), so nothing may call it.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", singular="namespace", namespaced=False,
                                        verbs={"get", "list", "watch"}),
}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The API server's own rules (k8s.io/apimachinery validation): DNS-1123 subdomain names,
# qualified label keys, label values of at most 63 characters.
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def compute_invalid_fields(body: dict[str, Any], plural: str) -> list[str]:
    """What the API server answers 422 Invalid for on create (the subset this project can hit)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    problems = []
    if not name or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    if plural == "jobs" and len(name) > 63:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be no more than 63 characters")
    label_sets = [("metadata.labels", meta.get("labels") or {})]
    if plural == "jobs":
        template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
        label_sets.append(("spec.template.metadata.labels", template.get("labels") or {}))
    for where, labels in label_sets:
        for key, value in labels.items():
            prefix, _, short = str(key).rpartition("/")
            if len(short) > 63 or not _LABEL_NAME.match(short) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
                problems.append(f"{where}: Invalid value: {key!r}: not a qualified label key")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"{where}: Invalid value: {value!r}: a valid label value must be 63 characters "
                                "or less and consist of alphanumerics, '-', '_' or '.'")
    return problems


@attrs.frozen
class Refusal(kmock.KubernetesError):
    """An API-server refusal (422 Invalid, 409 Conflict, an injected 500) with its Status payload."""

    status: int = 422
    reason: str | None = "Invalid"
    message: str | None = None
    details: Any | None = attrs.field(factory=dict)


class SailKubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata bookkeeping and the refusals a real API server does."""

    _versions = itertools.count(1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.log: list[kmock.Request] = []
        self.gc_delay = 0.2            # seconds between an owner's deletion and its dependents'
        self.gc_paused = False         # True: the collector is slow (dependents stay until resumed)
        self.gc_tasks: set[asyncio.Task] = set()
        self.refused: list[tuple[int, str]] = []  # (status, message) of every refusal served
        # A validating admission webhook: (plural, body) -> a denial message, or None to admit.
        self.admission: Callable[[str, dict[str, Any]], str | None] | None = None
        self.status_writes: list[tuple[str, dict[str, Any]]] = []  # (run name, status) of each applied write
        # A brownout: request -> an HTTP error status to answer instead (500, 429...), or None.
        self.faults: Callable[[kmock.Request], int | None] | None = None

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock keeps every request in its own history and re-filters it on each request
        # (O(n) per request); keep ours in `self.log` and hand kmock a short history.
        self.log.extend(r for r in self._requests if r is not request)
        self._requests[:] = [request]  # kmock matches a request only if it is in its history
        deleting = None
        fault = self.faults(request) if self.faults is not None else None
        if fault:
            self._refuse(fault, "InternalError" if fault >= 500 else "TooManyRequests", "injected by the test")
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._refuse_invalid(request)
                self._fill_on_create(request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._refuse_stale(request)
                self._fill_on_patch(request)
        if request.resource is not None and request.action == kmock.action.DELETE and request.name is not None:
            deleting = self._before_delete(request)
        response = await super()._handle(request)
        if deleting:
            task = asyncio.get_running_loop().create_task(self._collect_later())
            self.gc_tasks.add(task)
            task.add_done_callback(self.gc_tasks.discard)
        return response

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.refused.append((status, message))
        raise Refusal(status=status, reason=reason, message=message)

    def _refuse_invalid(self, request: kmock.Request) -> None:
        problems = compute_invalid_fields(request.data, request.resource.plural)
        denial = self.admission(request.resource.plural, request.data) if self.admission else None
        if denial:
            self._refuse(400, "BadRequest", f"admission webhook \"policy.example\" denied the request: {denial}")
        if problems:
            kind = request.resource.plural
            name = (request.data.get("metadata") or {}).get("name")
            self._refuse(422, "Invalid", f"{kind} {name!r} is invalid: {'; '.join(problems)}")

    def _refuse_stale(self, request: kmock.Request) -> None:
        wanted = (request.data.get("metadata") or {}).get("resourceVersion")
        key = (request.resource, request.namespace, request.name)
        if wanted is None or key not in self._objects or self._objects[key].deleted:
            return
        current = (self._objects[key].get("metadata") or {}).get("resourceVersion")
        if str(wanted) != str(current):
            self._refuse(409, "Conflict", f"Operation cannot be fulfilled on {request.resource.plural} "
                         f"{request.name!r}: the object has been modified; please apply your changes to the "
                         "latest version and try again")

    def _before_delete(self, request: kmock.Request) -> bool:
        """Orphan propagation strips the owner's references now; True: collect garbage later."""
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return False
        uid = (self._objects[key].get("metadata") or {}).get("uid")
        options = request.data if isinstance(request.data, dict) else {}
        default = "Orphan" if request.resource.plural == "jobs" else "Background"  # batch/v1's REST default
        policy = options.get("propagationPolicy") or request.params.get("propagationPolicy") or default
        if policy == "Orphan":
            for obj in self._objects.values():
                refs = (obj.get("metadata") or {}).get("ownerReferences") if not obj.deleted else None
                if refs and any(ref.get("uid") == uid for ref in refs):
                    obj.patch({"metadata": {"ownerReferences": [r for r in refs if r.get("uid") != uid]}})
        return True

    async def _collect_later(self) -> None:
        await asyncio.sleep(self.gc_delay)
        while self.gc_paused:
            await asyncio.sleep(0.05)
        async with self._lock:
            await self._collect()

    async def _collect(self) -> None:
        """Delete every object whose owners are all gone, until nothing more goes (cascades)."""
        while True:
            live = {(obj.get("metadata") or {}).get("uid") for obj in self._objects.values() if not obj.deleted}
            doomed = [(key, obj) for key, obj in self._objects.items() if not obj.deleted
                      and (obj.get("metadata") or {}).get("ownerReferences")
                      and not any(ref.get("uid") in live for ref in obj["metadata"]["ownerReferences"])]
            if not doomed:
                return
            for key, obj in doomed:
                obj.delete()
                await self._buses[key[0]].put({"type": "DELETED", "object": obj.last.raw})

    async def collect_garbage_now(self) -> None:
        async with self._lock:
            await self._collect()

    def _fill_on_create(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        meta.setdefault("namespace", request.namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._versions))
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if request.resource.plural in STATUS_ISOLATED:
            request.data.pop("status", None)  # status is written through /status only

    def _fill_on_patch(self, request: kmock.Request) -> None:
        plural = request.resource.plural
        data = request.data
        if plural in STATUS_ISOLATED:
            if request.subresource == "status":
                for key in list(data):
                    if key != "status":
                        del data[key]
            else:
                data.pop("status", None)
        key = (request.resource, request.namespace, request.name)
        existing = self._objects[key] if key in self._objects else None
        if plural == "sailruns" and request.subresource == "status" and existing is not None \
                and not existing.deleted:
            self.status_writes.append((str(request.name), json.loads(json.dumps(data.get("status") or {}))))
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        if existing is not None and not existing.deleted and "spec" in data and request.subresource is None:
            meta["generation"] = int(existing.get("metadata", {}).get("generation") or 1) + 1


class ApiFailure(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class JsonClient:
    """Blocking JSON-over-HTTP client for the test side (no kubernetes client, no caching)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiFailure(error.code, error.read().decode(errors="replace")) from error
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def items(self, path: str) -> list[dict[str, Any]]:
        return self.get(path).get("items") or []

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; fail the test naming `what` (never a timed assertion)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (ApiFailure, OSError) as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


class KubeCluster:
    """The emulator on a loopback port, in its own thread and event loop."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator = SailKubeEmulator()
        for key, info in RESOURCES.items():
            self.emulator.resources[key] = info
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.client: JsonClient

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, port=0) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()
            for task in list(self.emulator.gc_tasks):  # a collection still waiting when the test ends
                task.cancel()
            await asyncio.gather(*self.emulator.gc_tasks, return_exceptions=True)

    def start(self) -> KubeCluster:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("kmock server did not start")
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = JsonClient(self.url)
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "kmock-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester",
                                                      "namespace": "default"}}],
        }))
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)

    # ---------------------------------------------------------- convenience

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        return self.client.create(f"/apis/sail.dev/v1alpha1/namespaces/{ns}/sailruns", body)

    def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        return self.client.get(f"/apis/sail.dev/v1alpha1/namespaces/{namespace}/sailruns/{name}")

    def patch_run(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.patch(f"/apis/sail.dev/v1alpha1/namespaces/{namespace}/sailruns/{name}", body)

    def delete_run(self, namespace: str, name: str) -> None:
        self.client.delete(f"/apis/sail.dev/v1alpha1/namespaces/{namespace}/sailruns/{name}")

    def run_state(self, namespace: str, name: str) -> str | None:
        return (self.get_run(namespace, name).get("status") or {}).get("state")

    def events(self, namespace: str, run: str | None = None) -> list[dict[str, Any]]:
        items = self.client.items(f"/api/v1/namespaces/{namespace}/events")
        return [e for e in items if run is None or (e.get("involvedObject") or {}).get("name") == run]

    def requests(self) -> list[kmock.Request]:
        """The emulator's request log (every HTTP request it served), oldest first."""
        return list(self.emulator.log) + list(self.emulator._requests)

    def job_creations(self) -> list[str]:
        """Names of every Job POSTed to the API (from the emulator's request log), in order."""
        names = []
        for request in self.requests():
            if request.action == kmock.action.CREATE and request.resource is not None \
                    and request.resource.plural == "jobs" and isinstance(request.data, dict):
                names.append(request.data.get("metadata", {}).get("name"))
        return names

    def requests_of(self, plural: str, action: kmock.action) -> list[kmock.Request]:
        return [r for r in self.requests()
                if r.resource is not None and r.resource.plural == plural and r.action == action]


# ------------------------------------------------------------------ the Job controller


@dataclass(frozen=True)
class Scripted:
    """What a scripted Job's pod does instead of succeeding, as the kubelet would report it.

    `container_reason`: the container's terminated reason (e.g. "OOMKilled", exit 137);
    `pod_reason`/`pod_message`: the pod's status (e.g. "Evicted" by the kubelet under node
    pressure); `disrupted`: a DisruptionTarget condition with `disruption_reason` (e.g.
    preemption). Whether the Job then fails is the Job's own podFailurePolicy's call.
    """

    exit_code: int = 1
    disrupted: bool = False
    message: str = "scripted failure"
    container_reason: str = "Error"
    pod_reason: str | None = None
    pod_message: str = ""
    disruption_reason: str = "PreemptionByScheduler"


ScriptFn = Callable[[dict[str, Any]], Scripted | None]


@dataclass
class PodResult:
    index: int
    exit_code: int
    message: str
    started: str
    finished: str
    scripted: Scripted | None = None
    name: str = ""


# What a phase's summary carries when a Job "succeeds" at once: the train and annotate numbers a
# real run with held-out pairs (the default sail.validation) reports, so metrics built from them exist.
_INSTANT_METRICS: dict[Phase, dict[str, float]] = {
    Phase.TRAIN: {"loss": 0.5, "implicit_accuracy": 0.75, "heldout_accuracy": 0.6, "heldout_accuracy_vs_base": 0.65},
    Phase.ANNOTATE: {"items": 4.0, "judge_trust": 0.7},
    # An evaluate phase (spec.evaluation) with one scorer named `toy`.
    Phase.EVALUATE: {"eval_toy_mean_base": 0.4, "eval_toy_mean_previous": 0.45, "eval_toy_mean_current": 0.5,
                     "eval_toy_win_vs_base": 0.7, "eval_toy_win_vs_previous": 0.6},
}


@dataclass
class JobController:
    """Plays every Job the operator creates; see the module docstring. Replaces the kubelet."""

    cluster: KubeCluster
    mode: str = "instant"                      # "instant" or "trainer"
    script: ScriptFn | None = None
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    workdir: Path | None = None
    trainer_timeout: float = 240.0
    delay: float = 0.0                         # seconds each Job "runs" before it reports (instant mode)
    played: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_outputs: dict[str, str] = field(default_factory=dict)  # pod -> tail of its output, for diagnosis
    # Every pod reported, as (Job name, result): the pods themselves go with their Job once the
    # operator deletes it (garbage collection), their termination messages stay readable here.
    reported: list[tuple[str, PodResult]] = field(default_factory=list)

    def start(self) -> JobController:
        thread = threading.Thread(target=self._loop, name="job-controller", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.trainer_timeout + 10)

    def _claim(self, job: dict[str, Any]) -> bool:
        """True the first time an unsuspended Job is seen (it is then recorded as played)."""
        uid = job["metadata"].get("uid")
        if uid in self._seen or (job.get("spec") or {}).get("suspend"):
            return False
        self._seen.add(uid)
        self.played.append(job["metadata"]["name"])
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self.cluster.client.items("/apis/batch/v1/jobs")
            except (ApiFailure, OSError):
                jobs = []
            for job in jobs:
                if not self._claim(job):
                    continue
                if self.mode == "instant":
                    self._play_safely(job)
                else:
                    worker = threading.Thread(target=self._play_safely, args=(job,), daemon=True)
                    worker.start()
                    self._threads.append(worker)
            self._stop.wait(0.1)

    def _play_safely(self, job: dict[str, Any]) -> None:
        try:
            self._play(job)
        except Exception as error:  # noqa: BLE001  (recorded; the test asserts on it)
            self.errors.append(f"{job['metadata']['name']}: {error!r}")

    def _play(self, job: dict[str, Any]) -> None:
        spec = job.get("spec") or {}
        completions = int(spec.get("completions") or 1)
        scripted = self.script(job) if self.script else None
        if self.delay:
            self._stop.wait(self.delay)
        results: list[PodResult] = []
        for index in range(completions):
            result = self._scripted(job, index, scripted) if scripted is not None else self._unscripted(
                job, index, completions)
            if result.exit_code != 0 and compute_pod_failure_action(job, result)[0] == "Ignore":
                # The Job controller replaces a pod its policy ignores (not counted against backoffLimit).
                results.append(result)
                result = self._unscripted(job, index, completions)
            results.append(result)
        self._report(job, results)

    def _unscripted(self, job: dict[str, Any], index: int, completions: int) -> PodResult:
        if self.mode == "instant":
            return self._instant(job, index, completions)
        return self._run_trainer(job, index)

    # ---------------------------------------------------------- one pod

    @staticmethod
    def _identity(job: dict[str, Any]) -> tuple[int, Phase, str]:
        labels = job["metadata"]["labels"]
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        run_uri = command[command.index("--run") + 1]
        return int(labels["sail.dev/iteration"]), Phase(labels["sail.dev/phase"]), run_uri

    def _instant(self, job: dict[str, Any], index: int, completions: int) -> PodResult:
        iteration, phase, run_uri = self._identity(job)
        sharded = bool(job["spec"].get("completionMode") == "Indexed" and phase in (Phase.GENERATE, Phase.ANNOTATE))
        layout = RunLayout(run_uri)
        summary = PhaseSummary(
            phase=phase, iteration=iteration, shard=f"{index}/{completions}" if sharded else None,
            outcome="committed",
            manifest_uri=layout.manifest_uri(iteration, phase, index if sharded else None,
                                             completions if sharded else None),
            metrics=_INSTANT_METRICS.get(phase, {"items": 4.0}),
            extra={"model_uri": layout.model_dir(iteration)} if phase is Phase.TRAIN else {},
        )
        stamp = now_rfc3339()
        return PodResult(index, 0, summary.model_dump_json(by_alias=True), stamp, stamp)

    def _scripted(self, job: dict[str, Any], index: int, scripted: Scripted) -> PodResult:
        iteration, phase, _ = self._identity(job)
        summary = PhaseSummary(phase=phase, iteration=iteration, outcome="failed", exit_code=scripted.exit_code,
                               error=scripted.message)
        stamp = now_rfc3339()
        return PodResult(index, scripted.exit_code, summary.model_dump_json(by_alias=True), stamp, stamp,
                         scripted=scripted)

    def _run_trainer(self, job: dict[str, Any], index: int) -> PodResult:
        meta = job["metadata"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        root = Path(tempfile.mkdtemp(prefix=f"{meta['name']}-{index}-", dir=self.workdir))
        run_name = meta["labels"]["sail.dev/run"]
        configmap = self.cluster.client.get(f"/api/v1/namespaces/{meta['namespace']}/configmaps/{run_name}-spec")
        spec_file = root / "spec.json"
        spec_file.write_text(configmap["data"]["spec.json"])
        termination_log = root / "termination-log"
        cache = root / "cache"
        cache.mkdir()
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        env["OMP_NUM_THREADS"] = "1"
        for item in container.get("env") or []:
            env[item["name"]] = self._env_value(item, index, meta["namespace"])
        for key, value in list(env.items()):
            if value.startswith("/var/cache/sail"):
                env[key] = str(cache) + value[len("/var/cache/sail"):]
        env["HOME"] = str(root)
        env[TERMINATION_LOG_ENV] = str(termination_log)
        if job["spec"].get("completionMode") == "Indexed":
            env["JOB_COMPLETION_INDEX"] = str(index)
        command = [str(spec_file) if arg == SPEC_MOUNT_PATH else arg for arg in container["command"]]
        argv = [sys.executable, "-m", "sail_trainer", *command[1:]]
        started = now_rfc3339()
        try:
            done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True,
                                  timeout=self.trainer_timeout, check=False)
            code, output = done.returncode, (done.stdout + done.stderr)
        except subprocess.TimeoutExpired as error:
            code, output = 137, f"killed after {self.trainer_timeout}s: {error}"
        (root / "output.log").write_text(output)
        if code != 0:
            self.failed_outputs[f"{meta['name']}/{index}"] = output[-3000:]
        message = termination_log.read_text() if termination_log.exists() else ""
        if not message and code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            message = output[-2048:]
        return PodResult(index, code, message, started, now_rfc3339())

    def _env_value(self, item: dict[str, Any], index: int, namespace: str) -> str:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = (self.secrets.get(ref["name"]) or {}).get(ref["key"])
            if value is None and not ref.get("optional"):
                raise RuntimeError(f"secret {namespace}/{ref['name']} key {ref['key']} is not provided to the test")
            return value or ""
        if "fieldRef" in source:
            return str(index)  # the only field we reference is the completion index annotation
        return ""

    # ---------------------------------------------------------- report like the Job controller

    def _report(self, job: dict[str, Any], results: list[PodResult]) -> None:
        meta = job["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        indexed = job["spec"].get("completionMode") == "Indexed"
        template_labels = job["spec"]["template"]["metadata"]["labels"]
        for result in results:
            result.name = result.name or f"{name}-{result.index}-{uuid.uuid4().hex[:5]}"
            self.reported.append((name, result))
            # What the Job controller puts on its pods: the job-name and controller-uid labels
            # (a selector on the Job's UID, so a re-created Job never claims an old pod) and a
            # controller ownerReference (garbage collection deletes pods with their Job).
            pod_labels = {**template_labels, "batch.kubernetes.io/job-name": name, "job-name": name,
                          "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
            if indexed:
                pod_labels["batch.kubernetes.io/job-completion-index"] = str(result.index)
            scripted = result.scripted or Scripted()
            terminated = {"exitCode": result.exit_code, "message": result.message,
                          "reason": "Completed" if result.exit_code == 0 else scripted.container_reason,
                          "startedAt": result.started, "finishedAt": result.finished}
            pod_status: dict[str, Any] = {
                "phase": "Succeeded" if result.exit_code == 0 else "Failed",
                "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0,
                                       "state": {"terminated": terminated}}],
            }
            if result.scripted is not None and scripted.pod_reason:
                pod_status["reason"], pod_status["message"] = scripted.pod_reason, scripted.pod_message
            if result.scripted is not None and scripted.disrupted:
                pod_status["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                             "reason": scripted.disruption_reason,
                                             "message": scripted.pod_message or scripted.disruption_reason}]
            try:
                self.cluster.client.create(f"/api/v1/namespaces/{ns}/pods", {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": result.name, "namespace": ns, "labels": pod_labels,
                                 "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                      "uid": uid, "controller": True,
                                                      "blockOwnerDeletion": True}]},
                    "status": pod_status,
                })
            except ApiFailure as error:
                self.errors.append(f"{name}: pod create failed: {error}")
        self.cluster.client.patch(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}/status",
                                  {"status": compute_job_status(job, results)})


def compute_pod_failure_action(job: dict[str, Any], result: PodResult) -> tuple[str | None, int | None]:
    """The Job's own podFailurePolicy applied to one failed pod: (action, rule index) or (None, None)."""
    scripted = result.scripted or Scripted()
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    for index, rule in enumerate(rules):
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName") in (None, "trainer") and result.exit_code != 0:
            listed = result.exit_code in set(codes.get("values") or [])
            if listed == (codes.get("operator") == "In"):
                return rule.get("action"), index
        for pattern in rule.get("onPodConditions") or []:
            if pattern.get("type") == "DisruptionTarget" and pattern.get("status", "True") == "True" \
                    and result.scripted is not None and scripted.disrupted:
                return rule.get("action"), index
    return None, None


def compute_job_status(job: dict[str, Any], results: list[PodResult]) -> dict[str, Any]:
    """The Job controller's verdict over its pods: its podFailurePolicy first, then backoffLimit."""
    finished = now_rfc3339()
    counted = [r for r in results if r.exit_code == 0 or compute_pod_failure_action(job, r)[0] != "Ignore"]
    status: dict[str, Any] = {"startTime": min(r.started for r in results), "active": 0, "ready": 0,
                              "succeeded": sum(r.exit_code == 0 for r in results),
                              "failed": sum(r.exit_code != 0 for r in counted)}
    failures = [r for r in counted if r.exit_code != 0]
    if not failures:
        status["completionTime"] = finished
        status["conditions"] = [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": finished},
            {"type": "Complete", "status": "True", "lastTransitionTime": finished},
        ]
        return status
    reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    for failure in failures:
        action, index = compute_pod_failure_action(job, failure)
        if action == "FailJob":
            reason = "PodFailurePolicy"
            message = (f"Container trainer for pod {job['metadata']['namespace']}/{failure.name} failed with "
                       f"exit code {failure.exit_code} matching FailJob rule at index {index}")
            break
    status["conditions"] = [
        {"type": "FailureTarget", "status": "True", "reason": reason, "lastTransitionTime": finished},
        {"type": "Failed", "status": "True", "reason": reason, "message": message,
         "lastTransitionTime": finished},
    ]
    return status


# ------------------------------------------------------------------ the operator as a process


_OPERATOR_TAGS = itertools.count(1)


@dataclass
class OperatorProcess:
    """`python -m sail_operator.kube.entry` against the emulator; killable and restartable.

    Its metrics and liveness servers bind port 0 themselves and report the ports they got in a
    ports file (no check-then-bind gap: several operators and tests start at once).
    """

    cluster: KubeCluster
    logdir: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    starts: int = 0
    tag: int = field(default_factory=lambda: next(_OPERATOR_TAGS))  # several processes share one logdir

    @property
    def ports_file(self) -> Path:
        return self.logdir / f"operator-{self.tag}.ports.json"

    def ports(self, timeout: float = 60.0) -> dict[str, int]:
        return wait_for(lambda: json.loads(self.ports_file.read_text()) if self.ports_file.exists() else None,
                        timeout, "the operator's ports file")

    @property
    def metrics_port(self) -> int:
        return int(self.ports()["metrics"])

    @property
    def liveness_port(self) -> int:
        return int(self.ports()["liveness"])

    def start(self) -> OperatorProcess:
        self.starts += 1
        log = open(self.logdir / f"operator-{self.tag}-{self.starts}.log", "w")  # noqa: SIM115  (closed by the child's exit)
        self.ports_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "sail_operator.kube.entry", "--all-namespaces", "--standalone",
                "--kubeconfig", str(self.cluster.kubeconfig), "--metrics-port", "0",
                "--metrics-address", "127.0.0.1", "--liveness", "http://127.0.0.1:0/healthz",
                "--ports-file", str(self.ports_file),
                "--resync-seconds", "2", "--watch-server-timeout", "30", "--watch-client-timeout", "40",
                *self.extra_args]
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no graceful shutdown (a node loss, an OOM kill)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace")
                         for path in sorted(self.logdir.glob(f"operator-{self.tag}-*.log")))


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def kube_cluster(tmp_path: Path) -> Iterator[KubeCluster]:
    """The emulated API server over HTTP with a kubeconfig.

    Namespaces are not served: kmock 0.8 cannot parse `/api/v1/namespaces` (a 500), which is
    also why the operator runs with `--all-namespaces` here; namespaced objects need none.
    """
    cluster = KubeCluster(tmp_path).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def job_controller(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[Callable[..., JobController]]:
    """Factory: `job_controller(mode="instant"|"trainer", script=..., secrets=...)`, stopped at teardown."""
    started: list[JobController] = []

    def start(**kwargs: Any) -> JobController:
        controller = JobController(cluster=kube_cluster, workdir=tmp_path, **kwargs).start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def operator_process(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Factory for operator processes (not started); every one is killed at teardown."""
    made: list[OperatorProcess] = []

    def build(*extra_args: str) -> OperatorProcess:
        proc = OperatorProcess(cluster=kube_cluster, logdir=tmp_path, extra_args=extra_args)
        made.append(proc)
        return proc

    yield build
    for proc in made:
        proc.stop()
