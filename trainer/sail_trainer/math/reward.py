"""The implicit reward used for self-annotation (docs/method.md, "Implicit reward").

For the N candidates of one prompt, M draws `(t_m, eps_m)` are made **once** and reused
for every candidate:

    R(x_k) = -(beta / 2) * mean_m [ SE_theta(x_k; t_m, eps_m) - SE_judge_ref(x_k; t_m, eps_m) ]

Only with shared draws does the intractable partition term cancel between candidates
(and the comparison has far less variance). `SE` is the mean-over-(C,H,W) error of
`sail_trainer.math.denoising.denoising_error`, so `beta` is on the reference-code scale.
The ranking of candidates does not depend on `beta` (> 0). No model calls, no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def implicit_reward(model_err: torch.Tensor, ref_err: torch.Tensor, beta: float) -> torch.Tensor:
    """Rewards `[N]` from errors `[N, M]` of N candidates over M draws shared by all candidates.

    `model_err[k, m]` is `SE_theta(x_k; t_m, eps_m)` and `ref_err[k, m]` the judge reference's
    error on the same draw. Returns `-(beta/2) * mean_m(model_err - ref_err)` in fp32.
    For several prompts, call once per prompt (or stack `[P, N, M]` yourself and reduce the
    last dimension the same way).
    """
    if model_err.shape != ref_err.shape or model_err.ndim != 2:
        raise ValueError(
            "implicit_reward: model_err and ref_err must both be [N, M] (candidates x shared draws), "
            f"got {tuple(model_err.shape)} and {tuple(ref_err.shape)}"
        )
    if model_err.shape[1] < 1:
        raise ValueError("implicit_reward: need at least one draw (M >= 1)")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"implicit_reward: beta must be a positive finite number, got {beta}")
    return -(beta / 2.0) * (model_err.float() - ref_err.float()).mean(dim=1)


def draw_shared_noise(
    generator: torch.Generator, m: int, latent_shape: Sequence[int], num_train_timesteps: int,
    timestep_range: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the M `(t, eps)` pairs a prompt's candidates all share.

    Returns `timesteps [M]` (int64, uniform on `0..num_train_timesteps-1`, or on
    `[low, high)` of `timestep_range`) and
    `noise [M, *latent_shape]` (fp32 standard normal), both on the generator's device.
    Timesteps are drawn first, then noise, from `generator` only (never the global RNG),
    so seeding the generator per prompt makes annotation reproducible and shard-independent.
    Evaluate candidate k on draw m with `add_noise(x_k, noise[m], timesteps[m], ...)`.
    """
    if m < 1:
        raise ValueError(f"draw_shared_noise: m (reward draws) must be >= 1, got {m}")
    if num_train_timesteps < 1:
        raise ValueError(f"draw_shared_noise: num_train_timesteps must be >= 1, got {num_train_timesteps}")
    shape = tuple(int(s) for s in latent_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"draw_shared_noise: latent_shape must be positive dims like (4, 64, 64), got {shape}")
    low, high = timestep_range if timestep_range is not None else (0, num_train_timesteps)
    if not 0 <= low < high <= num_train_timesteps:
        raise ValueError(
            f"draw_shared_noise: timestep_range must satisfy 0 <= low < high <= {num_train_timesteps}, "
            f"got {timestep_range}"
        )
    device = generator.device
    timesteps = torch.randint(low, high, (m,), generator=generator, device=device, dtype=torch.long)
    noise = torch.randn((m, *shape), generator=generator, device=device, dtype=torch.float32)
    return timesteps, noise
