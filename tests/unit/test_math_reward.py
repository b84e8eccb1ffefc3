"""implicit_reward and draw_shared_noise: zero at theta == ref, invariances, why draws are shared."""

from __future__ import annotations

import pytest
import torch

from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.math.reward import draw_shared_noise, implicit_reward


def _reference(model_err: list[list[float]], ref_err: list[list[float]], beta: float) -> list[float]:
    return [-(beta / 2) * sum(a - b for a, b in zip(mr, rr, strict=True)) / len(mr)
            for mr, rr in zip(model_err, ref_err, strict=True)]


def test_reward_equals_a_straightforward_reference_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    model_err, ref_err = torch.rand(8, 10, generator=g), torch.rand(8, 10, generator=g)
    got = implicit_reward(model_err, ref_err, beta=5000.0)
    expected = torch.tensor(_reference(model_err.tolist(), ref_err.tolist(), 5000.0))
    assert got.shape == (8,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_theta_equal_to_ref_gives_zero_reward() -> None:
    err = torch.rand(8, 10)
    assert torch.all(implicit_reward(err, err.clone(), beta=5000.0) == 0)


def test_lower_model_error_than_ref_is_a_positive_reward() -> None:
    ref = torch.full((2, 3), 0.5)
    model = torch.tensor([[0.4, 0.4, 0.4], [0.6, 0.6, 0.6]])
    r = implicit_reward(model, ref, beta=2.0)
    torch.testing.assert_close(r, torch.tensor([0.1, -0.1]))


@pytest.mark.parametrize("beta", [0.5, 2000.0, 5000.0])
def test_ranking_is_invariant_to_beta(beta: float) -> None:
    g = torch.Generator().manual_seed(1)
    model_err, ref_err = torch.rand(8, 10, generator=g), torch.rand(8, 10, generator=g)
    base = implicit_reward(model_err, ref_err, beta=1.0)
    scaled = implicit_reward(model_err, ref_err, beta=beta)
    assert torch.equal(torch.argsort(base, descending=True), torch.argsort(scaled, descending=True))


def test_adding_the_same_constant_to_both_models_errors_changes_nothing() -> None:
    g = torch.Generator().manual_seed(2)
    model_err, ref_err = torch.rand(8, 10, generator=g), torch.rand(8, 10, generator=g)
    shift = torch.rand(1, 10, generator=g) * 3  # a different constant per draw, the same for both models
    base = implicit_reward(model_err, ref_err, beta=100.0)
    torch.testing.assert_close(implicit_reward(model_err + shift, ref_err + shift, beta=100.0), base)
    torch.testing.assert_close(implicit_reward(model_err + 0.7, ref_err + 0.7, beta=100.0), base)


def test_a_per_draw_offset_shared_by_all_candidates_keeps_the_ranking() -> None:
    """The partition term: anything a draw adds to every candidate cancels in the comparison."""
    g = torch.Generator().manual_seed(3)
    model_err, ref_err = torch.rand(8, 10, generator=g), torch.rand(8, 10, generator=g)
    per_draw = torch.rand(1, 10, generator=g) * 50
    base = implicit_reward(model_err, ref_err, beta=10.0)
    shifted = implicit_reward(model_err + per_draw, ref_err, beta=10.0)
    assert torch.equal(torch.argsort(base), torch.argsort(shifted))


def _toy_errors(quality: float, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Errors of a toy model/ref pair: the model-ref gap grows with t (hard draws), and a better
    candidate (higher quality) has a slightly smaller gap at every t."""
    tt = timesteps.float() / 1000
    ref = 0.1 + tt
    model = ref + 0.05 * tt - 0.001 * quality
    return model, ref


def test_ranking_changes_when_draws_are_not_shared() -> None:
    qualities = [3.0, 1.0]  # candidate 0 is truly better
    shared_t = torch.tensor([100, 900])
    shared = [_toy_errors(q, shared_t) for q in qualities]
    r_shared = implicit_reward(torch.stack([m for m, _ in shared]), torch.stack([r for _, r in shared]), 5000.0)
    assert r_shared.argmax().item() == 0

    own_t = [torch.tensor([800, 900]), torch.tensor([50, 100])]  # candidate 0 happens to get hard draws
    own = [_toy_errors(q, t) for q, t in zip(qualities, own_t, strict=True)]
    r_own = implicit_reward(torch.stack([m for m, _ in own]), torch.stack([r for _, r in own]), 5000.0)
    assert r_own.argmax().item() == 1  # the ranking flips: the comparison is meaningless


def test_shared_draws_through_the_noising_path_give_the_same_gap_for_identical_candidates() -> None:
    """Two identical candidates evaluated on the shared draws get exactly equal rewards."""
    gen = torch.Generator().manual_seed(4)
    t, noise = draw_shared_noise(gen, m=5, latent_shape=(4, 8, 8), num_train_timesteps=1000)
    abar = torch.linspace(0.999, 0.01, 1000)
    x = torch.randn(4, 8, 8, generator=gen)
    conv_model, conv_ref = torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 1)

    def errs(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xt = add_noise(candidate.expand(5, -1, -1, -1), noise, t, abar)
        with torch.no_grad():
            return denoising_error(conv_model(xt), noise), denoising_error(conv_ref(xt), noise)

    (m0, r0), (m1, r1) = errs(x), errs(x.clone())
    rewards = implicit_reward(torch.stack([m0, m1]), torch.stack([r0, r1]), beta=5000.0)
    assert rewards[0].item() == rewards[1].item()


def test_draw_shared_noise_shapes_range_and_determinism() -> None:
    t1, n1 = draw_shared_noise(torch.Generator().manual_seed(7), 10, (4, 16, 16), 1000)
    t2, n2 = draw_shared_noise(torch.Generator().manual_seed(7), 10, (4, 16, 16), 1000)
    t3, _ = draw_shared_noise(torch.Generator().manual_seed(8), 10, (4, 16, 16), 1000)
    assert t1.shape == (10,) and t1.dtype == torch.int64
    assert n1.shape == (10, 4, 16, 16) and n1.dtype == torch.float32
    assert torch.equal(t1, t2) and torch.equal(n1, n2)
    assert not torch.equal(t1, t3)
    t_many, _ = draw_shared_noise(torch.Generator().manual_seed(0), 1000, (1,), 50)
    assert t_many.min().item() >= 0 and t_many.max().item() <= 49
    assert len(set(t_many.tolist())) == 50  # covers the whole range


def test_draw_shared_noise_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    draw_shared_noise(torch.Generator().manual_seed(0), 4, (2, 2), 10)
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize(
    "kwargs",
    [{"m": 0}, {"latent_shape": ()}, {"latent_shape": (4, 0, 8)}, {"num_train_timesteps": 0}],
    ids=["no draws", "empty latent shape", "zero dim", "no timesteps"],
)
def test_draw_shared_noise_rejects_bad_arguments(kwargs) -> None:
    args = {"m": 2, "latent_shape": (4, 8, 8), "num_train_timesteps": 1000, **kwargs}
    with pytest.raises(ValueError, match="draw_shared_noise"):
        draw_shared_noise(torch.Generator(), **args)


@pytest.mark.parametrize(
    "model_shape, ref_shape, beta",
    [((8, 10), (8, 9), 1.0), ((8,), (8,), 1.0), ((8, 0), (8, 0), 1.0), ((8, 10), (8, 10), -1.0)],
    ids=["shapes differ", "not 2-D", "no draws", "negative beta"],
)
def test_implicit_reward_rejects_bad_inputs(model_shape, ref_shape, beta) -> None:
    with pytest.raises(ValueError, match="implicit_reward"):
        implicit_reward(torch.zeros(model_shape), torch.zeros(ref_shape), beta)


def test_draw_shared_noise_keeps_timesteps_inside_the_range_and_the_default_is_the_whole_schedule() -> None:
    t_all, n_all = draw_shared_noise(torch.Generator().manual_seed(7), 64, (4, 8, 8), 1000)
    t_full, n_full = draw_shared_noise(torch.Generator().manual_seed(7), 64, (4, 8, 8), 1000, (0, 1000))
    assert torch.equal(t_all, t_full) and torch.equal(n_all, n_full)  # default draws are unchanged
    t_hi, _ = draw_shared_noise(torch.Generator().manual_seed(7), 64, (4, 8, 8), 1000, (500, 1000))
    assert int(t_hi.min()) >= 500 and int(t_hi.max()) < 1000
    assert int(t_all.min()) < 500  # the unrestricted draws do reach the lower half
    for bad in [(500, 500), (-1, 10), (0, 1001)]:
        with pytest.raises(ValueError, match="timestep_range"):
            draw_shared_noise(torch.Generator().manual_seed(7), 4, (4, 8, 8), 1000, bad)
