"""Device check: the trainer's first real-hardware run, in one script (one GPU, under 8 minutes).

Checks, each printed as one line (`check <name>: ok|FAILED ...`) and written to `--out` as JSON:

- `collective`: a one-process group built exactly as the train phase builds it
  (`train_phase.process_group_backend`, `set_device(LOCAL_RANK)`), an all-reduce of a tensor on
  the compute device (the step metrics) and of a CPU tensor, and a barrier.
- `world`: step 0 + one round (mixup, train, generate, annotate, mixup, train) of the toy world
  (examples/toy) at bf16 through the real CLI entry point (`sail_trainer.cli.main`), in a
  local run folder; asserts that each phase commits, that no optional output failed, and that
  each train phase's first loss is log 2 (policy and reference start identical).
- `phases`: one step of each phase on a pipeline of `--shape` (default sd15 on CUDA: the SD1.5
  UNet/VAE shapes with random weights, 512 px) at bf16, the same way; seconds per phase.
- `annotation_precision`: round 1's annotate of the toy world computed twice on the same
  candidates and draws, with fp32 and with bf16 UNets, after a step 0 trained at the paper's
  learning rate (`--precision-steps` steps): agreement of the best/worst picks and the
  Spearman correlation of the rewards per prompt (`sail.annotationPrecision` rests on it).

    python bench/gpu_check.py --out bench-out/gpu-check.json                  # CUDA, full sizes
    python bench/gpu_check.py --device cpu --quick --out bench-out/gpu-check-cpu.json  # CPU, tiny (the test suite)

On CPU, bf16 runs through `SAIL_CPU_BF16=1` (the phases otherwise compute in fp32 there).
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_repo_paths, describe_machine, write_json  # noqa: E402

add_repo_paths()
REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "examples" / "toy"
PAPER_LR = 1.28e-6  # the reference rule 1e-8 x 128 pairs (docs/trainer.md)


@dataclass(frozen=True)
class Sizes:
    """How much work each check does (full: one GPU; quick: CPU in the test suite)."""

    world_step0: int = 20
    world_steps: int = 20
    world_prompts: int = 16
    world_candidates: int = 4
    world_sampler_steps: int = 20
    world_batch: int = 8
    phases_shape: str = "sd15"
    precision_steps: int = 300
    precision_prompts: int = 48
    precision_candidates: int = 8
    precision_draws: int = 8
    precision_sampler_steps: int = 20
    precision_lr: float = PAPER_LR


QUICK = Sizes(world_step0=2, world_steps=2, world_prompts=4, world_candidates=2, world_sampler_steps=2,
              world_batch=4, phases_shape="tiny", precision_steps=2, precision_prompts=4, precision_candidates=3,
              precision_draws=2, precision_sampler_steps=2)


@dataclass
class Report:
    device: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        started = time.monotonic()
        try:
            result = {"ok": True, **fn()}
        except Exception as exc:  # noqa: BLE001 - a check reports its failure and the next one runs
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.monotonic() - started, 2)
        self.checks[name] = result
        shown = {k: v for k, v in result.items() if k not in ("ok", "trace", "seconds")}
        print(f"check {name}: {'ok' if result['ok'] else 'FAILED'} {result['seconds']}s {json.dumps(shown)}",
              flush=True)


# ----------------------------------------------------------------------------- collective


def check_collective(device: Any) -> dict[str, Any]:
    """One process, the train phase's backend choice and the tensors its collectives carry."""
    import socket
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from sail_trainer.phases.train_phase import _all_reduce_sum, _barrier, process_group_backend

    if dist.is_initialized():
        raise RuntimeError("a process group already exists in this process")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    backend = process_group_backend(device.type)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=timedelta(seconds=120))
    try:
        on_device = _all_reduce_sum(torch.tensor([1.0, 2.0], dtype=torch.float64, device=device))
        on_cpu = _all_reduce_sum(torch.tensor([3.0], dtype=torch.float64))
        _barrier()
        assert on_device.tolist() == [1.0, 2.0] and on_cpu.tolist() == [3.0]
    finally:
        dist.destroy_process_group()
    return {"backend": backend, "device_tensor": str(on_device.device)}


# ----------------------------------------------------------------------------- a run through the CLI


