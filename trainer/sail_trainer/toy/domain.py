"""The procedural domain of the toy world: coloured shapes on black, with captions.

A caption fixes the *content* (a colour and a shape, e.g. "a picture of a red circle");
every image of that content varies in the attributes a hidden preference can be about:
size, position, saturation, brightness and a small hue jitter. Captions come from phrase
templates; the train and held-out captions use disjoint templates over the same contents,
so held-out captions test the model on unseen phrasings of known content (a tiny model does
not generalise to unseen colour x shape combinations, and fidelity is measured per content).

Pure numpy: no torch, no I/O. Everything is deterministic from a seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

# Hue in degrees of each colour word: 120 degrees apart, so a hue read from a decoded image
# may drift by up to 60 degrees and still name the right colour (a first build with five
# colours 55-70 degrees apart lost half its colours in the tiny VAE; see docs/toy-world.md).
COLOURS: dict[str, float] = {"red": 0.0, "green": 120.0, "blue": 235.0}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "one {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a {colour} {shape} on black",
    "the {colour} {shape}",
    "an image of a {colour} {shape}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = ("a photo of a {colour} {shape}", "a drawing of one {colour} {shape}")
# Nonsense words the build inserts into training captions at random places, so the text encoder
# learns to pick the colour and shape out of words it has no use for; held-out phrasings then
# read as more such words. Built from syllables no template word contains.
FILLER_WORDS: tuple[str, ...] = tuple(c + v + e for c in "bdfgkmvz" for v in "aeiu" for e in "xq")

# Attribute ranges (fractions of the image side for geometry).
HALF_EXTENT_RANGE = (0.12, 0.34)
SATURATION_RANGE = (0.45, 1.0)
VALUE_RANGE = (0.45, 1.0)
HUE_JITTER_DEG = 6.0
SQUARE_SCALE = 0.9  # a square of half-side 0.9 r has about the area of a circle of radius r
TRIANGLE_HALF_BASE = 1.15
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Attributes:
    """Everything that determines one image. Geometry is in fractions of the image side."""

    colour: str
    shape: str
    half_extent: float
    cx: float
    cy: float
    saturation: float
    value: float
    hue_jitter: float


def build_vocabulary() -> list[str]:
    """Every word any caption can contain (the toy tokenizer is built from these)."""
    words: set[str] = set(COLOURS) | set(SHAPES) | set(FILLER_WORDS)
    for template in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    return sorted(words)


def build_contents() -> list[tuple[str, str]]:
    """All (colour, shape) contents, in a fixed order."""
    return [(c, s) for c in COLOURS for s in SHAPES]


SPLITS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_TEMPLATES,
    "heldout": HELDOUT_TEMPLATES,
    "val": HELDOUT_TEMPLATES[:1],  # benchmark sweeps pick lr/beta here
    "test": HELDOUT_TEMPLATES[1:],  # benchmark tables are measured here
}


def build_captions(split: str = "train") -> list[str]:
    """Captions of a split (train, heldout = val + test): every template of the split x every content."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    templates = SPLITS[split]
    return [t.format(colour=c, shape=s) for t in templates for c, s in build_contents()]


def insert_fillers(rng: np.random.Generator, caption: str, probability: float) -> str:
    """`caption` with, at `probability`, one or two filler words inserted at random word boundaries."""
    if rng.random() >= probability:
        return caption
    words = caption.split()
    for _ in range(int(rng.integers(1, 3))):
        words.insert(int(rng.integers(0, len(words) + 1)), FILLER_WORDS[int(rng.integers(len(FILLER_WORDS)))])
    return " ".join(words)


def parse_caption(caption: str) -> tuple[str, str]:
    """Return the (colour, shape) a caption asks for; raise ValueError if it names none."""
    words = caption.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(
            f"caption {caption!r} must name exactly one colour of {sorted(COLOURS)} and one shape of {list(SHAPES)}"
        )
    return colours[0], shapes[0]


def sample_attributes(rng: np.random.Generator, caption: str) -> Attributes:
    """Draw the free attributes of one image of `caption` (content fixed by the caption)."""
    colour, shape = parse_caption(caption)
    r = float(rng.uniform(*HALF_EXTENT_RANGE))
    margin = r * (TRIANGLE_HALF_BASE if shape == "triangle" else 1.0) + 0.02
    return Attributes(
        colour=colour,
        shape=shape,
        half_extent=r,
        cx=float(rng.uniform(margin, 1.0 - margin)),
        cy=float(rng.uniform(r + 0.02, 1.0 - r - 0.02)),
        saturation=float(rng.uniform(*SATURATION_RANGE)),
        value=float(rng.uniform(*VALUE_RANGE)),
        hue_jitter=float(rng.uniform(-HUE_JITTER_DEG, HUE_JITTER_DEG)),
    )


def compute_coverage(attrs: Attributes, resolution: int) -> np.ndarray:
    """Anti-aliased coverage mask [H, W] in [0, 1] of the shape (4x4 supersampling)."""
    n = resolution * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    y, x = np.meshgrid(coords, coords, indexing="ij")
    r, cx, cy = attrs.half_extent, attrs.cx, attrs.cy
    if attrs.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    elif attrs.shape == "square":
        inside = (np.abs(x - cx) <= SQUARE_SCALE * r) & (np.abs(y - cy) <= SQUARE_SCALE * r)
    elif attrs.shape == "triangle":
        t = (y - (cy - r)) / (2 * r)  # 0 at the apex, 1 at the base
        inside = (t >= 0) & (t <= 1) & (np.abs(x - cx) <= t * TRIANGLE_HALF_BASE * r)
    else:
        raise ValueError(f"unknown shape {attrs.shape!r}; expected one of {list(SHAPES)}")
    return inside.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))


def compute_rgb(attrs: Attributes) -> np.ndarray:
    """The shape's RGB colour [3] in [0, 1]."""
    hue = ((COLOURS[attrs.colour] + attrs.hue_jitter) % 360.0) / 360.0
    return np.asarray(colorsys.hsv_to_rgb(hue, attrs.saturation, attrs.value), dtype=np.float32)


def render(attrs: Attributes, resolution: int) -> np.ndarray:
    """One image [3, H, W] float32 in [0, 1]: the shape on a black background."""
    return (compute_rgb(attrs)[:, None, None] * compute_coverage(attrs, resolution)[None]).astype(np.float32)


def render_batch(attrs: list[Attributes], resolution: int) -> np.ndarray:
    """Images [N, 3, H, W] float32 in [0, 1]."""
    return np.stack([render(a, resolution) for a in attrs]) if attrs else np.zeros((0, 3, resolution, resolution), np.float32)


def sample_dataset(
    seed: int, n: int, resolution: int, split: str = "train"
) -> tuple[np.ndarray, list[str], list[Attributes]]:
    """`n` (image, caption) examples of a split, deterministic from `seed`.

    Captions are drawn uniformly from the split's captions, so every content is equally likely.
    """
    rng = np.random.default_rng(seed)
    captions = build_captions(split)
    chosen = [captions[i] for i in rng.integers(0, len(captions), size=n)]
    attrs = [sample_attributes(rng, c) for c in chosen]
    return render_batch(attrs, resolution), chosen, attrs
