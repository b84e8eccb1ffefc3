"""annotate (round i >= 1): the implicit reward of each candidate, best/worst pair per prompt.

For each prompt, M (t, eps) draws are made once from a generator seeded by
hash(run seed, iteration, prompt index) and shared by its N candidates (docs/method.md,
"Implicit reward"), their timesteps within `sail.rewardTimesteps` (default: all); the errors of the current model and of the judge reference on those
draws give `R = -(beta/2) mean_m (SE_theta - SE_ref)`. Conditional prediction with the real
caption, no CFG. Both UNets run in `sail.annotationPrecision` (fp32 by default, TF32 off: theta_{i-1}
differs from the judge by updates mostly below bf16's rounding step, and the difference is
multiplied by beta/2; see docs/trainer.md for the measurement). Shard k of S takes the prompts
generate's shard k of S made (the same groups of `batchSize // N` prompts,
`plan.select_shard_positions`), so with as many annotate as generate shards it reads only its own
generate shard's latent parts; work is batched
within one prompt only, so sharding does not change any number. Latents are referenced
(generate shard folder + row), not copied.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

# torch and the model code at module level: the phase runner imports this module only when an
# annotate phase runs, so `sail-trainer --help` stays light (tests/integration/test_trainer_cli_light.py).
import torch

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.storage import AlreadyCommitted
from sail_trainer.errors import MissingInputError
from sail_trainer.logs import Progress
from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.math.reward import draw_shared_noise, implicit_reward
from sail_trainer.math.selection import select_best_worst
from sail_trainer.models.acceleration import accelerate_unet
from sail_trainer.models.components import load_components, load_unet, pick_device, resolve_dtype
from sail_trainer.models.sampling import build_scheduler, predict_noise
from sail_trainer.models.text import TextEncoder
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.generate_phase import read_prompt_pool, round_prompt_indices
from sail_trainer.phases.heldout import measure_judge_trust
from sail_trainer.phases.models_of_run import resolve_iteration_folder, resolve_judge_folder
from sail_trainer.plan import derive_seed, select_shard_positions
from sail_trainer.storage import find_committed_shards, read_committed_bytes

log = logging.getLogger(__name__)
ANNOTATE_PART = 256  # prompts per committed annotate part (the unit a re-run resumes from)


def compute_errors(unet, components, x0, timesteps, noise, text, resolution: int, alphas_cumprod, batch: int):
    """`SE(x0_b; t_b, eps_b)` for each row b, evaluated in chunks of `batch` rows."""
    out = []
    with torch.no_grad():
        for start in range(0, x0.shape[0], batch):
            sl = slice(start, start + batch)
            x_t = add_noise(x0[sl], noise[sl], timesteps[sl], alphas_cumprod)
            chunk_text = text.repeat(x_t.shape[0])
            pred = _predict(unet, components, x_t, timesteps[sl], chunk_text, resolution)
            out.append(denoising_error(pred, noise[sl]))
    return torch.cat(out)


def compute_candidate_errors(unet, judge, components, x, text, generator, m: int, t_range: tuple[int, int],
                             resolution: int, alphas_cumprod, batch: int):
    """Errors `[N, M]` of the model and of the judge reference on one prompt's N candidates `x`,
    over M `(t, eps)` draws from `generator` shared by every candidate (docs/method.md)."""
    n, device = x.shape[0], x.device
    t, eps = draw_shared_noise(generator, m, tuple(x.shape[1:]), components.num_train_timesteps, t_range)
    x0, noise, ts = x.repeat_interleave(m, 0), eps.to(device).repeat(n, 1, 1, 1), t.to(device).repeat(n)
    args = (components, x0, ts, noise, text, resolution, alphas_cumprod, batch)
    return (compute_errors(unet, *args).view(n, m).cpu(), compute_errors(judge, *args).view(n, m).cpu())


def resolve_annotation_dtype(precision: str, device) -> object:
    """The dtype of annotate's UNets; fp32 means fp32 (TF32 would round the weights to 10 bits)."""
    dtype = resolve_dtype(precision, device)
    if dtype == torch.float32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return dtype


def _predict(unet, components, x_t, timesteps, text, resolution):
    return predict_noise(unet, components, x_t, timesteps, text, resolution)


def _index_generated(ctx: PhaseContext) -> dict[int, tuple[art.GenerateShard, int]]:
    shards = find_committed_shards(ctx.store, ctx.layout, ctx.iteration, Phase.GENERATE)
    by_prompt: dict[int, tuple[art.GenerateShard, int]] = {}
    for folder in shards.folders:
        shard = art.read_generate_shard(ctx.store, folder)
        for row, j in enumerate(shard.prompt_indices):
            by_prompt[j] = (shard, row)
    return by_prompt


