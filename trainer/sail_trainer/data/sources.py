"""Where dataset bytes come from: local paths through pathlib, `s3://` through the storage interface.

Also resolves image references found inside a dataset file (relative to that file, an
absolute URI, or a local path) and expands a folder/prefix into its shard files. A file on
S3 may not point at local paths: a remote dataset naming `/etc/...` is refused instead of
reading files of the pod.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sail_api.storage import StorageNotFound
from sail_api.storage import open_store as default_open_store
from sail_api.uris import S3_SCHEME, UriKind, classify_uri, is_s3_uri, strip_file_scheme, uri_scheme
from sail_trainer.data.errors import DataError

StoreOpener = Callable[[str], Any]
"""`open_store(root_uri) -> Store` (the `sail_api.storage.Store` protocol); e.g. a partial
of `sail_api.storage.open_store` carrying the run's connection (endpoint and region)."""

S3 = S3_SCHEME


def is_remote(uri: str) -> bool:
    return is_s3_uri(uri)


def _check_scheme(uri: str) -> None:
    if classify_uri(uri) is UriKind.UNSUPPORTED:
        scheme = uri_scheme(uri)
        raise DataError(
            f"unsupported URI scheme {scheme!r}", source=uri,
            hint="use a local path or an s3:// URI (copy the data to the run's bucket first)",
        )


def local_path(uri: str) -> Path:
    return Path(strip_file_scheme(uri)).expanduser()


def resolve_opener(open_store: StoreOpener | None) -> StoreOpener:
    """The given opener, or `sail_api.storage.open_store` (no endpoint/region: the AWS environment)."""
    return open_store if open_store is not None else default_open_store


def split_remote(uri: str) -> tuple[str, str]:
    """`s3://b/dir/f.x` -> (`s3://b/dir`, `f.x`): a store root and the key under it."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or parent in ("s3:", S3.rstrip("/")):
        raise DataError("the URI names no object", source=uri, hint="use s3://bucket/path/to/file")
    return parent, name


class ByteReader:
    """Reads whole objects by URI, reusing one store per S3 folder."""

    def __init__(self, open_store: StoreOpener | None) -> None:
        self._open_store = open_store
        self._stores: dict[str, Any] = {}

    def store_for(self, root: str) -> Any:
        if root not in self._stores:
            self._stores[root] = resolve_opener(self._open_store)(root)
        return self._stores[root]

    def read(self, uri: str, *, source: str | None = None, row: int | None = None,
             field: str | None = None, row_kind: Any = "row") -> bytes:
        """Bytes of `uri`; a missing object is a DataError naming `source` (the dataset) and the row."""
        _check_scheme(uri)
        where = {"source": source or uri, "row": row, "field": field, "row_kind": row_kind}
        named = "" if where["source"] == uri else f"{uri} "  # the error starts with the source: say the path once
        if is_remote(uri):
            root, key = split_remote(uri)
            try:
                return self.store_for(root).read_bytes(key)
            except StorageNotFound as exc:
                raise DataError(f"{named}does not exist", hint="check the path and the bucket", **where) from exc
        path = local_path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise DataError(f"{named}does not exist", hint="check the path", **where) from exc
        except IsADirectoryError as exc:
            raise DataError(f"{named}is a folder, not a file", **where) from exc
        except PermissionError as exc:
            raise DataError(f"{named}is not readable (permission denied)", **where) from exc

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local path for `uri`: the file itself, or a streamed temporary download for S3
        (large Parquet shards are not held in memory)."""
        _check_scheme(uri)
        if not is_remote(uri):
            path = local_path(uri)
            if not path.is_file():
                raise DataError("does not exist or is not a file", source=uri, hint="check the path")
            yield path
            return
        root, key = split_remote(uri)
        with tempfile.TemporaryDirectory(prefix="sail-data-") as tmp:
            target = Path(tmp) / key
            try:
                self.store_for(root).download_file(key, target)
            except StorageNotFound as exc:
                raise DataError("does not exist", source=uri, hint="check the path and the bucket") from exc
            yield target


def resolve_reference(ref: str, dataset_uri: str, *, row: int, field: str, row_kind: Any = "row") -> str:
    """The URI/path of an image named inside `dataset_uri`: relative refs are relative to the file."""
    _check_scheme(ref)
    if is_remote(dataset_uri) and (classify_uri(ref) is UriKind.FILE or ref.startswith("/")):
        # file:// is a local path too: a dataset on S3 (anyone with write access to the bucket may
        # have written it) must not make the pod read its own files into the run's storage.
        raise DataError(
            f"a dataset on S3 may not name the local path {ref!r}", source=dataset_uri, row=row,
            field=field, row_kind=row_kind, hint="use a path relative to the file or an s3:// URI",
        )
    if "://" in ref:
        return ref
    if is_remote(dataset_uri):
        parent, _ = split_remote(dataset_uri)
        bucket_root = S3 + parent[len(S3):].split("/", 1)[0]
        joined = posixpath.normpath(posixpath.join(parent[len(S3):], ref))
        if joined.startswith("..") or not (S3 + joined).startswith(bucket_root + "/"):
            raise DataError(f"{ref!r} leaves the bucket", source=dataset_uri, row=row, field=field,
                            row_kind=row_kind)
        return S3 + joined
    path = Path(ref).expanduser()
    return str(path if path.is_absolute() else local_path(dataset_uri).parent / path)


def expand_files(uri: str, suffixes: tuple[str, ...], open_store: StoreOpener | None) -> list[str]:
    """`uri` itself, or, for a folder (local dir, or an S3 URI ending in '/'), its files with one of
    `suffixes`, sorted (e.g. the shards of Pick-a-Pic v2). An empty folder is a DataError."""
    _check_scheme(uri)
    if is_remote(uri):
        if not uri.endswith("/"):
            return [uri]
        root = uri.rstrip("/")
        keys = [k for k in resolve_opener(open_store)(root).list("") if k.endswith(suffixes)]
        files = [f"{root}/{k}" for k in sorted(keys)]
    else:
        path = local_path(uri)
        if not path.is_dir():
            return [uri]
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise DataError(f"the folder holds no {'/'.join(suffixes)} files", source=uri,
                        hint="point at a file, or a folder of dataset shards")
    return files
