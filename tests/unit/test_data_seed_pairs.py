"""read_seed_pairs on JSONL, generic Parquet and Pick-a-Pic v2 Parquet written in tmp, and bad input."""

from __future__ import annotations

import base64
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sail_trainer.data.errors import DataError
from sail_trainer.data.images import decode_image
from sail_trainer.data.seed_pairs import SeedPair, iter_seed_pairs, read_seed_pairs


def _png(value: int, size: int = 4) -> bytes:
    """A tiny PNG whose pixels all equal `value`, so tests can tell images apart after decoding."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _value(data: bytes) -> int:
    return int(np.asarray(decode_image(data, source="test"))[0, 0, 0])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pickapic_table(labels: list[float | None]) -> pa.Table:
    n = len(labels)
    return pa.table({
        "are_different": [True] * n,
        "caption": [f"caption {i}" for i in range(n)],
        "jpg_0": [_png(10 + i) for i in range(n)],
        "jpg_1": [_png(100 + i) for i in range(n)],
        "label_0": pa.array(labels, type=pa.float64()),
        "label_1": pa.array([None if x is None else 1 - x for x in labels], type=pa.float64()),
    })


# ---------------------------------------------------------------- good input


def test_jsonl_with_relative_paths_absolute_paths_and_base64(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "w0.png").write_bytes(_png(1))
    (tmp_path / "img" / "l0.png").write_bytes(_png(2))
    absolute = tmp_path / "abs.png"
    absolute.write_bytes(_png(3))
    inline = "data:image/png;base64," + base64.b64encode(_png(4)).decode()
    path = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "a cat", "winner": "img/w0.png", "loser": "img/l0.png", "extra": 1},
        {"prompt": "a dog", "winner": str(absolute), "loser": inline},
    ])
    pairs = read_seed_pairs(str(path))
    assert [p.prompt for p in pairs] == ["a cat", "a dog"]
    assert [(_value(p.winner), _value(p.loser)) for p in pairs] == [(1, 2), (3, 4)]
    assert pairs[0].source == f"{path}, line 1"


def test_generic_parquet_with_binary_images_and_image_structs(tmp_path: Path) -> None:
    (tmp_path / "l.png").write_bytes(_png(8))
    bin_path = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"prompt": ["p0", "p1"], "winner": [_png(5), _png(6)], "loser": [_png(7), _png(9)]}),
                   bin_path)
    assert [(_value(p.winner), _value(p.loser)) for p in read_seed_pairs(str(bin_path))] == [(5, 7), (6, 9)]
    struct_path = tmp_path / "hf.parquet"
    pq.write_table(pa.table({
        "prompt": ["p"],
        "winner": [{"bytes": _png(11), "path": None}],
        "loser": [{"bytes": None, "path": "l.png"}],
    }), struct_path)
    [pair] = read_seed_pairs(str(struct_path))
    assert (_value(pair.winner), _value(pair.loser)) == (11, 8)


def test_pickapic_labels_pick_the_winner_and_ties_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "train-00000.parquet"
    pq.write_table(_pickapic_table([1.0, 0.0, 0.5, 1.0]), path, row_group_size=2)
    pairs = read_seed_pairs(str(path))
    assert [p.prompt for p in pairs] == ["caption 0", "caption 1", "caption 3"]
    assert [(_value(p.winner), _value(p.loser)) for p in pairs] == [(10, 100), (101, 11), (13, 103)]
    assert pairs[2].source == f"{path}, row 3"
    assert [p.prompt for p in read_seed_pairs(str(path), fmt="pickapic")] == [p.prompt for p in pairs]


def test_limit_counts_pairs_after_ties_and_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "pp.parquet"
    pq.write_table(_pickapic_table([0.5, 1.0, 0.5, 0.0, 1.0]), path)
    assert [p.prompt for p in read_seed_pairs(str(path), limit=2)] == ["caption 1", "caption 3"]


def test_iter_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "a", "winner": "data:image/png;base64," + base64.b64encode(_png(1)).decode(),
            "loser": "data:image/png;base64," + base64.b64encode(_png(2)).decode()}
    _write_jsonl(path, [good, {"prompt": "b", "winner": "missing.png", "loser": "missing.png"}])
    it = iter_seed_pairs(str(path))
    assert next(it).prompt == "a"  # the bad second row is only reached on the next item
    with pytest.raises(DataError):
        next(it)


def test_a_folder_of_shards_reads_them_in_order(tmp_path: Path) -> None:
    pq.write_table(_pickapic_table([1.0]), tmp_path / "train-00001.parquet")
    pq.write_table(_pickapic_table([0.0, 1.0]), tmp_path / "train-00000.parquet")
    pairs = read_seed_pairs(str(tmp_path))
    assert [(p.prompt, _value(p.winner)) for p in pairs] == [("caption 0", 100), ("caption 1", 11), ("caption 0", 10)]


def test_seed_pair_repr_hides_the_bytes() -> None:
    text = repr(SeedPair("p", b"x" * 1000, b"y", "f.jsonl, line 1"))
    assert "1000 bytes" in text and "xxxx" not in text


# ---------------------------------------------------------------- bad input


def _error(uri: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as err:
        read_seed_pairs(uri, **kwargs)
    return err.value


def test_jsonl_missing_key_lists_keys_and_schema(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "x.png", "rejected": "y.png"}])
    err = _error(str(path))
    assert err.source == str(path) and err.row == 1 and err.field == "winner"
    assert "['chosen', 'prompt', 'rejected']" in str(err) and "caption, jpg_0, jpg_1, label_0" in str(err)


def test_missing_image_file_names_dataset_row_and_column(tmp_path: Path) -> None:
    (tmp_path / "w.png").write_bytes(_png(1))
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "winner": "w.png", "loser": "gone.png"}])
    err = _error(str(path))
    assert (err.source, err.row, err.field) == (str(path), 1, "loser")
    assert "gone.png does not exist" in str(err) and "line 1" in str(err)


def test_corrupt_image_bytes_name_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "winner": [_png(1), b"garbage"], "loser": [_png(2), _png(3)]}),
                   path)
    err = _error(str(path))
    assert (err.source, err.row, err.field) == (str(path), 1, "winner")
    assert "row 1, column 'winner'" in str(err)


def test_truncated_image_is_caught_at_decode_with_the_pair_source(tmp_path: Path) -> None:
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big, "PNG")
    truncated = big.getvalue()[:200]
    path = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "winner": [truncated], "loser": [_png(3)]}), path)
    [pair] = read_seed_pairs(str(path))  # the header is fine; the pixels are not
    with pytest.raises(DataError) as err:
        decode_image(pair.winner, source=f"{pair.source}, column 'winner'")
    assert f"{path}, row 0, column 'winner'" in str(err.value)


def test_parquet_missing_columns_list_found_columns_and_schemas(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a"], "img": [b"x"]}), path)
    err = _error(str(path))
    assert err.field == "prompt" and "found columns ['text', 'img']" in str(err)
    assert "prompt, winner, loser" in str(err) and "caption, jpg_0, jpg_1, label_0" in str(err)


def test_pickapic_file_read_as_generic_parquet_suggests_the_format(tmp_path: Path) -> None:
    path = tmp_path / "pp.parquet"
    pq.write_table(_pickapic_table([1.0]), path)
    err = _error(str(path), fmt="parquet")
    assert "set seedPairs.format to pickapic" in str(err)


@pytest.mark.parametrize("label", [None, 0.3, 2.0], ids=["null", "0.3", "2"])
def test_pickapic_bad_label_names_the_row(tmp_path: Path, label) -> None:
    path = tmp_path / "pp.parquet"
    pq.write_table(_pickapic_table([1.0, label]), path)
    err = _error(str(path))
    assert (err.row, err.field) == (1, "label_0") and "0, 0.5 or 1" in str(err)


def test_only_ties_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "pp.parquet"
    pq.write_table(_pickapic_table([0.5, 0.5]), path)
    assert "no usable seed pairs" in str(_error(str(path)))


@pytest.mark.parametrize(
    "row, message, field",
    [
        ({"prompt": 3, "winner": "a.png", "loser": "a.png"}, "must be a string", "prompt"),
        ({"prompt": "p", "winner": None, "loser": "a.png"}, "got null", "winner"),
        ({"prompt": "p", "winner": "", "loser": "a.png"}, "got an empty string", "winner"),
        ({"prompt": "p", "winner": "a.png", "loser": "data:image/png,xyz"}, "only base64", "loser"),
        ({"prompt": "p", "winner": "a.png", "loser": "data:image/png;base64,@@@"}, "invalid base64", "loser"),
        ({"prompt": "p", "winner": "https://x/a.png", "loser": "a.png"}, "unsupported URI scheme", None),
    ],
    ids=["prompt not a string", "null image", "empty image ref", "non-base64 data uri", "bad base64",
         "http image"],
)
def test_bad_jsonl_values(tmp_path: Path, row: dict, message: str, field: str | None) -> None:
    (tmp_path / "a.png").write_bytes(_png(1))
    path = _write_jsonl(tmp_path / "pairs.jsonl", [row])
    err = _error(str(path))
    assert message in str(err)
    if field is not None:
        assert (err.source, err.row, err.field) == (str(path), 1, field)


def test_broken_json_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": \n')
    err = _error(str(path))
    assert err.row == 1 and "not valid JSON" in str(err)


def test_unknown_extension_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,winner,loser\n")
    assert "seedPairs.format" in str(_error(str(path)))
    assert "unknown seed pair format 'csv'" in str(_error(str(path), fmt="csv"))


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    assert "does not exist" in str(_error(str(tmp_path / "none.parquet")))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in str(_error(str(bad)))


def test_data_error_survives_pickling() -> None:
    err = DataError("bad", source="f.parquet", row=3, field="jpg_0", hint="fix it")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "f.parquet, row 3, column 'jpg_0': bad. fix it"
    assert (back.source, back.row, back.field) == ("f.parquet", 3, "jpg_0")
