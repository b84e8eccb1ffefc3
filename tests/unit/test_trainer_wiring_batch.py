"""Which tensor goes where in a train micro batch (`train_data.build_batch`), without models.

Per pair position, one draw decides blank prompt, flip, timestep and noise; the winner and the
loser of the pair must get the *same* flip (else the pair compares mirrored images) and the
same t and noise (the batch carries one of each per pair; `dpo_micro_step` uses it twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sail_trainer.phases.train_data import DrawSettings, build_batch, draw_pair

SHAPE = (2, 3, 4)


@dataclass
class _Pairs:
    """A training set in memory: the fields `build_batch` reads (a stand-in for mmap'd latents)."""

    prompts: list[str]
    real: list[bool]
    latent_shape: tuple[int, ...] = SHAPE

    def __len__(self) -> int:
        return len(self.prompts)

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.arange(24, dtype=torch.float32).view(SHAPE)
        return base + 100 * i, -(base + 100 * i)  # winner, loser: distinct, asymmetric in the last dim


def _draws(data, positions, empty, flip):
    return [draw_pair(DrawSettings(7, 1, 1000, empty, flip), p, SHAPE, data.real[p % len(data)]) for p in positions]


def test_winner_and_loser_are_flipped_together_and_only_real_pairs_flip() -> None:
    data = _Pairs([f"p{i}" for i in range(6)], [True, True, True, False, False, False])
    positions = list(range(6)) + list(range(6, 12))
    batch = build_batch(data, positions, DrawSettings(7, 1, 1000, 0.0, True))
    draws = _draws(data, positions, 0.0, True)
    assert any(d.flip for d in draws) and not all(d.flip for d in draws[:3] + draws[6:9])
    for row, (pos, d) in enumerate(zip(positions, draws, strict=True)):
        w, lo = data.pair(pos % len(data))
        expect_w, expect_l = (w.flip(-1), lo.flip(-1)) if d.flip else (w, lo)
        assert torch.equal(batch["x_w"][row], expect_w), row
        assert torch.equal(batch["x_l"][row], expect_l), row
        assert not (d.flip and not data.real[pos % len(data)])


def test_blank_prompts_timesteps_and_noise_follow_the_pair_draw() -> None:
    data = _Pairs([f"p{i}" for i in range(4)], [True] * 4)
    positions = [5, 2, 9, 0]
    batch = build_batch(data, positions, DrawSettings(7, 1, 1000, 0.5, False))
    draws = _draws(data, positions, 0.5, False)
    assert {d.blank for d in draws} == {True, False}
    assert batch["prompts"] == ["" if d.blank else data.prompts[p % 4] for p, d in zip(positions, draws, strict=True)]
    assert batch["timesteps"].tolist() == [d.timestep for d in draws]
    assert torch.equal(batch["noise"], torch.stack([d.noise for d in draws]))
    assert batch["noise"].shape == batch["x_w"].shape == batch["x_l"].shape  # one noise per pair, shared


def test_prefetched_batches_come_back_in_plan_order_and_out_of_order_is_refused() -> None:
    import pytest

    from sail_trainer.phases.train_phase import _BatchPrefetcher

    built: list[list[int]] = []

    def build(positions: list[int]) -> dict:
        built.append(positions)
        return {"positions": torch.tensor(positions)}

    plan = [[0, 1], [2, 3], [4, 5], [6, 7]]
    prefetch = _BatchPrefetcher(build, iter(plan), depth=2)
    try:
        assert prefetch.next([0, 1])["positions"].tolist() == [0, 1]
        assert prefetch.next([2, 3])["positions"].tolist() == [2, 3]
        with pytest.raises(RuntimeError, match="out of order"):
            prefetch.next([6, 7])
    finally:
        prefetch.close()
    assert built[:3] == plan[:3]
