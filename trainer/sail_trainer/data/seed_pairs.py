"""Human-labelled seed pairs: JSONL/Parquet `(prompt, winner, loser)` and Pick-a-Pic v2 Parquet.

Generic schema (JSONL or Parquet), one pair per record:
    prompt: string
    winner, loser: the preferred / rejected image, given as
        - a path relative to the dataset file, an absolute local path, or an s3:// URI;
        - raw encoded bytes (Parquet binary column);
        - a `{"bytes": ..., "path": ...}` struct (Hugging Face `Image` feature in Parquet);
        - a `data:image/...;base64,...` string (JSONL).
Pick-a-Pic v2 schema (Parquet; other columns ignored):
    caption: string; jpg_0, jpg_1: encoded bytes; label_0: 1 -> jpg_0 wins, 0 -> jpg_1 wins,
    0.5 -> a tie, dropped (as the Diffusion-DPO reference code does).

`fmt="auto"` picks JSONL or Parquet by extension and the schema by columns. A folder (local
directory or S3 URI ending in "/") is read as its shards in sorted order. `limit` keeps the
first pairs after ties are dropped. Images are checked by header here (cheap) and decoded
later by `images.decode_image`; `SeedPair.source` names the row for that later error.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from sail_trainer.data.errors import DataError
from sail_trainer.data.images import check_image_header
from sail_trainer.data.sources import ByteReader, StoreOpener, expand_files, resolve_reference

log = logging.getLogger(__name__)

SeedFormat = Literal["auto", "jsonl", "parquet", "pickapic"]
GENERIC_COLUMNS = ("prompt", "winner", "loser")
PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
_SCHEMAS = (
    "expected either prompt, winner, loser (generic JSONL/Parquet) or caption, jpg_0, jpg_1, label_0 "
    "(Pick-a-Pic v2 Parquet)"
)
_PARQUET_BATCH_ROWS = 256


@dataclass(frozen=True)
class SeedPair:
    """One human preference: `winner` preferred over `loser` for `prompt` (encoded image bytes)."""

    prompt: str
    winner: bytes = field(repr=False)
    loser: bytes = field(repr=False)
    source: str = ""  # e.g. "s3://b/pairs.parquet, row 12": the `source` for decode errors

    def __repr__(self) -> str:
        return (f"SeedPair(prompt={self.prompt!r}, winner=<{len(self.winner)} bytes>, "
                f"loser=<{len(self.loser)} bytes>, source={self.source!r})")


def read_seed_pairs(
    uri: str, fmt: SeedFormat = "auto", limit: int | None = None, *, open_store: StoreOpener | None = None
) -> list[SeedPair]:
    """Read every seed pair (or the first `limit`) into memory; see `iter_seed_pairs`."""
    pairs = list(iter_seed_pairs(uri, fmt, limit, open_store=open_store))
    if not pairs:
        raise DataError("no usable seed pairs (the file is empty or every pair is a tie)", source=uri,
                        hint="check seedPairs.uri; Pick-a-Pic ties (label_0 == 0.5) are dropped")
    return pairs


def iter_seed_pairs(
    uri: str, fmt: SeedFormat = "auto", limit: int | None = None, *, open_store: StoreOpener | None = None
) -> Iterator[SeedPair]:
    """Yield seed pairs lazily (Parquet in row batches; S3 shards streamed to a temporary file).

    Raises DataError for an unknown format, a missing column, a bad value, an unreadable
    file or a non-image, naming the file, row and column.
    """
    if fmt not in ("auto", "jsonl", "parquet", "pickapic"):
        raise DataError(f"unknown seed pair format {fmt!r}", source=uri,
                        hint="use one of auto, jsonl, parquet, pickapic")
    if limit is not None and limit < 1:
        raise ValueError(f"iter_seed_pairs: limit must be >= 1 or None, got {limit}")
    reader = ByteReader(open_store)
    count = 0
    for path in expand_files(uri, JSONL_SUFFIXES + PARQUET_SUFFIXES, open_store):
        for pair in _iter_file(path, _file_format(path, fmt), reader):
            yield pair
            count += 1
            if limit is not None and count >= limit:
                return


def _file_format(path: str, fmt: SeedFormat) -> str:
    if fmt != "auto":
        return fmt
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet-auto"
    raise DataError("cannot tell the seed pair format from the file extension", source=path,
                    hint="name it .jsonl or .parquet, or set seedPairs.format (jsonl, parquet, pickapic)")


def _iter_file(path: str, fmt: str, reader: ByteReader) -> Iterator[SeedPair]:
    if fmt == "jsonl":
        yield from _iter_jsonl(path, reader)
    else:
        yield from _iter_parquet(path, fmt, reader)


# ---------------------------------------------------------------- JSONL


def _iter_jsonl(path: str, reader: ByteReader) -> Iterator[SeedPair]:
    data = reader.read(path)
    for line_no, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        record = _parse_json_line(raw, path, line_no)
        missing = [c for c in GENERIC_COLUMNS if c not in record]
        if missing:
            raise DataError(f"missing key(s) {missing}; found keys {sorted(record)}", source=path, row=line_no,
                            field=missing[0], row_kind="line", hint=_SCHEMAS)
        where = {"source": path, "row": line_no, "row_kind": "line"}
        yield SeedPair(
            prompt=_prompt(record["prompt"], "prompt", where),
            winner=_image_value(record["winner"], "winner", path, reader, where),
            loser=_image_value(record["loser"], "loser", path, reader, where),
            source=f"{path}, line {line_no}",
        )


def _parse_json_line(raw: bytes, path: str, line_no: int) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", source=path, row=line_no, row_kind="line",
                        hint="each line must be one JSON object") from exc
    except RecursionError as exc:  # `[[[[...` thousands deep: bad data, not a crash of the phase
        raise DataError("JSON nested too deeply", source=path, row=line_no, row_kind="line",
                        hint="each line must be one flat JSON object with prompt, winner and loser") from exc
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", source=path, row=line_no,
                        row_kind="line", hint=_SCHEMAS)
    return record


# ---------------------------------------------------------------- Parquet


def _iter_parquet(path: str, fmt: str, reader: ByteReader) -> Iterator[SeedPair]:
    with reader.local_copy(path) as local:
        try:
            pf = pq.ParquetFile(local)
            columns = list(pf.schema_arrow.names)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # a flipped byte in a column name: utf-8
            raise DataError(f"not a readable Parquet file ({exc})", source=path,
                            hint="check the file, or set seedPairs.format") from exc
        schema = _parquet_schema(path, fmt, columns)
        wanted = list(PICKAPIC_COLUMNS if schema == "pickapic" else GENERIC_COLUMNS)
        row0 = 0
        try:
            batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=wanted)
            for batch in batches:
                rows = batch.to_pylist()
                for offset, record in enumerate(rows):
                    pair = _pickapic_pair if schema == "pickapic" else _generic_pair
                    result = pair(record, path, row0 + offset, reader)
                    if result is not None:
                        yield result
                row0 += len(rows)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            # Corrupt data pages surface only while reading batches, not when opening the file.
            raise DataError(f"corrupt Parquet data near row {row0} ({exc})", source=path, row=row0) from exc


def _parquet_schema(path: str, fmt: str, columns: list[str]) -> str:
    has_generic = all(c in columns for c in GENERIC_COLUMNS)
    has_pickapic = all(c in columns for c in PICKAPIC_COLUMNS)
    if fmt == "pickapic" and has_pickapic or fmt == "parquet-auto" and has_pickapic and not has_generic:
        return "pickapic"
    if fmt in ("parquet", "parquet-auto") and has_generic:
        return "generic"
    expected = PICKAPIC_COLUMNS if fmt == "pickapic" else GENERIC_COLUMNS
    missing = [c for c in expected if c not in columns]
    hint = _SCHEMAS
    if fmt == "parquet" and has_pickapic:
        hint = "these columns look like Pick-a-Pic v2: set seedPairs.format to pickapic (or auto)"
    raise DataError(f"missing column(s) {missing}; found columns {columns}", source=path, field=missing[0],
                    hint=hint)


def _generic_pair(record: dict[str, Any], path: str, row: int, reader: ByteReader) -> SeedPair:
    where = {"source": path, "row": row, "row_kind": "row"}
    return SeedPair(
        prompt=_prompt(record["prompt"], "prompt", where),
        winner=_image_value(record["winner"], "winner", path, reader, where),
        loser=_image_value(record["loser"], "loser", path, reader, where),
        source=f"{path}, row {row}",
    )


def _pickapic_pair(record: dict[str, Any], path: str, row: int, reader: ByteReader) -> SeedPair | None:
    where = {"source": path, "row": row, "row_kind": "row"}
    label = record["label_0"]
    if label is None or not isinstance(label, int | float) or float(label) not in (0.0, 0.5, 1.0):
        raise DataError(f"label_0 must be 0, 0.5 or 1, got {label!r}", field="label_0", **where,
                        hint="Pick-a-Pic v2: 1 means jpg_0 won, 0 means jpg_1 won, 0.5 is a tie")
    if float(label) == 0.5:
        return None  # a tie carries no preference
    img0 = _image_value(record["jpg_0"], "jpg_0", path, reader, where)
    img1 = _image_value(record["jpg_1"], "jpg_1", path, reader, where)
    winner, loser = (img0, img1) if float(label) == 1.0 else (img1, img0)
    return SeedPair(prompt=_prompt(record["caption"], "caption", where), winner=winner, loser=loser,
                    source=f"{path}, row {row}")


# ---------------------------------------------------------------- values


def _prompt(value: Any, column: str, where: dict[str, Any]) -> str:
    if not isinstance(value, str):
        raise DataError(f"the prompt must be a string, got {type(value).__name__}", field=column, **where)
    return value


def _image_value(value: Any, column: str, dataset: str, reader: ByteReader, where: dict[str, Any]) -> bytes:
    """Encoded image bytes from any of the accepted representations (module docstring)."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str) and value.startswith("data:"):
        data = _decode_data_uri(value, column, where)
    elif isinstance(value, str) and value.strip():
        ref = resolve_reference(value, dataset, row=where["row"], field=column, row_kind=where["row_kind"])
        data = reader.read(ref, field=column, **where)
    else:
        raise DataError(f"expected image bytes, a path or a URI, got {_describe(value)}", field=column, **where,
                        hint=_SCHEMAS)
    try:
        check_image_header(data, source=_source(where, column))
    except DataError as exc:
        raise DataError(exc.message, field=column, hint=exc.hint, **where) from exc
    return data


def _decode_data_uri(value: str, column: str, where: dict[str, Any]) -> bytes:
    header, _, payload = value.partition(",")
    if not header.endswith(";base64"):
        raise DataError("only base64 data: URIs are supported", field=column, **where,
                        hint="write data:image/png;base64,<payload>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"invalid base64 payload ({exc})", field=column, **where) from exc


def _describe(value: Any) -> str:
    return "an empty string" if value == "" else ("null" if value is None else type(value).__name__)


def _source(where: dict[str, Any], column: str) -> str:
    return f"{where['source']}, {where['row_kind']} {where['row']}, column {column!r}"
