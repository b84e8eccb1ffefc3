"""mixup: iteration 0 encodes the human seed pairs; a round builds the ranked preference mixture.

Iteration 0 (docs/method.md "The loop", step 0): read the seed pairs, VAE-encode winner and
loser once at the sampler resolution into latent chunks, and plan a seed-only mixture (one
shuffled pass over the seed set). Round i >= 1: read every committed annotate shard and the
iteration-0 seed index, and write the mixture as an index (`mixture.json` +
`self-pairs.json`), never copies of latents. `replaySelfPairs` is not implemented yet (logged).
"""

from __future__ import annotations

import json
import logging
from functools import partial

from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_trainer.data.heldout_split import map_seed_entries, training_indices
from sail_trainer.logs import Progress
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.heldout import build_seed_split, chain_heldout_file
from sail_trainer.phases.models_of_run import resolve_base_folder
from sail_trainer.plan import derive_seed
from sail_trainer.storage import find_committed_shards, read_committed_bytes

log = logging.getLogger(__name__)


def run(ctx: PhaseContext) -> PhaseManifest:
    return _encode_seed(ctx) if ctx.iteration == 0 else _build_round_mixture(ctx)


def _encode_seed(ctx: PhaseContext) -> PhaseManifest:
    import torch

    from sail_api.storage import open_store
    from sail_trainer.data.errors import DataError
    from sail_trainer.data.seed_pairs import iter_seed_pairs
    from sail_trainer.math.mixup import build_mixup_plan
    from sail_trainer.models.components import load_components, pick_device

    alg, storage = ctx.algorithm, ctx.resolved.storage
    opener = partial(open_store, endpoint=storage.endpoint, region=storage.region)
    pairs = iter_seed_pairs(alg.seed_pairs.uri, alg.seed_pairs.format, alg.seed_pairs.limit, open_store=opener)
    pairs, seed_count = chain_heldout_file(pairs, alg.sail.validation, opener)
    components = load_components(resolve_base_folder(ctx), alg.model.layout, pick_device(), torch.float32,
                                 with_unet=False)
    resolution, batch = alg.sail.sampler.resolution, alg.sail.sampler.batch_size
    generator = torch.Generator().manual_seed(derive_seed(alg.sail.seed, "seed-encode"))
    progress = Progress("mixup", alg.seed_pairs.limit or 0)
    files: list[str] = []
    prompts: list[str] = []
    sources: list[str] = []
    pending: list = []  # (winner, loser) latents of the chunk being filled
    latent_shape: list[int] = []
    for chunk in _batched(pairs, batch):
        latents = _encode_pairs(components, chunk, resolution, generator)
        latent_shape = list(latents.shape[1:])
        pending.extend(zip(latents[0::2], latents[1::2], strict=True))
        prompts.extend(p.prompt for p in chunk)
        sources.extend(p.source for p in chunk)
        while len(pending) >= art.SEED_CHUNK:
            files.append(_flush_seed_chunk(ctx, len(files), pending[: art.SEED_CHUNK]))
            pending = pending[art.SEED_CHUNK :]
        progress.update(len(chunk))
    progress.close()
    if not seed_count():
        raise DataError("no usable seed pairs (the file is empty or every pair is a tie)",
                        source=alg.seed_pairs.uri, hint="check seedPairs.uri")
    if pending:
        files.append(_flush_seed_chunk(ctx, len(files), pending))
    heldout, train = build_seed_split(prompts, seed_count(), alg.sail.validation, alg.sail.seed)
    files.append(ctx.put_bytes(art.SEED_INDEX, art.dump_json({
        "count": len(prompts), "chunk_size": art.SEED_CHUNK, "prompts": prompts, "latent_shape": latent_shape,
        "resolution": resolution, "sources": sources, **({"heldout": heldout} if heldout else {}),
    })))
    plan = build_mixup_plan([], len(train), alg.sail.alpha, None, derive_seed(alg.sail.seed, 0, "mixup"))
    files.append(ctx.put_bytes(art.MIXTURE, art.dump_json(map_seed_entries(plan.to_dict(), train))))
    metrics = {"seed_pairs": float(len(train)), "mixture_size": float(plan.size), "self_pairs": 0.0,
               "heldout_pairs": float(len(heldout))}
    log.info("encoded %d seed pairs at %d px; mixture of %d seed pairs", len(prompts), resolution, plan.size)
    return ctx.commit(files, metrics, {"pairs": plan.size})


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_pairs(components, chunk, resolution: int, generator):
    """Latents [2B, ...] ordered winner, loser, winner, loser..."""
    import torch

    from sail_trainer.data.images import decode_image, image_to_tensor
    from sail_trainer.models.sampling import encode_images

    pixels = [image_to_tensor(decode_image(img, source=f"{p.source} ({side})"), resolution)
              for p in chunk for side, img in (("winner", p.winner), ("loser", p.loser))]
    return encode_images(components, torch.stack(pixels), generator)


def _flush_seed_chunk(ctx: PhaseContext, chunk: int, pairs: list) -> str:
    import torch

    return ctx.put_bytes(art.seed_chunk_name(chunk), art.dump_tensors(
        {"winner": torch.stack([w for w, _ in pairs]), "loser": torch.stack([lo for _, lo in pairs])}))


def _build_round_mixture(ctx: PhaseContext) -> PhaseManifest:
    from sail_trainer.math.mixup import build_mixup_plan

    alg, layout, store = ctx.algorithm, ctx.layout, ctx.store
    if alg.sail.replay_self_pairs:
        log.warning("sail.replaySelfPairs is not implemented yet: using this round's self pairs only")
    train = training_indices(art.read_seed_index(store, layout))  # held-out pairs are never drawn
    num_seed = len(train)
    shards = find_committed_shards(store, layout, ctx.iteration, Phase.ANNOTATE)
    self_pairs: list[dict] = []
    for folder in shards.folders:
        self_pairs.extend(json.loads(read_committed_bytes(store, folder, art.ANNOTATIONS))["pairs"])
    self_pairs.sort(key=lambda p: p["prompt_index"])
    s = alg.sail
    plan = build_mixup_plan(
        [p["margin"] for p in self_pairs], num_seed, s.alpha, s.mixture_size,
        derive_seed(s.seed, ctx.iteration, "mixup"), margin_threshold=s.margin_threshold,
        self_pair_cap=s.self_pair_cap,
    )
    files = [
        ctx.put_bytes(art.SELF_PAIRS, art.dump_json({"pairs": self_pairs})),
        ctx.put_bytes(art.MIXTURE, art.dump_json(map_seed_entries(plan.to_dict(), train))),
    ]
    margins = [p["margin"] for p in self_pairs]
    metrics = {
        "mixture_size": float(plan.size), "self_pairs": float(len(plan.self_ranked)),  # kept: after threshold and cap
        "self_annotated": float(len(self_pairs)),
        "self_drawn": float(plan.num_self), "seed_drawn": float(plan.num_seed),
        "mean_margin": float(sum(margins) / len(margins)) if margins else 0.0,
    }
    log.info("mixture of %d pairs: %d self (of %d), %d seed", plan.size, plan.num_self, len(self_pairs),
             plan.num_seed)
    return ctx.commit(files, metrics, {"pairs": plan.size, "annotate_shards": shards.shards})
