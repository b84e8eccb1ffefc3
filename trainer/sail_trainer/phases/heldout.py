"""Held-out human pairs: the split hook of mixup, the held-out accuracy of train, the judge trust of annotate.

- `build_seed_split`: iteration-0 mixup decides which encoded pairs are held out (committed in
  the seed index; `sail_trainer.data.heldout_split` holds the rules).
- `measure_heldout` (after every train phase): the implicit-reward accuracy and margin of
  theta_i on the held-out pairs, against its training reference (theta_{i-1}; the base at
  step 0) and against the base. `heldout_accuracy` is the share of held-out human pairs on
  which `R(winner) > R(loser)`; 0.5 is chance.
- `measure_judge_trust` (annotate of round i, shard 0): the same accuracy for the round's
  judge exactly as annotate uses it (theta_{i-1} against `sail.judgeReference`, the same M
  draws, timestep range, beta, conditional prediction with the real caption): how often the
  judge agrees with the held-out human labels before its self-labels are trained on.

Draws: held-out pair j gets its M `(t, eps)` draws from hash(run seed, "heldout", j), the
same in every phase and round (choice), so numbers of different rounds differ only through
the models, and the judge trust of round i with the base as judge reference equals the
`heldout_accuracy_vs_base` of iteration i-1 (a check the tests use). Both images of a pair
share the draws (N = 2 candidates of one prompt, as in annotate).

What it does not do: score samples with external scorers (an evaluate phase's job).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from sail_trainer.data.heldout_split import HeldOutSplitError, heldout_indices, select_heldout_pairs
from sail_trainer.data.seed_pairs import iter_seed_pairs
from sail_trainer.errors import BadSpecError
from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.math.reward import draw_shared_noise
from sail_trainer.models.components import load_unet
from sail_trainer.models.sampling import build_scheduler, predict_noise
from sail_trainer.models.text import TextEncoder
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.models_of_run import resolve_base_folder
from sail_trainer.plan import derive_seed

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- split (mixup hook)


def build_seed_split(prompts: list[str], seed_count: int, validation: Any, run_seed: int) -> tuple[list[int], list[int]]:
    """`(heldout, train)` indices over the encoded pairs: the first `seed_count` are seed pairs, any
    after them came from `validation.uri` (all held out)."""
    if validation.uri:
        heldout = list(range(seed_count, len(prompts)))
    else:
        try:
            heldout = select_heldout_pairs(prompts[:seed_count], validation.fraction, validation.max_pairs, run_seed)
        except HeldOutSplitError as exc:
            raise BadSpecError(str(exc)) from exc
    held = set(heldout)
    return heldout, [i for i in range(seed_count) if i not in held]


def chain_heldout_file(pairs, validation, opener):
    """Seed pairs then, with `sail.validation.uri`, the held-out pairs of that file (encoded after
    them); returns the stream and a function giving how many seed pairs it has yielded."""
    count = [0]

    def counted():
        for pair in pairs:
            count[0] += 1
            yield pair

    stream = counted()
    if validation.uri:
        extra = iter_seed_pairs(validation.uri, validation.format, validation.max_pairs, open_store=opener)
        stream = itertools.chain(stream, extra)
    return stream, lambda: count[0]


# ----------------------------------------------------------------------------- pure metrics


def compute_pair_rewards(model_err: Any, ref_err: Any, beta: float) -> Any:
    """Rewards `[P, 2]` (winner, loser) from errors `[P, 2, M]` (docs/method.md, "Implicit reward")."""
    return -(beta / 2.0) * (model_err.float() - ref_err.float()).mean(dim=-1)


def compute_agreement(model_err: Any, ref_err: Any, beta: float) -> tuple[float, float]:
    """`(accuracy, mean margin)` of the implicit reward on human pairs: accuracy is the share of pairs
    with `R(winner) > R(loser)` (ties count as wrong), margin the mean `R(winner) - R(loser)`."""
    rewards = compute_pair_rewards(model_err, ref_err, beta)
    margin = rewards[:, 0] - rewards[:, 1]
    if margin.numel() == 0:
        return float("nan"), float("nan")
    return float((margin > 0).float().mean()), float(margin.mean())


# ----------------------------------------------------------------------------- errors on held-out pairs


class HeldOutPairs:
    """The committed held-out pairs of a run: prompts and `[2, C, h, w]` winner/loser latents."""

    def __init__(self, ctx: PhaseContext) -> None:
        index = art.read_seed_index(ctx.store, ctx.layout)
        self.indices = heldout_indices(index)
        self.prompts = [index["prompts"][i] for i in self.indices]
        self._index, self._layout = index, ctx.layout
        # its own local copies: never rewrite a file the phase's own LatentFiles has memory-mapped
        self._files = art.LatentFiles(ctx.store, ctx.work_dir / "heldout")

    def __len__(self) -> int:
        return len(self.indices)

    def latents(self, k: int) -> Any:
        winner, loser = art.seed_refs(self._layout, self._index, self.indices[k])
        return torch.stack([winner.fetch(self._files), loser.fetch(self._files)])


def compute_heldout_errors(pairs: HeldOutPairs, unets: list[Any], components: Any, ctx: PhaseContext) -> list[Any]:
    """Errors `[P, 2, M]` of each UNet in `unets` on the held-out pairs, on the shared draws."""
    s = ctx.algorithm.sail
    alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
    t_range = s.reward_timesteps.bounds(components.num_train_timesteps)
    text = TextEncoder(components)
    scoring = _Scoring(components, alphas, s.sampler.resolution, s.sampler.batch_size)
    out: list[list[Any]] = [[] for _ in unets]
    for k in range(len(pairs)):
        x = pairs.latents(k).to(components.device)
        gen = torch.Generator().manual_seed(derive_seed(s.seed, "heldout", pairs.indices[k]))
        t, eps = draw_shared_noise(gen, s.reward_draws, tuple(x.shape[1:]), components.num_train_timesteps, t_range)
        emb = text.encode([pairs.prompts[k]])
        for errors, unet in zip(out, unets, strict=True):
            errors.append(_errors(unet, scoring, x, (t, eps), emb))
    return [torch.stack(e) if e else torch.zeros(0, 2, s.reward_draws) for e in out]


@dataclass(frozen=True)
class _Scoring:
    """What every held-out error shares: the components, the training noise schedule, the sampler's
    resolution and batch size (rows per UNet forward)."""

    components: Any
    alphas: Any
    resolution: int
    batch: int


def _errors(unet: Any, scoring: _Scoring, x: Any, draws: tuple[Any, Any], emb: Any) -> Any:
    """`SE(x_k; t_m, eps_m)` as `[2, M]`: every image on every shared draw `(t, eps)` (rows image-major).

    The trained policy keeps fp32 master weights while text embeddings come in the phase's compute
    dtype: on CUDA such a UNet runs under autocast to that dtype, as in training. A UNet already in
    the compute dtype (annotate's model and judge) runs as annotate runs it.
    """
    (t, eps), components, batch = draws, scoring.components, scoring.batch
    alphas, resolution = scoring.alphas, scoring.resolution
    n, m, device = x.shape[0], t.shape[0], components.device
    x0, noise, ts = x.repeat_interleave(m, 0), eps.to(device).repeat(n, 1, 1, 1), t.to(device).repeat(n)
    mixed = device.type == "cuda" and unet.dtype != components.dtype
    rows = []
    with torch.no_grad(), torch.autocast("cuda", dtype=components.dtype) if mixed else contextlib.nullcontext():
        for start in range(0, x0.shape[0], batch):
            sl = slice(start, start + batch)
            x_t = add_noise(x0[sl], noise[sl], ts[sl], alphas)
            pred = predict_noise(unet, components, x_t, ts[sl], emb.repeat(x_t.shape[0]), resolution)
            rows.append(denoising_error(pred.float(), noise[sl]))
    return torch.cat(rows).view(n, m).cpu()


# ----------------------------------------------------------------------------- phase hooks


def measure_heldout(ctx: PhaseContext, policy: Any, components: Any, reference_folder: Any) -> dict[str, float]:
    """Train hook: held-out metrics of the trained `policy` (empty when the run holds out no pairs).

    `reference_folder` is the model the train started from (its frozen DPO reference).
    """
    pairs = HeldOutPairs(ctx)
    if not len(pairs):
        log.info("no held-out pairs in this run (sail.validation): no held-out metrics")
        return {}
    beta = ctx.algorithm.sail.beta
    # Reference and base with the policy's (fp32 master) weights, so all three take the same path (under
    # autocast on CUDA): a bf16 copy would differ from the policy by rounding alone.
    reference = load_unet(reference_folder, components.device, policy.dtype)
    unets = [policy, reference]
    if ctx.iteration > 0:  # at step 0 the reference is the base
        unets.append(load_unet(resolve_base_folder(ctx), components.device, policy.dtype))
    errors = compute_heldout_errors(pairs, unets, components, ctx)
    accuracy, margin = compute_agreement(errors[0], errors[1], beta)
    base_accuracy, base_margin = (accuracy, margin) if ctx.iteration == 0 else compute_agreement(errors[0], errors[2], beta)
    log.info("held-out (%d human pairs): accuracy %.3f vs reference, %.3f vs base; margin %.4g",
             len(pairs), accuracy, base_accuracy, margin)
    return {"heldout_accuracy": accuracy, "heldout_accuracy_vs_base": base_accuracy, "heldout_margin": margin,
            "heldout_margin_vs_base": base_margin, "heldout_pairs": float(len(pairs))}


def measure_judge_trust(ctx: PhaseContext, model: Any, judge: Any, components: Any) -> dict[str, float]:
    """Annotate hook: agreement of this round's judge with the held-out human labels (shard 0 only;
    the operator averages a metric over the shards that report it)."""
    if ctx.shard not in (None, 0):
        return {}
    pairs = HeldOutPairs(ctx)
    if not len(pairs):
        return {}
    model_err, judge_err = compute_heldout_errors(pairs, [model, judge], components, ctx)
    trust, margin = compute_agreement(model_err, judge_err, ctx.algorithm.sail.beta)
    log.info("judge trust: the round-%d judge agrees with %.3f of %d held-out human pairs", ctx.iteration, trust,
             len(pairs))
    return {"judge_trust": trust, "judge_trust_margin": margin, "judge_trust_pairs": float(len(pairs))}
