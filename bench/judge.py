"""How well does SAIL's implicit reward rank candidates by the hidden preference? (toy world)

The annotate phase ranks a prompt's N candidates by
`R = -(beta/2) mean_m [SE_theta - SE_ref]` over M shared (t, eps) draws and keeps the best and
worst. This benchmark measures, on fresh base-model candidates of the training captions, how often
that ranking agrees with a toy oracle (the hidden preference), for each judge model, number of
draws M and timestep range (`sail.rewardTimesteps`). It calls the trainer's own functions:
`sample_latents` (generate), `compute_errors` + `draw_shared_noise` + `implicit_reward` (annotate)
and `select_best_worst`.

Reported per (judge, M, range):
    best/worst agreement   share of prompts whose selected winner the oracle scores above the loser
                           (what a self-labelled pair's label accuracy is; noisy human labels ~0.85)
    pairwise agreement     share of all candidate pairs of a prompt ordered like the oracle

Judges are model folders or run roots (a run root's committed step-0 model is used).

Usage:
    python bench/judge.py --oracle size --judge step0=/tmp/align/runs/seed0/lr3e-05_beta1000/sail \
        --draws 4 16 --ranges 0:1 0.5:1 --out bench-out/judge.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "api", REPO / "trainer"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


RESOLUTION = 32  # the toy world's image side


def parse_range(text: str) -> tuple[float, float]:
    """'0.5:1' -> (0.5, 1.0): fractions of the noise schedule, like sail.rewardTimesteps."""
    try:
        low, high = (float(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"--ranges {text!r}: expected LOW:HIGH fractions, e.g. 0.5:1") from None
    if not 0.0 <= low < high <= 1.0:
        raise SystemExit(f"--ranges {text!r}: need 0 <= LOW < HIGH <= 1")
    return low, high


def compute_agreement(rewards: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best/worst, pairwise) agreement of rewards [P, N] with oracle scores [P, N]; ties skipped."""
    import torch

    from sail_trainer.math.selection import select_best_worst

    sel = select_best_worst(torch.as_tensor(rewards))
    rows = np.arange(len(scores))
    best_worst = float(np.mean(scores[rows, sel.winner_idx.numpy()] > scores[rows, sel.loser_idx.numpy()]))
    dr = rewards[:, :, None] - rewards[:, None, :]
    ds = scores[:, :, None] - scores[:, None, :]
    upper = np.triu(np.ones(rewards.shape[1], dtype=bool), k=1)[None] & (dr != 0) & (ds != 0)
    pairwise = float(np.mean((dr > 0)[upper] == (ds > 0)[upper])) if upper.any() else float("nan")
    return best_worst, pairwise


def resolve_model(path: Path) -> Path:
    """A model folder, or a run root's committed step-0 model."""
    if (path / "model_index.json").exists() or (path / "unet").is_dir():
        return path
    from bench.alignment import committed_model_folder
    from sail_api.storage import NotCommitted

    try:
        return committed_model_folder(path, 0)
    except (FileNotFoundError, NotCommitted) as exc:
        raise SystemExit(f"--judge {path}: neither a model folder nor a run root with a committed step 0 ({exc})") from None


def make_candidates(components: Any, text: Any, prompts: list[str], n: int, steps: int, guidance: float,
                    seed: int) -> Any:
    """Latents [P, N, C, h, w] of N base-model samples per prompt (the generate phase's sampler)."""
    import torch

    from sail_trainer.models.sampling import build_scheduler, sample_latents

    scheduler = build_scheduler("ddim", components.scheduler_config)
    out = []
    for j, prompt in enumerate(prompts):
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + j * 1000 + k) for k in range(n)]
        out.append(sample_latents(components.unet, components, scheduler, text.encode([prompt]).repeat(n),
                                  text.unconditional(n), gens, steps=steps, guidance_scale=guidance,
                                  resolution=RESOLUTION))
    return torch.stack(out)


