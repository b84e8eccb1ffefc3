"""Throughput of the trainer's generate / annotate / train code paths against plain diffusers loops.

Both sides run in one process, on the same device, the same shapes, the same weights and the
same inputs (seeds), one after the other:

- project: the functions the phases call, on `Components` loaded by `load_components` from a
  pipeline folder written here (random weights built from config, `save_pretrained`, no
  download): `sample_latents` (generate, batched CFG, per-sample generators, build_scheduler,
  cached `TextEncoder`), `compute_errors` + `draw_shared_noise` + `implicit_reward` per prompt
  (annotate, policy and judge UNets), `draw_pair` + `dpo_micro_step` + backward + grad clip +
  `build_optimizer`'s optimizer (train, the body of `train_phase._Loop.step`).
- baseline: the plain diffusers loops of the anchor scripts (kept outside this repository;
  `plain_diffusers_anchor.py`: `generate_bench`, `annotate_bench`,
  `dpo_step_bench`; `plain_diffusers_anchor_sdxl.py`: `sdxl_generate`, `sdxl_annotate`,
  `sdxl_train`), re-implemented here (CI must not depend on them) for the same shapes:
  tensors drawn up front, `unet(...).sample`, scheduler `add_noise`/`step`, bf16 latents.

Numerics: each phase also compares the two paths' outputs on identical inputs (final latents,
per-row denoising errors, DPO loss) and reports the max abs diff and whether it is within the
tolerance of the compute dtype. Throughput ratio = project / baseline on the same work.

Shapes: `tiny` (the tests' tiny UNet, seconds on CPU), `small` (a CPU-sized UNet), `sd15` and
`sdxl` (the anchors' UNet/VAE configs; for a GPU). `--compile` and `--channels-last` add rows
where the lever is applied from outside (the UNet object handed to the project's functions);
the project's phases do not apply them today (docs/performance.md lists the code changes).

    python bench/phases.py --shape tiny --out bench-out/phases-tiny.json
    python bench/phases.py --device cuda --shape sd15 --compile --out bench-out/phases-sd15.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (  # noqa: E402
    add_repo_paths,
    describe_machine,
    format_table,
    mib,
    read_proc_status,
    reset_peak_rss,
    set_thread_policy,
    write_json,
)

add_repo_paths()
log = logging.getLogger("bench.phases")

# ----------------------------------------------------------------------------- shapes

UNET_SD15 = dict(  # the SD1.5 anchor script's UNET_SD15
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
UNET_SDXL = dict(  # the SDXL anchor script's UNET_SDXL
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
VAE_SD = dict(  # the anchor's VAE_SD15 (8x downsampling)
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
VAE_TINY = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(32, 32),
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32,
)
UNET_TINY = dict(  # tests/builders/tiny_pipeline.py build_tiny_sd15
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
)
UNET_TINY_SDXL = dict(  # tests/builders/tiny_pipeline.py build_tiny_sdxl (text_time conditioning, 2 encoders)
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
    cross_attention_dim=64, norm_num_groups=32,
)
UNET_SMALL = dict(
    block_out_channels=(64, 128, 128), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
)
# SD's own DDIM settings (stable-diffusion-v1-5 scheduler_config.json); the anchor's DDIMScheduler
# differs only in clip_sample/set_alpha_to_one/steps_offset, which cost nothing.
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@dataclass(frozen=True)
class Shape:
    """A pipeline shape and the per-phase work the anchors measure for it."""

    layout: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_dims: tuple[int, ...]  # hidden size of each text encoder (SDXL: two)
    resolution: int
    max_tokens: int
    scaling_factor: float
    gen_batch: int
    gen_steps: int
    guidance: float
    ann_images: int  # images scored per measurement (anchor: batch)
    ann_candidates: int  # N per prompt: compute_errors runs per prompt on N*M rows
    ann_draws: int  # M
    ann_batch: int  # rows per UNet call (sampler.batchSize in the phase)
    train_pairs: int
    optimizer: str = "adamw"
    checkpointing: bool = False


SHAPES: dict[str, Shape] = {
    "tiny": Shape("sd15", UNET_TINY, VAE_TINY, (32,), 16, 16, 0.18215, gen_batch=4, gen_steps=4, guidance=7.5,
                  ann_images=8, ann_candidates=4, ann_draws=2, ann_batch=8, train_pairs=2),
    "tiny-sdxl": Shape("sdxl", UNET_TINY_SDXL, VAE_TINY, (32, 32), 16, 16, 0.13025, gen_batch=4, gen_steps=4,
                       guidance=5.0, ann_images=8, ann_candidates=4, ann_draws=2, ann_batch=8, train_pairs=2,
                       optimizer="adafactor", checkpointing=True),
    "small": Shape("sd15", UNET_SMALL, VAE_TINY, (64,), 32, 16, 0.18215, gen_batch=8, gen_steps=10, guidance=7.5,
                   ann_images=16, ann_candidates=8, ann_draws=4, ann_batch=32, train_pairs=4),
    "sd15": Shape("sd15", UNET_SD15, VAE_SD, (768,), 512, 77, 0.18215, gen_batch=32, gen_steps=25, guidance=7.5,
                  ann_images=32, ann_candidates=8, ann_draws=4, ann_batch=32, train_pairs=8),
    "sdxl": Shape("sdxl", UNET_SDXL, VAE_SD, (768, 1280), 1024, 77, 0.13025, gen_batch=8, gen_steps=20,
                  guidance=5.0, ann_images=8, ann_candidates=8, ann_draws=4, ann_batch=8, train_pairs=4,
                  optimizer="adafactor", checkpointing=True),
}
BETA = 5000.0
SEED = 0
# Anchor figures (measured with the anchor scripts, one H100, bf16, 2026-11-25), per shape and phase.
ANCHORS = {
    ("sd15", "generate"): "6.1-6.7 images/s eager (with VAE decode), 9.5 compiled",
    ("sd15", "annotate"): "40.8 images/s",
    ("sd15", "train"): "28.1 pairs/s eager (33 GiB), 37.4 compiled",
    ("sdxl", "generate"): "1.40 images/s",
    ("sdxl", "annotate"): "6.7 images/s",
    ("sdxl", "train"): "3.1 pairs/s (28 GiB, Adafactor, checkpointing)",
}


# ----------------------------------------------------------------------------- the pipeline folder


def write_clip_tokenizer(folder: Path, max_tokens: int) -> None:
    """A byte-level CLIP BPE tokenizer (every byte symbol, no merges): any text, no download."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in cs]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                        model_max_length=max_tokens, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(str(folder))


