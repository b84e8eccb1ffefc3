"""evaluate (every iteration, step 0 too, only with spec.evaluation): the base, theta_{i-1} and
theta_i sample the same evaluation (prompt, seed) pairs; every scorer scores every image.

Samples: evaluation sample k takes prompt k mod P of the evaluation prompts (spec.evaluation.prompts,
else the held-out pairs' distinct captions in their committed order) and starts from a generator
seeded by hash(evaluation seed, k): the same pairs in every round and for every model, so scores of
two models on sample k are a paired comparison. Shard s of S takes samples s, s+S, s+2S... (sizes
differ by at most one, so the operator's mean over shards is the run's mean up to that rounding).

Resumable: each model's scores are committed on their own in `models/<role>/` (role: base, previous,
current; at step 0 previous is the base and is not sampled twice); a later attempt reuses them, and
a round reuses the base's and theta_{i-1}'s scores from the previous iteration's committed evaluate
(same samples, same models), so it samples only theta_i.
Outputs: `scores.json` (one row per sample: prompt, seed and every scorer's score for each model) and
`summary.json`, whose numbers are the phase's metrics: `eval_<scorer>_mean_<role>` and
`eval_<scorer>_win_vs_base` / `_win_vs_previous` (the share of samples on which theta_i scores
higher than that model on the same prompt and seed; ties count half).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.storage import AlreadyCommitted
from sail_trainer.errors import BadDataError, BadSpecError
from sail_trainer.logs import Progress
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.generate_phase import distinct_prompts, image_chunks
from sail_trainer.phases.models_of_run import resolve_iteration_folder
from sail_trainer.plan import derive_seed

log = logging.getLogger(__name__)
ROLES = ("base", "previous", "current")
SCORES_FILE = "scores.json"


@dataclass(frozen=True)
class EvalSample:
    index: int
    prompt: str
    seed: int


def plan_samples(prompts: list[str], count: int, seed: int, shard: int, shards: int) -> list[EvalSample]:
    """Shard `shard`'s samples (see the module docstring); the same for any model and round."""
    return [EvalSample(k, prompts[k % len(prompts)], derive_seed(seed, "evaluate", k))
            for k in range(shard, count, shards)]


def role_iterations(iteration: int) -> dict[str, int]:
    """The iteration whose model each role is (-1: the base)."""
    return {"base": -1, "previous": iteration - 1, "current": iteration}


def compute_win_rate(current: np.ndarray, other: np.ndarray) -> float:
    """Share of samples where `current` scores above `other`; ties count half."""
    if not len(current):
        return 0.5
    return float(np.mean((current > other) + 0.5 * (current == other)))


def summarize_scores(scores: dict[str, dict[str, np.ndarray]], scorer_names: list[str]) -> dict[str, float]:
    """The phase metrics from `scores[role][scorer]` (arrays over the same samples)."""
    metrics: dict[str, float] = {}
    for name in scorer_names:
        for role in ROLES:
            metrics[f"eval_{name}_mean_{role}"] = float(np.mean(scores[role][name])) if len(scores[role][name]) else 0.0
        current = scores["current"][name]
        metrics[f"eval_{name}_win_vs_base"] = compute_win_rate(current, scores["base"][name])
        metrics[f"eval_{name}_win_vs_previous"] = compute_win_rate(current, scores["previous"][name])
    return metrics


