"""Held-out human pairs and judge trust through the real phases of a tiny run (step 0 and round 1).

One tiny SD1.5 run with `sail.validation.fraction = 0.25` (2 of 8 seed pairs held out) goes
through mixup/train of step 0 and generate/annotate/mixup/train of round 1 in process
(`sail_trainer.cli.main`). Checked: the held-out pairs are recorded once and no mixture ever
draws them; every train manifest carries the held-out metrics; the annotate manifest carries
the judge trust, which (judge reference = base, shared held-out draws) must equal the step-0
model's held-out accuracy against the base computed by the other phase; each committed model
folder has its model card.
"""

from __future__ import annotations

import json

import pytest

from sail_api.layout import RunLayout
from sail_api.model_card import CARD_FILE
from sail_api.phases import Phase
from sail_api.resolved import ResolvedRun
from sail_api.storage import LocalStore
from sail_api.storage.resolve import resolve_file
from sail_trainer.cli import main
from sail_trainer.phases.artifacts import MIXTURE, SEED_INDEX
from sail_trainer.storage import read_committed_bytes
from tests.builders.tiny_run import create_tiny_run, phase_args

# The module fixture builds its tiny run once; one xdist worker runs the module (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heldout_tiny")]
HELDOUT_KEYS = {"heldout_accuracy", "heldout_accuracy_vs_base", "heldout_margin", "heldout_margin_vs_base",
                "heldout_pairs"}


@pytest.fixture(scope="module")
def tiny_round(tmp_path_factory):
    run = create_tiny_run(tmp_path_factory.mktemp("heldout"), validation={"fraction": 0.25})
    for phase, iteration in [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1), ("mixup", 1),
                             ("train", 1)]:
        assert main(phase_args(run, phase, iteration)) == 0, (phase, iteration)
    return run, LocalStore(run.run_uri), RunLayout(run.run_uri)


def test_heldout_pairs_are_recorded_once_and_never_drawn_by_any_mixture(tiny_round):
    _, store, layout = tiny_round
    index = json.loads(read_committed_bytes(store, layout.phase_dir(0, Phase.MIXUP), SEED_INDEX))
    held = set(index["heldout"])
    assert len(held) == 2 and held <= set(range(index["count"]))
    for iteration in (0, 1):
        mixture = json.loads(read_committed_bytes(store, layout.phase_dir(iteration, Phase.MIXUP), MIXTURE))
        drawn = {i for source, i in mixture["entries"] if source == "seed"}
        assert drawn, f"iteration {iteration} drew no seed pair"
        assert not drawn & held, f"iteration {iteration} trains on held-out pairs {sorted(drawn & held)}"
    assert store.read_manifest(layout.phase_dir(0, Phase.MIXUP)).metrics["heldout_pairs"] == 2


def test_every_train_manifest_carries_the_heldout_metrics(tiny_round):
    _, store, layout = tiny_round
    for iteration in (0, 1):
        metrics = store.read_manifest(layout.phase_dir(iteration, Phase.TRAIN)).metrics
        assert HELDOUT_KEYS <= set(metrics), (iteration, sorted(metrics))
        assert metrics["heldout_pairs"] == 2
        assert metrics["heldout_accuracy"] in (0.0, 0.5, 1.0)  # 2 pairs
    step0 = store.read_manifest(layout.phase_dir(0, Phase.TRAIN)).metrics
    assert step0["heldout_accuracy"] == step0["heldout_accuracy_vs_base"], "step 0's reference is the base"
    assert step0["heldout_margin"] != 0.0, "theta_0 == base: the held-out pass did not see the trained model"


def test_judge_trust_is_the_step0_models_heldout_accuracy_against_the_base(tiny_round):
    _, store, layout = tiny_round
    annotate = store.read_manifest(layout.shard_dir(1, Phase.ANNOTATE, 0, 1)).metrics
    step0 = store.read_manifest(layout.phase_dir(0, Phase.TRAIN)).metrics
    assert annotate["judge_trust_pairs"] == 2
    # Same model (theta_0), same reference (base), same draws: two phases, one number.
    assert annotate["judge_trust"] == step0["heldout_accuracy_vs_base"]
    assert annotate["judge_trust_margin"] == pytest.approx(step0["heldout_margin_vs_base"], rel=1e-4, abs=1e-6)


def test_every_committed_model_folder_has_a_model_card(tiny_round):
    run, store, layout = tiny_round
    digest = ResolvedRun.model_validate_json(run.spec.read_text()).digest()
    for iteration in (0, 1):
        folder = layout.phase_dir(iteration, Phase.TRAIN)
        manifest = store.read_manifest(folder)
        card_path = resolve_file(manifest, f"model/{CARD_FILE}")
        assert card_path is not None and card_path.startswith("attempt-"), card_path
        card = store.read_bytes(f"{folder}/{card_path}").decode()
        assert f"iteration {iteration}" in card and digest in card and "held-out accuracy" in card
        assert f"{folder}/{card_path.rsplit('/', 1)[0]}" in card, "the card names the folder it was committed at"


def test_sail_export_writes_a_clean_pipeline_that_diffusers_loads(tiny_round, tmp_path, capsys):
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    from sail_operator.cli import main as sail

    run, store, layout = tiny_round
    metrics = {i: store.read_manifest(layout.phase_dir(i, Phase.TRAIN)).metrics for i in (0, 1)}
    best = max(sorted(metrics), key=lambda i: metrics[i]["heldout_accuracy_vs_base"])
    out = tmp_path / "exported"
    assert sail(["export", run.run_uri, str(out), "--iteration", "best"]) == 0
    assert f"exported iteration {best}" in capsys.readouterr().out
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert CARD_FILE in names and "model_index.json" in names
    assert not [n for n in names if n.startswith(("attempt-", "steps")) or "_SUCCESS" in n], names
    folder = layout.phase_dir(best, Phase.TRAIN)
    committed = store.read_manifest(folder)
    unet_path = resolve_file(committed, "model/unet/diffusion_pytorch_model.safetensors")
    exported, original = load_file(out / "unet/diffusion_pytorch_model.safetensors"), load_file(f"{folder}/{unet_path}")
    assert exported.keys() == original.keys() and all((exported[k] == original[k]).all() for k in exported)
    pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_sail_export_refuses_a_missing_iteration_and_a_used_folder(tiny_round, tmp_path, capsys):
    from sail_operator.cli import main as sail

    run, _, _ = tiny_round
    assert sail(["export", run.run_uri, str(tmp_path / "a"), "--iteration", "7"]) == 2
    assert "--iteration 7: not committed; committed iterations: [0, 1]" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert sail(["export", run.run_uri, str(used)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (used / "keep.txt").read_text() == "mine"


def test_a_fraction_that_leaves_no_training_pair_stops_step0_as_a_bad_spec(tmp_path, capsys):
    run = create_tiny_run(tmp_path, validation={"fraction": 0.95})  # round(0.95 x 8) = 8 of 8 pairs
    assert main(phase_args(run, "mixup", 0)) == 64  # ExitCode.BAD_SPEC: never retried
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "sail.validation.fraction" in summary["error"] and "none to train on" in summary["error"]
    assert not LocalStore(run.run_uri).is_committed(RunLayout(run.run_uri).phase_dir(0, Phase.MIXUP))
