"""Ranked preference mixup: which pairs round i trains on (docs/method.md, "Ranked preference mixup").

Each drawn pair is a self-labelled pair of this round with probability `alpha`, else a
human seed pair. Self pairs are ranked by margin (highest first) only to decide which are
kept: a threshold drops low-margin pairs (choice, off by default), a cap keeps the
highest-margin ones. Draws take the kept self pairs in a seeded shuffled order without
replacement, reshuffled for each further pass (choice: no margin curriculum; drawn in
rank order, step 1 trained on the top margins and the last step on the noisiest labels,
which nothing in the method asks for). Seed pairs are drawn uniformly **without
replacement** from a fresh shuffle, reshuffled when exhausted (choice: every seed pair is
equally likely at each draw, as with uniform sampling, but a pass repeats none). With no
self pairs (step 0, or all filtered out) the plan is seed-only.

Pure python/numpy: the plan is a list of indices; phases read the pairs it names. The
randomness comes only from `numpy.random.default_rng(seed)`, never from global state, so
the same inputs give the same plan on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

PairSource = Literal["self", "seed"]


class MixupEntry(NamedTuple):
    """One training pair: `source` says which set, `index` the row in that set."""

    source: PairSource
    index: int


@dataclass(frozen=True)
class MixupPlan:
    """The round's mixture in draw order.

    Attributes:
        entries: `(source, index)` per drawn pair; `index` is a row of the self pairs as passed
            in (`self_margins` order) or of the seed set.
        num_self: entries with source "self".
        num_seed: entries with source "seed".
        self_ranked: kept self indices, highest margin first (after threshold and cap); the
            draws take them in a shuffled order.
        self_dropped_threshold: self pairs dropped for a margin below the threshold.
        self_dropped_cap: self pairs dropped by the cap (the lowest-margin ones).
        alpha: the probability used.
    """

    entries: tuple[MixupEntry, ...]
    num_self: int
    num_seed: int
    self_ranked: tuple[int, ...]
    self_dropped_threshold: int
    self_dropped_cap: int
    alpha: float

    @property
    def size(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for manifests and metrics."""
        return {
            "size": self.size,
            "num_self": self.num_self,
            "num_seed": self.num_seed,
            "alpha": self.alpha,
            "self_kept": len(self.self_ranked),
            "self_dropped_threshold": self.self_dropped_threshold,
            "self_dropped_cap": self.self_dropped_cap,
            "entries": [[e.source, e.index] for e in self.entries],
        }


def rank_self_pairs(
    self_margins: Sequence[float], margin_threshold: float | None = None, self_pair_cap: int | None = None
) -> tuple[list[int], int, int]:
    """Self indices by descending margin (ties: lower index first), after threshold then cap.

    Returns `(ranked, dropped_by_threshold, dropped_by_cap)`.
    """
    margins = [float(m) for m in self_margins]
    if any(math.isnan(m) for m in margins):
        raise ValueError("build_mixup_plan: self_margins contain NaN (check the annotate rewards)")
    ranked = sorted(range(len(margins)), key=lambda i: (-margins[i], i))
    kept = ranked if margin_threshold is None else [i for i in ranked if margins[i] >= margin_threshold]
    dropped_threshold = len(ranked) - len(kept)
    capped = kept if self_pair_cap is None else kept[:self_pair_cap]
    return capped, dropped_threshold, len(kept) - len(capped)


def compute_mixture_size(num_self_kept: int, num_seed: int, alpha: float) -> int:
    """Default size: `round(num_self_kept / alpha)`, so the self pairs fill about `alpha` of it once;
    the seed set size when there are no self pairs or `alpha == 0`."""
    if num_self_kept == 0 or alpha == 0:
        return num_seed
    return max(1, round(num_self_kept / alpha))


def _validate(num_seed: int, alpha: float, size: int | None, self_pair_cap: int | None) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"build_mixup_plan: alpha must be in [0, 1], got {alpha}")
    if num_seed < 0:
        raise ValueError(f"build_mixup_plan: num_seed must be >= 0, got {num_seed}")
    if size is not None and size < 0:
        raise ValueError(f"build_mixup_plan: size must be >= 0 or None, got {size}")
    if self_pair_cap is not None and self_pair_cap < 0:
        raise ValueError(f"build_mixup_plan: self_pair_cap must be >= 0 or None, got {self_pair_cap}")


def build_mixup_plan(
    self_margins: Sequence[float],
    num_seed: int,
    alpha: float,
    size: int | None,
    seed: int,
    *,
    margin_threshold: float | None = None,
    self_pair_cap: int | None = None,
) -> MixupPlan:
    """Build the round's mixture (see the module docstring for every rule).

    Args:
        self_margins: margin `R_w - R_l` of each self-labelled pair of this round (empty at step 0).
        num_seed: number of human seed pairs available.
        alpha: probability that a drawn pair is self-labelled.
        size: number of pairs to draw; `None` uses `compute_mixture_size`.
        seed: seeds `numpy.random.default_rng`; the plan is a pure function of the arguments.
        margin_threshold: drop self pairs with margin below this (choice, off by default).
        self_pair_cap: keep at most this many self pairs, the highest-margin ones.

    Raises ValueError when the mixture needs seed pairs and there are none (alpha < 1 with
    num_seed == 0), or needs pairs and there are none at all.
    """
    _validate(num_seed, alpha, size, self_pair_cap)
    ranked, dropped_threshold, dropped_cap = rank_self_pairs(self_margins, margin_threshold, self_pair_cap)
    n = compute_mixture_size(len(ranked), num_seed, alpha) if size is None else size
    p_self = alpha if ranked else 0.0
    if n > 0 and p_self < 1.0 and num_seed == 0:
        raise ValueError(
            f"build_mixup_plan: the mixture needs seed pairs (alpha={alpha}, {len(ranked)} self pairs kept) "
            "but the seed set is empty; provide seed pairs or set alpha to 1"
        )
    rng = np.random.default_rng(seed)
    self_rng = np.random.default_rng([seed, 1])  # its own stream: the seed draws do not depend on it
    is_self = rng.random(n) < p_self
    entries: list[MixupEntry] = []
    self_pos = 0
    seed_order: list[int] = []
    self_order: list[int] = []
    for draw_self in is_self.tolist():
        if draw_self:
            if not self_order:
                self_order = [ranked[i] for i in self_rng.permutation(len(ranked)).tolist()][::-1]
            entries.append(MixupEntry("self", self_order.pop()))
            self_pos += 1
        else:
            if not seed_order:
                seed_order = rng.permutation(num_seed).tolist()[::-1]
            entries.append(MixupEntry("seed", int(seed_order.pop())))
    return MixupPlan(
        entries=tuple(entries),
        num_self=self_pos,
        num_seed=n - self_pos,
        self_ranked=tuple(ranked),
        self_dropped_threshold=dropped_threshold,
        self_dropped_cap=dropped_cap,
        alpha=float(alpha),
    )
