"""Held-out pairs, pure parts: the split, the mixture mapping, the agreement metrics, the spec field,
the digest, the `sail validate` check, the summary order and the model card."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from sail_api.manifest import PhaseManifest
from sail_api.model_card import ModelCardFacts, build_model_card
from sail_api.phases import Phase
from sail_api.resolved import build_resolved_run
from sail_api.spec import SAILRun
from sail_api.validation import check_semantics
from sail_trainer.data.heldout_split import (
    HeldOutSplitError,
    compute_heldout_count,
    map_seed_entries,
    select_heldout_pairs,
    training_indices,
)
from sail_trainer.math.mixup import build_mixup_plan
from sail_trainer.phases.heldout import compute_agreement, compute_pair_rewards
from sail_trainer.phases.runner import PhaseRequest, summarize
from tests.builders.sailrun_spec import build_sailrun


def make_run(limit: int | None = None, **sail) -> SAILRun:
    seed = {"uri": "s3://b/seed.jsonl", **({"limit": limit} if limit else {})}
    return build_sailrun("demo", prompts="p.txt", storage=None, seedPairs=seed, sail=sail)


# ------------------------------------------------------------------ split


@pytest.mark.parametrize(("pairs", "fraction", "cap", "expected"), [
    (1000, 0.05, 500, 50), (50000, 0.05, 500, 500), (32, 0.25, 500, 8), (8, 0.05, 500, 0), (100, 0.0, 500, 0),
])
def test_heldout_count_is_the_rounded_fraction_capped(pairs, fraction, cap, expected):
    assert compute_heldout_count(pairs, fraction, cap) == expected


def test_split_is_deterministic_prompt_disjoint_and_seed_dependent():
    prompts = [f"caption {i // 3}" for i in range(300)]  # every caption has 3 pairs (Pick-a-Pic repeats them)
    held = select_heldout_pairs(prompts, 0.1, 500, run_seed=7)
    assert held == select_heldout_pairs(prompts, 0.1, 500, run_seed=7)
    assert held != select_heldout_pairs(prompts, 0.1, 500, run_seed=8)
    assert len(held) == 30 and held == sorted(held)
    train = set(range(300)) - set(held)
    assert not {prompts[i] for i in held} & {prompts[i] for i in train}, "a caption is on both sides"


def test_a_fraction_that_leaves_no_training_pair_names_the_field():
    with pytest.raises(HeldOutSplitError, match=r"sail\.validation\.fraction.*none to train on"):
        select_heldout_pairs(["one caption"] * 4, 0.25, 500, run_seed=0)  # one caption: all or nothing


def test_mixture_over_training_pairs_never_names_a_heldout_pair():
    index = {"count": 20, "heldout": [3, 4, 11]}
    train = training_indices(index)
    plan = build_mixup_plan([0.5, 0.2], len(train), 0.25, 400, seed=1).to_dict()
    mapped = map_seed_entries(plan, train)
    drawn = {i for source, i in mapped["entries"] if source == "seed"}
    assert drawn == set(train), "one pass over 400 draws reaches every training pair and nothing else"
    assert [e for e in mapped["entries"] if e[0] == "self"] == [e for e in plan["entries"] if e[0] == "self"]


def test_without_heldout_pairs_the_mixture_is_unchanged():
    plan = build_mixup_plan([], 10, 0.25, None, seed=3).to_dict()
    assert map_seed_entries(plan, training_indices({"count": 10})) == plan


# ------------------------------------------------------------------ metrics


def test_agreement_counts_pairs_whose_winner_gets_the_higher_reward():
    # errors [P, 2, M]: the model fits the winner better than the reference on pairs 0 and 1, not on 2.
    ref = torch.zeros(3, 2, 4)
    model = torch.tensor([[-1.0, 1.0], [-0.5, 0.0], [1.0, -1.0]]).unsqueeze(-1).expand(3, 2, 4) * 1e-3
    accuracy, margin = compute_agreement(model, ref, beta=1000.0)
    rewards = compute_pair_rewards(model, ref, 1000.0)
    assert accuracy == pytest.approx(2 / 3)
    assert margin == pytest.approx(float((rewards[:, 0] - rewards[:, 1]).mean()))
    assert torch.allclose(rewards[0], torch.tensor([0.5, -0.5]))


def test_an_untrained_model_agrees_with_nobody():
    same = torch.rand(5, 2, 3)
    assert compute_agreement(same, same.clone(), beta=5000.0) == (0.0, 0.0), "ties are not agreement"


# ------------------------------------------------------------------ spec, digest, validate, summary


def test_validation_defaults_and_field_errors():
    v = make_run().spec.sail.validation
    assert (v.fraction, v.max_pairs, v.uri) == (0.05, 500, None)
    with pytest.raises(ValidationError, match="fraction"):
        make_run(validation={"fraction": 1.0})


def test_validation_at_its_default_keeps_the_digest_and_a_change_moves_it():
    digest = build_resolved_run(make_run(), "/r").digest()
    assert build_resolved_run(make_run(validation={"fraction": 0.05, "maxPairs": 500}), "/r").digest() == digest
    assert build_resolved_run(make_run(validation={"fraction": 0.1}), "/r").digest() != digest


def test_sail_validate_names_a_fraction_that_leaves_no_training_pairs():
    problems = check_semantics(make_run(limit=2, validation={"fraction": 0.9}))
    assert any(p.startswith("spec.sail.validation.fraction:") and "no seed pair to train on" in p for p in problems)
    assert not check_semantics(make_run(limit=100, validation={"fraction": 0.5}))


def test_summary_reports_the_heldout_metrics_even_after_many_others():
    metrics = {f"metric_{i:02d}": float(i) for i in range(20)} | {"heldout_accuracy": 0.7, "judge_trust": 0.6}
    manifest = PhaseManifest(metrics=metrics)
    summary = summarize(PhaseRequest(Phase.TRAIN, "/r", 1, "/s"), manifest, "committed", "/r/x")
    assert summary.metrics["heldout_accuracy"] == 0.7 and summary.metrics["judge_trust"] == 0.6


def test_model_card_names_base_run_iteration_digest_metrics_and_loading():
    card = build_model_card(ModelCardFacts(
        base_model="s3://models/sd15", run="demo", iteration=2, spec_digest="sha256:abc",
        folder_uri="s3://runs/demo/iter-002/train/attempt-0123456789ab/model",
        metrics={"heldout_accuracy": 0.625, "heldout_pairs": 8.0}, steps=30))
    assert "base_model:" not in card.split("---")[1], "an s3:// URI is no hub id"
    hub = build_model_card(ModelCardFacts(base_model="org/sd15", run="r", iteration=0, spec_digest="d",
                                          folder_uri="/x"))
    assert "base_model: org/sd15" in hub and "step 0" in hub and "No held-out pairs" in hub
    for fact in ("| base model | `s3://models/sd15` |", "demo, iteration 2", "sha256:abc", "attempt-0123456789ab/model",
                 "| held-out accuracy vs its training reference | 0.625 |", "| held-out human pairs | 8 |",
                 "DiffusionPipeline.from_pretrained", "SAIL round 2"):
        assert fact in card, fact


def test_sail_run_resolves_a_relative_heldout_uri_against_the_run_file(tmp_path):
    from sail_operator.local.paths import build_local_run

    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "pairs.jsonl").write_text("")
    run = make_run(validation={"uri": "held/pairs.jsonl"})
    local, _ = build_local_run(run, tmp_path / "run.yaml", None)
    assert local.spec.sail.validation.uri == str(tmp_path / "held" / "pairs.jsonl")
