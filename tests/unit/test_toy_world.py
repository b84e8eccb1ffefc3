"""The toy world's pure parts: domain, oracles, noisy labeller, tokenizer files, fidelity classifier."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sail_trainer.toy import domain, evaluate, oracles
from sail_trainer.toy.pairs import build_pair_records


def _image(**changes: float) -> np.ndarray:
    base = domain.Attributes("red", "circle", 0.2, 0.5, 0.5, 0.8, 0.8, 0.0)
    return domain.render(dataclasses.replace(base, **changes), 32)[None]


def test_dataset_is_deterministic_from_its_seed() -> None:
    a, ca, _ = domain.sample_dataset(3, 16, 32)
    b, cb, _ = domain.sample_dataset(3, 16, 32)
    c, _, _ = domain.sample_dataset(4, 16, 32)
    assert ca == cb and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (16, 3, 32, 32) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0


def test_train_and_heldout_captions_share_contents_but_not_phrasings() -> None:
    train, val, test = (set(domain.build_captions(s)) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    contents = {domain.parse_caption(c) for c in train}
    assert contents == {domain.parse_caption(c) for c in val} == set(domain.build_contents())


def test_filler_words_keep_the_content_and_never_use_a_held_out_word() -> None:
    rng = np.random.default_rng(0)
    heldout_words = {w for t in domain.HELDOUT_TEMPLATES for w in t.split() if not w.startswith("{")}
    train_words = {w for t in domain.TRAIN_TEMPLATES for w in t.split() if not w.startswith("{")}
    unseen = heldout_words - train_words  # "photo", "drawing": what the held-out phrasings test
    assert unseen and not unseen & set(domain.FILLER_WORDS)
    assert not set(domain.FILLER_WORDS) & (set(domain.COLOURS) | set(domain.SHAPES) | train_words)
    grown = [domain.insert_fillers(rng, "a red circle", 1.0) for _ in range(200)]
    assert all(domain.parse_caption(c) == ("red", "circle") for c in grown)
    assert all(4 <= len(c.split()) <= 5 for c in grown)
    assert {domain.insert_fillers(rng, "a red circle", 0.0) for _ in range(20)} == {"a red circle"}


def test_parse_caption_rejects_a_caption_without_content() -> None:
    with pytest.raises(ValueError, match="exactly one colour"):
        domain.parse_caption("a red blue circle")


@pytest.mark.parametrize(
    ("oracle", "worse", "better"),
    [
        ("size", {"half_extent": 0.15}, {"half_extent": 0.3}),
        ("centring", {"cx": 0.25, "cy": 0.7}, {"cx": 0.52, "cy": 0.48}),
        ("saturation", {"saturation": 0.5}, {"saturation": 0.95}),
        ("brightness", {"value": 0.5}, {"value": 0.95}),
    ],
    ids=["bigger shape scores higher on size", "centred shape scores higher on centring",
         "vivid shape scores higher on saturation", "bright shape scores higher on brightness"],
)
def test_builtin_oracles_order_images_by_their_attribute(oracle: str, worse: dict, better: dict) -> None:
    fn = oracles.load_oracle(oracle)
    images = np.concatenate([_image(**worse), _image(**better)])
    scores = oracles.compute_scores(fn, images, ["a red circle"] * 2)
    assert scores[1] > scores[0]


def test_oracle_can_be_given_as_module_callable_and_bad_names_are_explained() -> None:
    assert oracles.load_oracle("sail_trainer.toy.oracles:brightness_oracle") is oracles.brightness_oracle
    with pytest.raises(ValueError, match="module:callable"):
        oracles.load_oracle("nonsense")
    with pytest.raises(ValueError, match="no callable"):
        oracles.load_oracle("sail_trainer.toy.oracles:missing")


def test_oracle_returning_the_wrong_number_of_scores_is_rejected() -> None:
    with pytest.raises(ValueError, match="one per image"):
        oracles.compute_scores(lambda im, c: np.zeros(1), np.zeros((2, 3, 4, 4)), ["a", "b"])


def test_noisy_labeller_agrees_with_the_oracle_at_the_target_rate() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=4000), rng.normal(size=4000)
    labels, temperature = oracles.build_noisy_labels(a, b, rng, target_agreement=0.85)
    agreement = np.mean(labels == (a > b))
    assert temperature > 0
    assert 0.83 < agreement < 0.87


def test_labeller_rejects_an_impossible_target() -> None:
    with pytest.raises(ValueError, match="target agreement"):
        oracles.calibrate_temperature(np.ones(3), 1.0)


def test_pair_records_point_at_the_labelled_winner() -> None:
    records = build_pair_records(["a red circle", "one blue square"], np.array([True, False]))
    assert records[0] == {"prompt": "a red circle", "winner": "images/00000-a.png", "loser": "images/00000-b.png"}
    assert records[1]["winner"] == "images/00001-b.png"


def test_tokenizer_files_cover_every_word_without_unknowns(tmp_path) -> None:
    from sail_trainer.toy.pipeline import write_tokenizer

    tok = write_tokenizer(tmp_path)
    for word in domain.build_vocabulary():
        pieces = tok.tokenize(word)
        assert pieces and all(p in tok.get_vocab() for p in pieces), word
    ids = {tuple(tok(c).input_ids) for c in domain.build_captions("train")}
    assert len(ids) == len(domain.build_captions("train"))


def test_colour_classifier_is_exact_on_procedural_images() -> None:
    images, captions, _ = domain.sample_dataset(11, 150, 32, "test")
    assert evaluate.classify_colours(images) == [domain.parse_caption(c)[0] for c in captions]
    assert evaluate.classify_colours(np.zeros((1, 3, 32, 32))) == [None]


def test_fidelity_classifier_is_accurate_and_stable_across_seeds() -> None:
    images, captions, _ = domain.sample_dataset(12, 300, 32, "heldout")
    blurred = evaluate._augment(images, np.random.default_rng(1))
    scores = []
    for seed in (0, 1):
        clf = evaluate.fit_shape_classifier(seed, n=600, steps=300)
        scores.append(evaluate.compute_fidelity(blurred, captions, clf).both)
    assert min(scores) >= 0.97
    assert abs(scores[0] - scores[1]) <= 0.02


def test_diversity_is_zero_for_identical_samples_and_positive_otherwise() -> None:
    images, _, _ = domain.sample_dataset(13, 4, 32)
    same = np.repeat(images[:1], 4, axis=0)
    assert evaluate.compute_diversity(same, ["a red circle"] * 4) == 0.0
    assert evaluate.compute_diversity(images, ["a red circle"] * 4) > 0.05


def test_win_rate_counts_ties_as_half() -> None:
    big, small = _image(half_extent=0.3), _image(half_extent=0.15)
    images = np.concatenate([big, small])
    base = np.concatenate([small, small])
    assert evaluate.compute_win_rate(oracles.size_oracle, images, base, ["a red circle"] * 2) == 0.75
