"""generate (round i >= 1): N samples per prompt of this round with the current model.

The pool is the prompt file's distinct prompts in first-seen order (`distinct_prompts`: a raw
caption pool repeats strings, and rounds are disjoint by pool index, so duplicates would let
two rounds, or one round, use the same prompt twice).
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
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.storage import AlreadyCommitted, open_store
from sail_trainer.data.prompts import read_prompts
from sail_trainer.errors import BadDataError
from sail_trainer.logs import Progress
from sail_trainer.models.acceleration import accelerate_unet
from sail_trainer.models.components import load_components, pick_device, resolve_dtype
from sail_trainer.models.sampling import build_scheduler, decode_latents, sample_latents
from sail_trainer.models.text import TextEncoder
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.models_of_run import resolve_iteration_folder
from sail_trainer.plan import derive_seed, select_round_prompts, select_shard_positions, split_groups

log = logging.getLogger(__name__)
PREVIEW_PROMPTS = 4  # prompts per shard with a decoded preview strip (choice: enough for a report)
PREVIEW_SIDE = 128  # px per preview image


def distinct_prompts(prompts: list[str]) -> list[str]:
    """The prompts without repeats, first occurrence kept, order otherwise unchanged."""
    return list(dict.fromkeys(prompts))


def read_prompt_pool(ctx: PhaseContext) -> list[str]:
    """The run's prompt pool: the distinct prompts of `prompts.uri` (see the module docstring)."""
    spec, storage = ctx.algorithm.prompts, ctx.resolved.storage
    opener = partial(open_store, connection=storage)
    raw = read_prompts(spec.uri, spec.format, spec.column, open_store=opener)
    pool = distinct_prompts(raw)
    if len(pool) < len(raw):
        log.info("prompt pool %s: %d prompts, %d distinct (repeats dropped so rounds never share a prompt)",
                 spec.uri, len(raw), len(pool))
    return pool


def round_prompt_indices(ctx: PhaseContext, pool: list[str]) -> list[int]:
    s = ctx.algorithm.sail
    try:
        return select_round_prompts(len(pool), s.prompts_per_round, ctx.iteration, s.seed)
    except ValueError as exc:
        raise BadDataError(f"prompts.uri {ctx.algorithm.prompts.uri}: {exc} (distinct prompts)") from exc


def image_chunks(count: int, batch_size: int) -> list[tuple[int, int]]:
    """[lo, hi) slices of at most `batch_size` images (`sampler.batchSize`: images per forward batch).

    A batch holds whole prompts (`batchSize // N` of them) when `batchSize >= N`; below N a
    prompt's N candidates are split over several batches. Each sample has its own generator,
    so the split changes no latent.
    """
    return [(lo, min(count, lo + batch_size)) for lo in range(0, count, max(1, batch_size))]


def sample_seeds(run_seed: int, iteration: int, prompt_index: int, n: int) -> list[int]:
    return [derive_seed(run_seed, iteration, prompt_index, k, "generate") for k in range(n)]


def _load_sampler_model(ctx: PhaseContext) -> tuple[Any, Any]:
    """(components, text encoder) of the model the round samples from (theta_{i-1}), accelerated."""
    device = pick_device()
    components = load_components(resolve_iteration_folder(ctx, ctx.iteration - 1), ctx.algorithm.model.layout,
                                 device, resolve_dtype(ctx.precision, device))
    accelerate_unet(components.unet, ctx.resolved.performance)
    return components, TextEncoder(components)


def _sample_group(ctx: PhaseContext, components: Any, text: Any, indices: list[int], pool: list[str],
                  progress: Progress) -> Any:
    """Latents `[len(indices) * N, ...]` of a group of whole prompts, in forward batches of
    `sampler.batchSize` images, each sample from its own seeded generator."""
    s, sampler = ctx.algorithm.sail, ctx.algorithm.sail.sampler
    n = s.candidates_per_prompt
    generators = [torch.Generator().manual_seed(seed) for j in indices
                  for seed in sample_seeds(s.seed, ctx.iteration, j, n)]
    cond = text.encode([pool[j] for j in indices]).repeat(n)  # prompt0 x n, prompt1 x n, ...
    chunks = []
    for lo, hi in image_chunks(len(generators), sampler.batch_size):
        chunks.append(sample_latents(
            components.unet, components, build_scheduler(sampler.kind, components.scheduler_config),
            cond.rows(lo, hi), text.unconditional(hi - lo), generators[lo:hi],
            steps=sampler.steps, guidance_scale=sampler.guidance_scale, resolution=sampler.resolution,
        ).cpu())
        progress.update(hi - lo)
    return torch.cat(chunks)


@dataclass(frozen=True)
class _ShardDone:
    """What the sampling loop of one shard did: its prompts (pool indices), its parts, the time it started."""

    shard_indices: list[int]
    parts: int
    part_rows: int
    reused: int
    started: float


