"""What a SAILRun will cost before it starts: UNet passes, GPU-hours and storage, per phase and round.

`compute_estimate(spec, facts)` is a pure function of the spec (and of a few facts about the
model and the data that the caller may know better than the defaults); `sail plan`, the
SAILRun status and the admin's budget check (`sail_operator.budget`) all print or compare
its numbers.

What it counts, and how each count follows the trainer (tests/integration/test_estimate_counts.py
runs a tiny step 0 + round and checks these counts against UNet hooks):
- A *UNet pass* is one latent through one UNet once (a batch of B latents is B passes), for
  every UNet: the policy, the frozen train reference and the annotate judge.
- generate: P prompts x N candidates x sampler steps x 2 when guidance > 1 (the conditional
  and unconditional halves of classifier-free guidance).
- annotate: P x N x M draws x 2 UNets (the current model and the judge reference).
- mixup: no UNet; step 0 VAE-encodes the winner and loser of every seed pair.
- train: steps x effective batch pairs; per pair 2 policy passes with a backward and 2
  reference passes; then the sample grid (the first 8 prompts x 2 seeds through the sampler;
  step 0 draws it for the base model as well).

GPU-hours come from measured plain-diffusers throughput on one card (`ANCHORS`, copied with
their provenance into docs/performance.md), scaled by latent pixels from the anchor's latent
size (an approximation: attention grows faster than linearly in pixels). They assume the
layout's full-size UNet (a toy pipeline costs far less than its "SD1.5" estimate), bf16, and
the phases' own batching; wall-hours divide by the shards or train GPUs (perfect scaling).
Nothing here imports torch or the trainer: the constants that mirror the trainer (grid size,
part sizes) are repeated below and the count test catches drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sail_api.spec import SAILRunSpec
from sail_api.status import CostEstimateStatus

# ------------------------------------------------------------------ measured anchors
# One NVIDIA H100 80GB HBM3, PyTorch 2.11 + CUDA 13, diffusers 0.42.1, random weights in the
# SD1.5 / SDXL UNet shapes, bf16, 2026-11-25 (plain diffusers loop; docs/performance.md
# "Cost estimate anchors"). Passes/s = images/s x steps x 2 (CFG) for generate and images/s x
# draws x 2 UNets for annotate:
#   SD1.5 generate 6.1-6.7 images/s (25 DDIM steps, CFG 7.5, batch 32)      -> 6.4 x 25 x 2 = 320 passes/s
#   SD1.5 generate, torch.compile 9.5 images/s                                -> 475 passes/s
#   SD1.5 annotate 40.8 images/s (4 draws x policy + reference, batch 32)     -> 326 passes/s
#   SD1.5 train DPO 28.1 pairs/s; gradient checkpointing 20.1; compile 37.4
#   SDXL generate 1.40 images/s (20 DDIM steps, CFG 5, batch 8)              -> 56 passes/s
#   SDXL annotate 6.7 images/s (4 draws x 2 UNets, batch 8)                   -> 53.6 passes/s
#   SDXL train DPO 3.1 pairs/s (Adafactor, gradient checkpointing)


@dataclass(frozen=True)
class Anchor:
    """Measured throughput of one card on one UNet shape (see the table above)."""

    latent_side: int  # latent pixels per side the figures were measured at
    generate_passes_per_s: float
    generate_passes_per_s_compiled: float
    annotate_passes_per_s: float
    train_pairs_per_s: float
    train_pairs_per_s_checkpointing: float
    train_pairs_per_s_compiled: float


ANCHORS: dict[tuple[str, str], Anchor] = {
    ("H100", "sd15"): Anchor(64, 320.0, 475.0, 326.4, 28.1, 20.1, 37.4),
    # SDXL: only the checkpointing train figure was measured; it stands in for the others.
    ("H100", "sdxl"): Anchor(128, 56.0, 56.0, 53.6, 3.1, 3.1, 3.1),
}
DEFAULT_CARD = "H100"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # NVIDIA GPU feature discovery: names the card of a node

# ------------------------------------------------------------------ model facts (defaults per layout)
# UNet parameters: ANCHORS.md (SD1.5 860M, SDXL 2.57B). Other components (VAE, text encoders,
# tokenizers, configs) are copied byte for byte into every model folder a train writes; their
# sizes are those of the published fp32 pipelines in the diffusers layout (SD1.5: VAE 335 MB +
# CLIP text encoder 492 MB; SDXL: VAE 335 MB + text encoders 492 MB + 2.78 GB).


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know about the base pipeline and the data."""

    unet_parameters: int
    other_component_bytes: int
    latent_channels: int = 4
    latent_factor: int = 8  # pixels per latent pixel per side (VAE downsampling)
    component_files: int = 12  # files of a model folder besides the UNet's two
    seed_pairs: int | None = None  # None: spec.seedPairs.limit, else unknown
    prompt_pool: int | None = None  # None: unknown (assumed large enough)


