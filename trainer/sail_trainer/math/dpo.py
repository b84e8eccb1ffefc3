"""The Diffusion-DPO loss for one batch of pairs (docs/method.md, "Diffusion-DPO loss").

    model_diff = SE_theta(x_w) - SE_theta(x_l)
    ref_diff   = SE_ref(x_w)   - SE_ref(x_l)          # ref frozen, no grad
    inside     = -0.5 * beta * (model_diff - ref_diff)
    loss       = mean over the batch of -logsigmoid(inside)

The four errors must come from `denoising_error` (mean over C,H,W, fp32) computed with
the *same* `t` and `eps` for the winner and the loser of a pair; `beta` is on that mean
scale (reference code: 5000). This module only combines errors; it never calls a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOOutput:
    """The loss and what the trainer logs (metric names are shared with logs and reports).

    Attributes:
        loss: scalar, mean over the batch of `-logsigmoid(inside)`; the only field with a graph.
        inside: `[B]` `-0.5 * beta * (model_diff - ref_diff)`, detached.
        implicit_accuracy: float scalar, share of pairs with `inside > 0` (ties count as wrong).
        reward_margin: float scalar, `mean(inside)`: the batch mean of the implicit-reward
            margin `R(x_w) - R(x_l)` with `R(x) = -(beta/2) * (SE_theta(x) - SE_ref(x))`
            evaluated on this step's single (t, eps) draw; detached. Positive means the model
            prefers the winner more than the reference does.
        model_diff: `[B]` `SE_theta(x_w) - SE_theta(x_l)`, detached.
        ref_diff: `[B]` `SE_ref(x_w) - SE_ref(x_l)`, detached.
    """

    loss: torch.Tensor
    inside: torch.Tensor
    implicit_accuracy: torch.Tensor
    reward_margin: torch.Tensor
    model_diff: torch.Tensor
    ref_diff: torch.Tensor


def _check_errors(**errors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in errors.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError(f"diffusion_dpo_loss: every error must be the same 1-D shape [B], got {shapes}")


def diffusion_dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """Diffusion-DPO loss from per-sample denoising errors `[B]` (see the module docstring).

    The reference errors are detached here as well, so a caller that forgets `no_grad`
    around the frozen reference still gets the right gradient. Computed in fp32.
    With `theta == ref` the loss is exactly `log 2` and `inside == 0`.
    """
    _check_errors(model_err_w=model_err_w, model_err_l=model_err_l, ref_err_w=ref_err_w, ref_err_l=ref_err_l)
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"diffusion_dpo_loss: beta must be a positive finite number, got {beta}")
    model_diff = model_err_w.float() - model_err_l.float()
    ref_diff = (ref_err_w.float() - ref_err_l.float()).detach()
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -F.logsigmoid(inside).mean()
    inside_d = inside.detach()
    return DPOOutput(
        loss=loss,
        inside=inside_d,
        implicit_accuracy=(inside_d > 0).float().mean(),
        reward_margin=inside_d.mean(),
        model_diff=model_diff.detach(),
        ref_diff=ref_diff,
    )
