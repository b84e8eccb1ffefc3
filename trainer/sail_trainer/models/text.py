"""Prompt embeddings for SD1.5 (one CLIP encoder) and SDXL (two encoders, pooled embeds, time ids).

Each prompt is encoded once per process and cached (phases encode the same prompts many
times: N candidates, M reward draws, two models). SDXL follows the diffusers pipeline:
penultimate hidden states of both encoders concatenated, pooled output of the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    @staticmethod
    def cat(parts: list[TextEmbeddings]) -> TextEmbeddings:
        import torch

        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextEmbeddings(torch.cat([p.embeds for p in parts]), pooled)


class TextEncoder:
    """Encodes prompts with the pipeline's text encoders; one cache entry per distinct prompt."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self._cache: dict[str, TextEmbeddings] = {}

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            fresh = self._encode_uncached(missing)
            for i, prompt in enumerate(missing):
                pooled = None if fresh.pooled is None else fresh.pooled[i : i + 1]
                self._cache[prompt] = TextEmbeddings(fresh.embeds[i : i + 1], pooled)
        return TextEmbeddings.cat([self._cache[p] for p in prompts])

    def unconditional(self, n: int) -> TextEmbeddings:
        """The CFG negative: "" (SD1.5) or zeros when the pipeline forces zeros (SDXL default)."""
        import torch

        empty = self.encode([""])
        if self.components.force_zeros_for_empty_prompt:
            pooled = None if empty.pooled is None else torch.zeros_like(empty.pooled)
            empty = TextEmbeddings(torch.zeros_like(empty.embeds), pooled)
        return empty.repeat(n)

    def _encode_uncached(self, prompts: list[str]) -> TextEmbeddings:
        import torch

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


def build_unet_kwargs(components: Components, text: TextEmbeddings, resolution: int) -> dict[str, Any]:
    """Keyword arguments of `unet(...)` besides sample/timestep: cross-attention states, SDXL extras.

    SDXL's `add_time_ids` = (original size, crop top-left, target size) = (res, res, 0, 0, res, res),
    the pipeline default for uncropped square images.
    """
    import torch

    kwargs: dict[str, Any] = {"encoder_hidden_states": text.embeds}
    if components.layout == "sdxl":
        batch = text.embeds.shape[0]
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]],
                                dtype=text.embeds.dtype, device=text.embeds.device).repeat(batch, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": text.pooled, "time_ids": time_ids}
    return kwargs
