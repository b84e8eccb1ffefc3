"""Which seed pairs are held out (never trained on) and which the mixtures may draw (`sail.validation`).

The split is made once, by the iteration-0 mixup, and committed in its seed index
(`seed-pairs.json`: `"heldout": [indices]`); step 0 and every round's mixup read it back
from there, so the split cannot drift between phases, and a run whose step 0 predates the
field (no `"heldout"` key) keeps training on every pair.

Choices (docs/trainer.md, "Held-out pairs and judge trust"):
- prompt-disjoint: whole prompts are held out, so no held-out pair shares its caption with a
  training pair (Pick-a-Pic repeats captions across pairs; a shared caption would leak);
- deterministic from the run seed only: a seeded shuffle of the distinct prompts, taken in
  order until `round(fraction x pairs)` (at most `maxPairs`) pairs are held out;
- with `validation.uri` the held-out pairs come from that file and are appended after the seed
  pairs in the encoded set, so no seed pair is held out.

Pure python/numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sail_trainer.plan import derive_seed

FIELD = "sail.validation.fraction"


class HeldOutSplitError(ValueError):
    """The held-out slice leaves no pair to train on (the message names the field and the fix)."""


def compute_heldout_count(num_pairs: int, fraction: float, max_pairs: int) -> int:
    """`round(fraction x num_pairs)` capped at `max_pairs`; 0 when the fraction is 0."""
    if not 0.0 <= fraction < 1.0:
        raise HeldOutSplitError(f"{FIELD} must be in [0, 1), got {fraction}")
    return min(max_pairs, round(fraction * num_pairs)) if fraction > 0 else 0


def select_heldout_pairs(prompts: Sequence[str], fraction: float, max_pairs: int, run_seed: int) -> list[int]:
    """Sorted indices of the held-out seed pairs (see the module docstring for the rules).

    Raises HeldOutSplitError when no pair would be left to train on.
    """
    target = compute_heldout_count(len(prompts), fraction, max_pairs)
    if target == 0:
        return []
    by_prompt: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_prompt.setdefault(prompt, []).append(i)
    distinct = sorted(by_prompt)

    order = np.random.default_rng(derive_seed(run_seed, "validation-split")).permutation(len(distinct)).tolist()
    chosen: list[int] = []
    for k in order:
        if len(chosen) >= target:
            break
        chosen.extend(by_prompt[distinct[k]])
    if len(chosen) >= len(prompts):
        raise HeldOutSplitError(
            f"{FIELD} = {fraction} holds out all {len(prompts)} seed pairs ({len(distinct)} distinct prompt(s)), "
            "leaving none to train on: lower sail.validation.fraction, set it to 0, or give separate held-out "
            "pairs in sail.validation.uri")
    return sorted(chosen)


def heldout_indices(seed_index: dict[str, Any]) -> list[int]:
    """The committed held-out indices of a seed index (empty for runs without held-out pairs)."""
    return [int(i) for i in seed_index.get("heldout", [])]


def training_indices(seed_index: dict[str, Any]) -> list[int]:
    """Seed pairs a mixture may draw: every encoded pair that is not held out, in order."""
    held = set(heldout_indices(seed_index))
    return [i for i in range(int(seed_index["count"])) if i not in held]


def map_seed_entries(plan: dict[str, Any], train: Sequence[int]) -> dict[str, Any]:
    """A mixture plan drawn over `len(train)` seed pairs, with its seed entries mapped to seed-index rows.

    Identity when nothing is held out (`train == range(count)`), so such mixtures are unchanged.
    """
    entries = [[source, int(train[index]) if source == "seed" else index] for source, index in plan["entries"]]
    return {**plan, "entries": entries}
