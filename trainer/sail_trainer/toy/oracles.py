"""Hidden-preference oracles and the noisy Bradley-Terry labeller of the toy world.

An oracle is any callable `(images, captions) -> scores`: images a float array/tensor
[N, 3, H, W] in [0, 1], captions a list of N strings, scores a float array [N], higher is
preferred. Built in: `size` (shape area), `centring` (shape centroid near the image centre),
`saturation` and `brightness` (of the shape's pixels). Any other oracle is named as
`module:callable` and imported.

The labeller plays a human annotator: for two images of the same caption it prefers `a`
with probability `sigmoid((s_a - s_b) / T)` (Bradley-Terry), with `T` calibrated on the
score differences at hand so that labels agree with the oracle's ordering at a target rate
(~85%, like real annotators of Pick-a-Pic).

Pure numpy; accepts torch tensors by converting them (no torch import here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Oracle = Callable[[Any, Sequence[str]], np.ndarray]

FOREGROUND_LOW, FOREGROUND_HIGH = 0.08, 0.25  # soft foreground ramp on the max channel (background is black)


def to_numpy_images(images: Any) -> np.ndarray:
    """[N, 3, H, W] float64 numpy array from a numpy array or torch tensor; clear error otherwise."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"oracle images must be [N, 3, H, W], got shape {arr.shape}")
    return arr


def compute_foreground(images: np.ndarray) -> np.ndarray:
    """Soft foreground weight [N, H, W] in [0, 1] from the brightest channel."""
    value = images.max(axis=1)
    return np.clip((value - FOREGROUND_LOW) / (FOREGROUND_HIGH - FOREGROUND_LOW), 0.0, 1.0)


def _weighted_mean(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    total = weight.sum(axis=(1, 2))
    return (values * weight).sum(axis=(1, 2)) / np.maximum(total, 1e-6)


def size_oracle(images: Any, captions: Sequence[str]) -> np.ndarray:
    """Fraction of the image covered by the shape: bigger is preferred."""
    return compute_foreground(to_numpy_images(images)).mean(axis=(1, 2))


def centring_oracle(images: Any, captions: Sequence[str]) -> np.ndarray:
    """Minus the distance of the shape's centroid from the image centre, in image sides."""
    arr = to_numpy_images(images)
    fg = compute_foreground(arr)
    h, w = fg.shape[1:]
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    cy = _weighted_mean(np.broadcast_to(ys, fg.shape), fg)
    cx = _weighted_mean(np.broadcast_to(xs, fg.shape), fg)
    dist = np.sqrt((cx - 0.5) ** 2 + (cy - 0.5) ** 2)
    return np.where(fg.sum(axis=(1, 2)) > 0, -dist, -np.sqrt(0.5))


def saturation_oracle(images: Any, captions: Sequence[str]) -> np.ndarray:
    """Mean HSV saturation of the shape's pixels: vivid colours are preferred."""
    arr = to_numpy_images(images)
    mx, mn = arr.max(axis=1), arr.min(axis=1)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    return _weighted_mean(sat, compute_foreground(arr))


def brightness_oracle(images: Any, captions: Sequence[str]) -> np.ndarray:
    """Mean HSV value (brightest channel) of the shape's pixels: bright shapes are preferred."""
    arr = to_numpy_images(images)
    return _weighted_mean(arr.max(axis=1), compute_foreground(arr))


BUILTIN_ORACLES: dict[str, Oracle] = {
    "size": size_oracle,
    "centring": centring_oracle,
    "saturation": saturation_oracle,
    "brightness": brightness_oracle,
}


def load_oracle(name: str) -> Oracle:
    """A built-in oracle by name, or `module:callable` imported from the Python path."""
    if name in BUILTIN_ORACLES:
        return BUILTIN_ORACLES[name]
    if ":" not in name:
        raise ValueError(
            f"oracle {name!r} is not built in ({', '.join(sorted(BUILTIN_ORACLES))}); "
            "give another one as module:callable"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"oracle {name!r}: cannot import module {module_name!r} ({exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"oracle {name!r}: {module_name} has no callable {attr!r}")
    return fn


def compute_scores(oracle: Oracle, images: Any, captions: Sequence[str]) -> np.ndarray:
    """Call an oracle and check it returned one finite float per image."""
    scores = np.asarray(oracle(images, list(captions)), dtype=np.float64).reshape(-1)
    n = len(captions)
    if scores.shape != (n,):
        raise ValueError(f"oracle returned {scores.shape[0]} scores for {n} images; it must return one per image")
    if not np.all(np.isfinite(scores)):
        raise ValueError("oracle returned non-finite scores")
    return scores


def compute_agreement(diffs: np.ndarray, temperature: float) -> float:
    """Expected rate at which Bradley-Terry labels agree with the sign of `diffs` (ties excluded)."""
    d = np.abs(diffs[diffs != 0])
    if d.size == 0:
        return 0.5
    return float(np.mean(1.0 / (1.0 + np.exp(-d / temperature))))


def calibrate_temperature(diffs: np.ndarray, target_agreement: float) -> float:
    """Bradley-Terry temperature at which labels agree with the oracle at `target_agreement`.

    Bisection in log-temperature: agreement falls monotonically from 1 (T -> 0) to 0.5 (T -> inf).
    """
    if not 0.5 < target_agreement < 1.0:
        raise ValueError(f"target agreement must be in (0.5, 1), got {target_agreement}")
    scale = float(np.std(diffs)) or 1.0
    lo, hi = np.log(scale * 1e-6), np.log(scale * 1e6)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if compute_agreement(diffs, float(np.exp(mid))) > target_agreement:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def build_noisy_labels(
    scores_a: np.ndarray, scores_b: np.ndarray, rng: np.random.Generator, target_agreement: float = 0.85
) -> tuple[np.ndarray, float]:
    """Bradley-Terry labels: True where `a` is preferred. Returns (labels, temperature)."""
    diffs = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    temperature = calibrate_temperature(diffs, target_agreement)
    p_a = 1.0 / (1.0 + np.exp(-diffs / temperature))
    return rng.random(diffs.shape[0]) < p_a, temperature
