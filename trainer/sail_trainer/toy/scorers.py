"""The toy world's scorers for `spec.evaluation` (`module:callable`, called with PIL images and captions).

- `hidden_preference`: the `size` oracle that labelled the quick start's seed pairs (the preference
  SAIL should raise), as a score per image.
- `caption_fidelity`: 1 when the image's colour and shape both match its caption, else 0 (the
  fidelity evaluator of `sail_trainer.toy.evaluate`; its shape classifier is fitted once per process,
  deterministically).
- `load_oracle_scorer(name)`: any other oracle by name, wrapped the same way.

Pure numpy; the images are converted to `[N, 3, H, W]` floats in [0, 1] as the oracles expect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from sail_trainer.toy.oracles import load_oracle


def pil_to_array(images: Sequence[Any]) -> np.ndarray:
    """`[N, 3, H, W]` float64 in [0, 1] from RGB PIL images (or `[H, W, 3]` uint8 arrays)."""
    if not images:
        return np.zeros((0, 3, 1, 1))
    arrays = [np.asarray(image.convert("RGB") if hasattr(image, "convert") else image) for image in images]
    return np.stack(arrays).astype(np.float64).transpose(0, 3, 1, 2) / 255.0


def load_oracle_scorer(name: str) -> Callable[[Sequence[Any], Sequence[str]], np.ndarray]:
    oracle = load_oracle(name)

    def score(images: Sequence[Any], captions: Sequence[str]) -> np.ndarray:
        return np.asarray(oracle(pil_to_array(images), list(captions)), dtype=np.float64)

    return score


def hidden_preference(images: Sequence[Any], captions: Sequence[str]) -> np.ndarray:
    """The quick start's hidden preference (the `size` oracle): bigger shapes score higher."""
    return load_oracle_scorer("size")(images, captions)


@cache
def _shape_classifier() -> Any:
    from sail_trainer.toy.evaluate import fit_shape_classifier

    return fit_shape_classifier(seed=0)


def caption_fidelity(images: Sequence[Any], captions: Sequence[str]) -> np.ndarray:
    """1.0 for each image whose colour and shape match its caption, else 0.0."""
    from sail_trainer.toy import domain
    from sail_trainer.toy.evaluate import classify_colours

    arr = pil_to_array(images)
    if not len(arr):
        return np.zeros(0)
    colours = classify_colours(arr)
    shapes = _shape_classifier().predict(arr)
    targets = [domain.parse_caption(c) for c in captions]
    return np.array([float(c == t[0] and s == t[1]) for c, s, t in zip(colours, shapes, targets, strict=True)])
