"""Best-vs-worst pair selection per prompt (docs/method.md, "Pair selection").

`x_w = argmax_k R`, `x_l = argmin_k R`, one pair per prompt, margin `R_w - R_l` recorded.
The optional margin filter is a choice, off by default. Pure tensor code, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Selection:
    """One (winner, loser) pair per kept prompt.

    Attributes:
        winner_idx: `[P]` int64, candidate index of the winner (highest reward).
        loser_idx: `[P]` int64, candidate index of the loser (lowest reward); never equal to
            `winner_idx`, even when every reward ties.
        margin: `[P]` fp32, `R_w - R_l >= 0`.
        prompt_idx: `[P]` int64, row of the rewards matrix each pair came from (`arange(P)`
            after `select_best_worst`; the surviving rows after `filter_by_margin`).
    """

    winner_idx: torch.Tensor
    loser_idx: torch.Tensor
    margin: torch.Tensor
    prompt_idx: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.prompt_idx is None:
            object.__setattr__(self, "prompt_idx", torch.arange(self.winner_idx.shape[0]))

    def __len__(self) -> int:
        return int(self.winner_idx.shape[0])


def select_best_worst(rewards: torch.Tensor) -> Selection:
    """Pick the highest- and lowest-reward candidate of each prompt from `rewards [P, N]`, N >= 2.

    Ties go to the lowest index for the winner; the loser is the lowest-reward candidate
    *other than* the winner, so a prompt whose candidates all tie yields a distinct pair with
    margin 0 (which a margin threshold > 0 then drops).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"select_best_worst: rewards must be [P, N] with N >= 2, got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("select_best_worst: rewards contain NaN or inf (check the annotate errors)")
    r = rewards.detach().float()
    winner = r.argmax(dim=1)
    masked = r.scatter(1, winner.unsqueeze(1), float("inf"))
    loser = masked.argmin(dim=1)
    margin = r.gather(1, winner.unsqueeze(1)).squeeze(1) - r.gather(1, loser.unsqueeze(1)).squeeze(1)
    return Selection(winner_idx=winner, loser_idx=loser, margin=margin, prompt_idx=torch.arange(r.shape[0]))


def filter_by_margin(selection: Selection, threshold: float | None) -> Selection:
    """Keep the pairs whose margin is `>= threshold` (choice, off by default: `None` keeps all)."""
    if threshold is None:
        return selection
    keep = selection.margin >= threshold
    return Selection(
        winner_idx=selection.winner_idx[keep],
        loser_idx=selection.loser_idx[keep],
        margin=selection.margin[keep],
        prompt_idx=selection.prompt_idx[keep],
    )
