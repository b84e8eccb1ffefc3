"""Build the toy Stable-Diffusion-1.5-layout pipeline: tokenizer, text encoder, VAE, UNet, scheduler.

The pipeline is a real `StableDiffusionPipeline` folder (model_index.json, one sub-folder per
component, safetensors weights) so that it goes through exactly the trainer's SD1.5 code path:
- tokenizer: a `CLIPTokenizer` whose vocab.json / merges.txt are written here from the
  domain's words (no download);
- text encoder: a tiny `CLIPTextModel`, random-initialised from the seed and frozen (the
  UNet learns to read its fixed embeddings);
- VAE: a tiny `AutoencoderKL` with 4x downsampling (32x32x3 images -> 8x8x4 latents), trained
  on procedural images; `scaling_factor` is set to 1/std of its latents, as SD does;
- UNet: a tiny `UNet2DConditionModel` trained with the epsilon objective on the SD1.5 noise
  schedule (scaled_linear 0.00085..0.012), 10% of captions blanked so guidance works;
- scheduler: DDIM config (the SD1.5 scheduler family).

`build_toy_pipeline` is deterministic from its seed on a given machine/thread count.
torch, diffusers and transformers are imported at module level: `sail_trainer.toy.cli` imports
this module only inside the commands that need it, so `sail-trainer toy --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.toy import domain

log = logging.getLogger(__name__)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 16


@dataclass(frozen=True)
class BuildConfig:
    """Sizes and budgets of `sail-trainer toy build` (defaults: the shipped model)."""

    seed: int = 0
    resolution: int = 32
    vae_steps: int = 600
    unet_steps: int = 5000
    batch_size: int = 32
    vae_batch_size: int = 32
    dataset_size: int = 8192
    vae_lr: float = 2e-3
    unet_lr: float = 1.5e-3
    text_dim: int = 32
    unet_channels: tuple[int, int] = (32, 64)
    vae_channels: tuple[int, int, int] = (16, 32, 32)
    empty_prompt_probability: float = 0.1
    vae_from: str | None = None  # reuse the VAE of this pipeline folder instead of training one
    train_text_encoder: bool = True  # its layers learn with the UNet; token embeddings stay random
    text_layers: int = 2
    filler_probability: float = 0.5  # share of training captions given nonsense filler words


# ----------------------------------------------------------------- tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (same as transformers' CLIP tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_tokenizer_files(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """CLIP BPE vocab and merges in which every domain word is reachable by prefix merges.

    Every byte symbol (with and without the end-of-word marker) is in the vocabulary, so any
    text tokenizes without unknown tokens; each domain word gets the merge chain
    c1+c2, c1c2+c3, ..., whose every intermediate token is also in the vocabulary. Chains of
    different words can interleave (e.g. "re" inside "green"), which may split a word into
    several known tokens: still distinct and deterministic, which is all the encoder needs.
    """
    symbols = list(bytes_to_unicode().values())
    vocab_tokens: list[str] = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for nxt in pieces[1:]:
            merge = f"{current} {nxt}"
            if merge not in merges:
                merges.append(merge)
            current = current + nxt
            if current not in vocab_tokens:
                vocab_tokens.append(current)
    vocab_tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(dict.fromkeys(vocab_tokens))}, merges


def write_tokenizer(folder: Path) -> Any:
    """Write a CLIPTokenizer for the domain's words to `folder` and return it loaded back."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_tokenizer_files(domain.build_vocabulary())
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
        model_max_length=MAX_TOKENS, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS,
    )
    tokenizer.save_pretrained(str(folder))
    return CLIPTokenizer.from_pretrained(str(folder))


# ----------------------------------------------------------------- components


def build_text_encoder(tokenizer: Any, config: BuildConfig) -> Any:
    """A tiny random CLIPTextModel (seeded); with `train_text_encoder` all but its token embeddings train.

    The token embeddings stay at their random values so that a word never seen in training
    (a held-out phrasing's "photo") is as foreign as the filler words the encoder learned to
    look past; only the layers that read the embeddings learn.
    """
    torch.manual_seed(config.seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_dim, intermediate_size=2 * config.text_dim,
        num_hidden_layers=config.text_layers, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=config.text_dim,
    )
    model = CLIPTextModel(cfg).eval().requires_grad_(False)
    if config.train_text_encoder:
        model.text_model.encoder.requires_grad_(True)
        model.text_model.final_layer_norm.requires_grad_(True)
        model.text_model.embeddings.position_embedding.requires_grad_(True)
    return model


def build_vae(config: BuildConfig) -> Any:
    """Tiny AutoencoderKL: three blocks (two 2x downsamples), 4 latent channels, no attention."""
    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_channels, layers_per_block=1, norm_num_groups=8,
        sample_size=config.resolution, mid_block_add_attention=False,
    )


def build_unet(config: BuildConfig, latent_size: int) -> Any:
    """Tiny UNet2DConditionModel reading the text encoder's hidden states by cross-attention."""
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=config.text_dim, attention_head_dim=8, norm_num_groups=16,
        # Also add an attention-pooled text embedding to the time embedding (diffusers'
        # TextTimeEmbedding; computed from encoder_hidden_states inside the UNet, so callers
        # are unchanged). With cross-attention alone a UNet this small ignored the caption
        # for thousands of steps; this global path conditions every ResNet block.
        addition_embed_type="text", addition_embed_type_num_heads=4,
    )


def build_scheduler() -> Any:
    """The SD1.5 noise schedule as a DDIM scheduler (few-step sampling on CPU)."""
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


# ----------------------------------------------------------------- training