def write_spec(folder: Path, model: Path, seed_pairs: Path, prompts: Path, *, resolution: int, sizes: dict[str, Any],
               precision: str = "bf16") -> Path:
    """A ResolvedRun JSON for a local run under `folder/run`."""
    from sail_api.resolved import ResolvedRun

    sail = {
        "rounds": 1, "promptsPerRound": sizes["prompts"], "candidatesPerPrompt": sizes["candidates"],
        "rewardDraws": sizes.get("draws", 2), "alpha": 0.5, "beta": 5000.0, "seed": 0,
        "sampler": {"kind": "ddim", "steps": sizes["sampler_steps"], "guidanceScale": 1.5, "resolution": resolution,
                    "batchSize": sizes["batch"]},
        "train": {"effectiveBatch": sizes["effective_batch"], "microBatch": sizes["micro_batch"],
                  "checkpointEvery": 10_000, "step0Steps": sizes["step0"], "steps": sizes["steps"],
                  "optimizer": {"kind": "adamw", "learningRate": sizes["lr"]}},
    }
    resolved = ResolvedRun.model_validate({
        "name": "gpu-check",
        "algorithm": {"model": {"uri": str(model), "layout": "auto", "precision": precision},
                      "seedPairs": {"uri": str(seed_pairs), "format": "auto"},
                      "prompts": {"uri": str(prompts), "format": "auto"}, "sail": sail},
        "storage": {"uri": str(folder / "run")},
    })
    spec = folder / "spec.json"
    folder.mkdir(parents=True, exist_ok=True)
    spec.write_text(resolved.to_json())
    return spec


def run_phases(folder: Path, spec: Path, phases: list[tuple[str, int]]) -> dict[str, float]:
    """Run `phases` through `sail_trainer.cli.main`; seconds per phase; raise on a failure."""
    import contextlib

    from sail_trainer.cli import main

    seconds = {}
    for phase, iteration in phases:
        started = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):  # the phase summaries: stdout keeps one line per check
            code = main([phase, "--run", str(folder / "run"), "--iteration", str(iteration), "--spec", str(spec)])
        if code != 0:
            raise RuntimeError(f"{phase} of iteration {iteration} exited {code}")
        seconds[f"{phase}-{iteration}"] = round(time.monotonic() - started, 2)
    return seconds


def train_outcome(folder: Path, iteration: int) -> dict[str, Any]:
    from sail_api.layout import RunLayout
    from sail_api.phases import Phase
    from sail_api.storage import LocalStore
    from sail_trainer.storage import resolve_committed

    store, layout = LocalStore(str(folder / "run")), RunLayout(str(folder / "run"))
    train = layout.phase_dir(iteration, Phase.TRAIN)
    manifest = store.read_manifest(train)
    history = json.loads(Path(resolve_committed(store, train, "metrics.json")).read_text())
    return {"first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
            "failed_outputs": manifest.metadata.get("failed_outputs", {})}


ROUND = [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1), ("mixup", 1), ("train", 1)]


def check_world(work: Path, s: Sizes, model: Path, resolution: int, seed_pairs: Path, prompts: Path) -> dict[str, Any]:
    """Step 0 + one round at bf16; each train's first loss is log 2 and nothing optional failed."""
    folder = Path(tempfile.mkdtemp(prefix="world-", dir=work))
    spec = write_spec(folder, model, seed_pairs, prompts, resolution=resolution, sizes={
        "prompts": s.world_prompts, "candidates": s.world_candidates, "sampler_steps": s.world_sampler_steps,
        "batch": s.world_batch, "effective_batch": 4, "micro_batch": 2, "step0": s.world_step0,
        "steps": s.world_steps, "lr": 1e-5})
    seconds = run_phases(folder, spec, ROUND)
    outcome = {i: train_outcome(folder, i) for i in (0, 1)}
    for i, o in outcome.items():
        if o["failed_outputs"]:
            raise RuntimeError(f"train {i}: optional outputs failed: {o['failed_outputs']}")
        if abs(o["first_loss"] - math.log(2)) > 1e-3:
            raise RuntimeError(f"train {i}: first loss {o['first_loss']:.6f} is not log 2: policy != reference at start")
    return {"phase_seconds": seconds, "first_loss": [outcome[0]["first_loss"], outcome[1]["first_loss"]]}


