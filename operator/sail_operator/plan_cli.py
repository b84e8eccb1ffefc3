"""`sail plan FILE`: what a run will cost, before it starts (the I/O around `estimate.compute_estimate`).

The estimate itself is pure; this module reads what it can about the model and the data
from local files (UNet parameter count from the safetensors header, VAE downsampling from
its config, seed-pair and prompt counts from local JSONL/text files) and renders the table.
Remote inputs (s3://, hub ids) fall back to the layout's defaults and `seedPairs.limit`.
No torch: safetensors headers are JSON behind an 8-byte length.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import replace
from pathlib import Path

from sail_api.spec import SAILRun
from sail_api.uris import is_local_uri, strip_file_scheme
from sail_operator.budget import compute_budget_violations
from sail_operator.estimate import (
    LAYOUT_FACTS,
    CostEstimate,
    ModelFacts,
    PhaseCost,
    compute_estimate,
    resolve_layout,
)


def count_safetensors_parameters(path: Path) -> int:
    """Elements in every tensor of a .safetensors file, read from its header only."""
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def _local_folder(uri: str, base: Path) -> Path | None:
    if not is_local_uri(uri):
        return None
    path = Path(strip_file_scheme(uri)).expanduser()
    path = path if path.is_absolute() else base / path
    return path if path.exists() else None


def _count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for line in stream if line.strip())


def fetch_model_facts(run: SAILRun, source: Path, seed_pairs: int | None = None) -> ModelFacts:
    """Facts about the run's local model and data files; the layout defaults for what is remote."""
    spec, base = run.spec, source.resolve().parent
    facts = LAYOUT_FACTS[resolve_layout(spec)]
    model = _local_folder(spec.model.uri, base)
    if model is not None and (model / "unet").is_dir():
        unet_files = sorted((model / "unet").glob("*.safetensors"))
        files = [p for p in model.rglob("*") if p.is_file() and "unet" not in p.relative_to(model).parts]
        vae_config = model / "vae" / "config.json"
        vae = json.loads(vae_config.read_text()) if vae_config.exists() else {}
        facts = replace(
            facts,
            unet_parameters=sum(count_safetensors_parameters(p) for p in unet_files) or facts.unet_parameters,
            other_component_bytes=sum(p.stat().st_size for p in files),
            latent_channels=int(vae.get("latent_channels", facts.latent_channels)),
            latent_factor=2 ** (len(vae["block_out_channels"]) - 1) if "block_out_channels" in vae else facts.latent_factor,
            component_files=len(files),
        )
    if seed_pairs is None and spec.seed_pairs.limit is None:
        pairs = _local_folder(spec.seed_pairs.uri, base)
        if pairs is not None and pairs.is_file() and pairs.suffix in (".jsonl", ".json"):
            seed_pairs = _count_lines(pairs)
    if seed_pairs is not None and spec.seed_pairs.limit is not None:
        seed_pairs = min(seed_pairs, spec.seed_pairs.limit)
    prompts = _local_folder(spec.prompts.uri, base)
    pool = _count_lines(prompts) if prompts is not None and prompts.is_file() and prompts.suffix in (".txt", ".jsonl") else None
    return replace(facts, seed_pairs=seed_pairs, prompt_pool=pool)


def check_budget_file(run: SAILRun, policy_file: Path) -> list[str]:
    """The operator's budget verdict for `run` from a policy.json (chart keys); unreadable file: one problem.

    Uses the layout defaults, as the operator does (it never reads the model or the data)."""
    try:
        policy = json.loads(policy_file.read_text())
    except (OSError, ValueError) as exc:
        return [f"--policy-file {policy_file}: cannot read it as JSON ({exc})"]
    return compute_budget_violations(run.spec, max_round_gpu_hours=policy.get("maxRoundGpuHours"),
                                     max_round_storage_bytes=policy.get("maxRoundStorageBytes"))


def estimate_run_file(run: SAILRun, source: Path, *, card: str | None = None,
                      seed_pairs: int | None = None) -> CostEstimate:
    return compute_estimate(run.spec, fetch_model_facts(run, source, seed_pairs), card)


# ------------------------------------------------------------------ rendering


def format_bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def format_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}" if value >= 0.01 else f"{value:.1e}" if value else "0"


def _row(label: str, p: PhaseCost) -> str:
    return (f"{label:<14} {format_count(p.unet_forwards):>9} {format_count(p.unet_backwards):>9} "
            f"{_hours(p.gpu_hours):>9} {_hours(p.wall_hours):>9} {format_bytes(p.storage_bytes):>10} "
            f"{p.storage_objects:>8}  {p.detail}")


def render_estimate_text(name: str, estimate: CostEstimate, rounds: int) -> str:
    """The `sail plan` table: step 0, one round (every round costs the same), the run's total."""
    lines = [
        f"run {name}: cost estimate on {estimate.card} ({estimate.layout} UNet shape, plain-diffusers anchors, bf16)",
        f"{'phase':<14} {'UNet fwd':>9} {'UNet bwd':>9} {'GPU-h':>9} {'wall-h':>9} {'storage':>10} {'objects':>8}  what",
    ]
    for p in estimate.iteration(0):
        lines.append(_row(f"step0 {p.phase}", p))
    lines.append(_row("step0 total", estimate.total(0)))
    if rounds:
        for p in estimate.iteration(1):
            lines.append(_row(f"round {p.phase}", p))
        lines.append(_row("round total", estimate.total(1)))
    lines.append(_row(f"run total ({rounds}r)", estimate.total()))
    lines.append("wall-h: GPU-hours / (shards or train GPUs), perfect scaling; GPU-hours exclude queueing, "
                 "model loading and the VAE. Docs: docs/performance.md")
    lines += [f"note: {note}" for note in estimate.notes]
    return "\n".join(lines)


def build_estimate_json(name: str, estimate: CostEstimate) -> dict:
    def one(p: PhaseCost) -> dict:
        return {"iteration": p.iteration, "phase": p.phase, "unetForwards": p.unet_forwards,
                "unetBackwards": p.unet_backwards, "vaeEncodes": p.vae_encodes, "gpuHours": p.gpu_hours,
                "wallHours": p.wall_hours, "storageBytes": p.storage_bytes, "storageObjects": p.storage_objects}

    return {"run": name, "card": estimate.card, "layout": estimate.layout,
            "phases": [one(p) for p in estimate.phases], "total": one(estimate.total()),
            "notes": list(estimate.notes)}