def encode_captions(tokenizer: Any, text_encoder: Any, captions: list[str]) -> Any:
    """Last hidden states [N, MAX_TOKENS, D] of the text encoder, as the pipeline computes them."""
    return text_encoder(tokenize(tokenizer, captions))[0]


def tokenize(tokenizer: Any, captions: list[str]) -> Any:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def train_vae(vae: Any, images: Any, config: BuildConfig) -> list[float]:
    """Reconstruction (L1 + MSE) plus a small KL term, on posterior samples; returns the loss curve."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.vae_steps)
    losses: list[float] = []
    vae.train()
    for step in range(config.vae_steps):
        idx = torch.randint(0, images.shape[0], (config.vae_batch_size,), generator=gen)
        x = images[idx] * 2 - 1
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        # Foreground pixels weigh 5x: the shape is ~20% of the image and carries the colour.
        weight = 1.0 + 4.0 * (x.amax(dim=1, keepdim=True) > -0.9).float()
        err = rec - x
        loss = (weight * (err.abs() + err.pow(2))).mean() + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0:
            log.info("vae step %d loss %.4f", step, loss.item())
    vae.eval()
    return losses


@dataclass
class TextSide:
    """What the UNet loop needs of the text: the encoder, its tokenizer and each latent's caption."""

    tokenizer: Any
    encoder: Any
    captions: list[str]


def train_unet(unet: Any, latents: Any, text: TextSide, scheduler: Any, config: BuildConfig) -> list[float]:
    """Epsilon-prediction training on precomputed latents; the text encoder's layers train along."""
    gen = torch.Generator().manual_seed(config.seed + 2)
    rng = np.random.default_rng(config.seed + 3)
    abar = scheduler.alphas_cumprod.float()
    text_params = [p for p in text.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(list(unet.parameters()) + text_params, lr=config.unet_lr, weight_decay=1e-2)
    if text_params:
        text.encoder.train()
    warm = max(1, config.unet_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, config.unet_steps) / config.unet_steps))
    )
    losses: list[float] = []
    unet.train()
    for step in range(config.unet_steps):
        idx = torch.randint(0, latents.shape[0], (config.batch_size,), generator=gen)
        x0 = latents[idx]
        blank = torch.rand(config.batch_size, generator=gen) < config.empty_prompt_probability
        batch = ["" if b else domain.insert_fillers(rng, text.captions[i], config.filler_probability)
                 for i, b in zip(idx.tolist(), blank.tolist(), strict=True)]
        with torch.set_grad_enabled(bool(text_params)):
            ctx = encode_captions(text.tokenizer, text.encoder, batch)
        t = torch.randint(0, 1000, (config.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = add_noise(x0, eps, t, abar)  # the trainer's own maths, not a copy
        loss = denoising_error(unet(xt, t, encoder_hidden_states=ctx).sample, eps).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + text_params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0:
            log.info("unet step %d loss %.4f", step, loss.item())
    unet.eval()
    text.encoder.eval().requires_grad_(False)
    return losses


def build_toy_pipeline(out: Path, config: BuildConfig) -> dict[str, Any]:
    """Train every component and save a StableDiffusionPipeline folder at `out`; returns build info.

    The info (also written to `out/toy_build.json`) records the config, the loss curves' ends
    and the wall time of each stage.
    """
    started = time.monotonic()
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"
    tokenizer = write_tokenizer(tok_dir)
    text_encoder = build_text_encoder(tokenizer, config)
    images_np, captions, _ = domain.sample_dataset(config.seed, config.dataset_size, config.resolution)
    images = torch.from_numpy(images_np)

    torch.manual_seed(config.seed + 10)
    if config.vae_from:
        vae = AutoencoderKL.from_pretrained(config.vae_from, subfolder="vae").eval()
        vae_losses = [float("nan")]
    else:
        vae = build_vae(config)
        vae_losses = train_vae(vae, images, config)
    t_vae = time.monotonic() - started
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + 256] * 2 - 1).latent_dist.mean
                             for i in range(0, images.shape[0], 256)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling

    scheduler = build_scheduler()
    torch.manual_seed(config.seed + 20)
    unet = build_unet(config, latents.shape[-1])
    unet_losses = train_unet(unet, latents, TextSide(tokenizer, text_encoder, captions), scheduler, config)

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    info = {
        "config": asdict(config),
        "vae_final_loss": float(np.mean(vae_losses[-50:])),
        "unet_final_loss": float(np.mean(unet_losses[-100:])),
        "scaling_factor": scaling,
        "seconds_vae": round(t_vae, 1),
        "seconds_total": round(time.monotonic() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "toy_build.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_pipeline(folder: str | Path) -> Any:
    """Load a toy (or any SD1.5-layout) pipeline folder on CPU in fp32 through the standard loader."""
    if not (Path(folder) / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{folder}: not a diffusers pipeline folder (no model_index.json); build one with "
            "`sail-trainer toy build --out DIR` or use examples/toy/model"
        )
    return DiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)


def sample_images(
    pipe: Any, captions: list[str], seeds: list[int], steps: int = 20, guidance_scale: float = 3.0,
    batch_size: int = 64,
) -> Any:
    """Images [N, 3, H, W] float in [0, 1], one per (caption, seed): seed k gives the same noise for any model.

    Matched seeds make win rates against the base model paired comparisons.
    """
    if len(captions) != len(seeds):
        raise ValueError(f"sample_images: {len(captions)} captions but {len(seeds)} seeds")
    out = []
    for i in range(0, len(captions), batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        with torch.no_grad():
            res = pipe(captions[i:i + batch_size], num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=gens, output_type="pt")
        out.append(res.images.float().clamp(0, 1))
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)
