"""The Job builder: every field a phase Job needs (docs/operating.md), as plain dicts (no API)."""

from __future__ import annotations

from typing import Any

import pytest

from sail_api.phases import SPEC_MOUNT_PATH, Phase
from sail_api.spec import SAILRun
from sail_operator.kube.jobs import (
    build_headless_service,
    build_phase_job,
    build_spec_configmap,
    coerce_run,
    compute_gpus_per_pod,
)
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import CreatePhaseJob, build_job_name
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

UID = "7f0c5a4e-0000-4000-8000-000000000001"
SETTINGS = OperatorSettings()


def build_raw(**spec_overrides: Any) -> dict[str, Any]:
    spec = build_spec_body(prompts="s3://b/prompts.txt", storage={
        "uri": "s3://b/runs/r1", "endpoint": "http://minio:9000", "region": "eu-west-1",
        "credentialsSecretRef": {"name": "s3-creds"}})
    return build_sailrun_dict("r1", {**spec, **spec_overrides}, namespace="team-a", uid=UID)


def build_run(**spec_overrides: Any) -> SAILRun:
    """The parsed run the builders take (act.py parses the API object once per reconcile)."""
    return coerce_run(build_raw(**spec_overrides))


def action(phase: Phase, iteration: int = 1, attempt: int = 1, shards: int | None = None,
           nodes: int = 1) -> CreatePhaseJob:
    return CreatePhaseJob(name=build_job_name("r1", iteration, phase, attempt), iteration=iteration,
                          phase=phase, attempt=attempt, shards=shards, nodes=nodes)


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(job)["env"]}


def test_name_labels_and_controller_owner_reference():
    job = build_phase_job(build_run(), action(Phase.MIXUP, iteration=0, attempt=2), SETTINGS)
    assert job["metadata"]["name"] == "r1-i000-mixup-a2"
    labels = {"app.kubernetes.io/managed-by": "sail-operator", "sail.dev/run": "r1", "sail.dev/iteration": "0",
              "sail.dev/phase": "mixup", "sail.dev/attempt": "2"}
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    [owner] = job["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "name": "r1", "uid": UID,
                     "controller": True, "blockOwnerDeletion": True}


def test_retries_belong_to_the_planner_and_preemption_is_ignored():
    job = build_phase_job(build_run(), action(Phase.TRAIN), SETTINGS)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [64, 65]}


def test_command_is_the_one_phase_command_line_with_the_mounted_spec():
    job = build_phase_job(build_run(), action(Phase.GENERATE, shards=4), SETTINGS)
    assert container(job)["command"] == ["sail-trainer", "generate", "--run", "s3://b/runs/r1", "--iteration", "1",
                                         "--spec", SPEC_MOUNT_PATH, "--shards", "4"]
    mounts = {m["mountPath"]: m for m in container(job)["volumeMounts"]}
    assert mounts["/etc/sail"]["readOnly"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spec"]["configMap"] == {"name": "r1-spec", "items": [{"key": "spec.json", "path": "spec.json"}]}


@pytest.mark.parametrize(
    ("phase", "shards", "nodes", "completions"),
    [(Phase.GENERATE, 3, 1, 3), (Phase.ANNOTATE, 1, 1, 1), (Phase.TRAIN, None, 4, 4), (Phase.MIXUP, None, 1, None)],
    ids=["generate shards are an Indexed Job", "one annotate shard is still Indexed",
         "multi-node train is an Indexed Job of nodes", "mixup is a plain one-pod Job"],
)
def test_indexed_jobs(phase, shards, nodes, completions):
    job = build_phase_job(build_run(), action(phase, shards=shards, nodes=nodes), SETTINGS)
    if completions is None:
        assert "completionMode" not in job["spec"] and "completions" not in job["spec"]
    else:
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == completions


def test_multi_node_train_has_rendezvous_env_and_a_headless_service():
    run = build_run(parallelism={"trainNodes": 2, "gpusPerNode": 8})
    act = action(Phase.TRAIN, nodes=2)
    job = build_phase_job(run, act, SETTINGS)
    env = env_of(job)
    assert env["PET_NNODES"]["value"] == "2"
    assert env["PET_NPROC_PER_NODE"]["value"] == "8"
    assert env["PET_MASTER_PORT"]["value"] == "29500"
    assert env["PET_MASTER_ADDR"]["value"] == "r1-i001-train-a1-0.r1-i001-train-a1.team-a.svc"
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert job["spec"]["template"]["spec"]["subdomain"] == "r1-i001-train-a1"
    service = build_headless_service(run, act)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "r1-i001-train-a1"}
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID
    assert build_headless_service(run, action(Phase.TRAIN)) is None


