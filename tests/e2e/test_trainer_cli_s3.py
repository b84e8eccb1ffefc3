"""Step 0 and one SAIL round through the CLI with everything on moto S3 (model, data, run root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase, phases_of_iteration
from sail_api.storage import S3Connection, open_store
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_pipeline import (
    build_tiny_prompts,
    build_tiny_run_spec,
    build_tiny_sd15,
    build_tiny_seed_pairs,
)
from tests.builders.tiny_run import run_trainer_process

# Heavy on purpose (issue 17): the same through the CLI on S3 (the storage channel the operator uses).
pytestmark = pytest.mark.slow


def _upload_folder(store, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.upload_file(f"{prefix}/{path.relative_to(local).as_posix()}", path)


def test_step0_and_one_round_on_s3(tmp_path: Path, moto_s3, s3_bucket: str) -> None:
    endpoint = moto_s3.endpoint
    bucket_store = open_store(f"s3://{s3_bucket}", S3Connection(endpoint=endpoint))
    _upload_folder(bucket_store, build_tiny_sd15(tmp_path / "model"), "models/tiny-sd15")
    _upload_folder(bucket_store, build_tiny_seed_pairs(tmp_path / "seed", 8).parent, "data/seed")
    bucket_store.upload_file("data/prompts.txt", build_tiny_prompts(tmp_path / "prompts.txt", 16))
    run_uri = f"s3://{s3_bucket}/runs/tiny"
    spec = tmp_path / "spec.json"
    spec.write_text(build_tiny_run_spec(run_uri, f"s3://{s3_bucket}/models/tiny-sd15",
                                        f"s3://{s3_bucket}/data/seed/pairs.jsonl", f"s3://{s3_bucket}/data/prompts.txt",
                                        endpoint=endpoint))
    env = {"SAIL_CACHE_DIR": str(tmp_path / "cache")}
    for iteration in (0, 1):
        for phase in phases_of_iteration(iteration):
            extra = ["--shard", "0/1"] if phase in (Phase.GENERATE, Phase.ANNOTATE) else []
            args = [phase.value, "--run", run_uri, "--iteration", str(iteration), "--spec", str(spec), *extra]
            result = run_trainer_process(args, env=env)
            assert result.returncode == 0, result.stderr[-3000:]
            assert result.summary["outcome"] == "committed"
            assert result.summary["manifestUri"].startswith(f"{run_uri}/iter-00{iteration}/")

    store = open_store(run_uri, S3Connection(endpoint=endpoint))
    layout = RunLayout(run_uri)
    manifest = store.read_manifest(layout.phase_dir(1, Phase.TRAIN), verify=True)
    model_dir = resolve_committed(store, layout.phase_dir(1, Phase.TRAIN), "model", is_folder=True)
    assert manifest.metadata["model_uri"] == model_dir == f"{layout.phase_dir(1, Phase.TRAIN)}/{manifest.metadata['attempt']}/model"
    assert json.loads(store.read_bytes(layout.run_file))["name"] == "tiny"
    assert len(list((tmp_path / "cache").iterdir())) >= 2  # base model + iteration-0 model, downloaded once each

    local_model = tmp_path / "downloaded"
    for key in store.list(model_dir):
        target = local_model / store.uri(key)[len(model_dir) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(key, target)
    from diffusers import DiffusionPipeline

    assert DiffusionPipeline.from_pretrained(local_model).unet is not None
