"""Step 0 and one SAIL round of a tiny SD1.5 pipeline through the `sail-trainer` CLI, on local disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase, phases_of_iteration
from sail_api.storage import LocalStore
from sail_api.storage.resolve import logical_path
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import create_tiny_run, phase_args, run_trainer_process

# Heavy on purpose (issue 17): the reference run of every phase through the CLI (7 trainer starts).
pytestmark = pytest.mark.slow


def test_step0_and_one_round_commit_every_phase_and_load_with_diffusers(tmp_path: Path) -> None:
    run = create_tiny_run(tmp_path)
    term = tmp_path / "termination-log"
    for iteration in (0, 1):
        for phase in phases_of_iteration(iteration):
            extra = ["--shards", "1"] if phase in (Phase.GENERATE, Phase.ANNOTATE) else []
            result = run_trainer_process(phase_args(run, phase.value, iteration, *extra),
                                         env={"JOB_COMPLETION_INDEX": "0"}, termination_log=term)
            assert result.returncode == 0, result.stderr[-3000:]
            assert result.summary["outcome"] == "committed", result.summary
            assert json.loads(term.read_text()) == result.summary
            assert len(term.read_bytes()) < 4096

    store = LocalStore(run.run_uri)
    layout = RunLayout(store.root)
    assert store.exists(layout.run_file)
    for iteration, phase in [(0, Phase.MIXUP), (0, Phase.TRAIN), (1, Phase.MIXUP), (1, Phase.TRAIN)]:
        store.read_manifest(layout.phase_dir(iteration, phase), verify=True)
    for phase in (Phase.GENERATE, Phase.ANNOTATE):
        store.read_manifest(layout.shard_dir(1, phase, 0, 1), verify=True)

    train0 = store.read_manifest(layout.phase_dir(0, Phase.TRAIN))
    names = {logical_path(f.path) for f in train0.files}  # physical paths sit under the attempt's prefix
    assert all(f.path.startswith(train0.metadata["attempt"] + "/") for f in train0.files)
    assert {"metrics.json", "samples.png", "samples-base.png", "model/model_index.json",
            "model/unet/diffusion_pytorch_model.safetensors"} <= names
    assert not any(n.startswith("steps/") for n in names)
    assert train0.metadata["samples"] == ["samples.png", "samples-base.png"]
    from PIL import Image

    with Image.open(Path(resolve_committed(store, layout.phase_dir(0, Phase.TRAIN), "samples.png"))) as grid:
        assert grid.size == (8 * 16, 2 * 16)  # 8 pool prompts x 2 fixed seeds at 16 px
    metrics = json.loads(Path(resolve_committed(store, layout.phase_dir(1, Phase.TRAIN), "metrics.json")).read_text())
    assert [m["step"] for m in metrics] == [1.0, 2.0]
    assert {"loss", "implicit_accuracy", "reward_margin", "lr", "pairs_per_second"} <= set(metrics[0])

    annotations = json.loads(Path(resolve_committed(store, layout.shard_dir(1, Phase.ANNOTATE, 0, 1), "annotations.json")).read_text())
    assert len(annotations["pairs"]) == 4
    assert all(p["winner"] != p["loser"] and p["margin"] >= 0 for p in annotations["pairs"])
    mixture = json.loads(Path(resolve_committed(store, layout.phase_dir(1, Phase.MIXUP), "mixture.json")).read_text())
    assert {source for source, _ in mixture["entries"]} <= {"self", "seed"}

    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        resolve_committed(store, layout.phase_dir(1, Phase.TRAIN), "model", is_folder=True))
    assert isinstance(pipe, StableDiffusionPipeline)
    base = DiffusionPipeline.from_pretrained(run.model)
    changed = any(not torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(),
                                                        base.unet.state_dict().values(), strict=True))
    assert changed, "two train phases left the UNet unchanged"

    again = run_trainer_process(phase_args(run, "train", 1))
    assert again.returncode == 0
    assert again.summary["outcome"] == "already_committed"
