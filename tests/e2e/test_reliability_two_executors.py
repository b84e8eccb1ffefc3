"""An operator and a `sail run` driving the same run on the same S3 run root at the same time.

The kube operator (on the kmock emulator, its Jobs played by the real trainer through the job
runner of tests/peers/kube.py) and the local executor (`sail run`, its own trainer processes)
are given the same SAILRun and the same `s3://` run root on moto, and started together. Both
must finish successfully, and the storage must show each phase (and shard) committed exactly
once: of all the phase summaries both executors collected (pod termination messages, the local
executor's summary files), exactly one per phase folder says `committed` and every other says
`already_committed` (the loser's clear message), every manifest verifies, and a reader polling
the manifests during the run never saw a commit replaced or vanish. The Secret's
AWS_SECRET_ACCESS_KEY is a canary: it appears in no operator log, event, status, Job, pod
termination message or `sail run` output and file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from sail_api.layout import RunLayout
from sail_api.phases import Phase, phases_of_iteration
from sail_api.storage import S3Connection, StorageError, open_store
from tests.builders.tiny_pipeline import (
    build_tiny_algorithm,
    build_tiny_prompts,
    build_tiny_sd15,
    build_tiny_seed_pairs,
)
from tests.builders.tiny_run import REPO_ROOT
from tests.peers.kube import wait_for

# Heavy on purpose (issue 17): step 0 + a round on both executors is 12 trainer starts; the sharded
# phases (generate, annotate) race too, so fewer rounds would drop half the phase kinds it guards.
pytestmark = pytest.mark.slow
NS = "default"
NAME = "shared"
CANARY = f"CANARYkube{uuid.uuid4().hex}"  # the Secret's AWS_SECRET_ACCESS_KEY (moto accepts any)


def _upload(store: Any, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.upload_file(f"{prefix}/{path.relative_to(local).as_posix()}", path)


def _folders(layout: RunLayout) -> list[str]:
    folders = []
    for iteration in (0, 1):
        for phase in phases_of_iteration(iteration):
            sharded = phase in (Phase.GENERATE, Phase.ANNOTATE)
            folders.append(layout.output_dir(iteration, phase, 0 if sharded else None, 1 if sharded else None))
    return folders


def _poll(store: Any, folders: list[str], stop: threading.Event, problems: list[str]) -> None:
    writers: dict[str, str] = {}
    while not stop.is_set():
        for folder in folders:
            try:
                if store.is_committed(folder):
                    writer = store.read_manifest(folder, verify=True).writer or ""
                    if writers.setdefault(folder, writer) != writer:
                        problems.append(f"{folder}: commit replaced {writers[folder]} -> {writer}")
                elif folder in writers:
                    problems.append(f"{folder}: a committed folder became uncommitted")
            except StorageError as error:
                problems.append(f"{folder}: {error}")
        stop.wait(0.3)


def _summaries_from_pods(controller: Any) -> list[dict[str, Any]]:
    # From the stand-in kubelet's record, not the pods still listed: the operator deletes a
    # finished Job and garbage collection takes its pods (a phase the Jobs won would lose its summary).
    return [json.loads(result.message) for _, result in controller.reported if result.message.startswith("{")]


def test_operator_and_sail_run_on_one_run_root_commit_each_phase_once(
        tmp_path: Path, moto_s3, s3_bucket: str, kube_cluster, job_controller, operator_process) -> None:
    endpoint = moto_s3.endpoint
    bucket = open_store(f"s3://{s3_bucket}", S3Connection(endpoint=endpoint))
    _upload(bucket, build_tiny_sd15(tmp_path / "model"), "models/tiny")
    _upload(bucket, build_tiny_seed_pairs(tmp_path / "seed", 4).parent, "data/seed")
    bucket.upload_file("data/prompts.txt", build_tiny_prompts(tmp_path / "prompts.txt", 8))
    run_uri = f"s3://{s3_bucket}/runs/{NAME}"
    spec = {**build_tiny_algorithm(f"s3://{s3_bucket}/models/tiny", f"s3://{s3_bucket}/data/seed/pairs.jsonl",
                                   f"s3://{s3_bucket}/data/prompts.txt", rounds=1),
            "storage": {"uri": run_uri, "endpoint": endpoint, "region": "us-east-1",
                        "credentialsSecretRef": {"name": "s3-creds"}},
            "parallelism": {"generateShards": 1, "annotateShards": 1, "gpusPerNode": 0},
            "failurePolicy": {"appRetries": 2, "backoff": {"initialSeconds": 0.5, "maxSeconds": 2, "jitter": 0.0}}}
    body = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": NAME, "namespace": NS},
            "spec": spec}
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(body, sort_keys=False))

    store = open_store(run_uri, S3Connection(endpoint=endpoint))
    layout = RunLayout(run_uri)
    folders = _folders(layout)
    stop, problems = threading.Event(), []
    reader = threading.Thread(target=_poll, args=(store, folders, stop, problems), daemon=True)
    reader.start()

    controller = job_controller(mode="trainer", trainer_timeout=400.0,
                                secrets={"s3-creds": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": CANARY}})
    policy = tmp_path / "policy.json"  # moto is the site's S3 store: the admin allows its endpoint
    policy.write_text(json.dumps({"allowedEndpoints": [endpoint]}))
    op = operator_process("--policy-file", str(policy)).start()
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": CANARY, "OMP_NUM_THREADS": "1", "SAIL_CACHE_DIR": str(tmp_path / "cache-local"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}
    kube_cluster.create_run(body)
    local = subprocess.Popen([sys.executable, "-m", "sail_operator.cli", "run", str(run_file)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        out, _ = local.communicate(timeout=500)
        assert local.returncode == 0, out[-4000:]
        try:
            wait_for(lambda: kube_cluster.run_state(NS, NAME) in ("Succeeded", "Failed"), 300, "the kube run to end")
        except AssertionError:
            print(op.logs()[-4000:], controller.failed_outputs)  # noqa: T201
            raise
        assert kube_cluster.run_state(NS, NAME) == "Succeeded", (kube_cluster.get_run(NS, NAME).get("status"),
                                                                 controller.failed_outputs)
    finally:
        if local.poll() is None:
            local.kill()
        stop.set()
        reader.join(10)

    # the Secret's value reached the trainer (it wrote to S3 with it) but nothing anyone can read
    seen = {"operator logs": op.logs(), "sail run output": out,
            "events": json.dumps(kube_cluster.client.items(f"/api/v1/namespaces/{NS}/events")),
            "run object (status)": json.dumps(kube_cluster.get_run(NS, NAME)),
            "pods (termination messages)": json.dumps(kube_cluster.client.items(f"/api/v1/namespaces/{NS}/pods")),
            "all termination messages": json.dumps([result.message for _, result in controller.reported]),
            "jobs": json.dumps(kube_cluster.client.items(f"/apis/batch/v1/namespaces/{NS}/jobs"))}
    seen |= {str(p): p.read_text(errors="replace") for p in (tmp_path / ".sail").rglob("*") if p.is_file()}
    assert [where for where, text in seen.items() if CANARY in text] == []

    summaries = _summaries_from_pods(controller)
    local_dir = tmp_path / ".sail" / NAME  # the executor files of an s3:// root: s3/<bucket>/<prefix>/local
    summaries += [json.loads(p.read_text()) for p in local_dir.rglob("*.summary.json") if p.read_text().strip()]
    outcomes: dict[str, list[str]] = defaultdict(list)
    for summary in summaries:
        outcomes[summary["manifestUri"].rsplit("/_SUCCESS.json", 1)[0]].append(summary["outcome"])
    print("two-executor outcomes:", json.dumps(outcomes))  # noqa: T201
    assert sorted(outcomes) == sorted(folders), outcomes
    for folder, seen in outcomes.items():
        assert seen.count("committed") == 1, (folder, seen)
        assert set(seen) <= {"committed", "already_committed"}, (folder, seen)
        store.read_manifest(folder, verify=True)
    assert problems == []
    assert controller.errors == []
