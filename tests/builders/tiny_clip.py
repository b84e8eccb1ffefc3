"""A tiny random CLIP preference model (PickScore layout: CLIPModel + CLIPProcessor in one folder),
built from config offline: hidden 32, 2 layers, 32-pixel images in 8-pixel patches."""

from __future__ import annotations

from pathlib import Path

from tests.builders.tiny_pipeline import write_tiny_clip_tokenizer

TINY_CLIP_IMAGE = 32


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(path)
    write_tiny_clip_tokenizer(folder / "tok")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tok")
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                     "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**common, "image_size": TINY_CLIP_IMAGE, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": TINY_CLIP_IMAGE},
                                crop_size={"height": TINY_CLIP_IMAGE, "width": TINY_CLIP_IMAGE})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    import shutil

    shutil.rmtree(folder / "tok")
    return folder
