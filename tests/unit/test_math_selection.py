"""select_best_worst and filter_by_margin."""

from __future__ import annotations

import pytest
import torch

from sail_trainer.math.selection import Selection, filter_by_margin, select_best_worst


def test_best_and_worst_per_prompt_with_margin() -> None:
    rewards = torch.tensor([[0.1, 0.9, -0.3, 0.2], [5.0, 1.0, 2.0, 3.0]])
    sel = select_best_worst(rewards)
    assert sel.winner_idx.tolist() == [1, 0]
    assert sel.loser_idx.tolist() == [2, 1]
    torch.testing.assert_close(sel.margin, torch.tensor([1.2, 4.0]))
    assert sel.prompt_idx.tolist() == [0, 1]
    assert len(sel) == 2


def test_matches_a_reference_on_random_rewards() -> None:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(50, 8, generator=g)
    sel = select_best_worst(rewards)
    for p, row in enumerate(rewards.tolist()):
        assert sel.winner_idx[p].item() == row.index(max(row))
        assert sel.loser_idx[p].item() == row.index(min(row))
        assert sel.margin[p].item() == pytest.approx(max(row) - min(row), rel=1e-6)


def test_all_tied_candidates_still_give_a_distinct_pair_with_zero_margin() -> None:
    sel = select_best_worst(torch.zeros(3, 4))
    assert torch.all(sel.winner_idx != sel.loser_idx)
    assert torch.all(sel.margin == 0)


def test_filter_by_margin_keeps_pairs_at_or_above_threshold_and_their_prompt_rows() -> None:
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.2], [3.0, 0.0], [0.0, 0.5]])
    sel = select_best_worst(rewards)
    kept = filter_by_margin(sel, 0.5)
    assert kept.prompt_idx.tolist() == [0, 2, 3]
    assert kept.winner_idx.tolist() == [1, 0, 1]
    assert kept.margin.tolist() == [1.0, 3.0, 0.5]
    assert filter_by_margin(sel, None) is sel
    assert len(filter_by_margin(sel, 10.0)) == 0


def test_selection_defaults_prompt_rows_and_is_frozen() -> None:
    sel = Selection(torch.tensor([1, 0]), torch.tensor([0, 1]), torch.tensor([0.5, 0.1]))
    assert sel.prompt_idx.tolist() == [0, 1]
    with pytest.raises(AttributeError):
        sel.margin = torch.zeros(2)


@pytest.mark.parametrize(
    "rewards",
    [torch.zeros(4), torch.zeros(3, 1), torch.tensor([[0.0, float("nan")]])],
    ids=["1-D", "one candidate", "nan reward"],
)
def test_bad_rewards_are_rejected(rewards) -> None:
    with pytest.raises(ValueError, match="select_best_worst"):
        select_best_worst(rewards)
