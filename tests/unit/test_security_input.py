"""Bad input that would cost too much or be misfiled: bounded, and a clear error naming file and row.

- A YAML alias bomb ("billion laughs") is refused from the composed node graph, before anything
  is expanded, in `sail validate` and the run-file loader.
- A 30000 x 30000 PNG (a few hundred bytes) is refused at the seed-pair header check from its
  header: a DataError naming the file, row and column, which the trainer maps to exit 65.
- A JSONL line nested thousands deep is a DataError naming the file and line, not a RecursionError.
- A dataset on S3 naming a `file://` image is refused like one naming `/etc/...`.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from sail_api.phases import ExitCode
from sail_api.storage import MemoryStore
from sail_api.validation import MAX_YAML_EXPANSION, RunFileError, load_run_file, parse_run
from sail_operator.cli import main as sail_main
from sail_trainer.data.errors import DataError
from sail_trainer.data.images import MAX_IMAGE_PIXELS, check_image_header, decode_image
from sail_trainer.data.prompts import read_prompts
from sail_trainer.data.seed_pairs import read_seed_pairs
from sail_trainer.errors import classify_exit_code


def billion_laughs(levels: int = 9) -> str:
    lines = ["apiVersion: sail.dev/v1alpha1", "kind: SAILRun", "metadata: {name: bomb}",
             "x0: &a0 [" + ",".join(['"lol"'] * 9) + "]"]
    lines += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append(f"spec: {{model: {{uri: *a{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 1000  # 9**9 "lol"s: gigabytes once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(RunFileError) as caught:
        load_run_file(path)
    assert str(path) in str(caught.value) and "aliases expand" in str(caught.value)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert sail_main(["validate", str(path)]) == 2
    assert "aliases expand" in err.getvalue() and "Traceback" not in err.getvalue()


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(RunFileError, match="refers to the node that contains it"):
        parse_run("apiVersion: sail.dev/v1alpha1\nkind: SAILRun\nmetadata: {name: x}\nspec: &a {model: *a}\n")


def test_modest_alias_use_still_works() -> None:
    text = billion_laughs(levels=2).replace("spec: {model: {uri: *a1}}", "spec: {}")
    with pytest.raises(RunFileError) as caught:  # refused for its content (no model), not its size
        parse_run(text)
    assert "expand" not in str(caught.value) and MAX_YAML_EXPANSION > 81


# ---------------------------------------------------------------- images

def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with one tiny IDAT: a few dozen bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [30000, 9000])  # over PIL's bomb error limit; over ours, under PIL's
def test_a_huge_image_is_refused_from_its_header(side: int) -> None:
    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=f"{side}x{side}|too large") as caught:
        check_image_header(png_header(side, side), source="pairs.jsonl, line 3, column 'winner'")
    assert caught.value.source == "pairs.jsonl, line 3, column 'winner'"
    with pytest.raises(DataError):
        decode_image(png_header(side, side), source="x")


def test_a_huge_image_in_a_seed_pair_names_file_and_row_and_exits_65(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(png_header(4, 4))
    (tmp_path / "bomb.png").write_bytes(png_header(30000, 30000))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "winner": "ok.png", "loser": "ok.png"}) + "\n"
                     + json.dumps({"prompt": "b", "winner": "ok.png", "loser": "bomb.png"}) + "\n")
    with pytest.raises(DataError) as caught:
        read_seed_pairs(str(pairs))
    assert (caught.value.source, caught.value.row, caught.value.field) == (str(pairs), 2, "loser")
    assert classify_exit_code(caught.value) == ExitCode.BAD_DATA == 65


# ---------------------------------------------------------------- JSONL nesting

def test_a_deeply_nested_seed_pair_line_is_a_data_error(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a", "winner": ' + "[" * 200_000 + "]" * 200_000 + ', "loser": "x"}\n')
    with pytest.raises(DataError, match="nested too deeply") as caught:
        read_seed_pairs(str(pairs))
    assert (caught.value.source, caught.value.row) == (str(pairs), 1)
    assert classify_exit_code(caught.value) == ExitCode.BAD_DATA


def test_a_deeply_nested_prompt_line_is_a_data_error(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(DataError, match="nested too deeply") as caught:
        read_prompts(str(prompts))
    assert (caught.value.source, caught.value.row) == (str(prompts), 2)


# ---------------------------------------------------------------- file:// inside a dataset on S3

def test_a_dataset_on_s3_cannot_name_a_file_uri(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"  # a readable pod-local file that is even a valid image
    secret.write_bytes(png_header(4, 4))
    store = MemoryStore("s3://bucket/data")
    store.write_bytes("pairs.jsonl", json.dumps(
        {"prompt": "a", "winner": f"file://{secret}", "loser": f"file://{secret}"}).encode() + b"\n")
    with pytest.raises(DataError, match="may not name the local path") as caught:
        read_seed_pairs("s3://bucket/data/pairs.jsonl", open_store=lambda root: store)
    assert (caught.value.row, caught.value.field) == (1, "winner")