def read_evaluation_prompts(ctx: PhaseContext) -> list[str]:
    """spec.evaluation.prompts, else the held-out pairs' captions; BadDataError/BadSpecError when empty."""
    evaluation = ctx.algorithm.evaluation
    assert evaluation is not None
    if evaluation.prompts is not None:
        from functools import partial

        from sail_api.storage import open_store
        from sail_trainer.data.prompts import read_prompts

        spec, storage = evaluation.prompts, ctx.resolved.storage
        opener = partial(open_store, connection=storage)
        prompts = distinct_prompts(read_prompts(spec.uri, spec.format, spec.column, open_store=opener))
        if not prompts:
            raise BadDataError(f"spec.evaluation.prompts.uri {spec.uri}: holds no prompt")
        return prompts
    from sail_trainer.data.heldout_split import heldout_indices

    index = art.read_seed_index(ctx.store, ctx.layout)
    prompts = distinct_prompts([index["prompts"][i] for i in heldout_indices(index)])
    if not prompts:
        raise BadSpecError("spec.evaluation.prompts: unset and the run holds out no pairs (sail.validation), so "
                           "there is nothing to evaluate on; give spec.evaluation.prompts.uri")
    return prompts


def load_scorers(ctx: PhaseContext) -> list[tuple[str, str, Any]]:
    """(name, field, scorer) of every spec.evaluation scorer, loaded before any sampling (fail fast)."""
    from sail_trainer.scoring import load_scorer, scorer_field

    evaluation, storage = ctx.algorithm.evaluation, ctx.resolved.storage
    assert evaluation is not None
    return [(spec.name, scorer_field(k, spec.name),
             load_scorer(spec, k, cache_dir=ctx.cache_dir, connection=storage))
            for k, spec in enumerate(evaluation.scorers)]


def sample_images(ctx: PhaseContext, iteration: int, samples: list[EvalSample], progress: Progress) -> Iterator[list[Any]]:
    """PIL images of `samples` from the model of `iteration` (-1: base), with the run's sampler, one
    forward batch (`sampler.batchSize`) at a time, so a shard never holds all its images at once."""
    import torch
    from PIL import Image

    from sail_trainer.models.components import load_components, pick_device, resolve_dtype
    from sail_trainer.models.sampling import build_scheduler, decode_latents, sample_latents
    from sail_trainer.models.text import TextEncoder

    device, sampler = pick_device(), ctx.algorithm.sail.sampler
    components = load_components(resolve_iteration_folder(ctx, iteration), ctx.algorithm.model.layout, device,
                                 resolve_dtype(ctx.precision, device))
    text = TextEncoder(components)
    for lo, hi in image_chunks(len(samples), sampler.batch_size):
        batch = samples[lo:hi]
        latents = sample_latents(
            components.unet, components, build_scheduler(sampler.kind, components.scheduler_config),
            text.encode([s.prompt for s in batch]), text.unconditional(len(batch)),
            [torch.Generator().manual_seed(s.seed) for s in batch], steps=sampler.steps,
            guidance_scale=sampler.guidance_scale, resolution=sampler.resolution,
        )
        progress.update(len(batch))
        yield [Image.fromarray(image) for image in decode_latents(components, latents)]


def _role_folder(ctx: PhaseContext, role: str) -> str:
    return join(ctx.output_dir, "models", role)


def reuse_earlier_scores(ctx: PhaseContext, role: str, iteration: int, names: list[str]) -> dict[str, np.ndarray] | None:
    """The same model's scores on the same samples from the previous iteration's evaluate, if committed there.

    The base is scored alike in every iteration, and theta_{i-1} was iteration i-1's current model: the
    samples depend only on the evaluation seed, prompts and shard layout, all fixed for the run. So a
    round samples one model, not three, once the previous evaluate is committed (same shard count).
    """
    from sail_trainer.storage import read_committed_bytes

    earlier = {"base": "base", "previous": "current"}.get(role)
    if earlier is None or ctx.iteration == 0:
        return None
    folder = join(ctx.layout.output_dir(ctx.iteration - 1, ctx.phase, ctx.shard, ctx.shards), "models", earlier)
    if not ctx.store.is_committed(folder):
        return None
    saved = json.loads(read_committed_bytes(ctx.store, folder, SCORES_FILE))
    if saved.get("iteration") != iteration or set(saved["scores"]) != set(names):
        return None
    log.info("%s: reusing the scores of iteration %d's evaluate (same model, samples and scorers)", role,
             ctx.iteration - 1)
    return {name: np.asarray(saved["scores"][name], dtype=np.float64) for name in names}


