"""`sail operator` arguments -> OperatorSettings (nothing is started by these tests)."""

from __future__ import annotations

import json

import pytest

from sail_operator.kube.entry import build_parser, build_settings, load_policy, main


def test_defaults_serve_all_namespaces_with_metrics_and_liveness():
    settings = build_settings(build_parser().parse_args([]))
    assert settings.namespaces == ()
    assert settings.metrics_port == 8080
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert settings.kubeconfig is None and settings.standalone


def test_namespaced_and_explicit_kubeconfig():
    args = build_parser().parse_args(["-n", "team-a", "--namespace", "team-b", "--kubeconfig", "/k.yaml",
                                      "--metrics-port", "-1", "--liveness", ""])
    settings = build_settings(args)
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.kubeconfig == "/k.yaml"
    assert settings.metrics_port is None and settings.liveness_endpoint is None


def test_namespace_and_all_namespaces_exclude_each_other():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-n", "a", "-A"])


def test_the_charts_policy_json_is_understood(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"allowedImages": ["registry.corp/*"], "allowedServiceAccounts": [],
                                "allowedPriorityClasses": ["batch-*"], "allowedNodeSelectorKeys": ["*"],
                                "requireS3Storage": True, "maxTrainNodes": 4, "maxShards": 32,
                                "extraForbiddenEnv": ["HF_TOKEN"]}))
    policy = load_policy(str(path))
    assert policy.allowed_images == ("registry.corp/*",)
    assert policy.max_train_nodes == 4 and policy.extra_forbidden_env == ("HF_TOKEN",)


def test_an_unknown_policy_key_is_a_clear_startup_error(tmp_path, caplog):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"allowedImagez": ["*"]}))
    assert main(["--policy-file", str(path), "--metrics-port", "-1"]) == 2
    assert "allowedImagez" in caplog.text


def test_standalone_can_be_switched_off_for_leader_election():
    assert not build_settings(build_parser().parse_args([])).leader_election
    settings = build_settings(build_parser().parse_args(["--no-standalone", "--lease-namespace", "ops",
                                                         "--ports-file", "/tmp/p.json"]))
    assert not settings.standalone and settings.leader_election
    assert settings.lease_namespace == "ops" and settings.ports_file == "/tmp/p.json"
