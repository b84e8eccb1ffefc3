"""add_noise and denoising_error: the forward process and the mean-convention SE."""

from __future__ import annotations

import math

import pytest
import torch

from sail_trainer.math.denoising import add_noise, denoising_error


def _alphas_cumprod(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2  # SD "scaled_linear"
    return torch.cumprod(1.0 - betas, dim=0).float()


def test_add_noise_matches_the_formula_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    abar = _alphas_cumprod()
    t = torch.tensor([0, 500, 999])
    xt = add_noise(x0, eps, t, abar)
    for i in range(3):
        a = abar[t[i]].item()
        expected = math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i]
        torch.testing.assert_close(xt[i], expected, rtol=1e-5, atol=1e-6)


def test_add_noise_matches_diffusers_ddpm_scheduler() -> None:
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([3, 250, 700, 999])
    torch.testing.assert_close(add_noise(x0, eps, t, sched.alphas_cumprod), sched.add_noise(x0, eps, t))


def test_add_noise_keeps_the_input_dtype() -> None:
    x0 = torch.randn(2, 4, 4, 4, dtype=torch.bfloat16)
    out = add_noise(x0, torch.randn_like(x0), torch.tensor([1, 2]), _alphas_cumprod())
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "x0_shape, noise_shape, t",
    [
        ((2, 4, 4, 4), (2, 4, 4, 3), [1, 2]),  # shapes differ
        ((2, 4, 4, 4), (2, 4, 4, 4), [1, 2, 3]),  # one timestep too many
        ((2, 4, 4, 4), (2, 4, 4, 4), [1.0, 2.0]),  # float timesteps
    ],
    ids=["noise shape differs", "timesteps not [B]", "float timesteps"],
)
def test_add_noise_rejects_bad_inputs(x0_shape, noise_shape, t) -> None:
    with pytest.raises(ValueError, match="add_noise"):
        add_noise(torch.zeros(x0_shape), torch.zeros(noise_shape), torch.tensor(t), _alphas_cumprod())


def test_denoising_error_is_the_per_sample_mean_not_the_sum() -> None:
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    err = denoising_error(pred, target)
    assert err.shape == (3,)
    for i in range(3):
        expected = sum((p - q) ** 2 for p, q in zip(pred[i].flatten().tolist(), target[i].flatten().tolist(), strict=True))
        assert err[i].item() == pytest.approx(expected / (4 * 6 * 6), rel=1e-5)


def test_denoising_error_accumulates_in_fp32() -> None:
    pred = torch.full((2, 4, 64, 64), 1.0, dtype=torch.bfloat16)
    target = torch.zeros_like(pred)
    err = denoising_error(pred, target)
    assert err.dtype == torch.float32
    torch.testing.assert_close(err, torch.ones(2))


def test_denoising_error_is_zero_for_a_perfect_prediction_and_has_gradients() -> None:
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    err = denoising_error(pred, pred.detach().clone())
    assert torch.all(err == 0)
    err.sum().backward()
    assert pred.grad is not None


def test_denoising_error_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="pred shape"):
        denoising_error(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