def build_text_encoder(tokenizer: Any, hidden: int, max_tokens: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    heads = max(1, hidden // 64) if hidden >= 64 else 4
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=heads, max_position_embeddings=max_tokens,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_pipeline_folder(shape_name: str, shape: Shape, root: Path) -> Path:
    """Write (once) a pipeline folder for `shape` with seeded random weights; return it.

    Text encoders are 2-layer CLIP models of the real hidden sizes (77 tokens for SD shapes):
    the phases encode each prompt once (cached), so their depth does not change the timings.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    folder = root / shape_name
    stamp = folder / "bench_shape.json"
    wanted = json.dumps(asdict(shape), sort_keys=True, default=str)
    if stamp.is_file() and stamp.read_text() == wanted:
        return folder
    log.info("building the %s pipeline folder at %s (random weights)", shape_name, folder)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(**shape.unet)
    vae = AutoencoderKL(**shape.vae, scaling_factor=shape.scaling_factor,
                        sample_size=shape.resolution)
    scheduler = DDIMScheduler(**SCHEDULER)
    toks, encoders = [], []
    for i, hidden in enumerate(shape.text_dims):
        write_clip_tokenizer(folder / f"_tok{i}", shape.max_tokens)
        tok = CLIPTokenizer.from_pretrained(str(folder / f"_tok{i}"))
        toks.append(tok)
        encoders.append(build_text_encoder(tok, hidden, shape.max_tokens, projection=i == 1))
    if shape.layout == "sd15":
        pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=encoders[0], tokenizer=toks[0],
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=toks[0], tokenizer_2=toks[1], scheduler=scheduler,
                                         force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(str(folder))
    for i in range(len(shape.text_dims)):
        shutil.rmtree(folder / f"_tok{i}", ignore_errors=True)
    stamp.write_text(wanted)
    return folder


# ----------------------------------------------------------------------------- device helpers


@dataclass
class Device:
    """Sync, peak-memory and autocast helpers for one torch device."""

    torch_device: Any
    dtype: Any

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        gc.collect()
        if self.is_cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def peak_bytes(self) -> int | None:
        if self.is_cuda:
            import torch

            return int(torch.cuda.max_memory_allocated())
        return read_proc_status().get("VmHWM")

    def autocast(self) -> Any:
        """What `train_phase._Loop._autocast` returns: autocast on CUDA for half dtypes, else nothing."""
        import torch

        if self.is_cuda and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def free(self) -> None:
        gc.collect()
        if self.is_cuda:
            import torch

            torch.cuda.empty_cache()


def measure(dev: Device, fns: dict[str, Any], warmup: dict[str, int], repeats: int,
            interleave: bool = True) -> dict[str, dict[str, Any]]:
    """Median wall time and peak memory of each named function.

    Interleaved (A B C A B C ...) by default: on a shared machine the load changes over seconds,
    and alternating the paths spreads it over all of them alike. Peak memory is reset before
    every timed call and the maximum over a function's calls is reported (CUDA: allocated
    bytes; CPU: the process's peak RSS, which includes everything resident).
    Timer: wall clock on CUDA; on CPU the process's CPU time (`time.process_time`), which a
    shared, oversubscribed machine disturbs far less than wall time (wall times are kept too).
    """
    import time as _time

    for name, fn in fns.items():
        for _ in range(warmup.get(name, 1)):
            fn()
    dev.sync()
    out: dict[str, dict[str, Any]] = {name: {"times_s": [], "wall_s": [], "peak": 0} for name in fns}

    def timed(name: str) -> None:
        dev.reset_peak()
        start, cpu_start = _time.perf_counter(), _time.process_time()
        fns[name]()
        dev.sync()
        wall, cpu = _time.perf_counter() - start, _time.process_time() - cpu_start
        out[name]["wall_s"].append(wall)
        out[name]["times_s"].append(wall if dev.is_cuda else cpu)
        out[name]["peak"] = max(out[name]["peak"], dev.peak_bytes() or 0)

    order = [name for _ in range(repeats) for name in fns] if interleave else \
        [name for name in fns for _ in range(repeats)]
    for name in order:
        timed(name)
    for result in out.values():
        times = result["times_s"]
        result["median_s"] = statistics.median(times)
        result["min_s"] = min(times)
        result["peak_mem_mib"] = mib(result.pop("peak") or None)
        result["timer"] = "wall" if dev.is_cuda else "process_cpu"
    return out


def matmul_ceiling(dev: Device) -> float:
    """Measured dense matmul FLOP/s in the compute dtype (the anchor's MFU denominator), same timer as `measure`."""
    import torch

    n = 8192 if dev.is_cuda else 1024
    a = torch.randn(n, n, device=dev.torch_device, dtype=dev.dtype)
    b = torch.randn(n, n, device=dev.torch_device, dtype=dev.dtype)
    t = measure(dev, {"mm": lambda: a @ b}, {"mm": 2}, 5)["mm"]["median_s"]
    return 2 * n**3 / t


def count_forward_flops(unet: Any, components: Any, text: Any, dev: Device) -> float:
    """FLOPs of one UNet forward on one latent (torch.utils.flop_counter), with the phase's kwargs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sail_trainer.models.text import build_unet_kwargs

    x = torch.randn(1, *components.latent_shape(components.extra["resolution"]), device=dev.torch_device,
                    dtype=dev.dtype)
    kwargs = build_unet_kwargs(components, text, components.extra["resolution"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500], device=dev.torch_device), **kwargs)
    return float(counter.get_total_flops())


def max_abs_diff(a: Any, b: Any) -> tuple[float, float]:
    """(max |a - b|, max |b|) in fp32 on CPU."""
    a32, b32 = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a32 - b32).abs().max()), float(b32.abs().max())


def tolerance(dev: Device) -> float:
    """Relative tolerance (max abs diff / max abs of the baseline) for the compute dtype."""
    import torch

    return 1e-4 if dev.dtype == torch.float32 else 3e-2


# ----------------------------------------------------------------------------- variants of the UNet


@dataclass
class Variant:
    """A `spec.performance` setting: the UNet prepared by the phases' own `accelerate_unet`."""

    name: str
    compile: bool = False
    channels_last: bool = False

    def apply(self, module: Any) -> Any:
        """A copy of `module` (the original stays eager) with the levers the phases would apply."""
        from sail_api.spec import PerformanceSpec
        from sail_trainer.models.acceleration import accelerate_unet

        if not (self.compile or self.channels_last):
            return module
        performance = PerformanceSpec(compile=self.compile, channels_last=self.channels_last)
        return accelerate_unet(copy.deepcopy(module), performance)

    def warmup(self, base: int) -> int:
        return base + (1 if self.compile else 0)  # the first call compiles


def build_variants(args: argparse.Namespace) -> list[Variant]:
    variants = [Variant("project")]
    if args.channels_last:
        variants.append(Variant("project+channels_last", channels_last=True))
    if args.compile:
        variants.append(Variant("project+compile", compile=True))
    return variants


# ----------------------------------------------------------------------------- generate


def bench_generate(ctx: BenchContext) -> list[dict[str, Any]]:
    """Sampling loop: plain diffusers loop (anchor `generate_bench`) vs `sample_latents`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler

    from sail_trainer.models.sampling import build_scheduler, sample_latents

    shape, dev, comp, text = ctx.shape, ctx.dev, ctx.components, ctx.text
    batch, n = shape.gen_batch, min(4, shape.gen_batch)
    prompts = [f"a photo of object {i}" for i in range(batch // n)]
    seeds = [SEED + 1000 + k for k in range(batch)]
    latent_shape = comp.latent_shape(shape.resolution)

    def project(unet: Any) -> Any:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        cond = text.encode(prompts).repeat(n)
        return sample_latents(unet, comp, build_scheduler("ddim", comp.scheduler_config), cond,
                              text.unconditional(len(generators)), generators, steps=shape.gen_steps,
                              guidance_scale=shape.guidance, resolution=shape.resolution)

    # baseline inputs drawn up front (the anchor draws them on the device at no cost)
    cond, uncond = text.encode(prompts).repeat(n), text.unconditional(batch)
    ehs = torch.cat([uncond.embeds, cond.embeds]).to(dev.dtype)
    added = None
    if shape.layout == "sdxl":
        res = shape.resolution
        added = {"text_embeds": torch.cat([uncond.pooled, cond.pooled]).to(dev.dtype),
                 "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * 2 * batch, device=dev.torch_device,
                                          dtype=dev.dtype)}
    x_init = torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x_init = x_init.to(dev.torch_device, dev.dtype)
    plain_sched = DDIMScheduler.from_config({k: v for k, v in comp.scheduler_config.items() if not k.startswith("_")})
    unet = comp.unet

    @torch.no_grad()
    def baseline() -> Any:
        plain_sched.set_timesteps(shape.gen_steps)
        x = x_init
        for t in plain_sched.timesteps:
            kwargs = {"added_cond_kwargs": added} if added is not None else {}
            eps = unet(torch.cat([x, x]), t, ehs, **kwargs).sample
            u, c = eps.chunk(2)
            x = plain_sched.step(u + shape.guidance * (c - u), t, x).prev_sample
        return x

    vae = AutoencoderKL.from_pretrained(str(comp.folder), subfolder="vae", torch_dtype=dev.dtype).to(dev.torch_device)

    @torch.no_grad()
    def decode() -> Any:
        return vae.decode(x_init / vae.config.scaling_factor).sample

    work_flops = batch * 2 * shape.gen_steps * ctx.fwd_flops
    reference = baseline()
    diffs: dict[str, tuple[float, float]] = {}
    fns, warm = {"baseline": baseline}, {"baseline": ctx.warmup}
    for variant in ctx.variants:
        wrapped = variant.apply(unet)
        diffs[variant.name] = max_abs_diff(project(wrapped), reference)  # also the compile call
        fns[variant.name] = lambda w=wrapped: project(w)
        warm[variant.name] = variant.warmup(ctx.warmup)
    timings = measure(dev, fns, warm, ctx.repeats)
    base = timings["baseline"]
    dec = measure(dev, {"decode": decode}, {"decode": 1}, ctx.repeats)["decode"]
    rows = [ctx.row("generate", "baseline", batch, base, work_flops, unit="images/s",
                    extra={"decode_s": dec["median_s"], "images_per_s_with_decode": batch / (base["median_s"] + dec["median_s"]),
                           "config": f"{shape.gen_steps} DDIM steps, CFG {shape.guidance}, batch {batch}"})]
    for variant in ctx.variants:
        row = ctx.row("generate", variant.name, batch, timings[variant.name], work_flops, unit="images/s",
                      baseline=rows[0])
        row["ratio_vs_baseline_with_decode"] = row["throughput"] / rows[0]["images_per_s_with_decode"]
        row.update(ctx.numerics(*diffs[variant.name], "final latents"))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- annotate


def bench_annotate(ctx: BenchContext) -> list[dict[str, Any]]:
    """Implicit-reward scoring: plain loop (anchor `annotate_bench`) vs `compute_errors` per prompt."""
    import torch
    from diffusers import DDPMScheduler

    from sail_trainer.math.reward import draw_shared_noise, implicit_reward
    from sail_trainer.models.components import load_unet
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.models.text import TextEmbeddings, build_unet_kwargs
    from sail_trainer.phases.annotate_phase import compute_errors

    shape, dev, comp, text = ctx.shape, ctx.dev, ctx.components, ctx.text
    n, m = shape.ann_candidates, shape.ann_draws
    n_prompts = max(1, shape.ann_images // n)
    prompts = [f"a photo of object {p}" for p in range(n_prompts)]
    latent_shape = comp.latent_shape(shape.resolution)
    gen = torch.Generator().manual_seed(SEED + 7)
    candidates = [torch.randn((n, *latent_shape), generator=gen).to(dev.torch_device) for _ in prompts]
    judge = load_unet(comp.folder, dev.torch_device, dev.dtype)
    alphas = build_scheduler("ddpm", comp.scheduler_config).alphas_cumprod

    def draws(p: int) -> tuple[Any, Any]:
        return draw_shared_noise(torch.Generator().manual_seed(SEED + 100 + p), m, latent_shape,
                                 comp.num_train_timesteps)

    def project(policy: Any, reference: Any) -> tuple[Any, Any]:
        rewards, errs = [], []
        for p, x in enumerate(candidates):  # the body of annotate_phase.run's prompt loop
            t, eps = draws(p)
            x0, noise, ts = x.repeat_interleave(m, 0), eps.to(dev.torch_device).repeat(n, 1, 1, 1), \
                t.to(dev.torch_device).repeat(n)
            args = (comp, x0, ts, noise, text.encode([prompts[p]]), shape.resolution, alphas, shape.ann_batch)
            model_err = compute_errors(policy, *args).view(n, m).cpu()
            ref_err = compute_errors(reference, *args).view(n, m).cpu()
            rewards.append(implicit_reward(model_err, ref_err, BETA))
            errs.append(model_err)
        return torch.stack(rewards), torch.stack(errs)

    # baseline: the same rows (prompt-major, candidate x draw) drawn up front, in dtype
    rows_x, rows_t, rows_eps, rows_text = [], [], [], []
    for p, x in enumerate(candidates):
        t, eps = draws(p)
        rows_x.append(x.repeat_interleave(m, 0))
        rows_t.append(t.repeat(n))
        rows_eps.append(eps.repeat(n, 1, 1, 1))
        rows_text.append(text.encode([prompts[p]]).repeat(n * m))
    lat = torch.cat(rows_x).to(dev.torch_device, dev.dtype)
    ts_all = torch.cat(rows_t).to(dev.torch_device)
    noise_all = torch.cat(rows_eps).to(dev.torch_device, dev.dtype)
    kwargs_all = build_unet_kwargs(comp, TextEmbeddings.cat(rows_text), shape.resolution)
    plain_sched = DDPMScheduler.from_config({k: v for k, v in comp.scheduler_config.items() if not k.startswith("_")})
    policy_unet = comp.unet

    def chunk_kwargs(sl: slice) -> dict[str, Any]:
        out: dict[str, Any] = {"encoder_hidden_states": kwargs_all["encoder_hidden_states"][sl]}
        if "added_cond_kwargs" in kwargs_all:
            out["added_cond_kwargs"] = {k: v[sl] for k, v in kwargs_all["added_cond_kwargs"].items()}
        return out

    @torch.no_grad()
    def baseline() -> tuple[Any, Any]:
        a_all, b_all = [], []
        for start in range(0, lat.shape[0], shape.ann_batch):
            sl = slice(start, start + shape.ann_batch)
            noisy = plain_sched.add_noise(lat[sl], noise_all[sl], ts_all[sl])
            kw = chunk_kwargs(sl)
            a_all.append((policy_unet(noisy, ts_all[sl], **kw).sample - noise_all[sl]).float().pow(2).mean(dim=(1, 2, 3)))
            b_all.append((judge(noisy, ts_all[sl], **kw).sample - noise_all[sl]).float().pow(2).mean(dim=(1, 2, 3)))
        return torch.cat(a_all), torch.cat(b_all)

    images = n_prompts * n
    work_flops = images * 2 * m * ctx.fwd_flops
    base_err, _ = baseline()
    diffs: dict[str, tuple[float, float]] = {}
    fns, warm = {"baseline": baseline}, {"baseline": ctx.warmup}
    for variant in ctx.variants:
        pol, ref = variant.apply(policy_unet), variant.apply(judge)
        diffs[variant.name] = max_abs_diff(project(pol, ref)[1].reshape(-1), base_err)
        fns[variant.name] = lambda p=pol, r=ref: project(p, r)
        warm[variant.name] = variant.warmup(ctx.warmup)
    timings = measure(dev, fns, warm, ctx.repeats)
    base = timings["baseline"]
    rows = [ctx.row("annotate", "baseline", images, base, work_flops, unit="images/s",
                    extra={"config": f"{m} draws x (policy + judge), {n} candidates x {n_prompts} prompts, "
                                     f"{shape.ann_batch} rows per call"})]
    for variant in ctx.variants:
        row = ctx.row("annotate", variant.name, images, timings[variant.name], work_flops, unit="images/s",
                      baseline=rows[0])
        row.update(ctx.numerics(*diffs[variant.name], "per-row denoising errors of the policy"))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- train


def bench_train(ctx: BenchContext) -> list[dict[str, Any]]:
    """One DPO optimizer step: plain step (anchor `dpo_step_bench`/`sdxl_train`) vs the phase's step body."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from sail_api.spec import OptimizerSpec
    from sail_trainer.models.components import load_unet
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.models.text import TextEmbeddings, build_unet_kwargs
    from sail_trainer.phases.train_data import DrawSettings, draw_pair
    from sail_trainer.phases.train_phase import DpoStepModels, build_optimizer, dpo_micro_step

    shape, dev, comp, text = ctx.shape, ctx.dev, ctx.components, ctx.text
    pairs = shape.train_pairs
    latent_shape = comp.latent_shape(shape.resolution)
    pool_size = 4 * pairs
    gen = torch.Generator().manual_seed(SEED + 11)
    pool_w = torch.randn((pool_size, *latent_shape), generator=gen)
    pool_l = torch.randn((pool_size, *latent_shape), generator=gen)
    prompts = [f"a photo of object {i}" for i in range(pool_size)]
    alphas = build_scheduler("ddpm", comp.scheduler_config).alphas_cumprod
    spec = OptimizerSpec(kind=shape.optimizer, learning_rate=1e-8)

    def build_batch(step: int) -> dict[str, Any]:
        """`train_data.build_batch` on an in-memory pool (the phase reads memory-mapped latents)."""
        xw, xl, ts, noise, ps = [], [], [], [], []
        for pos in range(step * pairs, (step + 1) * pairs):
            d = draw_pair(DrawSettings(SEED, 1, comp.num_train_timesteps, 0.0, False), pos, latent_shape, False)
            i = pos % pool_size
            xw.append(pool_w[i])
            xl.append(pool_l[i])
            ts.append(d.timestep)
            noise.append(d.noise)
            ps.append(prompts[i])
        return {"prompts": ps, "x_w": torch.stack(xw), "x_l": torch.stack(xl),
                "timesteps": torch.tensor(ts, dtype=torch.long), "noise": torch.stack(noise)}

    def load_pair() -> tuple[Any, Any, Any]:
        policy = load_unet(comp.folder, dev.torch_device, torch.float32)
        policy.train().requires_grad_(True)
        if shape.checkpointing:
            policy.enable_gradient_checkpointing()
        reference = load_unet(comp.folder, dev.torch_device, dev.dtype)
        opt = build_optimizer([p for p in policy.parameters() if p.requires_grad], spec, 1e-8, dev.torch_device)
        return policy, reference, opt

    # ---- baseline (plain diffusers: its own UNets, the anchor's optimizer, sched.add_noise)
    plain_sched = DDPMScheduler.from_config({k: v for k, v in comp.scheduler_config.items() if not k.startswith("_")})
    b_policy = UNet2DConditionModel.from_pretrained(str(comp.folder), subfolder="unet").to(dev.torch_device)
    if shape.checkpointing:
        b_policy.enable_gradient_checkpointing()
    b_ref = UNet2DConditionModel.from_pretrained(str(comp.folder), subfolder="unet", torch_dtype=dev.dtype)
    b_ref = b_ref.to(dev.torch_device).requires_grad_(False)
    if shape.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        b_opt = Adafactor(b_policy.parameters(), lr=1e-8, scale_parameter=False, relative_step=False,
                          warmup_init=False, clip_threshold=1.0, weight_decay=1e-2)
    else:
        b_opt = torch.optim.AdamW(b_policy.parameters(), lr=1e-8, fused=dev.is_cuda)
    b_batch = build_batch(0)
    emb = text.encode(b_batch["prompts"])
    b_kwargs = build_unet_kwargs(comp, TextEmbeddings.cat([emb, emb]), shape.resolution)
    b_lat = torch.cat([b_batch["x_w"], b_batch["x_l"]]).to(dev.torch_device)
    b_noise = b_batch["noise"].to(dev.torch_device).repeat(2, 1, 1, 1)
    b_t = b_batch["timesteps"].to(dev.torch_device).repeat(2)

    def baseline_loss(policy: Any) -> Any:
        noisy = plain_sched.add_noise(b_lat, b_noise, b_t)
        with dev.autocast():
            pred = policy(noisy, b_t, **b_kwargs).sample
            with torch.no_grad():
                ref_kwargs = {k: v for k, v in b_kwargs.items()}
                rpred = b_ref(noisy.to(b_ref.dtype), b_t, **ref_kwargs).sample
        ml = (pred.float() - b_noise).pow(2).mean(dim=(1, 2, 3))
        rl = (rpred.float() - b_noise).pow(2).mean(dim=(1, 2, 3))
        mw, ml_ = ml.chunk(2)
        rw, rl_ = rl.chunk(2)
        return -F.logsigmoid(-0.5 * BETA * ((mw - ml_) - (rw - rl_))).mean()

    def baseline_step() -> None:
        baseline_loss(b_policy).backward()
        b_opt.step()
        b_opt.zero_grad(set_to_none=True)

    work_flops = 2 * pairs * ctx.fwd_flops * 4  # policy fwd+bwd ~3x fwd, reference fwd 1x (anchor convention)
    with torch.no_grad():
        base_loss0 = baseline_loss(b_policy)

    def build_project_step(variant: Variant) -> Any:
        """The body of train_phase._Loop.step (one micro batch = the whole step here) on fresh UNets."""
        policy, reference, opt = load_pair()
        model, ref_in = variant.apply(policy), variant.apply(reference)
        counter = {"step": 0}
        models = DpoStepModels(model, ref_in, comp, text, alphas, BETA, shape.resolution, dev.autocast)

        def project_step() -> None:
            batch = build_batch(counter["step"])
            counter["step"] += 1
            out = dpo_micro_step(models, batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), spec.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)

        with torch.no_grad():  # the variant's own modules: a compiled path is checked as compiled
            loss0 = dpo_micro_step(models, build_batch(0)).loss
        numerics[variant.name] = max_abs_diff(loss0.reshape(1), base_loss0.reshape(1))
        return project_step

    numerics: dict[str, tuple[float, float]] = {}
    warm = {"baseline": ctx.warmup, **{v.name: v.warmup(ctx.warmup) for v in ctx.variants}}
    if ctx.one_at_a_time:  # one set of UNets + optimizer state at a time: clean per-path peak memory
        timings = measure(dev, {"baseline": baseline_step}, warm, ctx.repeats)
        del b_policy, b_ref, b_opt, baseline_step
        dev.free()
        for variant in ctx.variants:
            step_fn = build_project_step(variant)
            timings.update(measure(dev, {variant.name: step_fn}, warm, ctx.repeats))
            del step_fn
            dev.free()
    else:  # CPU (shared machine): everything resident, interleaved; memory is the process's peak RSS
        fns = {"baseline": baseline_step, **{v.name: build_project_step(v) for v in ctx.variants}}
        timings = measure(dev, fns, warm, ctx.repeats)
        del fns, b_policy, b_ref, b_opt
        dev.free()
    rows = [ctx.row("train", "baseline", pairs, timings["baseline"], work_flops, unit="pairs/s",
                    extra={"config": f"{pairs} pairs/step, {shape.optimizer}, checkpointing {shape.checkpointing}"})]
    for variant in ctx.variants:
        row = ctx.row("train", variant.name, pairs, timings[variant.name], work_flops, unit="pairs/s",
                      baseline=rows[0])
        row.update(ctx.numerics(*numerics[variant.name], "DPO loss of step 1 (same weights, same draws)"))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- driver


@dataclass
class BenchContext:
    shape_name: str
    shape: Shape
    dev: Device
    components: Any
    text: Any
    variants: list[Variant]
    warmup: int
    repeats: int
    fwd_flops: float
    ceiling: float
    one_at_a_time: bool = False

    def row(self, phase: str, path: str, items: int, timing: dict[str, Any], flops: float, *, unit: str,
            baseline: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        seconds = timing["median_s"]
        row: dict[str, Any] = {
            "shape": self.shape_name, "phase": phase, "path": path, "items": items, "unit": unit,
            "seconds": seconds, "throughput": items / seconds, "peak_mem_mib": timing["peak_mem_mib"],
            "mfu": flops / seconds / self.ceiling if self.ceiling else None, "times_s": timing["times_s"],
            "wall_s": timing["wall_s"], "timer": timing["timer"],
        }
        row["min_s"] = timing.get("min_s")
        if baseline is not None:
            row["ratio"] = row["throughput"] / baseline["throughput"]
            if row["min_s"] and baseline.get("min_s"):
                row["ratio_of_min"] = baseline["min_s"] / row["min_s"]
            if row["peak_mem_mib"] is not None and baseline["peak_mem_mib"]:
                row["mem_ratio"] = row["peak_mem_mib"] / baseline["peak_mem_mib"]
        else:
            row["ratio"] = 1.0
        if (self.shape_name, phase) in ANCHORS and path == "baseline":
            row["anchor_h100"] = ANCHORS[(self.shape_name, phase)]
        row.update(extra or {})
        return row

    def numerics(self, diff: float, scale: float, what: str) -> dict[str, Any]:
        rel = diff / scale if scale else diff
        tol = tolerance(self.dev)
        return {"max_abs_diff": diff, "rel_diff": rel, "tolerance_rel": tol, "within_tolerance": rel <= tol,
                "compared": what}


PHASES = {"generate": bench_generate, "annotate": bench_annotate, "train": bench_train}
COLUMNS = [("phase", "phase"), ("path", "path"), ("throughput", "throughput"), ("unit", "unit"),
           ("ratio", "x baseline"), ("seconds", "s/iter"), ("peak_mem_mib", "peak MiB"), ("mfu", "MFU"),
           ("max_abs_diff", "max|diff|"), ("within_tolerance", "numerics ok")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0)")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--phases", default="generate,annotate,train", help="comma-separated subset")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="compute dtype (default: bf16 on cuda, fp32 on cpu, as the phases resolve it)")
    p.add_argument("--compile", action="store_true", help="add rows with spec.performance.compile (the phases' accelerate_unet)")
    p.add_argument("--channels-last", action="store_true", help="add rows with spec.performance.channelsLast")
    p.add_argument("--one-at-a-time", choices=["auto", "yes", "no"], default="auto",
                   help="train: measure each path with only its own UNets resident (auto: on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--models", type=Path, default=Path("/tmp/sail-bench-models"),
                   help="where the random-weight pipeline folders are written (reused when present)")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch

    from sail_trainer.models.components import load_components, resolve_dtype
    from sail_trainer.models.text import TextEncoder

    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise SystemExit(f"--phases: unknown {unknown}; choose from {sorted(PHASES)}")
    shape = SHAPES[args.shape]
    torch_device = torch.device(args.device)
    if torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the anchors
        torch.backends.cudnn.allow_tf32 = True
    precision = args.dtype or ("bf16" if torch_device.type == "cuda" else "fp32")
    dev = Device(torch_device, resolve_dtype(precision, torch_device))
    started = time.monotonic()
    folder = build_pipeline_folder(args.shape, shape, args.models)
    components = load_components(folder, "auto", torch_device, dev.dtype)
    components.extra["resolution"] = shape.resolution
    text = TextEncoder(components)
    fwd_flops = count_forward_flops(components.unet, components, text.encode(["flop probe"]), dev)
    ceiling = matmul_ceiling(dev)
    ctx = BenchContext(args.shape, shape, dev, components, text, build_variants(args), args.warmup, args.repeats,
                       fwd_flops, ceiling, {"auto": dev.is_cuda, "yes": True, "no": False}[args.one_at_a_time])
    rows: list[dict[str, Any]] = []
    for phase in phases:
        log.info("phase %s (%s)", phase, args.shape)
        rows.extend(PHASES[phase](ctx))
        dev.free()
    document = {
        "benchmark": "phases", "argv": sys.argv[1:] if argv is None else argv, "machine": describe_machine(args.device),
        "shape": args.shape, "shape_config": asdict(shape), "dtype": str(dev.dtype), "device": str(torch_device),
        "unet_params": sum(p.numel() for p in components.unet.parameters()), "unet_fwd_flops": fwd_flops,
        "matmul_ceiling_flops": ceiling, "rows": rows, "wall_s": time.monotonic() - started,
        "levers": describe_levers(components.unet),
    }
    write_json(args.out, document)
    print(f"shape {args.shape} on {torch_device} ({dev.dtype}); UNet {document['unet_params'] / 1e6:.2f}M params, "
          f"{fwd_flops / 1e9:.3g} GFLOP/forward; matmul ceiling {ceiling / 1e12:.3g} TFLOP/s")
    print(format_table(rows, COLUMNS))
    bad = [r for r in rows if r.get("within_tolerance") is False]
    for r in bad:
        print(f"WARNING: {r['phase']} {r['path']}: rel diff {r['rel_diff']:.3g} > tolerance {r['tolerance_rel']}")
    return 0


def describe_levers(unet: Any) -> dict[str, Any]:
    """What the loaded UNet uses today (attention processor class: SDPA or not; memory format)."""
    import torch

    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    first_conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d))
    return {"attention_processors": sorted(processors),
            "channels_last": first_conv.weight.is_contiguous(memory_format=torch.channels_last)
            and not first_conv.weight.is_contiguous()}


if __name__ == "__main__":
    set_thread_policy()  # before torch loads (main imports it)
    raise SystemExit(main())
