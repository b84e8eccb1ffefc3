"""Fidelity, diversity and preference evaluators of the toy world.

Fidelity is a caption classifier that must be *reliable* before any alignment claim is made
(the feasibility study's learned colour classifier moved by 0.07-0.2 between seeds). So:
- **colour** is read from pixel statistics, with no learning: the hue of the mean colour of
  the shape's (soft-foreground) pixels, assigned to the nearest colour word's hue. Exact and
  seed-free on procedural data; it fails only on images with no coloured foreground.
- **shape** is a softmax regression on four geometric features of the thresholded shape mask
  (bounding-box fill ratio, top/bottom mass asymmetry, normalised second moment, corner fill),
  fitted on blurred + noised procedural images (blur mimics the VAE decoder) from a seed.
  Few features, convex fit: seeds change accuracy by well under 0.01 (measured in the tests
  and docs/toy-world.md).
A sample is *faithful* when both colour and shape are right; `fidelity` is that rate.

Diversity is the mean pairwise RMS pixel distance between samples of the same caption,
averaged over captions. Win rate compares a model's and the base model's samples of the same
(caption, seed) under an oracle; ties count half.

Pure numpy (torch tensors accepted as input).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sail_trainer.toy import domain
from sail_trainer.toy.oracles import Oracle, compute_foreground, compute_scores, to_numpy_images

_COLOUR_NAMES = list(domain.COLOURS)
_COLOUR_HUES = np.array([domain.COLOURS[c] for c in _COLOUR_NAMES])


def classify_colours(images: Any) -> list[str | None]:
    """Colour word of each image from its foreground's mean hue (None when there is no foreground)."""
    arr = to_numpy_images(images)
    fg = compute_foreground(arr)
    total = fg.sum(axis=(1, 2))
    rgb = (arr * fg[:, None]).sum(axis=(2, 3)) / np.maximum(total, 1e-6)[:, None]
    out: list[str | None] = []
    for (r, g, b), weight in zip(rgb, total, strict=True):
        mx, mn = max(r, g, b), min(r, g, b)
        if weight < 1.0 or mx - mn < 1e-3:
            out.append(None)
            continue
        if mx == r:
            hue = (60.0 * (g - b) / (mx - mn)) % 360.0
        elif mx == g:
            hue = 60.0 * (b - r) / (mx - mn) + 120.0
        else:
            hue = 60.0 * (r - g) / (mx - mn) + 240.0
        dist = np.abs((_COLOUR_HUES - hue + 180.0) % 360.0 - 180.0)
        out.append(_COLOUR_NAMES[int(np.argmin(dist))])
    return out


def compute_shape_features(images: Any) -> np.ndarray:
    """Geometric features [N, 4] of the shape mask (threshold at half the image's brightest value)."""
    arr = to_numpy_images(images)
    value = arr.max(axis=1)
    peak = value.reshape(value.shape[0], -1).max(axis=1)
    feats = np.zeros((arr.shape[0], 4))
    for i in range(arr.shape[0]):
        mask = value[i] >= max(0.5 * peak[i], 0.05)
        ys, xs = np.nonzero(mask)
        if ys.size < 3:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        box = mask[y0:y1, x0:x1].astype(np.float64)
        h, w = box.shape
        fill = box.mean()
        top, bottom = box[: h // 2].sum(), box[h - h // 2:].sum()
        asym = (bottom - top) / max(box.sum(), 1.0)
        yy, xx = np.nonzero(box)
        area = float(yy.size)
        moment = (((yy - yy.mean()) ** 2).sum() + ((xx - xx.mean()) ** 2).sum()) / max(area**2, 1.0)
        k = max(1, min(h, w) // 4)
        corners = np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(), box[-k:, -k:].mean()])
        feats[i] = (fill, asym, moment * 2 * np.pi, corners)
    return feats


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur each image by a random Gaussian (sigma 0..1.2 px) and add a little noise: decoder-like."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        sigma = rng.uniform(0.0, 1.2)
        if sigma > 0.2:
            radius = 3
            k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
            k /= k.sum()
            img = np.apply_along_axis(lambda v, k=k: np.convolve(v, k, mode="same"), 1, img)
            img = np.apply_along_axis(lambda v, k=k: np.convolve(v, k, mode="same"), 2, img)
        out[i] = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return out


