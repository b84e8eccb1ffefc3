"""Forward noising and the denoising error `SE` of docs/method.md ("Notation").

    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps
    SE(x; t, eps) = mean over (C, H, W) of (eps - eps_model(x_t, c, t))^2

The error is the **mean** over every non-batch dimension, not the sum, so the DPO
temperature `beta` (default 5000) is on the scale of the Diffusion-DPO reference code.
A sum would multiply every error by C*H*W (16384 for a 4x64x64 SD1.5 latent) and make
`beta = 5000` far too sharp. This module does not call models.
"""

from __future__ import annotations

import torch


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Return `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise` for each sample of the batch.

    Args:
        x0: clean latents `[B, ...]`.
        noise: `eps`, same shape as `x0`.
        timesteps: integer timesteps `[B]` indexing `alphas_cumprod`.
        alphas_cumprod: `abar` of the scheduler `[T]` (e.g. `scheduler.alphas_cumprod`).

    The coefficients are computed in fp32 (as diffusers' DDPMScheduler.add_noise does up to
    the cast) and the result has `x0`'s dtype, so bf16/fp16 training matches the reference.
    """
    if x0.shape != noise.shape:
        raise ValueError(f"add_noise: x0 shape {tuple(x0.shape)} != noise shape {tuple(noise.shape)}")
    if timesteps.ndim != 1 or timesteps.shape[0] != x0.shape[0]:
        raise ValueError(
            f"add_noise: timesteps must be [B={x0.shape[0]}], got shape {tuple(timesteps.shape)}"
        )
    if timesteps.dtype.is_floating_point:
        raise ValueError("add_noise: timesteps must be integers (indices into alphas_cumprod)")
    abar = alphas_cumprod.to(device=x0.device, dtype=torch.float32)[timesteps.to(x0.device).long()]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    sqrt_abar = abar.sqrt().view(shape)
    sqrt_one_minus = (1.0 - abar).sqrt().view(shape)
    return (sqrt_abar * x0.float() + sqrt_one_minus * noise.float()).to(x0.dtype)


def denoising_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error `[B]`: mean over every dimension but the first, accumulated in fp32.

    This is `SE` of docs/method.md with the *mean* convention (see the module docstring):
    `beta` multiplies this value directly in `diffusion_dpo_loss` and `implicit_reward`.
    `pred` is the model's epsilon prediction and `target` the noise `eps` (gradients flow
    through both arguments; detach the target yourself if it is not a constant).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"denoising_error: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(f"denoising_error: expected [B, ...] with at least 2 dims, got {tuple(pred.shape)}")
    return (pred.float() - target.float()).pow(2).flatten(start_dim=1).mean(dim=1)