def test_credentials_are_secret_references_never_values():
    job = build_phase_job(build_run(), action(Phase.MIXUP), SETTINGS)
    env = env_of(job)
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "AWS_ACCESS_KEY_ID",
                                        "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"  # S3 only: never STS (docs/security.md)
    assert "AWS_ENDPOINT_URL" not in env
    assert env["AWS_REGION"]["value"] == "eu-west-1"


def test_hardened_pod_and_workload_service_account_without_token():
    job = build_phase_job(build_run(), action(Phase.MIXUP), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sail-workload"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    security = container(job)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container(job)["volumeMounts"]}
    assert {"/tmp", "/var/cache/sail"} <= mounts
    assert container(job)["terminationMessagePath"] == "/dev/termination-log"
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_execution_fields_of_the_spec_reach_the_job():
    run = build_run(
        template={"serviceAccountName": "trainer-gpu", "nodeSelector": {"pool": "gpu"},
                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                  "priorityClassName": "batch-low", "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]},
        resources={"train": {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": "2"}}},
        queueName="team-a-gpu", activeDeadlineSeconds=3600,
    )
    job = build_phase_job(run, action(Phase.TRAIN), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer-gpu"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "batch-low"
    assert container(job)["resources"] == {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": "2"}}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpu"
    assert job["spec"]["suspend"] is True  # Kueue admits it
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert env_of(job)["HF_HUB_OFFLINE"]["value"] == "1"
    assert compute_gpus_per_pod(job) == 2.0


def test_no_queue_means_no_kueue_label_and_not_suspended():
    job = build_phase_job(build_run(), action(Phase.MIXUP), SETTINGS)
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert "suspend" not in job["spec"]


def test_spec_configmap_holds_the_resolved_run_and_is_owned():
    configmap = build_spec_configmap(build_run())
    assert configmap["metadata"]["name"] == "r1-spec"
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == UID
    text = configmap["data"]["spec.json"]
    assert '"uri": "s3://b/runs/r1"' in text and "s3-creds" not in text


def test_a_run_without_uid_cannot_own_children():
    run = build_raw()
    del run["metadata"]["uid"]
    with pytest.raises(ValueError, match="metadata.uid"):
        build_phase_job(coerce_run(run), action(Phase.MIXUP), SETTINGS)


def test_a_run_without_storage_uri_names_the_field():
    with pytest.raises(ValueError, match="spec.storage.uri"):
        build_phase_job(build_run(storage={}), action(Phase.MIXUP), SETTINGS)


@pytest.mark.parametrize("act", [action(Phase.MIXUP, iteration=0), action(Phase.GENERATE, shards=4),
                                 action(Phase.TRAIN, nodes=2)])
def test_job_and_local_executor_run_the_same_phase_command_line(act: CreatePhaseJob) -> None:
    """Both executors hand the trainer the run root and the resolved run the same way."""
    from pathlib import Path

    from sail_operator.local.executor import build_trainer_command

    command = container(build_phase_job(build_run(), act, SETTINGS))["command"]
    program = list(SETTINGS.trainer_command)
    assert command == build_trainer_command(program, act, "s3://b/runs/r1", Path(SPEC_MOUNT_PATH))