def compute_rewards(unet: Any, reference: Any, components: Any, text: Any, prompts: list[str], latents: Any,
                    draws: int, fractions: tuple[float, float], seed: int) -> np.ndarray:
    """Implicit rewards [P, N] exactly as the annotate phase computes them (beta = 1)."""
    import torch

    from sail_api.spec import RewardTimestepsSpec
    from sail_trainer.math.reward import implicit_reward
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.phases.annotate_phase import compute_candidate_errors

    alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
    t_range = RewardTimestepsSpec(min_fraction=fractions[0], max_fraction=fractions[1]).bounds(
        components.num_train_timesteps)
    out = []
    for j, prompt in enumerate(prompts):
        gen = torch.Generator().manual_seed(seed * 7919 + j)
        errors = compute_candidate_errors(unet, reference, components, latents[j], text.encode([prompt]), gen,
                                          draws, t_range, RESOLUTION, alphas, 256)
        out.append(implicit_reward(*errors, 1.0))
    return torch.stack(out).numpy()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; torch's thread count is restored afterwards (tests call this in-process)."""
    from bench.common import run_restoring_torch_threads

    return run_restoring_torch_threads(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--oracle", default="size", help="built-in oracle name or module:callable")
    p.add_argument("--judge", action="append", required=True, metavar="LABEL=PATH",
                   help="judge model folder or run root (repeatable)")
    p.add_argument("--reference", type=Path, default=REPO / "examples" / "toy" / "model",
                   help="judge reference (sail.judgeReference: base)")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--draws", type=int, nargs="+", default=[4, 16])
    p.add_argument("--ranges", nargs="+", default=["0:1", "0.5:1"], help="timestep ranges as fractions LOW:HIGH")
    p.add_argument("--steps", type=int, default=12, help="sampler steps of the candidates")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    ranges = [parse_range(r) for r in args.ranges]
    judges = []
    for item in args.judge:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--judge {item!r}: expected LABEL=PATH")
        judges.append((label, resolve_model(Path(path))))

    import torch

    from sail_trainer.models.components import load_components, load_unet
    from sail_trainer.models.sampling import decode_latents
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.toy import domain, oracles

    torch.set_num_threads(2)
    started = time.monotonic()
    oracle = oracles.load_oracle(args.oracle)
    cpu = torch.device("cpu")
    components = load_components(args.reference, "sd15", cpu, torch.float32)
    text = TextEncoder(components)
    captions = domain.build_captions("train")
    rng = np.random.default_rng(args.seed)
    prompts = [captions[i] for i in rng.choice(len(captions), args.prompts, replace=len(captions) < args.prompts)]
    latents = make_candidates(components, text, prompts, args.candidates, args.steps, args.guidance, args.seed)
    pixels = torch.from_numpy(decode_latents(components, latents.flatten(0, 1))).permute(0, 3, 1, 2).float() / 255
    scores = oracles.compute_scores(oracle, pixels, [c for c in prompts for _ in range(args.candidates)])
    scores = scores.reshape(args.prompts, args.candidates)
    rows = []
    for label, folder in judges:
        unet = load_unet(folder, cpu, torch.float32)
        for draws in args.draws:
            for fractions in ranges:
                rewards = compute_rewards(unet, components.unet, components, text, prompts, latents, draws,
                                          fractions, args.seed)
                best_worst, pairwise = compute_agreement(rewards, scores)
                rows.append({"judge": label, "model": str(folder), "draws": draws, "range": list(fractions),
                             "best_worst_agreement": best_worst, "pairwise_agreement": pairwise})
                print(f"{label:24s} M={draws:3d} t in [{fractions[0]:.2f}, {fractions[1]:.2f}) of T: "
                      f"best/worst {best_worst:.3f}  pairwise {pairwise:.3f}", flush=True)
    doc = {"oracle": args.oracle, "prompts": args.prompts, "candidates": args.candidates,
           "oracle_spread_within_prompt": float(scores.std(axis=1).mean()), "rows": rows,
           "seconds": round(time.monotonic() - started, 1), "torch_threads": torch.get_num_threads()}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