def _finish(ctx: PhaseContext, components: Any, pool: list[str], done: _ShardDone) -> PhaseManifest:
    """The shard's prompt list and previews beside the committed parts, then the phase commit."""
    n, sampler = ctx.algorithm.sail.candidates_per_prompt, ctx.algorithm.sail.sampler
    shard_indices, parts, part_rows, reused = done.shard_indices, done.parts, done.part_rows, done.reused
    files = art.committed_part_files(ctx.store, ctx.output_dir, parts)
    files.append(ctx.put_bytes(art.GEN_PROMPTS, art.dump_json({
        "prompt_indices": shard_indices, "prompts": [pool[j] for j in shard_indices], "candidates": n,
        "latent_shape": list(components.latent_shape(sampler.resolution)), "part_size": part_rows,
    })))
    metadata: dict = {}
    try:  # optional output, after the parts (the result) are committed: a failure is recorded, not fatal
        files += _write_previews(ctx, components, shard_indices[:PREVIEW_PROMPTS], part_rows)
    except Exception as exc:  # noqa: BLE001
        log.warning("generate: previews failed (%s: %s); committing the shard without them", type(exc).__name__, exc)
        metadata["failed_outputs"] = {"previews": f"{type(exc).__name__}: {exc}"[:300]}
    elapsed = max(time.monotonic() - done.started, 1e-9)
    metrics = {"prompts": float(len(shard_indices)), "images": float(len(shard_indices) * n),
               "images_per_second": len(shard_indices) * n / elapsed}
    log.info("generated %d images for %d prompts", len(shard_indices) * n, len(shard_indices))
    return ctx.commit(files, metrics, {"parts": sum(f.startswith(art.GEN_PARTS_DIR + "/") for f in files),
                                       "reused_parts": reused, **metadata})


def run(ctx: PhaseContext) -> PhaseManifest:
    s, sampler = ctx.algorithm.sail, ctx.algorithm.sail.sampler
    pool = read_prompt_pool(ctx)
    round_indices = round_prompt_indices(ctx, pool)
    n = s.candidates_per_prompt
    group = max(1, sampler.batch_size // n)
    positions = select_shard_positions(len(round_indices), group, ctx.shard or 0, ctx.shards or 1)
    components, text = _load_sampler_model(ctx)
    progress = Progress("generate", len(positions) * n)
    started = time.monotonic()
    shard_indices = [round_indices[p] for p in positions]
    part_rows = art.compute_part_rows(group)
    reused = 0
    starts = range(0, max(len(positions), 1), part_rows)
    for part, first in enumerate(starts):
        part_positions = positions[first : first + part_rows]
        if ctx.store.is_committed(join(ctx.output_dir, art.gen_part_folder(part))):
            reused += 1  # committed by an earlier attempt of this shard: same inputs, same latents
            progress.update(len(part_positions) * n)
            continue
        rows = []
        for batch in split_groups(part_positions, group):
            indices = [round_indices[p] for p in batch]
            latents = _sample_group(ctx, components, text, indices, pool, progress)
            rows.extend(latents.view(len(indices), n, *latents.shape[1:]))
        _commit_part(ctx, part, rows, [round_indices[p] for p in part_positions],
                     components.latent_shape(sampler.resolution), n)
    progress.close()
    if reused:
        log.info("reused %d part(s) committed by an earlier attempt", reused)
    return _finish(ctx, components, pool, _ShardDone(shard_indices, len(starts), part_rows, reused, started))


def _commit_part(ctx: PhaseContext, part: int, rows: list, indices: list[int], latent_shape: tuple[int, ...],
                 n: int) -> None:
    """Write and commit one part folder (an empty shard gets one empty part)."""
    latents = torch.stack(rows) if rows else torch.zeros((0, n, *latent_shape))
    folder = join(ctx.output_dir, art.gen_part_folder(part))
    # Under this attempt's prefix: latents need not be bit-identical across devices, so a
    # concurrent writer of the same part must never overwrite the committed file.
    name = ctx.attempt_path("latents.safetensors")
    ctx.store.write_bytes(join(folder, name), art.dump_tensors(
        {"latents": latents, "prompt_index": torch.tensor(indices, dtype=torch.int64)}))
    try:
        ctx.store.commit(folder, [name], metadata={"attempt": ctx.attempt}, run=ctx.resolved.name, iteration=ctx.iteration,
                         phase=ctx.phase.value, shard=ctx.shard_label, spec_digest=ctx.resolved.digest())
    except AlreadyCommitted:
        log.info("part %d was committed by a concurrent attempt; keeping it (same inputs, same latents)", part)


def _write_previews(ctx: PhaseContext, components, indices: list[int], part_rows: int) -> list[str]:
    """One PNG strip (the N candidates side by side) per previewed prompt, from the committed parts."""
    files = []
    reader = art.LatentFiles(ctx.store, ctx.work_dir)
    for row, j in enumerate(indices):
        part, offset = divmod(row, part_rows)
        latents = reader.row(join(ctx.output_dir, art.gen_part_folder(part)), "latents.safetensors", "latents", offset)
        images = decode_latents(components, latents)
        strip = Image.fromarray(np.concatenate(list(images), axis=1))
        side = min(PREVIEW_SIDE, images.shape[1])
        strip = strip.resize((side * len(images), side))
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        files.append(ctx.put_bytes(f"previews/prompt-{j:06d}.png", buffer.getvalue()))
    return files
