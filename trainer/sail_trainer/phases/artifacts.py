"""File formats between phases, and readers that trust only committed folders.

    iter-000/mixup/seed-pairs.json               {"count", "chunk_size", "prompts", "latent_shape", "resolution"}
    iter-000/mixup/seed-latents-CCCCC.safetensors   winner/loser [chunk, C, h, w] fp32 (VAE sample x scaling)
    iter-NNN/generate/shard-K-of-S/latents.safetensors  latents [P_k, N, C, h, w] fp32, prompt_index [P_k]
    iter-NNN/generate/shard-K-of-S/prompts.json  {"prompt_indices", "prompts", "candidates", "latent_shape"}
    iter-NNN/annotate/shard-K-of-S/annotations.json  per prompt: index, prompt, rewards, winner, loser, margin,
                                                      generate shard folder + row of its latents
    iter-NNN/mixup/self-pairs.json               the round's self pairs (annotate order), with latent refs
    iter-NNN/mixup/mixture.json                  MixupPlan.to_dict(): entries [["self"|"seed", index], ...]

Latents are stored, never images, so training sees exactly what the sampler produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sail_api.layout import RunLayout, join
from sail_api.phases import Phase
from sail_api.storage import Store
from sail_trainer.storage import read_committed_bytes, require_committed

SEED_CHUNK = 4096  # pairs per seed latent file (choice: ~270 MB of fp32 SD1.5 latents per file)
SEED_INDEX = "seed-pairs.json"
MIXTURE = "mixture.json"
SELF_PAIRS = "self-pairs.json"
GEN_LATENTS = "latents.safetensors"
GEN_PROMPTS = "prompts.json"
ANNOTATIONS = "annotations.json"
ANNOTATION_TENSORS = "annotations.safetensors"


def dump_json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


def dump_tensors(tensors: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous().cpu() for k, v in tensors.items()})


def load_tensors(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(data)


def seed_chunk_name(chunk: int) -> str:
    return f"seed-latents-{chunk:05d}.safetensors"


@dataclass
class SeedSet:
    """The encoded human seed pairs of iteration 0 (in memory)."""

    prompts: list[str]
    winners: Any  # [S, C, h, w]
    losers: Any

    def __len__(self) -> int:
        return len(self.prompts)


def read_seed_index(store: Store, layout: RunLayout) -> dict[str, Any]:
    folder = layout.phase_dir(0, Phase.MIXUP)
    require_committed(store, folder, "the iteration-0 mixup (seed encoding)")
    return json.loads(read_committed_bytes(store, folder, SEED_INDEX))


def read_seed_set(store: Store, layout: RunLayout) -> SeedSet:
    import torch

    folder = layout.phase_dir(0, Phase.MIXUP)
    index = read_seed_index(store, layout)
    chunks = [load_tensors(read_committed_bytes(store, folder, seed_chunk_name(c)))
              for c in range((index["count"] + index["chunk_size"] - 1) // index["chunk_size"])]
    return SeedSet(index["prompts"], torch.cat([c["winner"] for c in chunks]), torch.cat([c["loser"] for c in chunks]))


@dataclass
class GenerateShard:
    folder: str
    prompt_indices: list[int]
    prompts: list[str]
    latents: Any  # [P_k, N, C, h, w]


def read_generate_shard(store: Store, folder: str) -> GenerateShard:
    meta = json.loads(read_committed_bytes(store, folder, GEN_PROMPTS))
    tensors = load_tensors(read_committed_bytes(store, folder, GEN_LATENTS))
    return GenerateShard(folder, meta["prompt_indices"], meta["prompts"], tensors["latents"])


def relative_folder(layout: RunLayout, folder: str) -> str:
    """A folder as a run-relative key, so references survive moving the run root."""
    root = layout.root.rstrip("/") + "/"
    return folder[len(root):] if folder.startswith(root) else folder


def absolute_folder(layout: RunLayout, relative: str) -> str:
    return join(layout.root, relative)
