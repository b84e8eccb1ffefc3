"""File formats between phases, and readers that trust only committed folders.

    iter-000/mixup/seed-pairs.json               {"count", "chunk_size", "parts", "prompts", "latent_shape", "resolution"}
    iter-000/mixup/parts/part-CCCCC/seed-latents.safetensors   winner/loser [<=chunk_size, C, h, w] fp32 (VAE
                                                 sample x scaling); each part committed on its own (resume unit)
    iter-NNN/generate/shard-K-of-S/parts/part-PPPPP/latents.safetensors  latents [<=part_size, N, C, h, w] fp32,
                                                 prompt_index; each part committed on its own (resume unit)
    iter-NNN/generate/shard-K-of-S/prompts.json  {"prompt_indices", "prompts", "candidates", "latent_shape", "part_size"}
    iter-NNN/annotate/shard-K-of-S/annotations.json  per prompt: index, prompt, rewards, winner, loser, margin,
                                                      generate shard folder + row of its latents
    iter-NNN/mixup/self-pairs.json               the round's self pairs (annotate order), with latent refs
    iter-NNN/mixup/mixture.json                  MixupPlan.to_dict(): entries [["self"|"seed", index], ...]

Latents are stored, never images, so training sees exactly what the sampler produced.
Large sets are split into part files and read row by row through memory-mapped local copies
(`LatentFiles`), so no phase holds a whole round's latents in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load, save

from sail_api.layout import RunLayout, join
from sail_api.phases import Phase
from sail_api.storage import Store
from sail_trainer.storage import read_committed_bytes, require_committed, resolve_committed

SEED_CHUNK = 4096  # pairs per seed latent file (choice: ~270 MB of fp32 SD1.5 latents per file)
SEED_INDEX = "seed-pairs.json"
MIXTURE = "mixture.json"
SELF_PAIRS = "self-pairs.json"
GEN_PART = 256  # prompts per generate latent file (choice: ~540 MB for SDXL with N=8 in fp32)
GEN_PROMPTS = "prompts.json"
ANNOTATIONS = "annotations.json"
ANNOTATION_TENSORS = "annotations.safetensors"


def dump_json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


def dump_tensors(tensors: dict[str, Any]) -> bytes:
    return save({k: v.contiguous().cpu() for k, v in tensors.items()})


def load_tensors(data: bytes) -> dict[str, Any]:
    return load(data)


SEED_PART_FILE = "seed-latents.safetensors"


def seed_chunk_name(chunk: int) -> str:
    """The seed latents of chunk `chunk` in the layout before parts (one commit of the whole folder)."""
    return f"seed-latents-{chunk:05d}.safetensors"


def seed_part_folder(part: int) -> str:
    """Folder of seed part `part` relative to the iteration-0 mixup folder (committed on its own)."""
    return f"parts/part-{part:05d}"


def seed_part_name(part: int) -> str:
    return f"{seed_part_folder(part)}/{SEED_PART_FILE}"


GEN_PARTS_DIR = "parts"


def gen_part_folder(part: int) -> str:
    """Folder of part `part` relative to its shard folder (committed on its own, then listed by the shard)."""
    return f"{GEN_PARTS_DIR}/part-{part:05d}"


def gen_part_name(part: int) -> str:
    return f"{gen_part_folder(part)}/latents.safetensors"


def compute_part_rows(group: int) -> int:
    """Prompts per generate part: GEN_PART rounded up to whole batches of `group` prompts, so a resumed
    shard starts at a batch boundary and batches hold the same prompts as in one uninterrupted run."""
    return -(-GEN_PART // group) * group


class LatentFiles:
    """Row access to latent tensors in committed safetensors files, via local memory-mapped copies.

    Each file is downloaded once into `work_dir` (checked against nothing more than the store's
    own commit: readers only name files listed in committed manifests) and opened with
    `safetensors.safe_open`, so a row costs one slice read and memory stays bounded.
    """

    def __init__(self, store: Store, work_dir: Path) -> None:
        self.store = store
        self.work_dir = work_dir / "latents"
        self._handles: dict[str, Any] = {}

    def _open(self, folder: str, name: str) -> Any:
        uri = self.store.uri(join(folder, name))
        if uri not in self._handles:
            local = self.work_dir / (hashlib.sha256(uri.encode()).hexdigest()[:24] + ".safetensors")
            local.parent.mkdir(parents=True, exist_ok=True)
            self.store.download_file(resolve_committed(self.store, folder, name), local)
            self._handles[uri] = safe_open(str(local), framework="pt")
        return self._handles[uri]

    def row(self, folder: str, name: str, key: str, index: int) -> Any:
        return self._open(folder, name).get_slice(key)[index : index + 1][0]

    def count(self, folder: str, name: str, key: str) -> int:
        return int(self._open(folder, name).get_slice(key).get_shape()[0])


def committed_part_files(store: Store, shard_dir: str, parts: int,
                         part_folder: Callable[[int], str] = gen_part_folder) -> list[str]:
    """The files of parts 0..parts-1 of a shard (or of the seed encoding) as its manifest lists them
    (`parts/part-K/<path in the part's manifest>`): whichever attempt committed each part, the
    folder's manifest names exactly the files that part's commit hashed."""
    files = []
    for part in range(parts):
        folder = join(shard_dir, part_folder(part))
        files += [f"{part_folder(part)}/{entry.path}" for entry in store.read_manifest(folder).files]
    return files


def read_seed_index(store: Store, layout: RunLayout) -> dict[str, Any]:
    folder = layout.phase_dir(0, Phase.MIXUP)
    require_committed(store, folder, "the iteration-0 mixup (seed encoding)")
    return json.loads(read_committed_bytes(store, folder, SEED_INDEX))


@dataclass(frozen=True)
class LatentRef:
    """Where one latent lives: a committed folder, a file in it, a tensor key, a row, and for
    generate files the candidate within the row."""

    folder: str
    name: str
    key: str
    row: int
    candidate: int | None = None

    def fetch(self, files: LatentFiles) -> Any:
        value = files.row(self.folder, self.name, self.key, self.row)
        return value if self.candidate is None else value[self.candidate]


def seed_refs(layout: RunLayout, index: dict[str, Any], i: int) -> tuple[LatentRef, LatentRef]:
    """Winner and loser latents of seed pair `i`."""
    folder = layout.phase_dir(0, Phase.MIXUP)
    chunk, row = divmod(i, index["chunk_size"])
    # Indexes written before parts existed (no "parts" key) name top-level chunk files.
    name = seed_part_name(chunk) if "parts" in index else seed_chunk_name(chunk)
    return LatentRef(folder, name, "winner", row), LatentRef(folder, name, "loser", row)


@dataclass
class GenerateShard:
    """The index of a committed generate shard (prompts.json); latents are read through LatentRef."""

    folder: str
    prompt_indices: list[int]
    prompts: list[str]
    candidates: int
    part_size: int

    def ref(self, row: int, candidate: int | None = None) -> LatentRef:
        part, offset = divmod(row, self.part_size)
        return LatentRef(self.folder, gen_part_name(part), "latents", offset, candidate)


def read_generate_shard(store: Store, folder: str) -> GenerateShard:
    meta = json.loads(read_committed_bytes(store, folder, GEN_PROMPTS))
    return GenerateShard(folder, meta["prompt_indices"], meta["prompts"], meta["candidates"], meta["part_size"])


def relative_folder(layout: RunLayout, folder: str) -> str:
    """A folder as a run-relative key, so references survive moving the run root."""
    root = layout.root.rstrip("/") + "/"
    return folder[len(root):] if folder.startswith(root) else folder


def absolute_folder(layout: RunLayout, relative: str) -> str:
    return join(layout.root, relative)
