"""The operator drives the real `sail-trainer` through Jobs: kmock over HTTP, moto S3, tiny model.

The `job_controller` fixture in "trainer" mode plays the kubelet: for each Job the operator
creates it runs the Job's container command (`python -m sail_trainer ...`) with the Job's
environment (storage endpoint, credentials resolved from the referenced Secret, the shard
index of an Indexed Job), the spec file taken from the run's ConfigMap, and reports the exit
code and the termination message the trainer wrote back into the Job and pod status.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase, phases_of_iteration
from sail_api.storage import S3Connection, open_store
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_spec import build_sailrun_dict
from tests.builders.tiny_pipeline import (
    build_tiny_algorithm,
    build_tiny_prompts,
    build_tiny_sd15,
    build_tiny_seed_pairs,
)
from tests.peers.kube import wait_for

pytestmark = pytest.mark.slow
NS = "default"


def _upload_folder(store, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.upload_file(f"{prefix}/{path.relative_to(local).as_posix()}", path)


def test_step0_and_one_round_with_the_real_trainer(
        tmp_path, moto_s3, s3_bucket, kube_cluster, job_controller, operator_process):
    bucket = open_store(f"s3://{s3_bucket}", S3Connection(endpoint=moto_s3.endpoint))
    _upload_folder(bucket, build_tiny_sd15(tmp_path / "model"), "models/tiny-sd15")
    _upload_folder(bucket, build_tiny_seed_pairs(tmp_path / "seed", 8).parent, "data/seed")
    bucket.upload_file("data/prompts.txt", build_tiny_prompts(tmp_path / "prompts.txt", 16))
    run_uri = f"s3://{s3_bucket}/runs/real"
    spec = build_tiny_algorithm(f"s3://{s3_bucket}/models/tiny-sd15", f"s3://{s3_bucket}/data/seed/pairs.jsonl",
                                f"s3://{s3_bucket}/data/prompts.txt", rounds=1)
    spec.update({
        "storage": {"uri": run_uri, "endpoint": moto_s3.endpoint, "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3-creds"}},
        # one shard each: still Indexed Jobs (`--shards 1`, JOB_COMPLETION_INDEX=0), two trainer starts fewer
        "parallelism": {"generateShards": 1, "annotateShards": 1},
        "failurePolicy": {"appRetries": 0, "infraRetries": 0},
    })
    controller = job_controller(mode="trainer", secrets={
        "s3-creds": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}})
    policy = tmp_path / "policy.json"  # moto is the site's S3 store: the admin allows its endpoint
    policy.write_text(json.dumps({"allowedEndpoints": [moto_s3.endpoint]}))
    op = operator_process("--policy-file", str(policy)).start()
    kube_cluster.create_run(build_sailrun_dict("real", spec, namespace=NS))

    try:
        wait_for(lambda: kube_cluster.run_state(NS, "real") in ("Succeeded", "Failed"), 420, "the run to finish",
                 interval=0.5)
    finally:
        print(op.logs()[-4000:], controller.errors)
        for pod_name, output in controller.failed_outputs.items():
            print(f"--- {pod_name}\n{output}")
    run = kube_cluster.get_run(NS, "real")
    assert run["status"]["state"] == "Succeeded", run["status"]["message"]
    assert controller.errors == []
    # one round shows every Job kind (round 1 samples from step 0's checkpoint as later rounds do from theirs):
    # six trainer starts instead of ten (issue 17)
    planned = [build_job_name("real", i, p, 1) for i in range(2) for p in phases_of_iteration(i)]
    assert kube_cluster.job_creations() == planned, Counter(kube_cluster.job_creations()).most_common(3)
    # results came from the trainer's own termination messages, and storage agrees with status
    layout = RunLayout(run_uri)
    store = open_store(run_uri, S3Connection(endpoint=moto_s3.endpoint))
    train = run["status"]["iterations"][1]["phases"][-1]
    assert train["manifestUri"] == layout.manifest_uri(1, Phase.TRAIN)
    assert "loss" in train["metrics"]
    train1 = store.read_manifest(layout.phase_dir(1, Phase.TRAIN), verify=True)
    # the committed attempt's model folder (train writes under attempt-<id>/), as the summary reported it
    assert run["status"]["checkpoint"]["uri"] == f"{layout.phase_dir(1, Phase.TRAIN)}/{train1.metadata['attempt']}/model"
    generate = run["status"]["iterations"][1]["phases"][0]
    assert generate["phase"] == "generate" and generate["result"] == "Succeeded"