LAYOUT_FACTS = {
    "sd15": ModelFacts(unet_parameters=859_520_964, other_component_bytes=827_000_000),
    "sdxl": ModelFacts(unet_parameters=2_567_463_684, other_component_bytes=3_607_000_000),
}

# ------------------------------------------------------------------ trainer constants (mirrored)
GRID_PROMPTS, GRID_SEEDS = 8, 2  # sail_trainer.phases.samples
GEN_PART = 256  # sail_trainer.phases.artifacts.GEN_PART (prompts per generate part)
ANNOTATE_PART = 256  # sail_trainer.phases.annotate_phase.ANNOTATE_PART
SEED_CHUNK = 4096  # sail_trainer.phases.artifacts.SEED_CHUNK
PREVIEW_PROMPTS = 4  # sail_trainer.phases.generate_phase.PREVIEW_PROMPTS
SAFETENSORS_HEADER = 200  # bytes, roughly, per tensor file
JSON_BYTES_PER_PROMPT = 120  # prompts.json / seed-pairs.json: the prompt text and its index
JSON_BYTES_PER_ANNOTATION = 260  # annotations.json record: prompt, refs, margin, N rewards (x N below)
JSON_BYTES_PER_REWARD = 24
JSON_BYTES_PER_MIXTURE_ENTRY = 28  # mixture.json `[\n  "seed",\n  123\n ]`
PREVIEW_BYTES = 40_000  # one PNG strip of N candidates
GRID_BYTES = 400_000  # samples.png
MANIFEST_BYTES_PER_FILE = 160  # _SUCCESS.json entry: path, size, sha256
MANIFEST_BYTES = 600


@dataclass(frozen=True)
class PhaseCost:
    """One phase of one iteration (all its shards together)."""

    iteration: int
    phase: str
    unet_forwards: int = 0
    unet_backwards: int = 0
    vae_encodes: int = 0
    gpu_hours: float | None = 0.0  # None: no anchor for this work (VAE encoding)
    wall_hours: float | None = 0.0
    storage_bytes: int = 0
    storage_objects: int = 0
    detail: str = ""


