"""Bad seed-pair, prompt and image files, generated (hypothesis): the readers raise DataError only.

The trainer maps DataError to the non-retryable BAD_DATA exit code with a message naming the
file (and row and column when there is one); any other exception would be a generic FAILURE
that the operator retries against the app budget, for a file that can never get better. So for
every generated file - JSONL records with missing keys and values of every type, Parquet tables
with missing or mistyped columns, byte-flipped and truncated Parquet files, corrupt images,
paths with NUL bytes, undecodable text - `read_seed_pairs`, `read_prompts` and `decode_image`
either return or raise DataError whose text names the file (and the column when it names one).
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sail_trainer.data.errors import DataError
from sail_trainer.data.images import decode_image
from sail_trainer.data.prompts import read_prompts
from sail_trainer.data.seed_pairs import read_seed_pairs

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _png(value: int = 7, size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
CORRUPT_IMAGES = [b"", b"\x89PNG\r\n\x1a\n", PNG[:20], PNG[:-12], b"GIF89a" + b"\x00" * 5, b"not an image",
                  b"\xff\xd8\xff\xe0" + b"\x00" * 30]


def _check(error: DataError, file: Path) -> None:
    text = str(error)
    assert str(file) in text or file.name in text, text
    if error.field is not None:
        assert repr(error.field) in text, text


# ---------------------------------------------------------------- JSONL seed pairs

image_refs = st.one_of(
    st.just("ok.png"), st.just("bad.png"), st.just("missing.png"), st.just("folder"), st.just(""),
    st.just("data:image/png;base64," + base64.b64encode(PNG).decode()),
    st.just("data:image/png;base64,@@@"), st.just("data:image/png,raw"),
    st.sampled_from(["a\x00b.png", "x" * 5000 + ".png", "../../../../etc/shadow", "ftp://host/x.png",
                     "s3://", "\U0001f600.png"]),
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["bytes", "path", "x"]), st.sampled_from([None, "ok.png", "bad.png", 3]),
                    max_size=2),
)
records = st.dictionaries(
    st.sampled_from(["prompt", "winner", "loser", "caption", "extra"]),
    st.one_of(image_refs, st.text(max_size=20)), max_size=5,
).map(lambda d: {**{"prompt": "p", "winner": "ok.png", "loser": "ok.png"}, **d})
lines = st.one_of(
    records.map(json.dumps),
    st.sampled_from(["[1, 2]", "{", "null", "\"text\"", "", "   "]),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


def _write_images(folder: Path) -> None:
    (folder / "ok.png").write_bytes(PNG)
    (folder / "bad.png").write_bytes(b"not an image at all")
    (folder / "folder").mkdir()


@FUZZ
@given(st.lists(st.one_of(lines, records.map(json.dumps)), min_size=0, max_size=6),
       st.sampled_from(["jsonl", "auto"]))
def test_jsonl_seed_pairs_give_pairs_or_a_data_error(rows: list[str], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_images(folder)
        file = folder / "pairs.jsonl"
        file.write_bytes("\n".join(rows).encode("utf-8", "surrogatepass"))
        try:
            pairs = read_seed_pairs(str(file), fmt)  # type: ignore[arg-type]
        except DataError as error:
            _check(error, file)
            return
        assert all(isinstance(p.prompt, str) and p.winner and p.loser for p in pairs)


# ---------------------------------------------------------------- Parquet seed pairs and prompts

column_values = st.one_of(
    st.lists(st.sampled_from([PNG, b"junk", b""]), min_size=2, max_size=2),
    st.lists(st.sampled_from(["ok.png", "bad.png", "nope.png"]), min_size=2, max_size=2),
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=2, max_size=2),
    st.lists(st.text(max_size=10), min_size=2, max_size=2),
    st.lists(st.integers(-5, 5), min_size=2, max_size=2),
    st.lists(st.none(), min_size=2, max_size=2),
)
tables = st.dictionaries(
    st.sampled_from(["prompt", "winner", "loser", "caption", "jpg_0", "jpg_1", "label_0", "other"]),
    column_values, min_size=1, max_size=8,
)


def _write_table(columns: dict[str, list[Any]], file: Path) -> bool:
    try:
        pq.write_table(pa.table(columns), file)
    except (pa.ArrowException, TypeError, ValueError):
        return False  # a column pyarrow cannot type (all None of no type): not a file anyone can make
    return True


@FUZZ
@given(tables, st.sampled_from(["auto", "parquet", "pickapic"]))
def test_parquet_seed_pairs_give_pairs_or_a_data_error(columns: dict[str, list[Any]], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_images(folder)
        file = folder / "pairs.parquet"
        if not _write_table(columns, file):
            return
        try:
            read_seed_pairs(str(file), fmt)  # type: ignore[arg-type]
        except DataError as error:
            _check(error, file)




def _flip(data: bytes, positions: list[int], truncate: int | None) -> bytes:
    mutable = bytearray(data)
    for position in positions:
        mutable[position % len(mutable)] ^= 0xFF
    return bytes(mutable[:truncate] if truncate is not None else mutable)


@FUZZ
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 2000)))
def test_byte_flipped_parquet_seed_pairs_are_a_data_error_or_read(positions: list[int], truncate: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "pairs.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.table({"prompt": ["a", "b"], "winner": [PNG, PNG], "loser": [PNG, PNG]}), buf)
        file.write_bytes(_flip(buf.getvalue(), positions, truncate))
        try:
            read_seed_pairs(str(file))
        except DataError as error:
            _check(error, file)


@FUZZ
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 2000)),
       st.sampled_from(["prompt", "missing"]))
def test_byte_flipped_parquet_prompts_are_a_data_error_or_read(positions: list[int], truncate: int | None,
                                                               column: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "prompts.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(50)]}), buf)
        file.write_bytes(_flip(buf.getvalue(), positions, truncate))
        try:
            read_prompts(str(file), column=column)
        except DataError as error:
            _check(error, file)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([("prompts.txt", "auto"), ("prompts.jsonl", "auto"),
                                                 ("prompts.dat", "auto"), ("prompts.dat", "text"),
                                                 ("prompts.dat", "jsonl")]))
def test_prompt_files_of_any_bytes_give_prompts_or_a_data_error(data: bytes, name_fmt: tuple[str, str]) -> None:
    name, fmt = name_fmt
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_bytes(data)
        try:
            prompts = read_prompts(str(file), fmt)  # type: ignore[arg-type]
        except DataError as error:
            _check(error, file)
            return
        assert prompts and all(isinstance(p, str) and p == p.strip() and p for p in prompts)


@FUZZ
@given(st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["prompt", "text"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
                    max_size=2).map(json.dumps),
    st.sampled_from(["[]", "1", "{", "\"x\""]),
), max_size=6))
def test_jsonl_prompts_give_prompts_or_a_data_error(rows: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "prompts.jsonl"
        file.write_text("\n".join(rows))
        try:
            read_prompts(str(file))
        except DataError as error:
            _check(error, file)


def _corrupt_parquet(file: Path, columns: dict[str, list[Any]], position: int) -> Path:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    file.write_bytes(_flip(buf.getvalue(), [position], None))
    return file


@pytest.mark.parametrize(("reader", "position"), [
    ("prompts", 4), ("prompts", 21), ("prompts", 27), ("seed_pairs", 4), ("seed_pairs", 27)])
def test_corrupt_parquet_page_is_a_data_error(tmp_path: Path, reader: str, position: int) -> None:
    if reader == "prompts":
        file = _corrupt_parquet(tmp_path / "p.parquet", {"prompt": [f"prompt {i}" for i in range(50)]}, position)
        call = lambda: read_prompts(str(file))  # noqa: E731
    else:
        file = _corrupt_parquet(tmp_path / "s.parquet", {"prompt": [f"prompt {i}" for i in range(50)],
                                                          "winner": [PNG] * 50, "loser": [PNG] * 50}, position)
        call = lambda: read_seed_pairs(str(file))  # noqa: E731
    with pytest.raises(DataError) as caught:
        call()
    _check(caught.value, file)


# ---------------------------------------------------------------- images

@FUZZ
@given(st.one_of(st.binary(max_size=200), st.sampled_from(CORRUPT_IMAGES),
                 st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)).map(
                     lambda t: PNG[: t[0]] + bytes([t[1]]) + PNG[t[0] + 1:])))
def test_decode_image_of_any_bytes_is_an_image_or_a_data_error(data: bytes) -> None:
    try:
        image = decode_image(data, source="pairs.jsonl, line 3, column 'winner'")
    except DataError as error:
        assert "pairs.jsonl, line 3, column 'winner'" in str(error)
        return
    assert image.mode == "RGB"


@pytest.mark.parametrize("size", [(1, 1), (3, 1)])
def test_tiny_and_odd_images_decode(size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", size).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), source="x").size == size


def test_a_parquet_file_whose_column_name_is_not_utf8_is_a_data_error() -> None:
    # Found by the fuzzer above (byte 397 flipped): pyarrow raised UnicodeDecodeError reading the schema.
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(50)]}), buf)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "prompts.parquet"
        file.write_bytes(_flip(buf.getvalue(), [397], None))
        with pytest.raises(DataError, match="not a readable Parquet file"):
            read_prompts(str(file), column="prompt")