def check_phases(work: Path, s: Sizes) -> dict[str, Any]:
    """One step of each phase on the `phases_shape` pipeline (random weights) at bf16."""
    from bench.phases import SHAPES, build_pipeline_folder

    shape = SHAPES[s.phases_shape]
    model = build_pipeline_folder(s.phases_shape, shape, work / "pipelines")
    folder = Path(tempfile.mkdtemp(prefix=f"phases-{s.phases_shape}-", dir=work))
    spec = write_spec(folder, model, TOY / "seed-pairs" / "pairs.jsonl", TOY / "prompts.txt",
                      resolution=shape.resolution, sizes={
                          "prompts": 2, "candidates": 2, "sampler_steps": 2, "batch": 4, "effective_batch": 2,
                          "micro_batch": 1, "step0": 1, "steps": 1, "lr": PAPER_LR})
    return {"shape": s.phases_shape, "phase_seconds": run_phases(folder, spec, ROUND)}


# ----------------------------------------------------------------------------- annotation precision


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two 1-D arrays (ties broken by order; NaN when one is constant)."""
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_rewards(reference: Any, other: Any) -> dict[str, float]:
    """Agreement of `other` rewards `[P, N]` with `reference` ones: best, worst, both, mean Spearman."""
    import numpy as np

    ref, oth = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    best = float(np.mean(ref.argmax(1) == oth.argmax(1)))
    worst = float(np.mean(ref.argmin(1) == oth.argmin(1)))
    both = float(np.mean((ref.argmax(1) == oth.argmax(1)) & (ref.argmin(1) == oth.argmin(1))))
    rhos = [spearman(r, o) for r, o in zip(ref, oth, strict=True)]
    finite = [r for r in rhos if not math.isnan(r)]
    return {"best_agreement": best, "worst_agreement": worst, "pair_agreement": both,
            "mean_spearman": float(np.mean(finite)) if finite else float("nan")}


def annotation_rewards(model: Path, judge: Path, candidates: Any, prompts: list[str], device: Any, dtype: Any,
                       draws: int, beta: float, seed: int, resolution: int, autocast: bool = False) -> Any:
    """Rewards `[P, N]` of annotate's own code (`compute_candidate_errors`, `implicit_reward`) with
    both UNets in `dtype` (or fp32 weights under a `dtype` autocast)."""
    import contextlib

    import torch

    from sail_trainer.math.reward import implicit_reward
    from sail_trainer.models.components import load_components, load_unet
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.phases.annotate_phase import compute_candidate_errors

    weights = torch.float32 if autocast else dtype
    components = load_components(model, "auto", device, weights)
    judge_unet = load_unet(judge, device, weights)
    text = TextEncoder(components)
    alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
    ctx = torch.autocast(device.type, dtype=dtype) if autocast else contextlib.nullcontext()
    rows = []
    with ctx:
        for j, prompt in enumerate(prompts):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
            model_err, ref_err = compute_candidate_errors(
                components.unet, judge_unet, components, candidates[j].to(device), text.encode([prompt]), gen, draws,
                (0, components.num_train_timesteps), resolution, alphas, 64)
            rows.append(implicit_reward(model_err, ref_err, beta))
    return torch.stack(rows)


def check_annotation_precision(work: Path, s: Sizes, device: Any) -> dict[str, Any]:
    """Train step 0 of the toy world at the paper's lr, then annotate round-1 style (model theta_0,
    judge the base) on the same candidates and draws with fp32 and with bf16."""
    import torch

    from sail_trainer.models.components import load_components
    from sail_trainer.models.sampling import build_scheduler, sample_latents
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.storage import resolve_committed

    folder = Path(tempfile.mkdtemp(prefix="precision-", dir=work))
    spec = write_spec(folder, TOY / "model", TOY / "seed-pairs" / "pairs.jsonl", TOY / "prompts.txt", resolution=32,
                      precision="fp32", sizes={
                          "prompts": s.precision_prompts, "candidates": s.precision_candidates,
                          "sampler_steps": s.precision_sampler_steps, "batch": 8, "effective_batch": 8,
                          "micro_batch": 8, "step0": s.precision_steps, "steps": 1, "lr": s.precision_lr})
    run_phases(folder, spec, [("mixup", 0), ("train", 0)])
    from sail_api.layout import RunLayout
    from sail_api.phases import Phase
    from sail_api.storage import LocalStore

    store = LocalStore(str(folder / "run"))
    theta = Path(resolve_committed(store, RunLayout(str(folder / "run")).phase_dir(0, Phase.TRAIN), "model",
                                   is_folder=True))
    base = TOY / "model"
    prompts = [p for p in (TOY / "prompts.txt").read_text().splitlines() if p.strip()][: s.precision_prompts]
    # Candidates from theta_0 in fp32 (what generate would hand annotate), N per prompt.
    comp = load_components(theta, "auto", device, torch.float32)
    text = TextEncoder(comp)
    cands = []
    for j, prompt in enumerate(prompts):
        gens = [torch.Generator().manual_seed(1000 * j + k) for k in range(s.precision_candidates)]
        cands.append(sample_latents(comp.unet, comp, build_scheduler("ddim", comp.scheduler_config),
                                    text.encode([prompt]).repeat(len(gens)), text.unconditional(len(gens)), gens,
                                    steps=s.precision_sampler_steps, guidance_scale=1.5, resolution=32).cpu())
    candidates = torch.stack(cands)
    args = (theta, base, candidates, prompts, device)
    seconds = {}

    def timed(name: str, dtype: Any, autocast: bool = False) -> Any:
        started = time.monotonic()
        out = annotation_rewards(*args, dtype, s.precision_draws, 5000.0, 0, 32, autocast=autocast)
        seconds[name] = round(time.monotonic() - started, 2)  # includes loading both UNets
        return out

    fp32 = timed("fp32", torch.float32)
    bf16 = timed("bf16", torch.bfloat16)
    autocast = timed("autocast", torch.bfloat16, autocast=True)
    delta = _weight_update(theta, base)
    return {"steps": s.precision_steps, "lr": s.precision_lr, "prompts": len(prompts), "candidates": s.precision_candidates,
            "draws": s.precision_draws, "update": delta, "fp32_reward_spread": float(fp32.std(dim=1).mean()),
            "bf16_vs_fp32": compare_rewards(fp32, bf16), "autocast_vs_fp32": compare_rewards(fp32, autocast),
            "annotate_seconds": seconds}


def _weight_update(theta: Path, base: Path) -> dict[str, float]:
    """How big theta - base is next to bf16's rounding step of the weights it changes."""
    import torch
    from safetensors.torch import load_file

    name = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(theta / name), load_file(base / name)
    diffs, below = [], 0
    total = 0
    for k, w in b.items():
        d = (a[k].float() - w.float()).abs()
        step = torch.finfo(torch.bfloat16).eps * w.float().abs()  # relative rounding step of bf16 at w
        changed = d > 0
        below += int((changed & (d < step / 2)).sum())
        total += int(changed.sum())
        diffs.append(d.flatten())
    flat = torch.cat(diffs)
    return {"mean_abs": float(flat.mean()), "max_abs": float(flat.max()),
            "share_below_bf16_half_step": below / max(total, 1)}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test suite)")
    p.add_argument("--checks", nargs="*", default=["collective", "world", "phases", "annotation_precision"])
    p.add_argument("--precision-steps", type=int, default=None, help="step-0 steps before the precision check")
    p.add_argument("--precision-lr", type=float, default=None, help="step-0 learning rate (default: the paper's)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    args = p.parse_args(argv)
    previous = {k: os.environ.get(k) for k in ("SAIL_CPU_BF16", "SAIL_CACHE_DIR")}
    if args.device == "cpu":
        os.environ["SAIL_CPU_BF16"] = "1"  # bf16 code paths on CPU
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu")
    if args.device == "cpu" and torch.cuda.is_available():
        raise SystemExit("--device cpu on a machine with CUDA: the phases pick CUDA; hide it (CUDA_VISIBLE_DEVICES=)")
    sizes = QUICK if args.quick else Sizes()
    if args.precision_steps is not None:
        sizes = Sizes(**{**sizes.__dict__, "precision_steps": args.precision_steps})
    if args.precision_lr is not None:
        sizes = Sizes(**{**sizes.__dict__, "precision_lr": args.precision_lr})
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    report = Report(args.device)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            os.environ["SAIL_CACHE_DIR"] = str(work / "cache")
            checks = {
                "collective": lambda: check_collective(device),
                "world": lambda: check_world(work, sizes, TOY / "model", 32, TOY / "seed-pairs" / "pairs.jsonl",
                                             TOY / "prompts.txt"),
                "phases": lambda: check_phases(work, sizes),
                "annotation_precision": lambda: check_annotation_precision(work, sizes, device),
            }
            for name in args.checks:
                report.run(name, checks[name])
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    document = {"machine": describe_machine(args.device), "device": args.device, "quick": args.quick,
                "sizes": sizes.__dict__, "checks": report.checks}
    write_json(args.out, document)
    return 0 if all(c["ok"] for c in report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
