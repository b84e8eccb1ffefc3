"""Secrets never leave their Secret: a canary credential is grepped for in everything a run leaves.

The storage credentials (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) are set to unique canary
values, the run root is on moto S3 over HTTP (moto accepts any key), and then everything a
user, the operator or another tenant could read is searched for the canaries: the trainer's
stdout (the summary line), stderr (logs, with -v debug logging too), the termination-message
file, the local executor's state, resolved spec, per-attempt logs and termination files, and
every object in the bucket (manifests, run.json, metrics). A failing phase (missing bucket) is
included: error paths are where credentials usually leak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from tests.builders.tiny_pipeline import (
    build_tiny_algorithm,
    build_tiny_prompts,
    build_tiny_sd15,
    build_tiny_seed_pairs,
)
from tests.builders.tiny_run import REPO_ROOT, create_tiny_run, phase_args
from tests.peers.s3 import create_admin_client

SECRET = f"CANARYsecret{uuid.uuid4().hex}"
TOKEN = f"CANARYtoken{uuid.uuid4().hex}"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "AKIDRELIABILITY", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(tmp_path / "absent"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "absent"),
                "OMP_NUM_THREADS": "1", "SAIL_CACHE_DIR": str(tmp_path / "cache"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))})
    return env


def _leaks(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {name}" for where, text in texts.items()
            for name, canary in (("AWS_SECRET_ACCESS_KEY", SECRET), ("AWS_SESSION_TOKEN", TOKEN)) if canary in text]


def _bucket_texts(endpoint: str, bucket: str) -> dict[str, str]:
    client = create_admin_client(endpoint)
    texts = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            texts[f"s3://{bucket}/{item['Key']}"] = body.decode("latin-1")
    assert texts, "the run wrote nothing to the bucket"
    return texts


def _folder_texts(folder: Path) -> dict[str, str]:
    return {str(path): path.read_bytes().decode("latin-1") for path in folder.rglob("*") if path.is_file()}


def _trainer(args: list[str], env: dict[str, str], termination: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sail_trainer", *args], capture_output=True, text=True,
                          env={**env, "SAIL_TERMINATION_LOG": str(termination)}, timeout=300, check=False)


def test_a_phase_and_its_failures_never_show_the_credentials(tmp_path: Path, moto_s3, s3_bucket: str) -> None:
    env = _env(tmp_path)
    run = create_tiny_run(tmp_path / "in", f"s3://{s3_bucket}/runs/sec", endpoint=moto_s3.endpoint, num_pairs=4)
    texts: dict[str, str] = {}
    ok = _trainer([*phase_args(run, "mixup", 0), "-v"], env, tmp_path / "term-ok")
    assert ok.returncode == 0, ok.stderr[-3000:]
    texts |= {"mixup stdout": ok.stdout, "mixup stderr": ok.stderr}
    again = _trainer([*phase_args(run, "mixup", 0), "-v"], env, tmp_path / "term-again")
    assert again.returncode == 0 and '"already_committed"' in again.stdout
    texts |= {"rerun stdout": again.stdout, "rerun stderr": again.stderr}
    missing = _trainer(["train", "--run", "s3://no-such-bucket-sail/runs/x", "--iteration", "0", "--spec",
                        str(run.spec), "-v"], env, tmp_path / "term-failed")
    assert missing.returncode != 0
    assert "no-such-bucket-sail" in missing.stdout + missing.stderr, "the error should name the bucket"
    texts |= {"failed stdout": missing.stdout, "failed stderr": missing.stderr}
    for name in ("term-ok", "term-again", "term-failed"):
        texts[name] = (tmp_path / name).read_text()
    texts |= _bucket_texts(moto_s3.endpoint, s3_bucket)
    assert _leaks(texts) == []


def test_sail_run_on_s3_never_shows_the_credentials(tmp_path: Path, moto_s3, s3_bucket: str) -> None:
    folder = tmp_path / "files"
    build_tiny_sd15(folder / "model")
    build_tiny_seed_pairs(folder / "seed", 4)
    build_tiny_prompts(folder / "prompts.txt")
    body = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "secret-run"},
            "spec": {**build_tiny_algorithm("model", "seed/pairs.jsonl", "prompts.txt", rounds=0),
                     "storage": {"uri": f"s3://{s3_bucket}/runs/secret-run", "endpoint": moto_s3.endpoint},
                     "parallelism": {"gpusPerNode": 0}}}
    run_file = folder / "run.yaml"
    run_file.write_text(yaml.safe_dump(body, sort_keys=False))
    env = _env(tmp_path)
    texts: dict[str, str] = {}
    for label, argv in (("sail run", ["run", str(run_file)]), ("sail -v run (resume)", ["-v", "run", str(run_file)]),
                        ("sail status", ["status", str(run_file)])):
        proc = subprocess.run([sys.executable, "-m", "sail_operator.cli", *argv], capture_output=True, text=True,
                              env=env, timeout=500, check=False)
        assert proc.returncode == 0, (label, proc.stdout[-2000:], proc.stderr[-3000:])
        texts |= {f"{label} stdout": proc.stdout, f"{label} stderr": proc.stderr}
    local = folder / ".sail" / "secret-run"
    local_texts = _folder_texts(local)
    assert any(path.endswith("state.json") for path in local_texts), sorted(local_texts)
    texts |= local_texts | _bucket_texts(moto_s3.endpoint, s3_bucket)
    assert _leaks(texts) == []
