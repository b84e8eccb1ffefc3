"""What storing generate's latents in bf16 or fp16 instead of fp32 would change: annotate's ranking, the DPO loss.

The phases store fp32 latents (64 KB per SD1.5 sample, 256 KB per SDXL sample). This bench
measures, without changing the stored format, what a half-precision copy would do: candidates
are generated with the toy pipeline (examples/toy/model) through the phases' own sampler, then
every latent is rounded through bf16 / fp16 and back, and the annotate computation
(`annotate_phase.compute_candidate_errors` + `implicit_reward` + `select_best_worst`, same shared
draws) and the train loss (`diffusion_dpo_loss` on each prompt's best/worst pair, one shared
(t, eps)) are compared with the fp32 run.

The "current model" is a stand-in: the toy base with every weight tensor perturbed by
`--perturb` x its standard deviation (seeded), judged against the unperturbed base as the
reference, so rewards are not all zero; its rankings are not a trained model's.

    .venv/bin/python bench/latent_precision.py --prompts 32 --draws 10 --out bench-out/latent-precision.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, add_repo_paths, describe_machine, format_table, write_json  # noqa: E402

add_repo_paths()


def perturbed_copy(unet: Any, scale: float, seed: int) -> Any:
    import copy

    import torch

    other = copy.deepcopy(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * float(p.std()) * scale)
    return other


def pairwise_agreement(a: Any, b: Any) -> float:
    """Share of candidate pairs (i < j) ordered the same way by rewards `a` and `b` of one prompt."""
    n = a.shape[0]
    same = total = 0
    for i in range(n):
        for j in range(i + 1, n):
            total += 1
            same += bool((a[i] - a[j]) * (b[i] - b[j]) > 0)
    return same / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "examples" / "toy" / "model")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--beta", type=float, default=1000.0)
    parser.add_argument("--perturb", type=float, default=0.02)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from sail_trainer.math.denoising import add_noise, denoising_error
    from sail_trainer.math.dpo import diffusion_dpo_loss
    from sail_trainer.math.reward import implicit_reward
    from sail_trainer.math.selection import select_best_worst
    from sail_trainer.models.components import load_components
    from sail_trainer.models.sampling import build_scheduler, predict_noise, sample_latents
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.phases.annotate_phase import compute_candidate_errors

    torch.manual_seed(0)
    components = load_components(args.model, "sd15", torch.device("cpu"), torch.float32)
    base, resolution, n, m = components.unet, 32, args.candidates, args.draws
    model = perturbed_copy(base, args.perturb, 1)
    text = TextEncoder(components)
    prompts = (REPO / "examples" / "toy" / "prompts.txt").read_text().splitlines()[: args.prompts]
    alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
    t_range = (0, components.num_train_timesteps)
    results: dict[str, dict[str, list[Any]]] = {d: {"rewards": [], "best": [], "worst": [], "loss": [], "inside": []}
                                                for d in ("fp32", "bf16", "fp16")}
    for index, prompt in enumerate(prompts):
        generators = [torch.Generator().manual_seed(1000 * index + k) for k in range(n)]
        emb = text.encode([prompt])
        latents = sample_latents(base, components, build_scheduler("ddim", components.scheduler_config),
                                 emb.repeat(n), text.unconditional(n), generators, steps=12, guidance_scale=1.5,
                                 resolution=resolution)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            x = latents.to(dtype).float()
            draws = torch.Generator().manual_seed(index)
            model_err, ref_err = compute_candidate_errors(model, base, components, x, emb, draws, m, t_range,
                                                          resolution, alphas, 64)
            rewards = implicit_reward(model_err, ref_err, args.beta)
            pick = select_best_worst(rewards[None])
            w, lo = int(pick.winner_idx[0]), int(pick.loser_idx[0])
            fixed = torch.Generator().manual_seed(10_000 + index)  # one (t, eps) for the pair, as in train
            t = torch.randint(0, components.num_train_timesteps, (1,), generator=fixed)
            eps = torch.randn((1, *x.shape[1:]), generator=fixed)
            x0 = torch.stack([x[w], x[lo]])
            with torch.no_grad():
                x_t = add_noise(x0, eps.repeat(2, 1, 1, 1), t.repeat(2), alphas)
                e_model = denoising_error(predict_noise(model, components, x_t, t.repeat(2), emb.repeat(2), resolution),
                                          eps.repeat(2, 1, 1, 1))
                e_ref = denoising_error(predict_noise(base, components, x_t, t.repeat(2), emb.repeat(2), resolution),
                                        eps.repeat(2, 1, 1, 1))
            out = diffusion_dpo_loss(e_model[:1], e_model[1:], e_ref[:1], e_ref[1:], args.beta)
            r = results[name]
            r["rewards"].append(rewards)
            r["best"].append(w)
            r["worst"].append(lo)
            r["loss"].append(float(out.loss))
            r["inside"].append(float(out.inside[0]))
    rows = []
    ref = results["fp32"]
    for name in ("bf16", "fp16"):
        r = results[name]
        spread = sum(float(x.std()) for x in ref["rewards"]) / len(prompts)
        rows.append({
            "stored": name, "bytes_per_sd15_sample": 4 * 64 * 64 * 2, "prompts": len(prompts),
            "best_same": sum(a == b for a, b in zip(r["best"], ref["best"], strict=True)) / len(prompts),
            "worst_same": sum(a == b for a, b in zip(r["worst"], ref["worst"], strict=True)) / len(prompts),
            "pair_order_same": sum(pairwise_agreement(a, b) for a, b in zip(r["rewards"], ref["rewards"], strict=True))
            / len(prompts),
            "reward_abs_diff_over_spread": sum(float((a - b).abs().mean()) for a, b in
                                               zip(r["rewards"], ref["rewards"], strict=True)) / len(prompts) / spread,
            "loss_max_abs_diff": max(abs(a - b) for a, b in zip(r["loss"], ref["loss"], strict=True)),
            "inside_max_abs_diff": max(abs(a - b) for a, b in zip(r["inside"], ref["inside"], strict=True)),
            "fp32_mean_loss": sum(ref["loss"]) / len(prompts),
        })
    document = {"machine": describe_machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    write_json(args.out, document)
    print(format_table(rows, [(k, k) for k in rows[0]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
