"""generate (round i >= 1): N samples per prompt of this round with the current model.

Round i takes prompts [(i-1)P, iP) of a seeded permutation of the pool; shard k of S takes
batches of whole prompts (`plan.select_shard_positions`), so a batch holds the same prompts
whatever S is. Sample k of pool prompt j starts from a generator seeded by
hash(run seed, iteration, j, k): sharding does not change any sample. Saves the sampler's
final latents (no decode/encode round trip) and a few small decoded previews.
"""

from __future__ import annotations

import io
import logging
import time
from functools import partial

from sail_api.manifest import PhaseManifest
from sail_trainer.errors import BadDataError
from sail_trainer.logs import Progress
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.models_of_run import resolve_iteration_folder
from sail_trainer.plan import derive_seed, select_round_prompts, select_shard_positions, split_groups

log = logging.getLogger(__name__)
PREVIEW_PROMPTS = 4  # prompts per shard with a decoded preview strip (choice: enough for a report)
PREVIEW_SIDE = 128  # px per preview image


def read_prompt_pool(ctx: PhaseContext) -> list[str]:
    from sail_api.storage import open_store
    from sail_trainer.data.prompts import read_prompts

    spec, storage = ctx.algorithm.prompts, ctx.resolved.storage
    opener = partial(open_store, endpoint=storage.endpoint, region=storage.region)
    return read_prompts(spec.uri, spec.format, spec.column, open_store=opener)


def round_prompt_indices(ctx: PhaseContext, pool: list[str]) -> list[int]:
    s = ctx.algorithm.sail
    try:
        return select_round_prompts(len(pool), s.prompts_per_round, ctx.iteration, s.seed)
    except ValueError as exc:
        raise BadDataError(f"prompts.uri {ctx.algorithm.prompts.uri}: {exc}") from exc


def sample_seeds(run_seed: int, iteration: int, prompt_index: int, n: int) -> list[int]:
    return [derive_seed(run_seed, iteration, prompt_index, k, "generate") for k in range(n)]


def run(ctx: PhaseContext) -> PhaseManifest:
    import torch

    from sail_trainer.models.components import load_components, pick_device, resolve_dtype
    from sail_trainer.models.sampling import build_scheduler, sample_latents
    from sail_trainer.models.text import TextEncoder

    s, sampler = ctx.algorithm.sail, ctx.algorithm.sail.sampler
    pool = read_prompt_pool(ctx)
    round_indices = round_prompt_indices(ctx, pool)
    n = s.candidates_per_prompt
    group = max(1, sampler.batch_size // n)
    positions = select_shard_positions(len(round_indices), group, ctx.shard or 0, ctx.shards or 1)
    device = pick_device()
    components = load_components(resolve_iteration_folder(ctx, ctx.iteration - 1), ctx.algorithm.model.layout,
                                 device, resolve_dtype(ctx.precision, device))
    text = TextEncoder(components)
    progress = Progress("generate", len(positions) * n)
    started = time.monotonic()
    shard_indices = [round_indices[p] for p in positions]
    files: list[str] = []
    pending: list = []  # per-prompt latents [N, C, h, w] not yet in a part file
    previews: list = []
    for batch in split_groups(positions, group):
        indices = [round_indices[p] for p in batch]
        generators = [torch.Generator().manual_seed(seed) for j in indices
                      for seed in sample_seeds(s.seed, ctx.iteration, j, n)]
        cond = text.encode([pool[j] for j in indices]).repeat(n)
        latents = sample_latents(
            components.unet, components, build_scheduler(sampler.kind, components.scheduler_config), cond,
            text.unconditional(len(generators)), generators, steps=sampler.steps,
            guidance_scale=sampler.guidance_scale, resolution=sampler.resolution,
        )
        rows = list(latents.cpu().view(len(indices), n, *latents.shape[1:]))
        previews.extend(rows[: max(0, PREVIEW_PROMPTS - len(previews))])
        pending.extend(rows)
        while len(pending) >= art.GEN_PART:
            files.append(_write_part(ctx, len(files), pending[: art.GEN_PART], shard_indices))
            pending = pending[art.GEN_PART :]
        progress.update(len(generators))
    progress.close()
    if pending or not files:
        files.append(_write_part(ctx, len(files), pending, shard_indices, components.latent_shape(sampler.resolution), n))
    files.append(ctx.put_bytes(art.GEN_PROMPTS, art.dump_json({
        "prompt_indices": shard_indices, "prompts": [pool[j] for j in shard_indices], "candidates": n,
        "latent_shape": list(components.latent_shape(sampler.resolution)), "part_size": art.GEN_PART,
    })))
    if previews:
        files += _write_previews(ctx, components, torch.stack(previews), shard_indices[: len(previews)])
    elapsed = max(time.monotonic() - started, 1e-9)
    metrics = {"prompts": float(len(shard_indices)), "images": float(len(shard_indices) * n),
               "images_per_second": len(shard_indices) * n / elapsed}
    log.info("generated %d images for %d prompts", len(shard_indices) * n, len(shard_indices))
    return ctx.commit(files, metrics, {"parts": sum(f.startswith("latents-") for f in files)})


def _write_part(ctx: PhaseContext, part: int, rows: list, shard_indices: list[int],
                latent_shape: tuple[int, ...] = (), n: int = 0) -> str:
    """Latent file `part` with rows part*GEN_PART... of this shard (an empty shard gets one empty file)."""
    import torch

    first = part * art.GEN_PART
    latents = torch.stack(rows) if rows else torch.zeros((0, n, *latent_shape))
    index = torch.tensor(shard_indices[first : first + len(rows)], dtype=torch.int64)
    return ctx.put_bytes(art.gen_part_name(part), art.dump_tensors({"latents": latents, "prompt_index": index}))


def _write_previews(ctx: PhaseContext, components, latents, indices: list[int]) -> list[str]:
    """One PNG strip (the N candidates side by side) per previewed prompt."""
    import numpy as np
    from PIL import Image

    from sail_trainer.models.sampling import decode_latents

    files = []
    for row, j in zip(latents, indices, strict=True):
        images = decode_latents(components, row)
        strip = Image.fromarray(np.concatenate(list(images), axis=1))
        side = min(PREVIEW_SIDE, images.shape[1])
        strip = strip.resize((side * len(images), side))
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        files.append(ctx.put_bytes(f"previews/prompt-{j:06d}.png", buffer.getvalue()))
    return files
