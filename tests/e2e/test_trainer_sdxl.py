"""One SAIL round of a tiny SDXL-layout pipeline (two text encoders, pooled embeds, add_time_ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase, phases_of_iteration
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import create_tiny_run, phase_args

pytestmark = pytest.mark.slow


def test_tiny_sdxl_step0_and_one_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path, layout="sdxl", sampler={"kind": "ddim"},
                          train={"gradientCheckpointing": True, "optimizer": {"kind": "adafactor", "learningRate": 1e-4}})
    for iteration in (0, 1):
        for phase in phases_of_iteration(iteration):
            assert main(phase_args(run, phase.value, iteration)) == 0, f"{phase.value} {iteration}"

    layout = RunLayout(run.run_uri)
    store = LocalStore(run.run_uri)
    manifest = store.read_manifest(layout.phase_dir(1, Phase.TRAIN), verify=True)
    assert manifest.metrics["steps"] >= 1
    assert store.read_manifest(layout.shard_dir(1, Phase.ANNOTATE, 0, 1)).metrics["prompts"] == 4

    from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

    pipe = DiffusionPipeline.from_pretrained(
        resolve_committed(store, layout.phase_dir(1, Phase.TRAIN), "model", is_folder=True))
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.text_encoder_2 is not None and pipe.tokenizer_2 is not None
