"""Pure, deterministic planning: which prompts a round uses, which a shard takes, which seeds.

Everything here is a function of the run seed and indices only, so every shard, attempt
and machine computes the same plan; nothing touches global RNG state.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of the parts (e.g. run seed, iteration, prompt index, k, purpose)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def build_prompt_permutation(pool_size: int, run_seed: int) -> list[int]:
    """A seeded permutation of the prompt pool (rounds take consecutive slices of it)."""
    return np.random.default_rng(derive_seed(run_seed, "prompt-permutation")).permutation(pool_size).tolist()


def select_round_prompts(pool_size: int, prompts_per_round: int, iteration: int, run_seed: int) -> list[int]:
    """Pool indices of round `iteration` (>= 1): slice [(i-1)P, iP) of the seeded permutation.

    Disjoint across rounds by construction. Raises ValueError when the pool is too small.
    """
    if iteration < 1:
        raise ValueError(f"round prompts exist for iterations >= 1, got {iteration}")
    start, stop = (iteration - 1) * prompts_per_round, iteration * prompts_per_round
    if stop > pool_size:
        raise ValueError(
            f"round {iteration} needs prompts [{start}, {stop}) but the pool has {pool_size}; "
            f"add prompts or lower sail.promptsPerRound ({prompts_per_round})"
        )
    return build_prompt_permutation(pool_size, run_seed)[start:stop]


def select_shard_positions(count: int, group: int, shard: int, shards: int) -> list[int]:
    """Positions `0..count-1` of shard `shard` of `shards`: groups of `group` consecutive positions,
    group g going to shard g mod shards.

    Work is batched by whole groups, so a batch holds the same items whatever the shard count
    (identical numerics for 1 or S shards).
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in [0, {shards})")
    groups = math.ceil(count / group) if count else 0
    return [p for g in range(shard, groups, shards) for p in range(g * group, min(count, (g + 1) * group))]


def split_groups(positions: list[int], group: int) -> list[list[int]]:
    """Consecutive runs of `positions` that fall in the same group of `group` positions."""
    out: dict[int, list[int]] = {}
    for p in positions:
        out.setdefault(p // group, []).append(p)
    return list(out.values())


def count_train_steps(mixture_size: int, effective_batch: int, requested: int | None) -> int:
    """Optimizer steps: `requested`, else one pass over the mixture (choice), at least 1."""
    if requested is not None:
        return requested
    return max(1, math.ceil(mixture_size / effective_batch))


def compute_accumulation(effective_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient accumulation steps; ValueError when effective is not micro x world x k."""
    per_step = micro_batch * world_size
    if effective_batch % per_step:
        raise ValueError(
            f"sail.train.effectiveBatch ({effective_batch}) must be a multiple of microBatch ({micro_batch}) "
            f"x processes (WORLD_SIZE={world_size}); change effectiveBatch, microBatch or the train "
            "processes (parallelism.trainNodes x parallelism.gpusPerNode)"
        )
    return effective_batch // per_step


def default_learning_rate(effective_batch: int) -> float:
    """Reference rule: 1e-8 x effective batch (1.28e-6 at 128 pairs)."""
    return 1e-8 * effective_batch
