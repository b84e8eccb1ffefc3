"""The evaluate phase through the real trainer on a tiny SD1.5 run: step 0 then evaluate (two shards),
scored by a pixel-statistic callable and a tiny random CLIP.

The wiring check: every committed score is recomputed here from the model folder that role must
be (base, theta_{i-1}, theta_i), sampling the committed (prompt, seed) pairs; a phase that scored
one model's images as another's fails it (planted: scoring the base as theta_0 fails
`test_each_role_is_scored_on_its_own_models_images`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.resolved import ResolvedRun
from sail_api.spec import ScorerSpec
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.scoring import load_scorer, score_images
from sail_trainer.storage import read_committed_bytes
from tests.builders.tiny_clip import build_tiny_clip
from tests.builders.tiny_run import create_tiny_run, phase_args

pytestmark = pytest.mark.slow
# shard 0: samples 0, 3, 6, 9, 12 -> both held-out captions in turn, in two forward batches of at most 3
# (an odd batch, so a batch that took the wrong slice of captions would pair images with other captions)
SHARDS, COUNT = 3, 15


def brightness(images, captions):
    """A scorer of the test: mean pixel value (a plain function of the image alone)."""
    return [float(np.asarray(image, dtype=np.float64).mean()) for image in images]


def broken(images, captions):
    return [1.0]


def with_evaluation(run, evaluation: dict) -> None:
    body = json.loads(run.spec.read_text())
    body["algorithm"]["evaluation"] = evaluation
    run.spec.write_text(ResolvedRun.model_validate(body).to_json())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    run = create_tiny_run(folder, validation={"fraction": 0.25}, train={"step0Steps": 2}, sampler={"batchSize": 3})
    clip = build_tiny_clip(folder / "clip")
    with_evaluation(run, {"scorers": [{"name": "bright", "callable": f"{__name__}:brightness"},
                                      {"name": "pick", "clip": {"uri": str(clip)}}], "count": COUNT, "seed": 3})
    for phase, iteration in [("mixup", 0), ("train", 0), ("evaluate", 0), ("generate", 1), ("annotate", 1),
                             ("mixup", 1), ("train", 1), ("evaluate", 1)]:
        shards = [f"{shard}/{SHARDS}" for shard in range(SHARDS)] if phase == "evaluate" else [None]
        for shard in shards:
            assert main(phase_args(run, phase, iteration, *(["--shard", shard] if shard else []))) == 0, phase
    return run, LocalStore(run.run_uri), RunLayout(run.run_uri)


def _shard(evaluated, shard, iteration=0):
    run, store, layout = evaluated
    folder = layout.output_dir(iteration, Phase.EVALUATE, shard, SHARDS)
    return store.read_manifest(folder), json.loads(read_committed_bytes(store, folder, "scores.json"))


def test_shards_split_the_samples_and_report_means_and_win_rates(evaluated):
    manifest0, scores0 = _shard(evaluated, 0)
    _, scores1 = _shard(evaluated, 1)
    assert [r["index"] for r in scores0["samples"]] == [0, 3, 6, 9, 12]
    assert [r["index"] for r in scores1["samples"]] == [1, 4, 7, 10, 13]
    metrics = manifest0.metrics
    for name in ("bright", "pick"):
        current = [r["current"][name] for r in scores0["samples"]]
        base = [r["base"][name] for r in scores0["samples"]]
        assert metrics[f"eval_{name}_mean_current"] == pytest.approx(np.mean(current))
        assert metrics[f"eval_{name}_mean_base"] == pytest.approx(np.mean(base))
        wins = np.mean([(c > b) + 0.5 * (c == b) for c, b in zip(current, base, strict=True)])
        assert metrics[f"eval_{name}_win_vs_base"] == pytest.approx(wins)
        # step 0: theta_{-1} is the base itself
        assert metrics[f"eval_{name}_mean_previous"] == metrics[f"eval_{name}_mean_base"]
        assert metrics[f"eval_{name}_win_vs_previous"] == metrics[f"eval_{name}_win_vs_base"]


def test_samples_use_held_out_captions_with_fixed_seeds(evaluated):
    run, store, layout = evaluated
    from sail_trainer.phases.artifacts import SEED_INDEX

    index = json.loads(read_committed_bytes(store, layout.phase_dir(0, Phase.MIXUP), SEED_INDEX))
    held = {index["prompts"][i] for i in index["heldout"]}
    rows = [r for shard in range(SHARDS) for r in _shard(evaluated, shard)[1]["samples"]]
    assert {r["prompt"] for r in rows} == held
    assert sorted(r["index"] for r in rows) == list(range(COUNT))
    assert len({r["seed"] for r in rows}) == COUNT


def _recompute(evaluated, rows, iteration):
    """The images of `rows`' samples drawn here from the model of `iteration` (-1: base)."""
    from sail_trainer.logs import Progress
    from sail_trainer.phases.context import PhaseContext
    from sail_trainer.phases.evaluate_phase import EvalSample, sample_images
    from sail_trainer.phases.runner import read_resolved_spec

    run, store, _ = evaluated
    ctx = PhaseContext(resolved=read_resolved_spec(str(run.spec)), run_uri=run.run_uri, iteration=max(iteration, 0),
                       phase=Phase.EVALUATE, store=store, cache_dir=run.folder / "cache", work_dir=run.folder)
    samples = [EvalSample(r["index"], r["prompt"], r["seed"]) for r in rows]
    return [image for batch in sample_images(ctx, iteration, samples, Progress("t", 0)) for image in batch]


