"""Labelled seed pairs of the toy world, written in the trainer's seed-pairs format.

A pair is two base-model samples of the same caption (different noise seeds) labelled by the
noisy Bradley-Terry labeller (`oracles.build_noisy_labels`). The output folder holds

    pairs.jsonl     one {"prompt", "winner", "loser"} per line, image paths relative to the file
                    (exactly what `sail_trainer.data.seed_pairs` reads for a Pick-a-Pic export)
    images/NNNNN-a.png, NNNNN-b.png    the two samples of pair NNNNN (a/b, not winner/loser,
                    so file names do not leak the label)
    labels.json     the oracle, its scores, the calibrated temperature and the measured
                    agreement of the noisy labels with the oracle (for the benchmark; the
                    trainer never reads it)

`build_pair_records` is pure; `write_pairs` does the file I/O.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PAIRS_FILE = "pairs.jsonl"
LABELS_FILE = "labels.json"


def build_pair_records(captions: list[str], labels_a_wins: np.ndarray) -> list[dict[str, str]]:
    """JSONL records for pairs whose images are images/NNNNN-a.png and -b.png."""
    records = []
    for i, (caption, a_wins) in enumerate(zip(captions, labels_a_wins, strict=True)):
        a, b = f"images/{i:05d}-a.png", f"images/{i:05d}-b.png"
        records.append({"prompt": caption, "winner": a if a_wins else b, "loser": b if a_wins else a})
    return records


def to_uint8(images: Any) -> np.ndarray:
    """[N, H, W, 3] uint8 from [N, 3, H, W] floats in [0, 1]."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    arr = np.clip(np.asarray(images) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return arr.transpose(0, 2, 3, 1)


def write_pairs(
    out: Path, captions: list[str], images_a: Any, images_b: Any, labels_a_wins: np.ndarray, meta: dict[str, Any]
) -> Path:
    """Write PNGs, pairs.jsonl and labels.json to `out`; return the pairs.jsonl path."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip(to_uint8(images_a), to_uint8(images_b), strict=True)):
        Image.fromarray(a).save(out / "images" / f"{i:05d}-a.png")
        Image.fromarray(b).save(out / "images" / f"{i:05d}-b.png")
    records = build_pair_records(captions, labels_a_wins)
    path = out / PAIRS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / LABELS_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return path

