"""read_prompts on text, JSONL and Parquet files written in tmp, and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sail_trainer.data.errors import DataError
from sail_trainer.data.prompts import read_prompts


def test_text_one_per_line_blank_lines_skipped_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n\n  a dog  \n\t\nthe red house\n", encoding="utf-8")
    assert read_prompts(str(path)) == ["a cat", "a dog", "the red house"]


def test_text_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffune tasse de café\r\nzwei Hunde\r\n".encode())
    assert read_prompts(str(path)) == ["une tasse de café", "zwei Hunde"]


def test_duplicates_and_order_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("b\na\nb\n")
    assert read_prompts(str(path)) == ["b", "a", "b"]


def test_jsonl_with_default_and_custom_key(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "one", "x": 1}) + "\n\n" + json.dumps({"prompt": "two"}) + "\n")
    assert read_prompts(str(path)) == ["one", "two"]
    other = tmp_path / "c.jsonl"
    other.write_text(json.dumps({"caption": "cap"}) + "\n")
    assert read_prompts(str(other), column="caption") == ["cap"]


def test_parquet_column_nulls_and_blanks_skipped(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["x", None, " ", "y"], "other": [1, 2, 3, 4]}), path)
    assert read_prompts(str(path)) == ["x", "y"]


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "pool.data"
    path.write_text("only\n")
    assert read_prompts(str(path), fmt="text") == ["only"]


def test_a_folder_reads_its_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "README.md").write_text("ignored\n")
    assert read_prompts(str(tmp_path)) == ["first", "second"]


def test_the_store_opener_is_not_used_for_local_files(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a\n")

    def refuse(uri: str):
        raise AssertionError(f"opened a store for {uri}")

    assert read_prompts(str(path), open_store=refuse) == ["a"]


# ---------------------------------------------------------------- bad input


def _raises(tmp_path: Path, name: str, content: bytes | None, **kwargs) -> DataError:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_prompts(str(path), **kwargs)
    assert err.value.source == str(path)
    assert str(path) in str(err.value)
    return err.value


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    err = _raises(tmp_path, "p.txt", b"\n  \n")
    assert "empty" in err.message and err.hint


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _raises(tmp_path, "nope.txt", None).message


def test_unknown_extension_names_the_format_field(tmp_path: Path) -> None:
    err = _raises(tmp_path, "p.csv", b"a\n")
    assert "prompts.format" in str(err)


def test_unknown_format_value(tmp_path: Path) -> None:
    err = _raises(tmp_path, "p.txt", b"a\n", fmt="yaml")
    assert "unknown prompt format 'yaml'" in str(err)


def test_unsupported_scheme() -> None:
    with pytest.raises(DataError, match="unsupported URI scheme 'https'"):
        read_prompts("https://example.com/p.txt")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    err = _raises(tmp_path, "p.txt", b"fine\n\xff\xfe bad\n")
    assert err.row == 2 and err.row_kind == "line" and "line 2" in str(err)


def test_jsonl_missing_key_lists_the_keys_found(tmp_path: Path) -> None:
    content = (json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"text": "t", "id": 3}) + "\n").encode()
    err = _raises(tmp_path, "p.jsonl", content)
    assert err.row == 2 and err.field == "prompt"
    assert "['id', 'text']" in str(err) and "prompts.column" in str(err)


@pytest.mark.parametrize(
    "line, message",
    [(b"{not json", "not valid JSON"), (b'["a"]', "expected a JSON object"), (b'{"prompt": 5}', "must be a string")],
    ids=["broken json", "not an object", "not a string"],
)
def test_jsonl_bad_lines(tmp_path: Path, line: bytes, message: str) -> None:
    err = _raises(tmp_path, "p.jsonl", b'{"prompt": "a"}\n' + line + b"\n")
    assert message in str(err) and err.row == 2


def test_parquet_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"caption": ["x"], "id": [1]}), path)
    with pytest.raises(DataError) as err:
        read_prompts(str(path))
    assert err.value.field == "prompt" and "['caption', 'id']" in str(err.value)


def test_parquet_non_string_column_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": [1, 2]}), path)
    with pytest.raises(DataError) as err:
        read_prompts(str(path))
    assert err.value.row == 0 and err.value.field == "prompt" and "row 0" in str(err.value)


def test_corrupt_parquet(tmp_path: Path) -> None:
    assert "not a readable Parquet file" in _raises(tmp_path, "p.parquet", b"PAR1 garbage").message


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no"):
        read_prompts(str(tmp_path))
