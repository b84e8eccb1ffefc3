"""build_mixup_plan: proportions, ranking, cap, threshold, size, determinism, seed-only step 0."""

from __future__ import annotations

import math

import pytest

from sail_trainer.math.mixup import MixupEntry, build_mixup_plan, compute_mixture_size, rank_self_pairs


def _sources(plan) -> list[str]:
    return [e.source for e in plan.entries]


def test_iteration_zero_with_no_self_pairs_is_the_seed_set_once() -> None:
    plan = build_mixup_plan([], num_seed=20, alpha=0.25, size=None, seed=0)
    assert plan.size == 20 and plan.num_seed == 20 and plan.num_self == 0
    assert set(_sources(plan)) == {"seed"}
    assert sorted(e.index for e in plan.entries) == list(range(20))  # a full pass, no repeats


def test_proportion_of_self_pairs_is_near_alpha_over_a_large_draw() -> None:
    for alpha in (0.1, 0.25, 0.5, 0.9):
        plan = build_mixup_plan([1.0] * 100, num_seed=1000, alpha=alpha, size=20000, seed=1)
        share = plan.num_self / plan.size
        sd = math.sqrt(alpha * (1 - alpha) / plan.size)
        assert abs(share - alpha) < 5 * sd, (alpha, share)
        assert plan.num_self + plan.num_seed == plan.size == len(plan.entries)
        assert _sources(plan).count("self") == plan.num_self


def test_default_size_is_self_kept_over_alpha() -> None:
    plan = build_mixup_plan([0.5] * 30, num_seed=500, alpha=0.25, size=None, seed=0)
    assert plan.size == 120
    assert compute_mixture_size(30, 500, 0.25) == 120
    assert compute_mixture_size(7, 500, 0.3) == round(7 / 0.3)
    assert compute_mixture_size(0, 500, 0.25) == 500
    assert compute_mixture_size(30, 500, 0.0) == 500


def test_alpha_zero_is_seed_only_and_alpha_one_is_self_only() -> None:
    seed_only = build_mixup_plan([1.0, 2.0], num_seed=10, alpha=0.0, size=None, seed=0)
    assert seed_only.num_self == 0 and seed_only.size == 10
    self_only = build_mixup_plan([1.0, 2.0, 3.0], num_seed=0, alpha=1.0, size=None, seed=0)
    assert self_only.num_seed == 0 and self_only.size == 3
    assert sorted(e.index for e in self_only.entries) == [0, 1, 2]


def test_self_pairs_are_drawn_shuffled_without_replacement_per_pass() -> None:
    margins = [0.3, 2.0, 0.1, 1.5]
    plan = build_mixup_plan(margins, num_seed=0, alpha=1.0, size=10, seed=0)
    assert plan.self_ranked == (1, 3, 0, 2)
    drawn = [e.index for e in plan.entries]
    assert sorted(drawn[:4]) == sorted(drawn[4:8]) == [0, 1, 2, 3]  # each pass takes every kept pair once
    assert len(set(drawn[8:])) == 2
    assert build_mixup_plan(margins, num_seed=0, alpha=1.0, size=10, seed=0).entries == plan.entries


def test_self_pairs_follow_no_margin_curriculum() -> None:
    """Rank order would train step 1 on the top margins and the last step on the noisiest labels:
    over many seeds the first drawn self pair is the top-margin one about 1 time in N."""
    margins = [float(m) for m in range(8)]
    firsts = [build_mixup_plan(margins, num_seed=0, alpha=1.0, size=8, seed=s).entries[0].index for s in range(200)]
    assert 0.05 < firsts.count(7) / 200 < 0.25
    assert len(set(firsts)) == 8


def test_equal_margins_rank_by_index() -> None:
    assert rank_self_pairs([1.0, 1.0, 2.0, 1.0])[0] == [2, 0, 1, 3]