def test_each_role_is_scored_on_its_own_models_images(evaluated):
    rows0 = _shard(evaluated, 0)[1]["samples"]
    rows1 = _shard(evaluated, 0, iteration=1)[1]["samples"]
    images = {it: _recompute(evaluated, rows0, it) for it in (-1, 0, 1)}
    base, theta0, theta1 = (brightness(images[it], []) for it in (-1, 0, 1))
    assert not np.allclose(base, theta0) and not np.allclose(theta0, theta1)  # training changed the models
    pick = load_scorer(ScorerSpec(name="pick", clip={"uri": str(evaluated[0].folder / "clip")}))
    assert len({r["prompt"] for r in rows0}) == 2
    expected = score_images(pick, "pick", images[0], [r["prompt"] for r in rows0])  # each image with its caption
    assert [r["current"]["pick"] for r in rows0] == pytest.approx(expected, rel=1e-4)
    assert [r["base"]["bright"] for r in rows0] == pytest.approx(base)
    assert [r["current"]["bright"] for r in rows0] == pytest.approx(theta0)
    assert [r["base"]["bright"] for r in rows1] == pytest.approx(base)
    assert [r["previous"]["bright"] for r in rows1] == pytest.approx(theta0)
    assert [r["current"]["bright"] for r in rows1] == pytest.approx(theta1)


def test_a_round_reuses_the_base_and_previous_scores_of_the_last_evaluate(evaluated):
    run, store, layout = evaluated
    for shard in range(SHARDS):
        folder = layout.output_dir(1, Phase.EVALUATE, shard, SHARDS)
        rows0, rows1 = _shard(evaluated, shard)[1]["samples"], _shard(evaluated, shard, 1)[1]["samples"]
        assert [r["index"] for r in rows0] == [r["index"] for r in rows1]
        assert [r["base"] for r in rows1] == [r["base"] for r in rows0]
        assert [r["previous"] for r in rows1] == [r["current"] for r in rows0]
        assert store.is_committed(f"{folder}/models/base") and store.is_committed(f"{folder}/models/previous")


def test_a_rerun_reuses_the_committed_phase(evaluated):
    run, store, layout = evaluated
    before = store.read_manifest(layout.output_dir(0, Phase.EVALUATE, 0, SHARDS))
    assert main(phase_args(run, "evaluate", 0, "--shard", f"0/{SHARDS}")) == 0
    assert store.read_manifest(layout.output_dir(0, Phase.EVALUATE, 0, SHARDS)).created_at == before.created_at


def test_a_scorer_of_the_wrong_shape_fails_the_phase_naming_it(evaluated, tmp_path, capsys):
    import dataclasses
    import shutil

    run, _, _ = evaluated
    root = tmp_path / "run"  # a copy of the run with another evaluation (the algorithm of a run is fixed)
    shutil.copytree(run.run_uri, root)
    (root / "run.json").unlink()
    body = json.loads(run.spec.read_text())
    body["storage"]["uri"] = str(root)
    copy = dataclasses.replace(run, run_uri=str(root), spec=tmp_path / "spec.json")
    copy.spec.write_text(json.dumps(body))
    with_evaluation(copy, {"scorers": [{"name": "broken", "callable": f"{__name__}:broken"}], "count": 2})
    assert main(phase_args(copy, "evaluate", 0, "--shard", "0/1")) == 65  # BAD_DATA: not retried
    assert "spec.evaluation.scorers[0] (broken): the scorer returned shape (1,) for 2 images" in capsys.readouterr().err
