"""kopf wiring that can be checked without running kopf: owner mapping, kopf settings, wake-up filtering."""

from __future__ import annotations

import logging

import kopf

from sail_operator.kube import handlers
from sail_operator.kube.act import ReconcileResult
from sail_operator.kube.handlers import (
    Controller,
    WatchOnlyDiffBaseStorage,
    build_kopf_settings,
    build_registry,
    find_owner_run,
)
from sail_operator.kube.settings import OperatorSettings
from sail_operator.metrics import OperatorMetrics


def test_a_job_maps_to_its_controlling_sailrun():
    job = {"metadata": {"labels": {"sail.dev/run": "from-label"}, "ownerReferences": [
        {"kind": "ConfigMap", "name": "x", "controller": False},
        {"kind": "SAILRun", "name": "from-owner", "controller": True}]}}
    assert find_owner_run(job) == "from-owner"


def test_without_an_owner_the_run_label_is_used():
    assert find_owner_run({"metadata": {"labels": {"sail.dev/run": "r1"}}}) == "r1"
    assert find_owner_run({"metadata": {}}) is None


def test_kopf_keeps_its_state_under_our_prefix_with_bounded_watches():
    settings = build_kopf_settings(OperatorSettings(watch_server_timeout=120, watch_client_timeout=150))
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "sail.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage) and diffbase.prefix == "sail.dev"
    assert settings.persistence.finalizer == "sail.dev/finalizer"
    assert (settings.watching.server_timeout, settings.watching.client_timeout) == (120, 150)
    assert settings.posting.level == logging.WARNING
    assert list(settings.watching.label_selectors.values()) == ["app.kubernetes.io/managed-by=sail-operator"]


def test_kopf_builds_no_per_event_essence_because_no_handler_needs_one():
    settings = build_kopf_settings(OperatorSettings())
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, WatchOnlyDiffBaseStorage)
    assert diffbase.build(body={"metadata": {"name": "r"}, "spec": {"a": 1}, "status": {"big": [1] * 100}}) == {}
    # The empty essence is only right while kopf never diffs: no change-detecting handler, no daemon/timer.
    registry = build_registry(Controller(settings=OperatorSettings(), metrics=OperatorMetrics()))
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
    assert len(list(registry._watching.get_all_handlers())) == 2  # run_event, job_event


def _job(conditions: list[dict] | None = None, uid: str = "j-1") -> dict:
    return {"metadata": {"name": "r-i000-mixup-a1", "uid": uid}, "spec": {},
            "status": {"conditions": conditions or []}}


def test_the_controller_remembers_each_jobs_state_to_filter_its_events():
    controller = Controller(settings=OperatorSettings(), metrics=OperatorMetrics())
    done = [{"type": "Complete", "status": "True"}]
    assert controller.job_event_matters("ADDED", _job()) is False            # our own create
    assert controller.job_event_matters("MODIFIED", _job()) is False         # nothing planner-visible changed
    assert controller.job_event_matters("MODIFIED", _job(done)) is True      # finished: wake the run
    assert controller.job_event_matters("MODIFIED", _job(done)) is False     # its later updates do not
    assert controller.job_event_matters("DELETED", _job(done)) is False      # our cleanup does not
    assert controller._job_signals == {}                                     # nothing kept for a gone Job
    assert controller.job_event_matters("DELETED", _job(uid="j-2")) is True  # vanished unseen: look


async def test_only_the_echo_of_our_own_status_write_is_skipped(monkeypatch):
    calls: list[str] = []

    def fake_reconcile(api, namespace, name, *_args):
        calls.append(name)
        return ReconcileResult(status_written=True, written_version=f"v{len(calls)}")

    monkeypatch.setattr(handlers, "reconcile_run", fake_reconcile)
    controller = Controller(settings=OperatorSettings(), metrics=OperatorMetrics(), api=object())
    await controller.reconcile("ns", "r", "run_event", "v0")   # someone's change: reconcile, we write v1
    await controller.reconcile("ns", "r", "run_event", "v1")   # the echo of our write: skipped
    assert calls == ["r"] and controller.skipped["run_event"] == 1
    await controller.reconcile("ns", "r", "run_event", "v9")   # a version we did not write
    await controller.reconcile("ns", "r", "job_event")         # any other cause
    await controller.reconcile("ns", "r", "timer")
    assert len(calls) == 4                                      # the last one wrote v4
    controller.forget("ns", "r")
    await controller.reconcile("ns", "r", "run_event", "v4")   # forgotten (run deleted): no echo is assumed
    assert len(calls) == 5
