"""decode_image, compute_resize_crop and image_to_tensor."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sail_trainer.data.errors import DataError
from sail_trainer.data.images import check_image_header, compute_resize_crop, decode_image, image_to_tensor


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK"])
def test_decode_any_mode_to_rgb(mode: str) -> None:
    img = Image.new(mode, (5, 3))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(_encode(img, fmt), source="x.png")
    assert out.mode == "RGB" and out.size == (5, 3)


def test_decode_keeps_pixels() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = decode_image(_encode(Image.fromarray(arr)), source="x.png")
    assert np.array_equal(np.asarray(out), arr)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", None],
    ids=["empty", "garbage", "truncated png"],
)
def test_bad_bytes_raise_data_error_naming_the_source(data: bytes | None) -> None:
    if data is None:
        full = _encode(Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 7))
        data = full[: len(full) // 2]
    with pytest.raises(DataError) as err:
        decode_image(data, source="pairs.parquet, row 3, column 'jpg_0'")
    assert err.value.source == "pairs.parquet, row 3, column 'jpg_0'"
    assert "pairs.parquet, row 3, column 'jpg_0'" in str(err.value)


def test_header_check_accepts_images_and_rejects_garbage() -> None:
    check_image_header(_encode(Image.new("RGB", (2, 2)), "JPEG"), source="a")
    with pytest.raises(DataError, match="not an image"):
        check_image_header(b"GIF? no", source="a")


@pytest.mark.parametrize(
    "size, resolution, resized, crop",
    [
        ((100, 50), 20, (20, 40), (0, 10)),  # landscape: height is the short side
        ((50, 100), 20, (40, 20), (10, 0)),  # portrait
        ((30, 30), 30, (30, 30), (0, 0)),  # already the right size
        ((33, 17), 16, (16, 31), (0, 8)),  # torchvision rounding
    ],
)
def test_resize_crop_geometry_matches_torchvision_rules(size, resolution, resized, crop) -> None:
    w, h = size
    geo = compute_resize_crop(w, h, resolution)
    assert geo.original_size == (h, w)
    assert geo.resized_size == resized
    assert geo.crop_top_left == crop
    assert geo.target_size == (resolution, resolution)


def test_image_to_tensor_shape_range_and_centre_crop() -> None:
    # a 30x10 image: left third black, middle third white, right third black
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, 10:20] = 255
    t = image_to_tensor(Image.fromarray(arr), 10)
    assert t.shape == (3, 10, 10) and t.dtype == torch.float32
    assert torch.all(t == 1.0)  # the centre crop is the white third, mapped to +1
    black = image_to_tensor(Image.new("RGB", (8, 8)), 8)
    assert torch.all(black == -1.0)


def test_image_to_tensor_channel_order_is_rgb() -> None:
    t = image_to_tensor(Image.new("RGB", (4, 4), (255, 0, 0)), 4)
    assert torch.all(t[0] == 1) and torch.all(t[1] == -1) and torch.all(t[2] == -1)