def test_cap_keeps_the_highest_margin_self_pairs() -> None:
    margins = [0.1, 0.9, 0.5, 0.7, 0.3]
    plan = build_mixup_plan(margins, num_seed=100, alpha=0.25, size=None, seed=0, self_pair_cap=2)
    assert plan.self_ranked == (1, 3)
    assert plan.self_dropped_cap == 3
    assert {e.index for e in plan.entries if e.source == "self"} <= {1, 3}
    assert plan.size == 8  # round(2 / 0.25)


def test_threshold_drops_low_margin_self_pairs_before_the_cap() -> None:
    margins = [0.1, 0.9, 0.5, 0.7, 0.3]
    plan = build_mixup_plan(margins, num_seed=100, alpha=0.5, size=None, seed=0,
                            margin_threshold=0.5, self_pair_cap=10)
    assert plan.self_ranked == (1, 3, 2)  # 0.5 is kept: the threshold is inclusive
    assert plan.self_dropped_threshold == 2 and plan.self_dropped_cap == 0
    capped = build_mixup_plan(margins, num_seed=100, alpha=0.5, size=None, seed=0,
                              margin_threshold=0.5, self_pair_cap=1)
    assert capped.self_ranked == (1,) and capped.self_dropped_cap == 2


def test_all_self_pairs_filtered_out_falls_back_to_seed_only() -> None:
    plan = build_mixup_plan([0.1, 0.2], num_seed=15, alpha=0.25, size=None, seed=0, margin_threshold=1.0)
    assert plan.num_self == 0 and plan.size == 15 and plan.self_dropped_threshold == 2


def test_seed_pairs_are_uniform_and_do_not_repeat_within_a_pass() -> None:
    plan = build_mixup_plan([], num_seed=10, alpha=0.25, size=10000, seed=5)
    counts = [0] * 10
    for e in plan.entries:
        counts[e.index] += 1
    assert counts == [1000] * 10  # 1000 full reshuffled passes
    first_pass = [e.index for e in plan.entries[:10]]
    assert sorted(first_pass) == list(range(10)) and first_pass != list(range(10))


def test_the_plan_is_deterministic_in_its_seed_and_independent_of_global_rng() -> None:
    import random

    import numpy as np

    args = ([0.5, 1.5, 0.2, 0.9], 40, 0.25, 64)
    random.seed(1)
    np.random.seed(1)
    a = build_mixup_plan(*args, seed=11)
    random.seed(2)
    np.random.seed(2)
    b = build_mixup_plan(*args, seed=11)
    c = build_mixup_plan(*args, seed=12)
    assert a == b
    assert a.entries != c.entries


def test_to_dict_is_json_friendly_and_complete() -> None:
    import json

    plan = build_mixup_plan([1.0, 0.5], num_seed=5, alpha=0.5, size=6, seed=0)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["size"] == 6 and d["num_self"] + d["num_seed"] == 6 and d["self_kept"] == 2
    assert [tuple(x) for x in d["entries"]] == [tuple(e) for e in plan.entries]
    assert all(isinstance(e, MixupEntry) for e in plan.entries)


def test_explicit_size_zero_gives_an_empty_plan() -> None:
    assert build_mixup_plan([1.0], num_seed=0, alpha=0.5, size=0, seed=0).entries == ()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"num_seed": -1}, "num_seed"),
        ({"size": -1}, "size"),
        ({"self_pair_cap": -1}, "self_pair_cap"),
        ({"num_seed": 0}, "seed set is empty"),
        ({"self_margins": [], "num_seed": 0, "size": 3}, "seed set is empty"),
        ({"self_margins": [float("nan")]}, "NaN"),
    ],
    ids=["alpha above 1", "alpha below 0", "negative seed count", "negative size", "negative cap",
         "mixture needs seed pairs but none", "nothing at all to draw", "nan margin"],
)
def test_bad_arguments_raise_clear_errors(kwargs, match) -> None:
    args = {"self_margins": [1.0, 2.0], "num_seed": 10, "alpha": 0.25, "size": None, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_mixup_plan(**args)
