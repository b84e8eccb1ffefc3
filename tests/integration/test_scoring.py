"""Scorers of the evaluate phase: a tiny random CLIP saved to a folder (and to S3) loads through
`load_scorer` and scores PickScore's way; callables import by name; bad scorers are named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sail_api.spec import ScorerSpec
from sail_api.storage import S3Connection
from sail_trainer.errors import BadDataError, BadSpecError
from sail_trainer.scoring import load_scorer, score_images
from tests.builders.tiny_clip import build_tiny_clip


def _images(n: int, size: int = 24) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "pickscore")


def test_a_clip_folder_scores_logit_scale_times_cosine(clip_folder):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    scorer = load_scorer(ScorerSpec(name="pick", clip={"uri": str(clip_folder)}))
    images, captions = _images(3), ["a red circle", "a blue dog", "the house"]
    scores = score_images(scorer, "pick", images, captions)
    model, processor = CLIPModel.from_pretrained(clip_folder), CLIPProcessor.from_pretrained(clip_folder)
    with torch.no_grad():  # PickScore's reference formula: the diagonal of the logits
        out = model(**processor(text=captions, images=images, return_tensors="pt", padding=True))
    assert scores == pytest.approx(out.logits_per_image.diagonal().numpy(), rel=1e-4, abs=1e-5)
    swapped = score_images(scorer, "pick", images, captions[::-1])
    assert not np.allclose(scores, swapped)  # the caption is read: each image is scored with its own


def test_a_clip_folder_on_s3_is_downloaded_and_loaded(clip_folder, s3_store, moto_s3, tmp_path):
    for file in clip_folder.iterdir():
        s3_store.upload_file(f"scorers/pick/{file.name}", file)
    spec = ScorerSpec(name="pick", clip={"uri": s3_store.uri("scorers/pick")})
    local = load_scorer(ScorerSpec(name="pick", clip={"uri": str(clip_folder)}))
    remote = load_scorer(spec, connection=S3Connection(endpoint=moto_s3.endpoint), cache_dir=tmp_path / "cache")
    images = _images(2)
    assert score_images(remote, "p", images, ["a", "b"]) == pytest.approx(score_images(local, "p", images, ["a", "b"]))


def test_a_clip_folder_of_the_wrong_layout_names_the_field(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "clip_text_model"}')
    with pytest.raises(BadSpecError, match=r"spec\.evaluation\.scorers\[2\] \(pick\)\.clip\.uri: .*model_type 'clip'"):
        load_scorer(ScorerSpec(name="pick", clip={"uri": str(tmp_path)}), 2)


def test_a_callable_scorer_is_imported_and_called_with_images_and_captions():
    scorer = load_scorer(ScorerSpec(name="size", callable="sail_trainer.toy.scorers:hidden_preference"))
    big = Image.new("RGB", (32, 32), (255, 0, 0))
    small = Image.new("RGB", (32, 32))
    small.paste((255, 0, 0), (12, 12, 20, 20))
    scores = score_images(scorer, "size", [small, big], ["a red square", "a red square"])
    assert scores[1] > scores[0]


@pytest.mark.parametrize(("path", "expected"), [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("sail_trainer.toy.scorers:nope", "has no callable 'nope'"),
])
def test_a_callable_that_cannot_be_imported_names_the_field(path, expected):
    with pytest.raises(BadSpecError, match=r"spec\.evaluation\.scorers\[1\] \(x\)\.callable: ") as info:
        load_scorer(ScorerSpec(name="x", callable=path), 1)
    assert expected in str(info.value)


@pytest.mark.parametrize(("result", "expected"), [
    (lambda imgs, caps: [1.0], "shape (1,) for 2 images"),
    (lambda imgs, caps: np.ones((2, 2)), "shape (2, 2) for 2 images"),
    (lambda imgs, caps: ["a", "b"], "not numbers"),
    (lambda imgs, caps: [1.0, float("nan")], "non-finite"),
    (lambda imgs, caps: 1 / 0, "raised ZeroDivisionError"),
])
def test_a_scorer_that_raises_or_returns_the_wrong_shape_is_a_data_error(result, expected):
    with pytest.raises(BadDataError, match=r"^spec\.evaluation\.scorers\[0\] \(s\): ") as info:
        score_images(result, "spec.evaluation.scorers[0] (s)", _images(2), ["a", "b"])
    assert expected in str(info.value)


def test_sail_run_names_a_callable_that_cannot_be_imported_before_anything_starts(tmp_path, capsys):
    import yaml

    from sail_operator.cli import main

    run = tmp_path / "run.yaml"
    scorers = [{"name": "toy", "callable": "sail_trainer.toy.scorers:hidden_preference"},
               {"name": "gone", "callable": "no_such_module_h4:score"}]
    run.write_text(yaml.safe_dump({"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "demo"},
                                   "spec": {"model": {"uri": "s3://b/m"}, "seedPairs": {"uri": "s3://b/s.jsonl"},
                                            "prompts": {"uri": "s3://b/p.txt"}, "storage": {"uri": str(tmp_path / "root")},
                                            "evaluation": {"scorers": scorers}}}))
    assert main(["run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "spec.evaluation.scorers[1] (gone).callable: cannot import module 'no_such_module_h4'" in err
    assert "scorers[0]" not in err
    assert not (tmp_path / "root").exists(), "nothing started"
