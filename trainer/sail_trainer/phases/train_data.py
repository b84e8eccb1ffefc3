"""The training pairs of a mixture, and the per-pair random draws of a train step.

Every draw of pair position `pos` (global position in the stream of pairs: step x
effective batch + offset) comes from a generator seeded by hash(run seed, iteration, pos):
blank prompt (probability `emptyPromptProbability`), horizontal flip (real seed pairs only),
timestep and noise. So the data a pair sees does not depend on the number of processes or
the micro batch, and a resumed train continues exactly where it stopped.
Flip choice: the seed images are encoded once, so the flip is applied to the latent (a
horizontal flip of the image maps to a flip of the latent up to VAE asymmetries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from sail_api.phases import Phase
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.plan import derive_seed
from sail_trainer.storage import read_committed_bytes, require_committed


@dataclass
class TrainingSet:
    """Mixture pairs in draw order: prompt, references to winner/loser latents, real (seed) or not.

    Latents are fetched row by row through `LatentFiles` (memory-mapped local copies), so a
    mixture of any size costs the memory of its index only.
    """

    prompts: list[str]
    winners: list[art.LatentRef]
    losers: list[art.LatentRef]
    real: list[bool]
    files: art.LatentFiles
    latent_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def pair(self, i: int) -> tuple[Any, Any]:
        return self.winners[i].fetch(self.files), self.losers[i].fetch(self.files)


def load_training_set(ctx: PhaseContext) -> TrainingSet:
    """Resolve `iter-i/mixup/mixture.json` into latent references (seed chunks, generate parts)."""
    layout, store = ctx.layout, ctx.store
    mixup_dir = layout.phase_dir(ctx.iteration, Phase.MIXUP)
    require_committed(store, mixup_dir, f"mixup of iteration {ctx.iteration}")
    mixture = json.loads(read_committed_bytes(store, mixup_dir, art.MIXTURE))
    seed_index = art.read_seed_index(store, layout)
    self_pairs = [] if ctx.iteration == 0 else json.loads(read_committed_bytes(store, mixup_dir, art.SELF_PAIRS))["pairs"]
    shards: dict[str, art.GenerateShard] = {}
    prompts, winners, losers, real = [], [], [], []
    for source, index in mixture["entries"]:
        if source == "seed":
            w, lo = art.seed_refs(layout, seed_index, index)
            prompts.append(seed_index["prompts"][index])
            real.append(True)
        else:
            pair = self_pairs[index]
            folder = pair["generate"]
            if folder not in shards:
                shards[folder] = art.read_generate_shard(store, art.absolute_folder(layout, folder))
            w, lo = shards[folder].ref(pair["row"], pair["winner"]), shards[folder].ref(pair["row"], pair["loser"])
            prompts.append(pair["prompt"])
            real.append(False)
        winners.append(w)
        losers.append(lo)
    return TrainingSet(prompts, winners, losers, real, art.LatentFiles(store, ctx.work_dir),
                       tuple(seed_index["latent_shape"]))


@dataclass
class PairDraw:
    blank: bool
    flip: bool
    timestep: int
    noise: Any


@dataclass(frozen=True)
class DrawSettings:
    """What the draws of one train phase share: the seeds, the timestep range and the two
    augmentation settings (`sail.train.emptyPromptProbability`, `sail.train.randomFlip`)."""

    run_seed: int
    iteration: int
    num_train_timesteps: int
    empty_prob: float
    random_flip: bool


def draw_pair(settings: DrawSettings, pos: int, latent_shape: tuple[int, ...], real: bool) -> PairDraw:
    """The random choices of pair position `pos` (see the module docstring)."""
    gen = torch.Generator().manual_seed(derive_seed(settings.run_seed, settings.iteration, "train", pos))
    u = torch.rand(2, generator=gen)
    timestep = int(torch.randint(0, settings.num_train_timesteps, (1,), generator=gen))
    noise = torch.randn(latent_shape, generator=gen)
    return PairDraw(bool(u[0] < settings.empty_prob), bool(settings.random_flip and real and u[1] < 0.5), timestep,
                    noise)


def build_batch(data: TrainingSet, positions: list[int], settings: DrawSettings) -> dict[str, Any]:
    """Tensors of one micro batch: prompts (some blanked), x_w, x_l (some flipped), t, noise."""
    prompts, xw, xl, ts, noise = [], [], [], [], []
    for pos in positions:
        i = pos % len(data)
        d = draw_pair(settings, pos, data.latent_shape, data.real[i])
        w, ll = data.pair(i)
        if d.flip:
            w, ll = w.flip(-1), ll.flip(-1)
        prompts.append("" if d.blank else data.prompts[i])
        xw.append(w)
        xl.append(ll)
        ts.append(d.timestep)
        noise.append(d.noise)
    return {"prompts": prompts, "x_w": torch.stack(xw), "x_l": torch.stack(xl),
            "timesteps": torch.tensor(ts, dtype=torch.long), "noise": torch.stack(noise)}
