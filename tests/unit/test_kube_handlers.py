"""kopf wiring that can be checked without running kopf: owner mapping and kopf settings."""

from __future__ import annotations

import logging

import kopf

from sail_operator.kube.handlers import build_kopf_settings, find_owner_run
from sail_operator.kube.settings import OperatorSettings


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
