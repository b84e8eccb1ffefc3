"""mixup: iteration 0 encodes the human seed pairs; a round builds the ranked preference mixture.

Iteration 0 (docs/method.md "The loop", step 0): read the seed pairs, VAE-encode winner and
loser once at the sampler resolution into latent chunks, and plan a seed-only mixture (one
shuffled pass over the seed set). Round i >= 1: read every committed annotate shard and the
iteration-0 seed index, and write the mixture as an index (`mixture.json` +
`self-pairs.json`), never copies of latents. `replaySelfPairs` is not implemented yet (logged).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from functools import partial

import torch

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.storage import AlreadyCommitted, ChecksumMismatch, open_store
from sail_trainer.data.errors import DataError
from sail_trainer.data.heldout_split import map_seed_entries, training_indices
from sail_trainer.data.images import decode_image, image_to_tensor
from sail_trainer.data.seed_pairs import iter_seed_pairs
from sail_trainer.logs import Progress
from sail_trainer.math.mixup import build_mixup_plan
from sail_trainer.models.components import load_components, pick_device
from sail_trainer.models.sampling import encode_images
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
    alg, storage = ctx.algorithm, ctx.resolved.storage
    opener = partial(open_store, connection=storage)
    pairs = iter_seed_pairs(alg.seed_pairs.uri, alg.seed_pairs.format, alg.seed_pairs.limit, open_store=opener)
    pairs, seed_count = chain_heldout_file(pairs, alg.sail.validation, opener)
    components = load_components(resolve_base_folder(ctx), alg.model.layout, pick_device(), torch.float32,
                                 with_unet=False)
    resolution = alg.sail.sampler.resolution
    latent_shape = list(components.latent_shape(resolution))
    progress = Progress("mixup", alg.seed_pairs.limit or 0)
    prompts: list[str] = []
    sources: list[str] = []
    part_size, parts, reused = art.SEED_CHUNK, 0, 0
    while True:
        # The stream is cut into parts of `part_size` pairs; a part committed by an earlier attempt
        # is verified and its pairs skipped without decoding their images.
        part_pairs = itertools.islice(pairs, part_size)
        folder = join(ctx.output_dir, art.seed_part_folder(parts))
        if ctx.store.is_committed(folder) and _verify_part(ctx, folder):
            kept = _skip_part(ctx, folder, part_pairs, prompts, sources)
            reused += 1
        else:
            kept = _encode_part(ctx, components, parts, part_pairs, prompts, sources)
        if not kept:
            break
        parts += 1
        progress.update(kept)
        if kept < part_size:
            break
    progress.close()
    if not seed_count():
        raise DataError("no usable seed pairs (the file is empty or every pair is a tie)",
                        source=alg.seed_pairs.uri, hint="check seedPairs.uri")
    if reused:
        log.info("reused %d seed part(s) committed by an earlier attempt", reused)
    files = art.committed_part_files(ctx.store, ctx.output_dir, parts, art.seed_part_folder)
    heldout, train = build_seed_split(prompts, seed_count(), alg.sail.validation, alg.sail.seed)
    files.append(ctx.put_bytes(art.SEED_INDEX, art.dump_json({
        "count": len(prompts), "chunk_size": part_size, "parts": parts, "prompts": prompts,
        "latent_shape": latent_shape, "resolution": resolution, "sources": sources,
        **({"heldout": heldout} if heldout else {}),
    })))
    plan = build_mixup_plan([], len(train), alg.sail.alpha, None, derive_seed(alg.sail.seed, 0, "mixup"))
    files.append(ctx.put_bytes(art.MIXTURE, art.dump_json(map_seed_entries(plan.to_dict(), train))))
    metrics = {"seed_pairs": float(len(train)), "mixture_size": float(plan.size), "self_pairs": 0.0,
               "heldout_pairs": float(len(heldout))}
    log.info("encoded %d seed pairs at %d px in %d part(s); mixture of %d seed pairs", len(prompts), resolution,
             parts, plan.size)
    return ctx.commit(files, metrics, {"pairs": plan.size, "parts": parts, "reused_parts": reused})


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _part_digest(prompts: list[str], sources: list[str]) -> str:
    """What a part was encoded from (prompts and source names, in order): a resumed run reuses a
    part only for the same pairs."""
    return hashlib.sha256(json.dumps([prompts, sources]).encode()).hexdigest()


def _encode_part(ctx: PhaseContext, components, part: int, part_pairs, prompts: list[str], sources: list[str]) -> int:
    """VAE-encode one part's pairs (batch by batch, images never held beyond a batch), write its
    latents and commit its folder; return the number of pairs (0 at the end of the stream)."""
    # One generator per part, seeded by the part number: a part encoded by a resumed run is
    # byte-identical to the same part of an uninterrupted run.
    generator = torch.Generator().manual_seed(derive_seed(ctx.algorithm.sail.seed, "seed-encode", part))
    resolution, batch = ctx.algorithm.sail.sampler.resolution, ctx.algorithm.sail.sampler.batch_size
    winners, losers, part_prompts, part_sources = [], [], [], []
    for chunk in _batched(part_pairs, batch):
        latents = _encode_pairs(components, chunk, resolution, generator)
        winners.append(latents[0::2])
        losers.append(latents[1::2])
        part_prompts.extend(p.prompt for p in chunk)
        part_sources.extend(p.source for p in chunk)
    if not part_prompts:
        return 0
    folder = join(ctx.output_dir, art.seed_part_folder(part))
    # Under this attempt's prefix: a concurrent writer of the same part never overwrites a committed file.
    name = ctx.attempt_path(art.SEED_PART_FILE)
    ctx.store.write_bytes(join(folder, name), art.dump_tensors({"winner": torch.cat(winners), "loser": torch.cat(losers)}))
    try:
        ctx.store.commit(folder, [name], metadata={"attempt": ctx.attempt, "pairs": len(part_prompts),
                                                   "pairs_sha256": _part_digest(part_prompts, part_sources)},
                         run=ctx.resolved.name, iteration=ctx.iteration, phase=ctx.phase.value,
                         spec_digest=ctx.resolved.digest())
    except AlreadyCommitted:
        log.info("seed part %d was committed by a concurrent attempt; keeping it (same pairs, same latents)", part)
    prompts.extend(part_prompts)
    sources.extend(part_sources)
    return len(part_prompts)


def _verify_part(ctx: PhaseContext, folder: str) -> bool:
    """A committed part is reused only when its files match their recorded size and sha256 and it
    was written for this spec; otherwise it is deleted and encoded again."""
    try:
        manifest = ctx.store.read_manifest(folder, verify=True)
        if manifest.spec_digest == ctx.resolved.digest():
            return True
        reason = f"spec digest {manifest.spec_digest} differs from this run's {ctx.resolved.digest()}"
    except ChecksumMismatch as exc:  # a transient storage error propagates: the part may be fine
        reason = str(exc)
    log.warning("seed part %s cannot be reused (%s); encoding it again", ctx.store.uri(folder), reason)
    ctx.store.delete_prefix(folder)
    return False


def _skip_part(ctx: PhaseContext, folder: str, part_pairs, prompts: list[str], sources: list[str]) -> int:
    """Read past a committed part's pairs (their images are not decoded), check they are the pairs
    it was encoded from, and record their prompts and sources."""
    part_prompts, part_sources = [], []
    for pair in part_pairs:
        part_prompts.append(pair.prompt)
        part_sources.append(pair.source)
    meta = ctx.store.read_manifest(folder).metadata
    if len(part_prompts) != meta.get("pairs") or _part_digest(part_prompts, part_sources) != meta.get("pairs_sha256"):
        raise DataError(
            f"the seed pairs of committed part {ctx.store.uri(folder)} changed since it was encoded "
            f"({meta.get('pairs')} pairs then, {len(part_prompts)} now)",
            source=ctx.algorithm.seed_pairs.uri,
            hint=f"restore the seed file, or delete {ctx.store.uri(ctx.output_dir)} to encode every pair again")
    prompts.extend(part_prompts)
    sources.extend(part_sources)
    return len(part_prompts)


def _encode_pairs(components, chunk, resolution: int, generator):
    """Latents [2B, ...] ordered winner, loser, winner, loser..."""
    pixels = [image_to_tensor(decode_image(img, source=f"{p.source} ({side})"), resolution)
              for p in chunk for side, img in (("winner", p.winner), ("loser", p.loser))]
    return encode_images(components, torch.stack(pixels), generator)


def _build_round_mixture(ctx: PhaseContext) -> PhaseManifest:
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
