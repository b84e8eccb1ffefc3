"""act's pure helpers: the one status patch per reconcile, and the Event it posts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kubernetes.client import configuration as kube_configuration

from sail_api.status import CurrentAttempt, RunState, SAILRunStatus
from sail_operator.kube.act import build_event, build_kube_api, build_status_patch
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import EmitEvent


def test_an_unchanged_status_is_not_written_again():
    status = SAILRunStatus(state=RunState.RUNNING, current_iteration=1)
    stored = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert build_status_patch(stored, status) is None


def test_a_cleared_field_is_removed_by_the_merge_patch():
    old = SAILRunStatus(state=RunState.RUNNING, current=CurrentAttempt(
        job_name="r-i000-mixup-a1", iteration=0, phase="mixup", attempt=1))
    new = SAILRunStatus(state=RunState.RUNNING)
    patch = build_status_patch(old.model_dump(mode="json", by_alias=True, exclude_none=True), new)
    assert patch["status"]["current"] is None
    assert patch["status"]["state"] == "Running"


def test_keys_we_do_not_know_are_cleared_too():
    patch = build_status_patch({"state": "Running", "legacyField": 1}, SAILRunStatus(state=RunState.RUNNING))
    assert patch["status"]["legacyField"] is None


def test_event_is_about_the_sailrun_and_bounded():
    run = {"metadata": {"name": "r1", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}}
    event = build_event(run, EmitEvent("Warning", "InvalidSpec", "x" * 5000), datetime(2026, 11, 25, tzinfo=UTC))
    assert event["involvedObject"] == {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "name": "r1",
                                       "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}
    assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec")
    assert len(event["message"]) == 1024
    assert event["metadata"]["namespace"] == "ns" and event["metadata"]["name"].startswith("r1.")
    assert event["firstTimestamp"] == "2026-11-25T00:00:00Z"


def test_nested_nulls_do_not_cause_a_write_loop():
    """`current.startedAt: null` was deleted by the merge patch; the stored status lacks it."""
    status = SAILRunStatus(state=RunState.RUNNING, current=CurrentAttempt(
        job_name="r-i000-mixup-a1", iteration=0, phase="mixup", attempt=1, created_at="2026-11-25T10:00:00Z"))
    stored = status.model_dump(mode="json", by_alias=True)
    stored["current"] = {k: v for k, v in stored["current"].items() if v is not None}
    stored = {k: v for k, v in stored.items() if v is not None}
    assert build_status_patch(stored, status) is None


def test_the_api_client_resolves_its_proxy_once_not_per_request(tmp_path, monkeypatch):
    """The kubeconfig token hook re-assigns `host` before every request; the env proxy must not be re-read."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://api.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    api = build_kube_api(OperatorSettings(kubeconfig=str(kubeconfig)))
    try:
        configuration = api._client.configuration
        assert configuration.proxy == "http://proxy.example:3128"  # the environment still decides, once

        def no_more_env_reads() -> dict:
            raise AssertionError("the proxy environment was read again")

        monkeypatch.setattr(kube_configuration, "getproxies", no_more_env_reads)
        configuration.refresh_api_key_hook(configuration)  # what every request does first
        assert configuration.proxy == "http://proxy.example:3128"
    finally:
        api.close()
