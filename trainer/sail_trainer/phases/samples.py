"""The fixed sample grid of a train phase: the first 8 prompts of the pool x 2 fixed seeds.

Same prompts and seeds every iteration (seeds depend on the run seed and grid position
only), so grids of successive iterations show what training changed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from sail_trainer.models.sampling import build_scheduler, decode_latents, sample_latents
from sail_trainer.models.text import TextEncoder
from sail_trainer.plan import derive_seed

GRID_PROMPTS = 8
GRID_SEEDS = 2


def render_sample_grid(components: Any, unet: Any, prompts: list[str], run_seed: int, sampler: Any) -> bytes:
    """PNG bytes of a grid: one column per prompt, one row per fixed seed."""
    prompts = prompts[:GRID_PROMPTS]
    text = TextEncoder(components)
    rows = []
    for s in range(GRID_SEEDS):
        generators = [torch.Generator().manual_seed(derive_seed(run_seed, "samples", c, s)) for c in range(len(prompts))]
        latents = sample_latents(
            unet, components, build_scheduler(sampler.kind, components.scheduler_config), text.encode(prompts),
            text.unconditional(len(prompts)), generators, steps=sampler.steps,
            guidance_scale=sampler.guidance_scale, resolution=sampler.resolution,
        )
        rows.append(np.concatenate(list(decode_latents(components, latents)), axis=1))
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buffer, format="PNG")
    return buffer.getvalue()
