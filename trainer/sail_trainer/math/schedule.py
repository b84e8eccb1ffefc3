"""Learning-rate multipliers for `torch.optim.lr_scheduler.LambdaLR`.

The shapes match transformers/diffusers `get_scheduler` (which the Diffusion-DPO reference
code uses), so a run here and a run of the reference code see the same learning rates:
linear warmup from 0 at step 0 to 1 at `warmup_steps`; then constant, linear decay to 0 at
`total_steps`, or half-cosine decay to 0 at `total_steps`. Pure python, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

LrScheduleKind = Literal["constant", "constant_with_warmup", "linear", "cosine"]


def _warmup(step: int, warmup_steps: int) -> float | None:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return None


def lr_lambda(kind: LrScheduleKind, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Return `f(step) -> multiplier of the base lr` for the schedule `kind`.

    `constant` ignores warmup. `total_steps` is the number of optimizer steps of the phase
    (only `linear` and `cosine` use it); the multiplier never goes below 0.
    """
    if kind not in get_args(LrScheduleKind):
        raise ValueError(f"lr_lambda: unknown schedule {kind!r}; expected one of {get_args(LrScheduleKind)}")
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(f"lr_lambda: steps must be >= 0, got warmup={warmup_steps} total={total_steps}")
    decay_steps = max(1, total_steps - warmup_steps)

    def constant(step: int) -> float:
        return 1.0

    def constant_with_warmup(step: int) -> float:
        w = _warmup(step, warmup_steps)
        return 1.0 if w is None else w

    def linear(step: int) -> float:
        w = _warmup(step, warmup_steps)
        return max(0.0, (total_steps - step) / decay_steps) if w is None else w

    def cosine(step: int) -> float:
        w = _warmup(step, warmup_steps)
        if w is not None:
            return w
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return {"constant": constant, "constant_with_warmup": constant_with_warmup,
            "linear": linear, "cosine": cosine}[kind]