def score_role(ctx: PhaseContext, role: str, iteration: int, samples: list[EvalSample],
               scorers: list[tuple[str, str, Any]], progress: Progress) -> dict[str, np.ndarray]:
    """Every scorer's scores of the role's model on `samples`: committed ones reused, else sampled and committed."""
    from sail_trainer.scoring import score_images
    from sail_trainer.storage import read_committed_bytes

    folder = _role_folder(ctx, role)
    names = [name for name, _, _ in scorers]
    if ctx.store.is_committed(folder):
        progress.update(len(samples))
        saved = json.loads(read_committed_bytes(ctx.store, folder, SCORES_FILE))
        return {name: np.asarray(saved["scores"][name], dtype=np.float64) for name in names}
    scores = reuse_earlier_scores(ctx, role, iteration, names)
    if scores is not None:
        progress.update(len(samples))
    else:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        done = 0
        for images in sample_images(ctx, iteration, samples, progress):
            captions = [s.prompt for s in samples[done:done + len(images)]]
            for name, field, scorer in scorers:
                parts[name].append(score_images(scorer, field, images, captions))
            done += len(images)
        scores = {name: np.concatenate(parts[name]) if parts[name] else np.zeros(0) for name in names}
    name = ctx.attempt_path(SCORES_FILE)
    ctx.store.write_bytes(join(folder, name), art.dump_json(
        {"role": role, "iteration": iteration, "scores": {k: v.tolist() for k, v in scores.items()}}))
    try:
        ctx.store.commit(folder, [name], metadata={"attempt": ctx.attempt, "model_iteration": iteration},
                         run=ctx.resolved.name, iteration=ctx.iteration, phase=ctx.phase.value,
                         shard=ctx.shard_label, spec_digest=ctx.resolved.digest())
    except AlreadyCommitted:
        log.info("the %s scores were committed by a concurrent attempt; keeping them (same samples)", role)
    return scores


def run(ctx: PhaseContext) -> PhaseManifest:
    evaluation = ctx.algorithm.evaluation
    if evaluation is None:
        raise BadSpecError("spec.evaluation is unset: this run has no evaluate phase")
    scorers = load_scorers(ctx)
    prompts = read_evaluation_prompts(ctx)
    samples = plan_samples(prompts, evaluation.count, evaluation.seed, ctx.shard or 0, ctx.shards or 1)
    roles = role_iterations(ctx.iteration)
    sampled = {role: it for role, it in roles.items() if role == "base" or it != roles["base"]}
    progress = Progress("evaluate", len(samples) * len(sampled))
    started = time.monotonic()
    scores = {role: score_role(ctx, role, it, samples, scorers, progress) for role, it in sampled.items()}
    scores.setdefault("previous", scores["base"])  # step 0: theta_{-1} is the base
    progress.close()
    names = [name for name, _, _ in scorers]
    metrics = summarize_scores(scores, names)
    rows = [{"index": s.index, "prompt": s.prompt, "seed": s.seed,
             **{role: {n: float(scores[role][n][j]) for n in names} for role in ROLES}}
            for j, s in enumerate(samples)]
    files = [f"models/{role}/{entry.path}" for role in sampled  # each role's commit, as generate lists its parts
             for entry in ctx.store.read_manifest(_role_folder(ctx, role)).files]
    files += [ctx.put_bytes(SCORES_FILE, art.dump_json({"samples": rows, "roles": roles})),
              ctx.put_bytes("summary.json", art.dump_json({"metrics": metrics, "samples": len(samples),
                                                            "roles": roles, "scorers": names}))]
    metrics["eval_samples"] = float(len(samples))
    log.info("evaluated %d samples x %d models with %d scorer(s) in %.1fs", len(samples), len(sampled),
             len(scorers), time.monotonic() - started)
    return ctx.commit(files, metrics, {"scorers": names, "roles": roles})