@dataclass(frozen=True)
class CostEstimate:
    """Every phase of the run in order, the card and the notes that qualify the figures."""

    card: str
    layout: str
    phases: tuple[PhaseCost, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def iteration(self, iteration: int) -> list[PhaseCost]:
        return [p for p in self.phases if p.iteration == iteration]

    def total(self, iteration: int | None = None) -> PhaseCost:
        """Sum over the run, or over one iteration."""
        chosen = self.phases if iteration is None else self.iteration(iteration)
        return PhaseCost(
            iteration=-1 if iteration is None else iteration, phase="total",
            unet_forwards=sum(p.unet_forwards for p in chosen),
            unet_backwards=sum(p.unet_backwards for p in chosen),
            vae_encodes=sum(p.vae_encodes for p in chosen),
            gpu_hours=sum(p.gpu_hours or 0.0 for p in chosen),
            wall_hours=sum(p.wall_hours or 0.0 for p in chosen),
            storage_bytes=sum(p.storage_bytes for p in chosen),
            storage_objects=sum(p.storage_objects for p in chosen),
        )


# ------------------------------------------------------------------ the estimate


def resolve_card(spec: SAILRunSpec, card: str | None = None) -> tuple[str, str | None]:
    """(card, note): `card` if given, else the spec's GPU product node selector when an anchor
    exists for it, else DEFAULT_CARD (with a note saying why)."""
    if card is not None:
        return card, None
    product = spec.template.node_selector.get(GPU_PRODUCT_LABEL)
    if product is None:
        return DEFAULT_CARD, None
    for known in sorted({c for c, _ in ANCHORS}):
        if known.lower() in product.lower():
            return known, None
    return DEFAULT_CARD, f"no measured anchor for {product!r} ({GPU_PRODUCT_LABEL}): GPU-hours use {DEFAULT_CARD}"


def resolve_layout(spec: SAILRunSpec) -> str:
    """sd15 or sdxl; `auto` counts as sd15 (the estimate cannot read model_index.json)."""
    return spec.model.layout if spec.model.layout != "auto" else "sd15"


def compute_estimate(spec: SAILRunSpec, facts: ModelFacts | None = None, card: str | None = None) -> CostEstimate:
    """The cost of every phase of the run described by `spec` (see the module docstring).

    Raises ValueError naming the card when no anchor exists for it.
    """
    layout = resolve_layout(spec)
    card, card_note = resolve_card(spec, card)
    if (card, layout) not in ANCHORS:
        known = ", ".join(sorted({c for c, _ in ANCHORS}))
        raise ValueError(f"card {card!r}: no measured throughput anchor (known: {known})")
    facts = facts or LAYOUT_FACTS[layout]
    c = _Counter(spec, facts, ANCHORS[(card, layout)])
    phases = [c.step0_mixup(), c.train(0), *c.evaluate(0)]
    for iteration in range(1, spec.sail.rounds + 1):
        phases += [c.generate(iteration), c.annotate(iteration), c.mixup(iteration), c.train(iteration),
                   *c.evaluate(iteration)]
    notes = [n for n in (card_note, *c.notes) if n]
    return CostEstimate(card=card, layout=layout, phases=tuple(phases), notes=tuple(dict.fromkeys(notes)))


class _Counter:
    """The per-phase arithmetic of `compute_estimate` (one instance per estimate)."""

    def __init__(self, spec: SAILRunSpec, facts: ModelFacts, anchor: Anchor) -> None:
        self.spec, self.s, self.facts, self.anchor = spec, spec.sail, facts, anchor
        self.notes: list[str] = []
        side = max(1, self.s.sampler.resolution // facts.latent_factor)
        self.latent_bytes = facts.latent_channels * side * side * 4  # stored fp32
        self.scale = (side * side) / (anchor.latent_side * anchor.latent_side)  # cost per pass vs the anchor
        self.seed_pairs = facts.seed_pairs or spec.seed_pairs.limit
        if self.seed_pairs is None:
            self.seed_pairs = 0
            self.notes.append("seed pair count unknown (no seedPairs.limit): step 0 counted as 0 pairs; "
                              "pass --seed-pairs N")
        self.grid_prompts = min(GRID_PROMPTS, facts.prompt_pool or GRID_PROMPTS)

    # -- shared pieces

    @property
    def cfg(self) -> int:
        return 2 if self.s.sampler.guidance_scale > 1.0 else 1

    def _sampler_passes(self, images: int) -> int:
        return images * self.s.sampler.steps * self.cfg

    def _generate_rate(self) -> float:
        a = self.anchor
        rate = a.generate_passes_per_s_compiled if self.spec.performance.compile else a.generate_passes_per_s
        return rate / self.scale

    def _hours(self, seconds: float, gpus: int) -> tuple[float, float]:
        return seconds / 3600.0, seconds / 3600.0 / max(1, gpus)

    # -- phases

    def step0_mixup(self) -> PhaseCost:
        pairs = self.seed_pairs
        chunks = math.ceil(pairs / SEED_CHUNK)
        size = (2 * pairs * self.latent_bytes + chunks * 2 * SAFETENSORS_HEADER + pairs * JSON_BYTES_PER_PROMPT
                + pairs * JSON_BYTES_PER_MIXTURE_ENTRY + (chunks + 1) * MANIFEST_BYTES
                + (2 * chunks + 2) * MANIFEST_BYTES_PER_FILE)  # each part is committed on its own folder too
        return PhaseCost(0, "mixup", vae_encodes=2 * pairs, gpu_hours=None, wall_hours=None,
                         storage_bytes=size, storage_objects=2 * chunks + 3,
                         detail=f"VAE-encode {pairs} seed pairs (no GPU anchor for the VAE)")

    def generate(self, iteration: int) -> PhaseCost:
        s, shards = self.s, self.spec.parallelism.generate_shards
        prompts, n = s.prompts_per_round, s.candidates_per_prompt
        passes = self._sampler_passes(prompts * n)
        gpu, wall = self._hours(passes / self._generate_rate(), min(shards, prompts))
        group = max(1, s.sampler.batch_size // n)
        part_rows = -(-GEN_PART // group) * group
        per_shard = _split(prompts, shards, group)
        parts = sum(max(1, math.ceil(k / part_rows)) for k in per_shard)
        previews = sum(min(PREVIEW_PROMPTS, k) for k in per_shard)
        files = parts + shards + previews  # latents per part, prompts.json and previews per shard
        objects = files + parts + shards  # + a manifest per part and per shard
        size = (prompts * n * self.latent_bytes + parts * SAFETENSORS_HEADER + prompts * JSON_BYTES_PER_PROMPT
                + previews * PREVIEW_BYTES + (parts + shards) * MANIFEST_BYTES + 2 * files * MANIFEST_BYTES_PER_FILE)
        return PhaseCost(iteration, "generate", unet_forwards=passes, gpu_hours=gpu, wall_hours=wall,
                         storage_bytes=size, storage_objects=objects,
                         detail=f"{prompts} prompts x {n} candidates x {s.sampler.steps} steps"
                         + (" x 2 (CFG)" if self.cfg == 2 else ""))

    def evaluate(self, iteration: int) -> list[PhaseCost]:
        """spec.evaluation: `count` samples of 3 models (2 at step 0) with the run's sampler; scorers not counted."""
        evaluation = self.spec.evaluation
        if evaluation is None:
            return []
        models = 2 if iteration == 0 else 3
        passes = self._sampler_passes(evaluation.count * models)
        gpu, wall = self._hours(passes / self._generate_rate(), min(evaluation.shards, evaluation.count))
        files = evaluation.shards * (models + 2)  # scores per model, scores.json and summary.json per shard
        size = evaluation.count * models * 64 * (1 + len(evaluation.scorers)) + files * (MANIFEST_BYTES + 2 * MANIFEST_BYTES_PER_FILE)
        return [PhaseCost(iteration, "evaluate", unet_forwards=passes, gpu_hours=gpu, wall_hours=wall,
                          storage_bytes=size, storage_objects=2 * files,
                          detail=f"{evaluation.count} samples x {models} models x {self.s.sampler.steps} steps"
                          + (" x 2 (CFG)" if self.cfg == 2 else "") + "; scorers not counted")]

    def annotate(self, iteration: int) -> PhaseCost:
        s, shards = self.s, self.spec.parallelism.annotate_shards
        prompts, n, m = s.prompts_per_round, s.candidates_per_prompt, s.reward_draws
        passes = 2 * prompts * n * m
        gpu, wall = self._hours(passes / (self.anchor.annotate_passes_per_s / self.scale), min(shards, prompts))
        per_shard = _split(prompts, shards, max(1, s.sampler.batch_size // n))  # generate's groups
        parts = sum(math.ceil(k / ANNOTATE_PART) for k in per_shard)
        record = JSON_BYTES_PER_ANNOTATION + n * JSON_BYTES_PER_REWARD
        tensors = prompts * (n + 2 * n * m + 2) * 4
        # every part's two files, then the shard's gathered copy of both
        size = (2 * (prompts * record + tensors) + 2 * (parts + shards) * SAFETENSORS_HEADER
                + (parts + shards) * (MANIFEST_BYTES + 2 * MANIFEST_BYTES_PER_FILE) + parts * 2 * MANIFEST_BYTES_PER_FILE)
        return PhaseCost(iteration, "annotate", unet_forwards=passes, gpu_hours=gpu, wall_hours=wall,
                         storage_bytes=size, storage_objects=3 * parts + 3 * shards,
                         detail=f"{prompts} prompts x {n} candidates x {m} draws x 2 UNets")

    def _mixture_size(self, iteration: int) -> int:
        s = self.s
        if iteration == 0:
            return self.seed_pairs
        if s.mixture_size is not None:
            return s.mixture_size
        kept = s.prompts_per_round if s.self_pair_cap is None else min(s.self_pair_cap, s.prompts_per_round)
        if s.margin_threshold is not None:
            self.notes.append("sail.marginThreshold drops an unknown share of self pairs: counted as none dropped")
        return self.seed_pairs if kept == 0 or s.alpha == 0 else max(1, round(kept / s.alpha))

    def mixup(self, iteration: int) -> PhaseCost:
        size = self._mixture_size(iteration)
        prompts = self.s.prompts_per_round
        bytes_ = (prompts * (JSON_BYTES_PER_ANNOTATION + self.s.candidates_per_prompt * JSON_BYTES_PER_REWARD)
                  + size * JSON_BYTES_PER_MIXTURE_ENTRY + MANIFEST_BYTES + 2 * MANIFEST_BYTES_PER_FILE)
        return PhaseCost(iteration, "mixup", storage_bytes=bytes_, storage_objects=3,
                         detail=f"mixture of {size} pairs (index only)")

    def train(self, iteration: int) -> PhaseCost:
        tr, par = self.s.train, self.spec.parallelism
        requested = tr.step0_steps if iteration == 0 else tr.steps
        mixture = self._mixture_size(iteration)
        steps = requested if requested is not None else max(1, math.ceil(mixture / tr.effective_batch))
        pairs = steps * tr.effective_batch
        grids = 2 if iteration == 0 else 1  # step 0 also draws the base model's grid
        grid_passes = grids * self._sampler_passes(self.grid_prompts * GRID_SEEDS)
        a = self.anchor
        rate = (a.train_pairs_per_s_compiled if self.spec.performance.compile
                else a.train_pairs_per_s_checkpointing if tr.gradient_checkpointing else a.train_pairs_per_s)
        seconds = pairs / (rate / self.scale) + grid_passes / self._generate_rate()
        gpu, wall = self._hours(seconds, par.train_nodes * max(1, par.gpus_per_node))
        f = self.facts
        unet_bytes = 4 * f.unet_parameters  # the policy is trained and saved in fp32
        model_bytes = unet_bytes + f.other_component_bytes
        size = model_bytes + GRID_BYTES * grids + steps * 200 + MANIFEST_BYTES
        objects = f.component_files + 2 + grids + 2  # model folder, grid(s), metrics.json, manifest
        if steps > tr.checkpoint_every:  # the last step checkpoint stays (older ones are deleted)
            optimizer = 8 * f.unet_parameters if tr.optimizer.kind == "adamw" else 0  # Adafactor: factored, small
            size += unet_bytes + optimizer + MANIFEST_BYTES
            objects += 4
        return PhaseCost(iteration, "train", unet_forwards=4 * pairs + grid_passes, unet_backwards=2 * pairs,
                         gpu_hours=gpu, wall_hours=wall, storage_bytes=size, storage_objects=objects,
                         detail=f"{steps} steps x {tr.effective_batch} pairs (mixture {mixture})")


def _split(count: int, shards: int, group: int) -> list[int]:
    """Items per shard when groups of `group` go round-robin (sail_trainer.plan.select_shard_positions);
    O(shards), whatever `count` is (a spec may ask for any number of prompts)."""
    groups = math.ceil(count / group) if count else 0
    last = count - (groups - 1) * group if groups else 0  # the last group may be partial
    out = []
    for shard in range(shards):
        owned = max(0, math.ceil((groups - shard) / shards))
        items = owned * group
        if groups and (groups - 1) % shards == shard:
            items -= group - last
        out.append(items)
    return out


def build_cost_status(spec: SAILRunSpec) -> CostEstimateStatus | None:
    """The SAILRun status' cost estimate (layout defaults: the operator never reads the model);
    None when the spec names a card without an anchor."""
    try:
        estimate = compute_estimate(spec)
    except ValueError:
        return None
    total, one = estimate.total(), estimate.total(1)
    return CostEstimateStatus(
        card=estimate.card, unet_forwards=total.unet_forwards, unet_backwards=total.unet_backwards,
        gpu_hours=round(total.gpu_hours or 0.0, 3), storage_bytes=total.storage_bytes,
        storage_objects=total.storage_objects, round_gpu_hours=round(one.gpu_hours or 0.0, 3),
        round_storage_bytes=one.storage_bytes,
    )
