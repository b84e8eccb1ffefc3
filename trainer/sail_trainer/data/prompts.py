"""Prompt pools: a text file (one prompt per line), JSONL (one object per line) or a Parquet column.

Prompts are stripped of surrounding whitespace; blank lines, blank values and nulls are
skipped (and counted in the log). Order is kept and duplicates are kept: choosing disjoint
prompts per round is the generate phase's job. `fmt="auto"` picks by extension
(.txt, .text, .prompts -> text; .jsonl/.ndjson -> jsonl;
.parquet/.pq -> parquet). A folder (local dir or S3 URI ending in "/") is read as its files
in sorted order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from sail_trainer.data.errors import DataError
from sail_trainer.data.sources import ByteReader, StoreOpener, expand_files

log = logging.getLogger(__name__)

PromptFormat = Literal["auto", "text", "jsonl", "parquet"]
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "text": (".txt", ".text", ".prompts"),
    "jsonl": (".jsonl", ".ndjson"),
    "parquet": (".parquet", ".pq"),
}
_ALL_SUFFIXES = tuple(s for group in _SUFFIXES.values() for s in group)


def read_prompts(
    uri: str, fmt: PromptFormat = "auto", column: str = "prompt", *, open_store: StoreOpener | None = None
) -> list[str]:
    """Every non-blank prompt of the pool, in file order.

    `column` is the JSONL key or Parquet column (ignored for text). Raises DataError for an
    unknown format, a missing column (listing the ones found), a non-string value, invalid
    UTF-8 or JSON, or a pool with no prompts at all.
    """
    if fmt not in ("auto", "text", "jsonl", "parquet"):
        raise DataError(f"unknown prompt format {fmt!r}", source=uri, hint="use one of auto, text, jsonl, parquet")
    reader = ByteReader(open_store)
    prompts: list[str] = []
    skipped = 0
    for path in expand_files(uri, _ALL_SUFFIXES, open_store):
        for value in _iter_values(path, _file_format(path, fmt), column, reader):
            text = value.strip() if value is not None else ""
            if text:
                prompts.append(text)
            else:
                skipped += 1
    if not prompts:
        raise DataError("the prompt pool is empty (no non-blank prompts)", source=uri,
                        hint=f"write one prompt per line, or check prompts.column ({column!r})")
    if skipped:
        log.info("prompts: skipped %d blank or null entries in %s", skipped, uri)
    return prompts


def _file_format(path: str, fmt: PromptFormat) -> str:
    if fmt != "auto":
        return fmt
    lower = path.lower()
    for name, suffixes in _SUFFIXES.items():
        if lower.endswith(suffixes):
            return name
    raise DataError("cannot tell the prompt file format from its extension", source=path,
                    hint="name it .txt, .jsonl or .parquet, or set prompts.format (text, jsonl, parquet)")


def _iter_values(path: str, fmt: str, column: str, reader: ByteReader) -> Iterator[str | None]:
    if fmt == "parquet":
        yield from _iter_parquet(path, column, reader)
        return
    data = reader.read(path)
    for line_no, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 ({exc.reason})", source=path, row=line_no, row_kind="line",
                            hint="save the file as UTF-8") from exc
        if fmt == "text":
            yield line
        elif line.strip():
            yield _jsonl_value(line, path, line_no, column)


def _jsonl_value(line: str, path: str, line_no: int, column: str) -> str | None:
    where: dict[str, Any] = {"source": path, "row": line_no, "row_kind": "line"}
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc})", hint="each line must be one JSON object", **where) from exc
    except RecursionError as exc:  # `[[[[...` thousands deep: bad data, not a crash of the phase
        raise DataError("JSON nested too deeply", hint=f'write one flat {{"{column}": "..."}} per line', **where) from exc
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", **where,
                        hint=f'write {{"{column}": "..."}} per line')
    if column not in record:
        raise DataError(f"missing key {column!r}; found keys {sorted(record)}", field=column, **where,
                        hint="set prompts.column to the key that holds the prompt")
    return _check_str(record[column], column, where)


def _iter_parquet(path: str, column: str, reader: ByteReader) -> Iterator[str | None]:
    with reader.local_copy(path) as local:
        try:
            pf = pq.ParquetFile(local)
            columns = list(pf.schema_arrow.names)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # a flipped byte in a column name: utf-8
            raise DataError(f"not a readable Parquet file ({exc})", source=path,
                            hint="check the file, or set prompts.format") from exc
        if column not in columns:
            raise DataError(f"missing column {column!r}; found columns {columns}", source=path, field=column,
                            hint="set prompts.column to the column that holds the prompt")
        row0 = 0
        try:
            for batch in pf.iter_batches(batch_size=4096, columns=[column]):
                for offset, value in enumerate(batch.column(0).to_pylist()):
                    yield _check_str(value, column, {"source": path, "row": row0 + offset, "row_kind": "row"})
                row0 += batch.num_rows
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            # Corrupt data pages surface only while reading batches, not when opening the file.
            raise DataError(f"corrupt Parquet data near row {row0} ({exc})", source=path, row=row0,
                            hint="re-export the file") from exc


def _check_str(value: Any, column: str, where: dict[str, Any]) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"a prompt must be a string, got {type(value).__name__}", field=column, **where)
