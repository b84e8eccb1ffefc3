"""Thin kopf wiring: watch SAILRuns and their Jobs, and run the level-based reconcile.

A watch event (a SAILRun added/changed, one of our Jobs added/changed/deleted) that can
change a decision maps to "reconcile this run" (`wakeups.py` says which can: not our own
status write echoed back, not a Job's creation or a Job update that leaves its state as it
was, not the deletion of a Job whose end we saw). `act.reconcile_run` reads the current
truth from the API server and storage-backed status, so it does not matter which event woke
it or how many were missed. Reconciles of one run are serialized (a lock per run) and
coalesced (a run already waiting for its turn is not queued twice). `RequeueAfter`
(backoff, waiting for a summary) wakes the run with a loop timer; a periodic resync
re-reconciles every run as a safety net (and catches whatever the filter let pass by).

kopf settings (built once, passed in):
- progress and diff-base storage are annotations with our own prefix (`sail.dev/...`), never
  kopf's default status field;
- no finalizer: every child (Job, ConfigMap, Service) carries a controller ownerReference, so
  Kubernetes garbage collection removes them with the run; storage is deliberately kept; and
  the per-run metrics drop on the DELETED watch event. A finalizer would only add a way for a
  deletion to hang while the operator is down. (Hence no kopf timers/daemons either: they
  require one. The resync loop is a plain task started on kopf's startup.)
- watch server/client timeouts (a silent watch is re-opened), kopf's own Events posted only
  for warnings and errors, and login from the configured kubeconfig. The liveness endpoint is
  ours (`serve_liveness`), on kopf's loop, so that it can bind port 0 without a race.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp.web
import kopf
from urllib3.exceptions import HTTPError as TransportError

from sail_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from sail_operator.kube.act import (
    ApiError,
    KubeApi,
    MetricsMemory,
    build_kube_api,
    describe_refusal,
    list_runs,
    reconcile_run,
)
from sail_operator.kube.jobs import LABEL_MANAGED_BY, LABEL_RUN
from sail_operator.kube.leader import LeaderElector
from sail_operator.kube.settings import ANNOTATION_PREFIX, FINALIZER, MANAGED_BY, OperatorSettings
from sail_operator.kube.wakeups import (
    JobSignal,
    compute_job_signal,
    job_event_matters,
    run_event_version,
    run_wakeup_is_own_echo,
)
from sail_operator.metrics import OperatorMetrics
from sail_operator.planner import timefmt
from sail_operator.planner.decide import decide

log = logging.getLogger(__name__)

RunKey = tuple[str, str]
# API answers a reconcile meets in normal operation and simply retries (a brownout, a throttle, a
# conflicting writer, an object deleted meanwhile): one WARNING line each, no traceback.
EXPECTED_API_STATUSES = frozenset({404, 409, 429, 500, 502, 503, 504})
ERROR_RETRY_SECONDS = 5.0
CONFLICT_RETRY_SECONDS = 1.0


def describe_api_error(error: ApiError) -> str:
    if error.status == 409:
        return "409 Conflict (the SAILRun changed since it was read: another writer or a stale operator)"
    return describe_refusal(error)


def find_owner_run(job: Mapping[str, Any]) -> str | None:
    """The SAILRun a Job belongs to: its controller ownerReference, else our run label."""
    meta = job.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("kind") == KIND and ref.get("controller"):
            return str(ref.get("name"))
    return (meta.get("labels") or {}).get(LABEL_RUN)


@dataclass
class Controller:
    """Per-process state of the operator: API client, locks, pending wake-ups, metrics."""

    settings: OperatorSettings
    metrics: OperatorMetrics
    api: KubeApi | None = None
    memory: MetricsMemory = field(default_factory=MetricsMemory)
    _locks: dict[RunKey, asyncio.Lock] = field(default_factory=dict)
    # One entry per wake-up waiting for the run's lock: a SAILRun event's resourceVersion, or None.
    _pending: dict[RunKey, list[str | None]] = field(default_factory=dict)
    _own_versions: dict[RunKey, str] = field(default_factory=dict)  # what our last status PATCH produced
    _job_signals: dict[str, JobSignal] = field(default_factory=dict)  # Job uid -> last state seen
    skipped: Counter[str] = field(default_factory=Counter)  # wake-ups filtered out, by handler (DEBUG aid)
    _wakeups: dict[RunKey, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    elector: LeaderElector | None = None  # None: standalone (no leader election)
    ports: dict[str, int] = field(default_factory=dict)  # what the metrics/liveness servers bound
    # The planner's clock; in-process tests tie it to a fake event-loop clock (tests/integration).
    clock: Callable[[], datetime] = timefmt.now

    def ensure_api(self) -> KubeApi:
        if self.api is None:
            self.api = build_kube_api(self.settings)
        return self.api

    def serves(self, namespace: str | None) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    async def reconcile(self, namespace: str, name: str, handler: str, version: str | None = None) -> None:
        """Serialized, coalesced reconcile of one run; never raises (errors are counted and retried).

        `version`: the resourceVersion of the SAILRun event that woke us (None for any other
        cause). When every waiting wake-up is the echo of our own last status write, the
        reconcile is skipped: the one that wrote it already decided with that object.
        """
        key = (namespace, name)
        if self.elector is not None and not self.elector.leading():
            self.skipped["not_leader"] += 1  # the leader reconciles; we catch up if we become it
            return
        if key in self._pending:
            self._pending[key].append(version)
            return  # a reconcile of this run is already waiting; it will see this change too
        self._pending[key] = [version]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            versions = self._pending.pop(key, [])
            if run_wakeup_is_own_echo(versions, self._own_versions.get(key)):
                self.skipped[handler] += 1
                return
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(
                    reconcile_run, self.ensure_api(), namespace, name, self.settings, self.metrics, decide,
                    self.memory, self.clock(),
                )
            except ApiError as error:
                self.metrics.handler_errors.labels(handler).inc()
                delay = CONFLICT_RETRY_SECONDS if error.status == 409 else ERROR_RETRY_SECONDS
                if error.status in EXPECTED_API_STATUSES:  # retried by design: no traceback, no ERROR
                    log.warning("reconcile of %s/%s: %s; retrying in %.0f s", namespace, name,
                                describe_api_error(error), delay)
                else:
                    log.exception("reconcile of %s/%s failed; retrying in %.0f s", namespace, name, delay)
                self.wake_later(key, delay)
                return
            except (OSError, TransportError) as error:  # the API server unreachable: expected, retried
                self.metrics.handler_errors.labels(handler).inc()
                log.warning("reconcile of %s/%s: API unreachable (%s); retrying in %.0f s", namespace, name,
                            type(error).__name__, ERROR_RETRY_SECONDS)
                self.wake_later(key, ERROR_RETRY_SECONDS)
                return
            except Exception:  # noqa: BLE001  (one bad run or API hiccup must not stop the operator)
                self.metrics.handler_errors.labels(handler).inc()
                log.exception("reconcile of %s/%s failed; retrying in 5 s", namespace, name)
                self.wake_later(key, ERROR_RETRY_SECONDS)
                return
            finally:
                self.metrics.handler_duration.labels(handler).observe(time.monotonic() - started)
            if result.written_version is not None:
                self._own_versions[key] = result.written_version
        if result.gone:
            self._locks.pop(key, None)
            self._own_versions.pop(key, None)
            self.cancel_wakeup(key)
        elif result.requeue_after is not None:
            self.wake_later(key, result.requeue_after)

    def job_event_matters(self, event_type: str | None, job: Mapping[str, Any]) -> bool:
        """Remember the Job's state; True when this event can change a decision (`wakeups.py`)."""
        uid = str((job.get("metadata") or {}).get("uid") or "")
        signal = compute_job_signal(job)
        previous = self._job_signals.get(uid)
        if event_type == "DELETED":
            self._job_signals.pop(uid, None)
        else:
            self._job_signals[uid] = signal
        return job_event_matters(event_type, previous, signal)

    def wake_later(self, key: RunKey, seconds: float) -> None:
        """Reconcile `key` again after `seconds` (an earlier pending wake-up wins)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        existing = self._wakeups.get(key)
        if existing is not None and not existing.cancelled() and existing.when() <= due:
            return
        if existing is not None:
            existing.cancel()
        self._wakeups[key] = loop.call_at(due, self._spawn, key, "requeue")

    def cancel_wakeup(self, key: RunKey) -> None:
        handle = self._wakeups.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, key: RunKey, handler: str) -> None:
        self._wakeups.pop(key, None)
        task = asyncio.get_running_loop().create_task(self.reconcile(key[0], key[1], handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, namespace: str, name: str) -> None:
        self.metrics.index.remove(namespace, name)
        self._own_versions.pop((namespace, name), None)
        self.cancel_wakeup((namespace, name))

    async def lead_forever(self) -> None:
        """Acquire and renew the Lease; on becoming the leader, reconcile every run at once."""
        assert self.elector is not None
        while True:
            was = self.elector.leading()
            try:
                await asyncio.to_thread(self.elector.step)
            except (ApiError, OSError, TransportError) as error:
                log.warning("leader election: %s", describe_api_error(error) if isinstance(error, ApiError)
                            else type(error).__name__)
            now = self.elector.leading()
            if now and not was:
                await self.resync_once()
            elif was and not now:
                log.warning("lost the leadership (Lease %s/%s): no longer reconciling",
                            self.elector.namespace, self.elector.name)
            await asyncio.sleep(self.elector.renew_seconds if now else self.elector.renew_seconds / 2)

    async def resync_forever(self) -> None:
        """Level-based safety net: reconcile every served run every `resync_seconds`."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            await self.resync_once()

    async def resync_once(self) -> None:
        """Reconcile every served run once (the leader only); forget the runs that are gone."""
        if self.elector is not None and not self.elector.leading():
            return
        try:
            runs = await asyncio.to_thread(list_runs, self.ensure_api(), self.settings.namespaces)
        except Exception as error:  # noqa: BLE001
            self.metrics.handler_errors.labels("timer").inc()
            log.warning("resync: listing SAILRuns failed: %s", type(error).__name__)
            return
        alive: set[RunKey] = set()
        for raw in runs:
            meta = raw.get("metadata") or {}
            if self.serves(meta.get("namespace")):
                alive.add((str(meta.get("namespace")), str(meta.get("name"))))
                self._spawn((str(meta.get("namespace")), str(meta.get("name"))), "timer")
        for snapshot in self.metrics.index.snapshots():  # a DELETED event raced with a reconcile
            if (snapshot.namespace, snapshot.name) not in alive:
                self.forget(snapshot.namespace, snapshot.name)

    async def shutdown(self) -> None:
        for handle in self._wakeups.values():
            handle.cancel()
        self._wakeups.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.api is not None:
            self.api.close()


class WatchOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base storage, minus the essence kopf builds on every watch event.

    kopf deep-copies each watched object into an "essence" on every event, for change-detecting
    handlers (on.create/update/resume/delete/field) and daemons/timers. This operator registers
    none of those (`build_registry`: on.event, login, startup, cleanup only), so kopf never
    reads it; building it was ~half of kopf's CPU per event, and a SAILRun's status grows with its
    history (cProfile of bench/operator_scale.py at N = 100). A unit test fails if such a handler
    is ever registered beside this storage.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:  # noqa: ARG002  (kopf's signature)
        return {}

    def fetch(self, *, body: Any) -> Any:  # noqa: ARG002  (kopf's signature)
        # Never read back either: anyone who may edit the SAILRun may write garbage into the
        # annotation, and kopf's json.loads of it would throttle the run with a traceback per event.
        return None


def build_kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = WatchOnlyDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = FINALIZER  # used by no handler: see the module docstring
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = settings.watch_connect_timeout
    # Only our Jobs travel over the watch (the handler filters client-side as well).
    kopf_settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.posting.reporting_component = "sail.dev/operator"
    return kopf_settings


def build_connection_info(settings: OperatorSettings) -> kopf.ConnectionInfo:
    """kopf's own watch connection, from the same explicit kubeconfig as our client."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                            client_configuration=configuration, persist_config=False)
    token = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token or None,
        username=configuration.username or None,
        password=configuration.password or None,
    )


# function-length: five short kopf handlers, closures over one controller on a fresh registry
def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    """Register the handlers on a fresh registry (nothing global, so tests can build several)."""
    registry = kopf.OperatorRegistry()
    settings = controller.settings

    @kopf.on.login(registry=registry)
    def login(logger: Any, **_: Any) -> kopf.ConnectionInfo | None:
        if settings.kubeconfig:
            return build_connection_info(settings)
        return kopf.login_with_service_account(logger=logger)

    @kopf.on.startup(registry=registry)
    async def startup(memo: Any, **_: Any) -> None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=settings.reconcile_workers, thread_name_prefix="reconcile")
        )
        if settings.liveness_endpoint:
            memo.liveness, controller.ports["liveness"] = await serve_liveness(settings.liveness_endpoint, controller)
        if settings.ports_file:
            write_ports_file(settings.ports_file, controller.ports)
        memo.resync = asyncio.get_running_loop().create_task(controller.resync_forever())
        if settings.leader_election and controller.elector is None:
            controller.elector = LeaderElector(controller.ensure_api(), settings.lease_namespace)
        if controller.elector is not None:
            memo.lead = asyncio.get_running_loop().create_task(controller.lead_forever())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        for task in (getattr(memo, "resync", None), getattr(memo, "lead", None)):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if controller.elector is not None:
            await asyncio.to_thread(controller.elector.release)
        runner = getattr(memo, "liveness", None)
        if runner is not None:
            await runner.cleanup()
        await controller.shutdown()

    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, registry=registry)
    async def run_event(event: Mapping[str, Any], body: Mapping[str, Any], name: str, namespace: str,
                        **_: Any) -> None:
        controller.metrics.watch_last_event.set(time.time())
        if not controller.serves(namespace):
            return
        if event.get("type") == "DELETED":
            controller.forget(namespace, name)
            return
        await controller.reconcile(namespace, name, "run_event", run_event_version(body))

    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, registry=registry)
    async def job_event(event: Mapping[str, Any], body: Mapping[str, Any], namespace: str, **_: Any) -> None:
        controller.metrics.watch_last_event.set(time.time())
        run_name = find_owner_run(body)
        if not run_name or not controller.serves(namespace):
            return
        if not controller.job_event_matters(event.get("type"), body):
            controller.skipped["job_event"] += 1
            return
        await controller.reconcile(namespace, run_name, "job_event")

    return registry


async def serve_liveness(endpoint: str, controller: Controller) -> tuple[aiohttp.web.AppRunner, int]:
    """The liveness endpoint (`GET path` -> `{"runs": N}`), served on the operator's event loop.

    Ours rather than kopf's: it binds its socket itself, so port 0 takes a free port with no
    check-then-bind gap (tests start several operators at once) and reports the port it got.
    It answers only while the event loop runs, which is what a livenessProbe must detect.
    """
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise ValueError(f"--liveness {endpoint!r}: only http:// endpoints are supported")
    sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((parts.hostname or "0.0.0.0", parts.port or 0))  # noqa: S104  (a probe endpoint, as configured)

    async def health(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"runs": len(controller.metrics.index)})

    app = aiohttp.web.Application()
    app.router.add_get(parts.path or "/", health)
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await aiohttp.web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


def write_ports_file(path: str, ports: Mapping[str, int]) -> None:
    """`{"metrics": N, "liveness": M}`: the ports actually bound (port 0 picks free ones), atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as stream:
        json.dump(dict(ports), stream)
    os.replace(tmp, path)
