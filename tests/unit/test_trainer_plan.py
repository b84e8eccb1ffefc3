"""Pure planning of the trainer: round prompts, shard assignment, seeds, steps and batches."""

from __future__ import annotations

import pytest

from sail_trainer.plan import (
    compute_accumulation,
    count_train_steps,
    default_learning_rate,
    derive_seed,
    select_round_prompts,
    select_shard_positions,
    split_groups,
)


def test_rounds_take_disjoint_prompts_and_cover_the_pool_in_order() -> None:
    rounds = [select_round_prompts(12, 4, i, run_seed=7) for i in (1, 2, 3)]
    assert sorted(sum(rounds, [])) == list(range(12))
    assert rounds[0] == select_round_prompts(12, 4, 1, run_seed=7)
    assert rounds[0] != select_round_prompts(12, 4, 1, run_seed=8)


def test_a_pool_too_small_for_the_round_names_the_fix() -> None:
    with pytest.raises(ValueError, match="promptsPerRound"):
        select_round_prompts(10, 4, 3, run_seed=0)
    with pytest.raises(ValueError):
        select_round_prompts(10, 4, 0, run_seed=0)


@pytest.mark.parametrize("count,group,shards", [(10, 1, 3), (10, 4, 2), (7, 3, 5), (0, 2, 2), (5, 8, 2)])
def test_shards_partition_the_positions_in_whole_groups(count: int, group: int, shards: int) -> None:
    parts = [select_shard_positions(count, group, k, shards) for k in range(shards)]
    assert sorted(sum(parts, [])) == list(range(count))
    single = split_groups(select_shard_positions(count, group, 0, 1), group)
    sharded = sorted((g for part in parts for g in split_groups(part, group)), key=lambda g: g[0])
    assert sharded == single  # every batch holds the same positions whatever the shard count


def test_shard_index_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        select_shard_positions(4, 1, 2, 2)


def test_seeds_are_stable_and_differ_by_every_part() -> None:
    assert derive_seed(0, 1, 2, 3) == derive_seed(0, 1, 2, 3)
    seeds = {derive_seed(0, 1, 2, 3), derive_seed(1, 1, 2, 3), derive_seed(0, 2, 2, 3), derive_seed(0, 1, 3, 3),
             derive_seed(0, 1, 2, 4)}
    assert len(seeds) == 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_steps_default_to_one_pass_and_accumulation_must_divide() -> None:
    assert count_train_steps(130, 128, None) == 2
    assert count_train_steps(3, 128, None) == 1
    assert count_train_steps(130, 128, 7) == 7
    assert compute_accumulation(128, 8, 4) == 4
    with pytest.raises(ValueError, match="effectiveBatch"):
        compute_accumulation(10, 4, 1)
    with pytest.raises(ValueError, match=r"WORLD_SIZE=3.*parallelism.trainNodes x parallelism.gpusPerNode"):
        compute_accumulation(8, 1, 3)
    assert default_learning_rate(128) == pytest.approx(1.28e-6)


def test_the_prompt_pool_drops_repeats_so_rounds_never_share_a_prompt() -> None:
    from sail_trainer.phases.generate_phase import distinct_prompts

    raw = ["a cat", "a dog", "a cat", "a tree", "a dog", "a house"]
    pool = distinct_prompts(raw)
    assert pool == ["a cat", "a dog", "a tree", "a house"]
    rounds = [[pool[j] for j in select_round_prompts(len(pool), 2, i, 0)] for i in (1, 2)]
    assert len(set(rounds[0] + rounds[1])) == 4
    with pytest.raises(ValueError, match="pool has 4"):
        select_round_prompts(len(pool), 2, 3, 0)


@pytest.mark.parametrize(("count", "batch", "expected"), [
    (8, 8, [(0, 8)]), (8, 4, [(0, 4), (4, 8)]), (8, 3, [(0, 3), (3, 6), (6, 8)]), (2, 16, [(0, 2)])])
def test_generate_batches_hold_at_most_batch_size_images(count: int, batch: int, expected: list) -> None:
    """sampler.batchSize is images per forward batch: below N it splits a prompt's candidates."""
    from sail_trainer.phases.generate_phase import image_chunks

    assert image_chunks(count, batch) == expected