@dataclass(frozen=True)
class ShapeClassifier:
    """Softmax regression on standardised shape features (fitted by `fit_shape_classifier`)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict(self, images: Any) -> list[str | None]:
        feats = compute_shape_features(images)
        logits = ((feats - self.mean) / self.std) @ self.weights + self.bias
        empty = ~feats.any(axis=1)
        return [None if e else domain.SHAPES[int(j)] for j, e in zip(logits.argmax(axis=1), empty, strict=True)]


def fit_shape_classifier(seed: int = 0, n: int = 1500, resolution: int = 32, steps: int = 500) -> ShapeClassifier:
    """Fit the shape classifier on augmented procedural images, deterministically from `seed`."""
    rng = np.random.default_rng(seed)
    images, captions, _ = domain.sample_dataset(seed + 1000, n, resolution)
    feats = compute_shape_features(_augment(images, rng))
    labels = np.array([domain.SHAPES.index(domain.parse_caption(c)[1]) for c in captions])
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    x = (feats - mean) / std
    w, b = np.zeros((x.shape[1], len(domain.SHAPES))), np.zeros(len(domain.SHAPES))
    onehot = np.eye(len(domain.SHAPES))[labels]
    for _ in range(steps):  # full-batch gradient descent on a convex loss: deterministic
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = p - onehot
        w -= 0.5 * (x.T @ grad / len(x) + 1e-3 * w)
        b -= 0.5 * grad.mean(axis=0)
    return ShapeClassifier(mean=mean, std=std, weights=w, bias=b)


@dataclass(frozen=True)
class Fidelity:
    colour: float
    shape: float
    both: float


def compute_fidelity(images: Any, captions: Sequence[str], shape_classifier: ShapeClassifier) -> Fidelity:
    """Share of images whose colour, shape, and both match their caption."""
    targets = [domain.parse_caption(c) for c in captions]
    colours = classify_colours(images)
    shapes = shape_classifier.predict(images)
    c_ok = np.array([p == t[0] for p, t in zip(colours, targets, strict=True)])
    s_ok = np.array([p == t[1] for p, t in zip(shapes, targets, strict=True)])
    return Fidelity(colour=float(c_ok.mean()), shape=float(s_ok.mean()), both=float((c_ok & s_ok).mean()))


def compute_diversity(images: Any, captions: Sequence[str]) -> float:
    """Mean pairwise RMS pixel distance between images of the same caption, averaged over captions."""
    arr = to_numpy_images(images).reshape(len(captions), -1)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(captions):
        groups[c].append(i)
    per_caption = []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        x = arr[idx]
        d = np.sqrt(((x[:, None] - x[None]) ** 2).mean(axis=2))
        per_caption.append(d[np.triu_indices(len(idx), 1)].mean())
    if not per_caption:
        raise ValueError("diversity needs at least two samples of some caption")
    return float(np.mean(per_caption))


def compute_win_rate(oracle: Oracle, images: Any, base_images: Any, captions: Sequence[str]) -> float:
    """Share of matched (caption, seed) samples the oracle prefers over the base model's; ties half."""
    a = compute_scores(oracle, images, captions)
    b = compute_scores(oracle, base_images, captions)
    return float(np.mean((a > b) + 0.5 * (a == b)))


def compute_label_agreement(oracle: Oracle, winners: Any, losers: Any, captions: Sequence[str]) -> float:
    """Share of (winner, loser) pairs the oracle orders the same way; ties half."""
    return compute_win_rate(oracle, winners, losers, captions)
