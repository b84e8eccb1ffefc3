"""Encoded image bytes -> RGB PIL image -> `[3, H, W]` tensor in [-1, 1].

The preprocessing matches the Diffusion-DPO reference training code (torchvision
`Resize(resolution, BILINEAR)` on the shorter side, `CenterCrop(resolution)`, `ToTensor`,
`Normalize([0.5], [0.5])`), implemented with PIL so torchvision is not needed.
`compute_resize_crop` gives the original size and crop corner of that geometry; the trainer
does not feed them to SDXL's `add_time_ids`, which are always (res, res, 0, 0, res, res)
(`models.text.build_unet_kwargs`: seed images are encoded once as resized square crops).
Random horizontal flip is a training-time augmentation and is left to the train phase.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sail_trainer.data.errors import DataError

# Pixels an image may have (8192 x 8192): checked from the header, before anything is decoded, and
# independent of PIL's global MAX_IMAGE_PIXELS (which a library may change). A 30000 x 30000 PNG
# is a few hundred bytes and would decode to 2.7 GB.
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_pixels(size: tuple[int, int], source: str) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"the image is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS} pixels",
                        source=source, hint="resize it (training uses sampler.resolution anyway)")


def decode_image(data: bytes, *, source: str) -> Image.Image:
    """Decode fully and convert to RGB (alpha dropped, palettes/greyscale/CMYK expanded).

    `source` names where the bytes came from (e.g. "pairs.parquet, row 12, column 'jpg_0'") and
    is the `source` of the DataError raised for empty, truncated, corrupt or oversized images.
    """
    if not data:
        raise DataError("the image is empty (0 bytes)", source=source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                _check_pixels(img.size, source)
                img.load()
                return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise DataError(f"not a decodable image ({type(exc).__name__}: {exc})", source=source,
                        hint="re-export the image as PNG or JPEG") from exc


def check_image_header(data: bytes, *, source: str) -> None:
    """Cheap check that `data` starts like an image PIL can read (header only, no decode)."""
    if not data:
        raise DataError("the image is empty (0 bytes)", source=source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"the image is too large to decode safely ({exc})", source=source,
                        hint=f"resize it to at most {MAX_IMAGE_PIXELS} pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"not an image ({type(exc).__name__})", source=source,
                        hint="each winner/loser must be PNG, JPEG or WebP bytes or a path to one") from exc
    _check_pixels(size, source)


@dataclass(frozen=True)
class ResizeCrop:
    """Geometry of `image_to_tensor` (informational: the trainer's SDXL `add_time_ids` do not use it).

    original_size and crop_top_left are (height, width) / (top, left), as in diffusers' SDXL.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    target_size: tuple[int, int]


def compute_resize_crop(width: int, height: int, resolution: int) -> ResizeCrop:
    """Shorter side to `resolution` (torchvision's rounding), then a centred square crop."""
    if resolution < 1 or width < 1 or height < 1:
        raise ValueError(f"compute_resize_crop: sizes must be positive, got {width}x{height} -> {resolution}")
    if width <= height:
        new_w, new_h = resolution, int(resolution * height / width)
    else:
        new_w, new_h = int(resolution * width / height), resolution
    top = int(round((new_h - resolution) / 2.0))
    left = int(round((new_w - resolution) / 2.0))
    return ResizeCrop((height, width), (new_h, new_w), (top, left), (resolution, resolution))


def image_to_tensor(img: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the shorter side to `resolution` (bilinear), centre-crop a square, scale to [-1, 1].

    Returns a float32 `[3, resolution, resolution]` tensor (channels first, RGB).
    """
    geo = compute_resize_crop(img.width, img.height, resolution)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    if (rgb.height, rgb.width) != geo.resized_size:
        rgb = rgb.resize((geo.resized_size[1], geo.resized_size[0]), resample=Image.Resampling.BILINEAR)
    top, left = geo.crop_top_left
    rgb = rgb.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(rgb, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0
