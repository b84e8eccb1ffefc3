"""Tiny real diffusers pipelines, seed pairs, prompt pools and run specs for tests.

Everything is built from configs with seeded random weights and written with
`save_pretrained`, so tests load it through the same loaders a real SD1.5/SDXL
checkpoint goes through. Nothing is downloaded: the CLIP tokenizer is built from a
byte-level vocab.json/merges.txt written here. Sizes are chosen so that a whole step 0
plus one SAIL round runs in seconds on one CPU core.

Heavy imports (torch, diffusers, transformers) happen inside the builders so that
importing this module stays cheap for tests that only need the spec builder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sail_trainer.toy.pipeline import bytes_to_unicode

TINY_RESOLUTION = 16  # pixels; the tiny VAE halves it once -> 8x8 latents
TINY_TEXT_HIDDEN = 32
_MERGE_WORDS = ("a", "photo", "of", "cat", "dog", "red", "blue", "tree", "house", "the", "on", "in")


def write_tiny_clip_tokenizer(folder: Path, model_max_length: int = 16) -> None:
    """Write a working CLIPTokenizer (byte-level vocab, a few merges) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in _MERGE_WORDS:  # merge each word left to right: "c a", "ca t</w>"
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merges.append(f"{symbols[0]} {symbols[1]}")
            merged = symbols[0] + symbols[1]
            vocab.setdefault(merged, len(vocab))
            symbols = [merged] + symbols[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
    }))


def _tiny_text_config(vocab_size: int, eos_id: int, bos_id: int, max_len: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id, hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab_size, hidden_act="gelu", projection_dim=TINY_TEXT_HIDDEN,
        max_position_embeddings=max_len,
    )


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), layers_per_block=1,
        norm_num_groups=32, sample_size=TINY_RESOLUTION,
    )


def _tiny_scheduler() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, steps_offset=1)


def _tokenizer_and_text(path: Path, with_projection: bool, subfolder: str) -> tuple[Any, Any]:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    write_tiny_clip_tokenizer(path / f"_{subfolder}_src")
    tokenizer = CLIPTokenizer.from_pretrained(path / f"_{subfolder}_src")
    config = _tiny_text_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id,
                               tokenizer.model_max_length)
    model_cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return tokenizer, model_cls(config)


def _cleanup_sources(path: Path) -> None:
    import shutil

    for src in path.glob("_*_src"):
        shutil.rmtree(src)


def build_tiny_sd15(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionPipeline (SD1.5 layout) to `path` and return it."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=TINY_RESOLUTION // 2, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=4, norm_num_groups=32,
    )
    vae = _tiny_vae()
    tokenizer, text_encoder = _tokenizer_and_text(path, with_projection=False, subfolder="tok")
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_tiny_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    _cleanup_sources(path)
    return path


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionXLPipeline (two text encoders, pooled embeds, add_time_ids) to `path`."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    time_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=TINY_RESOLUTION // 2, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * time_dim + TINY_TEXT_HIDDEN,
        cross_attention_dim=2 * TINY_TEXT_HIDDEN, norm_num_groups=32,
    )
    vae = _tiny_vae()
    tokenizer, text_encoder = _tokenizer_and_text(path, with_projection=False, subfolder="tok")
    tokenizer_2, text_encoder_2 = _tokenizer_and_text(path, with_projection=True, subfolder="tok2")
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, scheduler=_tiny_scheduler(), force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path)
    _cleanup_sources(path)
    return path


_PROMPT_WORDS = ("a photo of a cat", "a red house", "a blue tree", "a dog on the grass", "a cat in a house",
                 "the red dog", "a blue house on a hill", "a tree in the snow", "a cat on a red car",
                 "a dog in the blue sea")


def build_tiny_prompts(path: str | Path, n: int = 16) -> Path:
    """Write a text prompt pool with `n` distinct lines to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{_PROMPT_WORDS[i % len(_PROMPT_WORDS)]} number {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_png(seed: int, size: int = TINY_RESOLUTION) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build_tiny_seed_pairs(folder: str | Path, n: int = 8) -> Path:
    """Write `pairs.jsonl` (prompt, winner, loser; image paths relative to the file) + PNGs; return the JSONL."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        winner, loser = f"images/{i:04d}-w.png", f"images/{i:04d}-l.png"
        (folder / winner).write_bytes(_tiny_png(2 * i))
        (folder / loser).write_bytes(_tiny_png(2 * i + 1))
        rows.append({"prompt": f"{_PROMPT_WORDS[i % len(_PROMPT_WORDS)]} seed {i}", "winner": winner, "loser": loser})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_tiny_algorithm(model_uri: str, seed_pairs_uri: str, prompts_uri: str, **sail: Any) -> dict[str, Any]:
    """The algorithm part of a tiny run (camelCase wire form); keyword args override `sail` fields."""
    sail_spec: dict[str, Any] = {
        "rounds": 1, "promptsPerRound": 4, "candidatesPerPrompt": 2, "rewardDraws": 2, "alpha": 0.5,
        "beta": 5000.0, "seed": 0,
        "sampler": {"kind": "ddpm", "steps": 2, "guidanceScale": 5.0, "resolution": TINY_RESOLUTION,
                    "batchSize": 4},
        "train": {"effectiveBatch": 4, "microBatch": 2, "checkpointEvery": 1,
                  "optimizer": {"kind": "adamw", "learningRate": 1e-4}},
    }
    for key, value in sail.items():
        if isinstance(value, dict) and isinstance(sail_spec.get(key), dict):
            sail_spec[key] = {**sail_spec[key], **value}
        else:
            sail_spec[key] = value
    return {
        "model": {"uri": model_uri, "layout": "auto", "precision": "fp32"},
        "seedPairs": {"uri": seed_pairs_uri, "format": "auto"},
        "prompts": {"uri": prompts_uri, "format": "auto"},
        "sail": sail_spec,
    }


def build_tiny_run_spec(
    run_uri: str, model_uri: str, seed_pairs_uri: str, prompts_uri: str, *, name: str = "tiny",
    endpoint: str | None = None, region: str | None = None, **sail: Any,
) -> str:
    """Return a ResolvedRun JSON (what `--spec` points to) with tiny, fast settings.

    `sail` keyword args override fields of the `sail` section (camelCase keys, nested
    dicts merged), e.g. `candidatesPerPrompt=3` or `train={"steps": 2}`.
    """
    from sail_api.resolved import ResolvedRun

    resolved = ResolvedRun.model_validate({
        "name": name,
        "algorithm": build_tiny_algorithm(model_uri, seed_pairs_uri, prompts_uri, **sail),
        "storage": {"uri": run_uri, "endpoint": endpoint, "region": region},
    })
    return resolved.to_json()