@dataclass(frozen=True)
class _Scorer:
    """What scoring one prompt's candidates needs: both UNets and the fixed settings of the phase."""

    components: Any
    judge: Any
    text: Any
    alphas: Any
    t_range: tuple[int, int]
    resolution: int
    batch: int
    draws: int


def _shard_prompts(ctx: PhaseContext,
                   round_indices: list[int]) -> tuple[list[int], dict[int, tuple[art.GenerateShard, int]]]:
    """This shard's positions in the round and where generate put each of their prompts."""
    s = ctx.algorithm.sail
    # generate's groups: prompt by prompt (group 1), each of S annotate shards read a row from
    # every generate part file, so each downloaded the whole round's latents (bench/scale.py).
    group = max(1, s.sampler.batch_size // s.candidates_per_prompt)
    positions = select_shard_positions(len(round_indices), group, ctx.shard or 0, ctx.shards or 1)
    generated = _index_generated(ctx)
    missing = [round_indices[p] for p in positions if round_indices[p] not in generated]
    if missing:
        raise MissingInputError(f"generate outputs of iteration {ctx.iteration} lack prompts {missing[:5]}")
    return positions, generated


def _load_scorer(ctx: PhaseContext) -> _Scorer:
    """theta_{i-1} and the judge reference, both in `sail.annotationPrecision`, accelerated."""
    s = ctx.algorithm.sail
    device = pick_device()
    dtype = resolve_annotation_dtype(s.annotation_precision, device)
    components = load_components(resolve_iteration_folder(ctx, ctx.iteration - 1), ctx.algorithm.model.layout,
                                 device, dtype)
    judge = load_unet(resolve_judge_folder(ctx), device, dtype)
    for unet in (components.unet, judge):
        accelerate_unet(unet, ctx.resolved.performance)
    return _Scorer(components=components, judge=judge, text=TextEncoder(components),
                   alphas=build_scheduler("ddpm", components.scheduler_config).alphas_cumprod,
                   t_range=s.reward_timesteps.bounds(components.num_train_timesteps),
                   resolution=s.sampler.resolution, batch=s.sampler.batch_size, draws=s.reward_draws)


def _annotate_part(ctx: PhaseContext, scorer: _Scorer, part: int, prompts: list[tuple[int, str]],
                   generated: dict[int, tuple[art.GenerateShard, int]], latents: art.LatentFiles,
                   progress: Progress) -> None:
    """Score the candidates of one part's prompts (pool index, caption) and commit the part."""
    s = ctx.algorithm.sail
    device = scorer.components.device
    rewards, model_errs, ref_errs, records = [], [], [], []
    for j, prompt in prompts:
        shard, row = generated[j]
        x = shard.ref(row).fetch(latents).to(device)  # [N, C, h, w]
        gen = torch.Generator().manual_seed(derive_seed(s.seed, ctx.iteration, j, "annotate"))
        model_err, ref_err = compute_candidate_errors(
            scorer.components.unet, scorer.judge, scorer.components, x, scorer.text.encode([prompt]), gen,
            scorer.draws, scorer.t_range, scorer.resolution, scorer.alphas, scorer.batch)
        rewards.append(implicit_reward(model_err, ref_err, s.beta))
        model_errs.append(model_err)
        ref_errs.append(ref_err)
        records.append({"prompt_index": j, "prompt": prompt, "row": row,
                        "generate": art.relative_folder(ctx.layout, shard.folder)})
        progress.update()
    _commit_part(ctx, part, records, torch.stack(rewards), torch.stack(model_errs), torch.stack(ref_errs))


def _commit_phase(ctx: PhaseContext, parts: int, reused: int, trust: dict, started: float) -> PhaseManifest:
    """Gather the committed parts into the shard's annotations and tensors, then commit the phase."""
    s = ctx.algorithm.sail
    m = s.reward_draws
    records, tensors = _gather_parts(ctx, parts, s.candidates_per_prompt, m)
    reward_t = tensors["rewards"]
    files = art.committed_part_files(ctx.store, ctx.output_dir, parts)
    files += [
        ctx.put_bytes(art.ANNOTATIONS, art.dump_json({"pairs": records, "beta": s.beta, "draws": m})),
        ctx.put_bytes(art.ANNOTATION_TENSORS, art.dump_tensors(tensors)),
    ]
    margins = [r["margin"] for r in records]
    metrics = {
        "prompts": float(len(records)),
        "mean_margin": sum(margins) / len(margins) if margins else 0.0,
        "reward_spread": float(reward_t.std(dim=1).mean()) if len(records) else 0.0,
        "prompts_per_second": len(records) / max(time.monotonic() - started, 1e-9),
        **trust,
    }
    log.info("annotated %d prompts; mean margin %.4g", len(records), metrics["mean_margin"])
    return ctx.commit(files, metrics, {"draws": m, "parts": parts, "reused_parts": reused})


def run(ctx: PhaseContext) -> PhaseManifest:
    pool = read_prompt_pool(ctx)
    round_indices = round_prompt_indices(ctx, pool)
    positions, generated = _shard_prompts(ctx, round_indices)
    scorer = _load_scorer(ctx)
    latents = art.LatentFiles(ctx.store, ctx.work_dir)
    trust = measure_judge_trust(ctx, scorer.components.unet, scorer.judge, scorer.components)  # before its labels are used
    progress = Progress("annotate", len(positions))
    started = time.monotonic()
    reused = 0
    parts = range(0, len(positions), ANNOTATE_PART)
    for part, first in enumerate(parts):
        part_positions = positions[first : first + ANNOTATE_PART]
        if ctx.store.is_committed(join(ctx.output_dir, art.gen_part_folder(part))):
            reused += 1  # committed by an earlier attempt of this shard: same draws, same rewards
            progress.update(len(part_positions))
            continue
        prompts = [(round_indices[p], pool[round_indices[p]]) for p in part_positions]
        _annotate_part(ctx, scorer, part, prompts, generated, latents, progress)
    progress.close()
    if reused:
        log.info("reused %d annotate part(s) committed by an earlier attempt", reused)
    return _commit_phase(ctx, len(parts), reused, trust, started)


def _commit_part(ctx: PhaseContext, part: int, records: list[dict], rewards, model_err, ref_err) -> None:
    """Select best/worst for the part's prompts, write its two files and commit the part folder."""
    selection = select_best_worst(rewards)
    for i, record in enumerate(records):
        record.update(winner=int(selection.winner_idx[i]), loser=int(selection.loser_idx[i]),
                      margin=float(selection.margin[i]), rewards=[float(r) for r in rewards[i]])
    folder = join(ctx.output_dir, art.gen_part_folder(part))
    # Under this attempt's prefix, so a concurrent writer of the same part never overwrites
    # the committed files (rewards need not be bit-identical across devices).
    names = [ctx.attempt_path(art.ANNOTATIONS), ctx.attempt_path(art.ANNOTATION_TENSORS)]
    ctx.store.write_bytes(join(folder, names[0]), art.dump_json({"pairs": records}))
    ctx.store.write_bytes(join(folder, names[1]), art.dump_tensors({
        "rewards": rewards, "model_err": model_err, "ref_err": ref_err,
        "prompt_index": torch.tensor([r["prompt_index"] for r in records], dtype=torch.int64)}))
    try:
        ctx.store.commit(folder, names, metadata={"attempt": ctx.attempt}, run=ctx.resolved.name,
                         iteration=ctx.iteration, phase=ctx.phase.value, shard=ctx.shard_label,
                         spec_digest=ctx.resolved.digest())
    except AlreadyCommitted:
        log.info("annotate part %d was committed by a concurrent attempt; keeping it", part)


def _gather_parts(ctx: PhaseContext, parts: int, n: int, m: int) -> tuple[list[dict], dict]:
    """All committed parts of this shard, in order: records and concatenated tensors."""
    records: list[dict] = []
    chunks: dict[str, list] = {"rewards": [], "model_err": [], "ref_err": [], "prompt_index": []}
    for part in range(parts):
        folder = join(ctx.output_dir, art.gen_part_folder(part))
        records.extend(json.loads(read_committed_bytes(ctx.store, folder, art.ANNOTATIONS))["pairs"])
        tensors = art.load_tensors(read_committed_bytes(ctx.store, folder, art.ANNOTATION_TENSORS))
        for key in chunks:
            chunks[key].append(tensors[key])
    empty = {"rewards": (0, n), "model_err": (0, n, m), "ref_err": (0, n, m), "prompt_index": (0,)}
    out = {k: torch.cat(v) if v else torch.zeros(empty[k], dtype=torch.int64 if k == "prompt_index" else None)
           for k, v in chunks.items()}
    return records, out
