"""`sail-trainer toy ...`: build the toy pipeline, label seed pairs, write prompts, evaluate a model.

    sail-trainer toy build   --out DIR [--seed S] [--vae-steps N] [--unet-steps N]
    sail-trainer toy pairs   --model DIR --oracle NAME|module:callable --n N --out DIR [--seed S]
    sail-trainer toy prompts --out FILE [--split train|val|test|heldout]
    sail-trainer toy eval    --model DIR [--base DIR] [--oracle NAME] [--split train] [--per-caption K]

`main(argv) -> int` is the entry point the trainer CLI delegates to (and `sail toy ...` to it).
Output on stdout is for people (and JSON for `eval`); logs go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sail_trainer.logs import Progress
from sail_trainer.toy import domain, evaluate, oracles

log = logging.getLogger(__name__)
# The imports inside the command functions are deliberate: `sail-trainer toy --help` and the light
# commands must not load torch/diffusers (toy.pipeline, torch), only the command that uses them.

DEFAULT_SAMPLER_STEPS = 20
DEFAULT_GUIDANCE = 3.0


def _say(message: str, stream: Any = None) -> None:
    """CLI output (not logging: this is the command's answer)."""
    (stream or sys.stdout).write(message + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sail-trainer toy", description="The toy world: build, label, evaluate.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="train the toy pipeline and save it (SD1.5 diffusers layout)")
    b.add_argument("--out", required=True, type=Path, help="output pipeline folder")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--vae-steps", type=int, default=None)
    b.add_argument("--unet-steps", type=int, default=None)
    b.add_argument("--dataset-size", type=int, default=None)
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--vae-from", default=None, help="reuse the VAE of this pipeline folder (skips VAE training)")

    q = sub.add_parser("pairs", help="label base-model sample pairs with a noisy oracle (seed-pairs JSONL)")
    q.add_argument("--model", required=True, type=Path, help="pipeline folder")
    q.add_argument("--oracle", default="size", help=f"built-in ({', '.join(oracles.BUILTIN_ORACLES)}) or module:callable")
    q.add_argument("--n", type=int, default=32, help="number of pairs")
    q.add_argument("--out", required=True, type=Path, help="output folder (pairs.jsonl, images/, labels.json)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--agreement", type=float, default=0.85, help="target agreement of labels with the oracle")
    q.add_argument("--split", default="train", choices=sorted(domain.SPLITS))
    _sampler_args(q)

    r = sub.add_parser("prompts", help="write a split's captions, one per line")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--split", default="train", choices=sorted(domain.SPLITS))

    e = sub.add_parser("eval", help="fidelity, diversity, oracle score (and win rate vs --base) as JSON")
    e.add_argument("--model", required=True, type=Path)
    e.add_argument("--base", type=Path, default=None, help="base pipeline for the win rate on matched seeds")
    e.add_argument("--oracle", default="size")
    e.add_argument("--split", default="train", choices=sorted(domain.SPLITS),
                   help="captions to sample (train: the toy UNet does not carry content to unseen phrasings)")
    e.add_argument("--per-caption", type=_at_least_two, default=8,
                   help="images per caption (at least 2: diversity compares the images of one caption)")
    e.add_argument("--seed", type=int, default=0)
    _sampler_args(e)
    return p


def _at_least_two(text: str) -> int:
    """--per-caption, checked when the arguments are parsed (before any model is loaded or sampled)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value}: at least 2 (diversity compares the images of one caption)")
    return value


def _sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=DEFAULT_SAMPLER_STEPS, help="DDIM sampling steps")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")


def _build(args: argparse.Namespace) -> int:
    from sail_trainer.toy.pipeline import BuildConfig, build_toy_pipeline

    overrides = {k: v for k, v in {
        "seed": args.seed, "vae_steps": args.vae_steps, "unet_steps": args.unet_steps,
        "dataset_size": args.dataset_size, "batch_size": args.batch_size, "vae_from": args.vae_from,
    }.items() if v is not None}
    info = build_toy_pipeline(args.out, dataclasses.replace(BuildConfig(), **overrides))
    _say(json.dumps(info, indent=2))
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from sail_trainer.toy.pairs import write_pairs
    from sail_trainer.toy.pipeline import load_pipeline, sample_images

    if args.n < 1:
        raise ValueError("--n must be at least 1")
    oracle = oracles.load_oracle(args.oracle)
    rng = np.random.default_rng(args.seed)
    pool = domain.build_captions(args.split)
    captions = [pool[i] for i in rng.permutation(np.resize(np.arange(len(pool)), args.n))[: args.n]]
    seeds = rng.choice(10**8, size=2 * args.n, replace=False).tolist()
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    imgs = sample_images(pipe, captions * 2, seeds, steps=args.steps, guidance_scale=args.guidance)
    a, b = imgs[: args.n], imgs[args.n:]
    sa, sb = oracles.compute_scores(oracle, a, captions), oracles.compute_scores(oracle, b, captions)
    labels, temperature = oracles.build_noisy_labels(sa, sb, rng, args.agreement)
    truth = sa > sb
    untied = sa != sb
    agreement = float(np.mean(labels[untied] == truth[untied])) if untied.any() else float("nan")
    meta = {"oracle": args.oracle, "target_agreement": args.agreement, "temperature": temperature,
            "measured_agreement": agreement if untied.any() else None, "seed": args.seed, "scores_a": sa.tolist(), "scores_b": sb.tolist(),
            "a_wins": labels.tolist(), "sampler_steps": args.steps, "guidance": args.guidance}
    path = write_pairs(args.out, captions, a, b, labels, meta)
    _say(f"wrote {args.n} pairs to {path} (oracle {args.oracle}, label agreement {agreement:.3f})")
    return 0


def _prompts(args: argparse.Namespace) -> int:
    captions = domain.build_captions(args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(captions) + "\n")
    _say(f"wrote {len(captions)} {args.split} captions to {args.out}")
    return 0


def evaluate_pipeline(
    model: Path, oracle_name: str, split: str = "train", per_caption: int = 8, seed: int = 0,
    base: Path | None = None, steps: int = DEFAULT_SAMPLER_STEPS, guidance: float = DEFAULT_GUIDANCE,
) -> dict[str, Any]:
    """Sample `per_caption` images per caption of `split` (matched seeds) and measure them."""
    from sail_trainer.toy.pipeline import load_pipeline, sample_images

    if per_caption < 2:  # checked before sampling: diversity needs two images of a caption
        raise ValueError(f"per_caption is {per_caption}: at least 2 (diversity compares the images of one caption)")
    oracle = oracles.load_oracle(oracle_name)
    captions = [c for c in domain.build_captions(split) for _ in range(per_caption)]
    seeds = [seed * 100003 + i for i in range(len(captions))]
    chunk = 64

    def draw(folder: Path) -> Any:
        import torch

        pipe = load_pipeline(folder)
        pipe.set_progress_bar_config(disable=True)
        log.info("sampling %d images (%d per caption) from %s", len(captions), per_caption, folder)
        progress, parts = Progress("eval", len(captions), every_seconds=5.0), []
        for i in range(0, len(captions), chunk):
            parts.append(sample_images(pipe, captions[i:i + chunk], seeds[i:i + chunk], steps=steps,
                                       guidance_scale=guidance, batch_size=chunk))
            progress.update(len(parts[-1]))
        progress.close()
        return torch.cat(parts)

    images = draw(model)
    fid = evaluate.compute_fidelity(images, captions, evaluate.fit_shape_classifier(0))
    out: dict[str, Any] = {
        "oracle": oracle_name, "split": split, "samples": len(captions),
        "oracle_score": float(oracles.compute_scores(oracle, images, captions).mean()),
        "fidelity": fid.both, "colour_accuracy": fid.colour, "shape_accuracy": fid.shape,
        "diversity": evaluate.compute_diversity(images, captions),
    }
    if base is not None:
        out["win_rate_vs_base"] = evaluate.compute_win_rate(oracle, images, draw(base), captions)
    return out


def _eval(args: argparse.Namespace) -> int:
    result = evaluate_pipeline(args.model, args.oracle, args.split, args.per_caption, args.seed, args.base,
                               args.steps, args.guidance)
    _say(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `sail-trainer toy` with `argv` (without the leading 'toy'); return the exit code."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"build": _build, "pairs": _pairs, "prompts": _prompts, "eval": _eval}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _say(f"sail-trainer toy {args.command}: error: {exc}", stream=sys.stderr)
        return 64


if __name__ == "__main__":
    sys.exit(main())
