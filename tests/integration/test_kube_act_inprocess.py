"""kube/act.py and the controller in-process: reconciles against the emulator, with a fake clock.

No operator process, no kopf, no sleeps: each test calls `reconcile_run` / `apply_decision`
with the `now` it chooses, and plays the Jobs with the stand-in Job controller when it wants
them finished. What the API server answers at each boundary (a 422 on create, a 409 on a stale
status write) is pinned here cheaply; kill/restart scenarios stay with the subprocess operator
(test_operator_kube.py). The controller (kube/handlers.py) runs on an event loop whose clock
moves only when the test moves it, so its retry and backoff wake-ups fire without real waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import kmock
import pytest

from sail_api.phases import Phase
from sail_operator.kube.act import (
    ApiError,
    KubeApi,
    apply_decision,
    build_kube_api,
    fetch_children,
    fetch_spec_configmap,
    reconcile_run,
    run_path,
)
from sail_operator.kube.handlers import CONFLICT_RETRY_SECONDS, Controller
from sail_operator.kube.observe import build_observed
from sail_operator.kube.settings import OperatorSettings
from sail_operator.metrics import OperatorMetrics
from sail_operator.planner.decide import decide
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.builders.sailrun_objects import planned_jobs
from tests.peers.kube import JobController, KubeCluster, Scripted

NS = "default"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[KubeApi]:
    client = build_kube_api(OperatorSettings(kubeconfig=str(kube_cluster.kubeconfig)))
    yield client
    client.close()


@pytest.fixture
def settings(kube_cluster: KubeCluster) -> OperatorSettings:
    return OperatorSettings(kubeconfig=str(kube_cluster.kubeconfig), metrics_port=None, liveness_endpoint=None)


def _reconcile(api: KubeApi, settings: OperatorSettings, name: str, now: datetime):
    return reconcile_run(api, NS, name, settings, OperatorMetrics(), decide, now=now)


def _writes(cluster: KubeCluster) -> list[str]:
    """The writes the API server served, as `VERB plural[/subresource]`, in order."""
    out = []
    for request in cluster.requests():
        if request.resource is None or request.action not in (kmock.action.CREATE, kmock.action.UPDATE):
            continue
        verb = "POST" if request.action == kmock.action.CREATE else "PATCH"
        out.append(f"{verb} {request.resource.plural}" + (f"/{request.subresource}" if request.subresource else ""))
    return out


def test_the_status_is_written_before_the_job_and_a_second_reconcile_changes_nothing(kube_cluster, api, settings):
    kube_cluster.create_run(build_run("alpha", rounds=0))
    first = _reconcile(api, settings, "alpha", T0)
    assert first.status_written and first.created == [build_job_name("alpha", 0, Phase.MIXUP, 1)]
    writes = [w for w in _writes(kube_cluster) if w != "POST events"]
    assert writes.index("PATCH sailruns/status") < writes.index("POST jobs")
    again = _reconcile(api, settings, "alpha", T0)
    assert again.created == [] and not again.status_written
    assert kube_cluster.job_creations() == [build_job_name("alpha", 0, Phase.MIXUP, 1)]


def test_a_run_goes_through_its_jobs_on_a_fake_clock(kube_cluster, api, settings):
    """The same Jobs, in the same order, as the subprocess operator creates (test_operator_kube.py)."""
    kube_cluster.create_run(build_run("beta", rounds=1))
    controller = JobController(cluster=kube_cluster)
    now = T0
    for _ in range(40):
        _reconcile(api, settings, "beta", now)
        if kube_cluster.run_state(NS, "beta") == "Succeeded":
            break
        for job in kube_cluster.client.items(f"/apis/batch/v1/namespaces/{NS}/jobs"):
            if controller._claim(job):  # the stand-in kubelet, played synchronously here
                controller._play(job)
        now += timedelta(seconds=1)
    assert kube_cluster.run_state(NS, "beta") == "Succeeded"
    assert kube_cluster.job_creations() == planned_jobs("beta", 1)
    status = kube_cluster.get_run(NS, "beta")["status"]
    assert status["checkpoint"]["uri"].endswith("iter-001/train/model")


@pytest.mark.parametrize("refusal", [422, 400])
def test_a_create_the_api_server_refuses_fails_the_run_at_once_with_its_words(kube_cluster, api, settings, refusal):
    def refuse_jobs(request: kmock.Request) -> int | None:
        creating_job = request.action == kmock.action.CREATE and request.resource is not None \
            and request.resource.plural == "jobs"
        return refusal if creating_job else None

    kube_cluster.emulator.faults = refuse_jobs
    kube_cluster.create_run(build_run("gamma", rounds=0))
    result = _reconcile(api, settings, "gamma", T0)
    assert result.created == []
    run = kube_cluster.get_run(NS, "gamma")
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert run["status"]["state"] == "Failed" and failed["reason"] == "RefusedByApiServer"
    assert f"HTTP {refusal}" in failed["message"] and "injected by the test" in failed["message"]
    assert (run["status"].get("restarts") or {}).get("app", 0) == 0  # no retry budget spent
    again = _reconcile(api, settings, "gamma", T0 + timedelta(seconds=30))
    assert again.created == [] and [s for s, _ in kube_cluster.emulator.refused] == [refusal]  # no retry loop


def test_a_status_write_from_a_stale_read_gets_409_and_creates_nothing(kube_cluster, api, settings):
    """Another writer changed the run between our read and our write: nothing is created from the old plan."""
    kube_cluster.create_run(build_run("delta", rounds=0))
    raw = api.request("GET", run_path(NS, "delta"))
    jobs, pods = fetch_children(api, NS, "delta")
    configmap = fetch_spec_configmap(api, NS, "delta")
    observed = build_observed(raw, jobs, pods, settings, configmap)
    decision = decide(observed, T0)
    assert decision.creates  # the plan would create the first Job
    kube_cluster.patch_run(NS, "delta", {"metadata": {"annotations": {"touched": "yes"}}})
    with pytest.raises(ApiError) as error:
        apply_decision(api, raw, observed, decision, settings, T0, {}, configmap, decide)
    assert error.value.status == 409
    assert kube_cluster.job_creations() == []
    assert not (kube_cluster.get_run(NS, "delta").get("status") or {}).get("current")
    # the next reconcile plans from the fresh object and goes ahead
    assert _reconcile(api, settings, "delta", T0).created == [build_job_name("delta", 0, Phase.MIXUP, 1)]


# ------------------------------------------------------------------ the controller on a fake clock


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test says: a timer due in 30 s fires as
    soon as the test advances `now` by 30, and never before."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


def _run_on_fake_clock(scenario) -> None:
    loop = FakeClockLoop()
    try:
        loop.run_until_complete(scenario(loop))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _advance(loop: FakeClockLoop, controller: Controller, seconds: float) -> None:
    """Move the clock, let due wake-ups start their reconciles, wait for those to finish."""
    loop.now += seconds
    for _ in range(3):
        await asyncio.sleep(0)
        while controller._tasks:
            await asyncio.gather(*list(controller._tasks))


def _controller(loop: FakeClockLoop, api: KubeApi, settings: OperatorSettings) -> Controller:
    return Controller(settings=settings, metrics=OperatorMetrics(), api=api,
                      clock=lambda: T0 + timedelta(seconds=loop.now))


def test_a_conflicting_status_write_is_retried_after_the_conflict_delay(kube_cluster, api, settings):
    kube_cluster.create_run(build_run("eps", rounds=0))
    conflicts = [409]

    def conflict_once(request: kmock.Request) -> int | None:
        status_write = request.action == kmock.action.UPDATE and request.subresource == "status"
        return conflicts.pop() if status_write and conflicts else None

    kube_cluster.emulator.faults = conflict_once

    async def scenario(loop: FakeClockLoop) -> None:
        controller = _controller(loop, api, settings)
        await controller.reconcile(NS, "eps", "run")
        assert kube_cluster.job_creations() == []
        assert controller._wakeups[(NS, "eps")].when() == loop.now + CONFLICT_RETRY_SECONDS
        await _advance(loop, controller, CONFLICT_RETRY_SECONDS / 2)
        assert kube_cluster.job_creations() == []  # not before its time
        await _advance(loop, controller, CONFLICT_RETRY_SECONDS / 2)
        assert kube_cluster.job_creations() == [build_job_name("eps", 0, Phase.MIXUP, 1)]

    _run_on_fake_clock(scenario)


def test_the_backoff_after_a_failed_attempt_is_waited_on_the_fake_clock(kube_cluster, api, settings):
    """A 30 s backoff: the retry comes when the clock reaches it, not a tick before, in milliseconds."""
    kube_cluster.create_run(build_run("zeta", rounds=0, failurePolicy={
        "appRetries": 2, "backoff": {"initialSeconds": 30, "maxSeconds": 60, "jitter": 0.0}}))
    kubelet = JobController(cluster=kube_cluster, script=lambda job: Scripted(exit_code=1))

    async def scenario(loop: FakeClockLoop) -> None:
        controller = _controller(loop, api, settings)
        await controller.reconcile(NS, "zeta", "run")
        [job] = kube_cluster.client.items(f"/apis/batch/v1/namespaces/{NS}/jobs")
        kubelet._play(job)  # the first attempt fails (exit 1: the app budget)
        await controller.reconcile(NS, "zeta", "job")
        due = controller._wakeups[(NS, "zeta")].when() - loop.now
        assert 29 <= due <= 30, due
        await _advance(loop, controller, due - 1)
        assert kube_cluster.job_creations() == [build_job_name("zeta", 0, Phase.MIXUP, 1)]
        await _advance(loop, controller, 1)
        assert kube_cluster.job_creations()[-1] == build_job_name("zeta", 0, Phase.MIXUP, 2)
        assert kube_cluster.get_run(NS, "zeta")["status"]["restarts"]["app"] == 1

    _run_on_fake_clock(scenario)
