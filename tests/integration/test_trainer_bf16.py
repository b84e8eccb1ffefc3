"""Every phase at bf16 on CPU (`SAIL_CPU_BF16=1`): autocast, the dtype boundaries, the grid.

Until now every test ran fp32, so a bf16 mismatch (the fp32 policy rendering the sample grid
from bf16 text embeddings: "mat1 and mat2 must have the same dtype") reached the first GPU run
only, after the last train step and before the commit. CPU bf16 runs the same code paths.
Also here: the trained model is safe before the optional grids run (a grid that fails is
recorded, the model is committed), and a train that fails after its last step resumes with
nothing left to train.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.phases import train_phase
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import create_tiny_run, phase_args

pytestmark = pytest.mark.slow


def _bf16(run) -> None:
    spec = json.loads(run.spec.read_text())
    spec["algorithm"]["model"]["precision"] = "bf16"
    run.spec.write_text(json.dumps(spec))


def _history(run, iteration: int) -> list[dict]:
    train = RunLayout(run.run_uri).phase_dir(iteration, Phase.TRAIN)
    return json.loads(Path(resolve_committed(LocalStore(run.run_uri), train, "metrics.json")).read_text())


def test_step0_and_one_round_at_bf16_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SAIL_CPU_BF16", "1")
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path, train={"step0Steps": 2, "steps": 2})
    _bf16(run)
    for phase, iteration in [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1), ("mixup", 1), ("train", 1)]:
        assert main(phase_args(run, phase, iteration)) == 0, (phase, iteration)
    assert "precision bf16 on CPU" in capsys.readouterr().err
    store, layout = LocalStore(run.run_uri), RunLayout(run.run_uri)
    for iteration in (0, 1):
        manifest = store.read_manifest(layout.phase_dir(iteration, Phase.TRAIN))
        assert "failed_outputs" not in manifest.metadata, manifest.metadata
        assert "samples.png" in manifest.metadata["samples"]
        history = _history(run, iteration)
        assert all(math.isfinite(h["loss"]) for h in history)
        # policy (fp32 master, bf16 autocast) and reference (bf16) start from the same weights
        assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6), iteration
    annotations = json.loads(Path(resolve_committed(store, layout.shard_dir(1, Phase.ANNOTATE, 0, 1),
                                                    "annotations.json")).read_text())
    assert all(math.isfinite(r) for p in annotations["pairs"] for r in p["rewards"])
    _check_annotation_ran_in_fp32(run, store, layout)


def _check_annotation_ran_in_fp32(run, store, layout) -> None:
    """sail.annotationPrecision defaults to fp32 whatever model.precision says: the stored errors
    equal an fp32 recomputation (bf16 UNets differ by ~1e-2 relative)."""
    import torch

    from sail_trainer.models.components import load_components, load_unet
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.phases.annotate_phase import compute_candidate_errors
    from sail_trainer.phases.artifacts import ANNOTATION_TENSORS, load_tensors
    from sail_trainer.plan import derive_seed

    shard = layout.shard_dir(1, Phase.ANNOTATE, 0, 1)
    tensors = load_tensors(Path(resolve_committed(store, shard, ANNOTATION_TENSORS)).read_bytes())
    record = json.loads(Path(resolve_committed(store, shard, "annotations.json")).read_text())["pairs"][0]
    gen_shard = layout.shard_dir(1, Phase.GENERATE, 0, 1)
    x = load_tensors(Path(resolve_committed(store, gen_shard, "parts/part-00000/latents.safetensors")).read_bytes())[
        "latents"][record["row"]]
    theta0 = Path(resolve_committed(store, layout.phase_dir(0, Phase.TRAIN), "model", is_folder=True))
    cpu = torch.device("cpu")
    components = load_components(theta0, "auto", cpu, torch.float32)
    judge = load_unet(run.model, cpu, torch.float32)
    gen = torch.Generator().manual_seed(derive_seed(0, 1, record["prompt_index"], "annotate"))
    alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
    model_err, ref_err = compute_candidate_errors(components.unet, judge, components, x,
                                                  TextEncoder(components).encode([record["prompt"]]), gen, 2,
                                                  (0, 1000), 16, alphas, 4)
    torch.testing.assert_close(tensors["model_err"][0], model_err, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(tensors["ref_err"][0], ref_err, rtol=1e-5, atol=1e-7)


def test_a_failing_grid_keeps_the_model_and_a_failed_commit_resumes_without_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path, train={"step0Steps": 2})
    assert main(phase_args(run, "mixup", 0)) == 0

    def broken_commit(*args, **kwargs):
        raise OSError("store went away after the last step")

    # 1) the commit fails after the last step: the final step checkpoint is already committed
    with monkeypatch.context() as m:
        m.setattr(train_phase, "_finish", broken_commit)
        assert main(phase_args(run, "train", 0)) != 0
    store, layout = LocalStore(run.run_uri), RunLayout(run.run_uri)
    assert store.is_committed(layout.step_checkpoint_dir(0, 2))

    # 2) the retry trains nothing (resumes at the last step); its grid fails: the model is committed anyway
    import sail_trainer.phases.samples as samples

    def broken_grid(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 must have the same dtype")

    monkeypatch.setattr(samples, "render_sample_grid", broken_grid)
    assert main(phase_args(run, "train", 0)) == 0
    assert "2 steps from step 2" in capsys.readouterr().err
    manifest = store.read_manifest(layout.phase_dir(0, Phase.TRAIN))
    assert set(manifest.metadata["failed_outputs"]) == {"samples.png", "samples-base.png"}
    assert manifest.metadata["samples"] == []
    assert [h["step"] for h in _history(run, 0)] == [1.0, 2.0]
    # the committed model is usable; generate's previews are optional too
    import sail_trainer.phases.generate_phase as generate_phase

    monkeypatch.setattr(generate_phase, "decode_latents", broken_grid)  # where the previews call it
    assert main(phase_args(run, "generate", 1)) == 0
    generate = store.read_manifest(layout.shard_dir(1, Phase.GENERATE, 0, 1))
    assert set(generate.metadata["failed_outputs"]) == {"previews"}
