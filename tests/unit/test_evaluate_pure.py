"""Pure parts of the evaluate phase: which samples a shard takes, win rates, the summary metrics."""

from __future__ import annotations

import numpy as np
import pytest

from sail_trainer.phases.evaluate_phase import (
    compute_win_rate,
    plan_samples,
    role_iterations,
    summarize_scores,
)


def test_shards_partition_the_samples_with_the_same_prompt_and_seed_as_one_shard():
    whole = plan_samples(["a", "b", "c"], 7, seed=5, shard=0, shards=1)
    parts = [s for k in range(3) for s in plan_samples(["a", "b", "c"], 7, seed=5, shard=k, shards=3)]
    assert sorted(parts, key=lambda s: s.index) == whole
    assert [s.prompt for s in whole] == ["a", "b", "c", "a", "b", "c", "a"]
    assert len({s.seed for s in whole}) == 7
    assert plan_samples(["a"], 2, seed=6, shard=0, shards=1)[0].seed != whole[0].seed


def test_win_rate_counts_ties_half():
    assert compute_win_rate(np.array([2.0, 1.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0, 4.0])) == pytest.approx(0.625)


def test_roles_at_step0_and_in_rounds():
    assert role_iterations(0) == {"base": -1, "previous": -1, "current": 0}
    assert role_iterations(3) == {"base": -1, "previous": 2, "current": 3}


def test_summary_names_each_scorer_and_model():
    scores = {"base": {"s": np.array([1.0, 2.0])}, "previous": {"s": np.array([3.0, 0.0])},
              "current": {"s": np.array([2.0, 2.0])}}
    metrics = summarize_scores(scores, ["s"])
    assert metrics == {"eval_s_mean_base": 1.5, "eval_s_mean_previous": 1.5, "eval_s_mean_current": 2.0,
                       "eval_s_win_vs_base": 0.75, "eval_s_win_vs_previous": 0.5}
