"""Prompt embeddings for SD1.5 (one CLIP encoder) and SDXL (two encoders, pooled embeds, time ids).

Each prompt is encoded once per process and cached (phases encode the same prompts many
times: N candidates, M reward draws, two models). The cache lives in host memory and is
bounded (least recently used entries go first, `DEFAULT_CACHE_PROMPTS`): a round of 50K
distinct seed captions would otherwise hold ~6 GB (SD1.5) / ~16 GB (SDXL) on the GPU.
A batch's embeddings are copied to the device when they are used (a few KB per prompt).
SDXL follows the diffusers pipeline: penultimate hidden states of both encoders
concatenated, pooled output of the second.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from sail_trainer.models.components import Components


@dataclass
class TextEmbeddings:
    """`embeds [B, L, D]` for cross-attention; `pooled [B, D2]` for SDXL (None for SD1.5)."""

    embeds: Any
    pooled: Any = None

    def repeat(self, n: int) -> TextEmbeddings:
        """Each row repeated n times in place (row-major: prompt0 x n, prompt1 x n, ...)."""
        return TextEmbeddings(
            self.embeds.repeat_interleave(n, dim=0),
            None if self.pooled is None else self.pooled.repeat_interleave(n, dim=0),
        )

    def rows(self, lo: int, hi: int) -> TextEmbeddings:
        """Rows [lo, hi)."""
        return TextEmbeddings(self.embeds[lo:hi], None if self.pooled is None else self.pooled[lo:hi])

    def to(self, device: Any = None, dtype: Any = None) -> TextEmbeddings:
        """A copy on `device` / in `dtype` (either may be None: unchanged)."""
        return TextEmbeddings(self.embeds.to(device=device, dtype=dtype),
                              None if self.pooled is None else self.pooled.to(device=device, dtype=dtype))

    @staticmethod
    def cat(parts: list[TextEmbeddings]) -> TextEmbeddings:
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextEmbeddings(torch.cat([p.embeds for p in parts]), pooled)


DEFAULT_CACHE_PROMPTS = 4096  # choice: ~0.5 GB of host memory for SD1.5, ~1.3 GB for SDXL


class TextEncoder:
    """Encodes prompts with the pipeline's text encoders; one host-memory cache entry per distinct
    prompt, at most `max_prompts` of them (least recently used evicted)."""

    def __init__(self, components: Components, max_prompts: int = DEFAULT_CACHE_PROMPTS) -> None:
        self.components = components
        self.max_prompts = max(1, max_prompts)
        self._cache: OrderedDict[str, TextEmbeddings] = OrderedDict()

    @property
    def cached(self) -> int:
        return len(self._cache)

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        """Embeddings `[len(prompts), ...]` on the components' device, in the components' dtype."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        fresh_rows: dict[str, TextEmbeddings] = {}
        if missing:
            fresh = self._encode_uncached(missing).to(device="cpu")
            for i, prompt in enumerate(missing):
                pooled = None if fresh.pooled is None else fresh.pooled[i : i + 1]
                fresh_rows[prompt] = TextEmbeddings(fresh.embeds[i : i + 1], pooled)
        rows = []
        for p in prompts:  # read every row before evicting, so a batch larger than the cache still works
            row = fresh_rows.get(p) or self._cache[p]
            rows.append(row)
        for p in dict.fromkeys(prompts):
            self._cache[p] = fresh_rows.get(p) or self._cache[p]
            self._cache.move_to_end(p)
        while len(self._cache) > self.max_prompts:
            self._cache.popitem(last=False)
        return TextEmbeddings.cat(rows).to(device=self.components.device)

    def unconditional(self, n: int) -> TextEmbeddings:
        """The CFG negative: "" (SD1.5) or zeros when the pipeline forces zeros (SDXL default)."""
        empty = self.encode([""])
        if self.components.force_zeros_for_empty_prompt:
            pooled = None if empty.pooled is None else torch.zeros_like(empty.pooled)
            empty = TextEmbeddings(torch.zeros_like(empty.embeds), pooled)
        return empty.repeat(n)

    def _encode_uncached(self, prompts: list[str]) -> TextEmbeddings:
        c = self.components
        hidden: list[Any] = []
        pooled = None
        with torch.no_grad():
            for tokenizer, encoder in zip(c.tokenizers, c.text_encoders, strict=True):
                ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids.to(c.device)
                if c.layout == "sd15":
                    hidden.append(encoder(ids)[0])
                else:
                    out = encoder(ids, output_hidden_states=True)
                    hidden.append(out.hidden_states[-2])
                    pooled = out[0]
        return TextEmbeddings(torch.cat(hidden, dim=-1).to(c.dtype), None if pooled is None else pooled.to(c.dtype))


def build_unet_kwargs(components: Components, text: TextEmbeddings, resolution: int,
                      dtype: Any = None) -> dict[str, Any]:
    """Keyword arguments of `unet(...)` besides sample/timestep: cross-attention states, SDXL extras.

    SDXL's `add_time_ids` = (original size, crop top-left, target size) = (res, res, 0, 0, res, res),
    the pipeline default for uncropped square images. `dtype` (the UNet's own, when given)
    casts the conditioning: an fp32 UNet (the trainable policy) fed bf16 embeddings outside
    autocast fails with "mat1 and mat2 must have the same dtype".
    """
    if dtype is not None:
        text = text.to(dtype=dtype)

    kwargs: dict[str, Any] = {"encoder_hidden_states": text.embeds}
    if components.layout == "sdxl":
        batch = text.embeds.shape[0]
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]],
                                dtype=text.embeds.dtype, device=text.embeds.device).repeat(batch, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": text.pooled, "time_ids": time_ids}
    return kwargs
