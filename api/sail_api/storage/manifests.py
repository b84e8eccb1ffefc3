"""Pure pieces of a commit shared by both backends: which files a commit covers, hashing, the
manifest itself, and checking a file against its manifest entry.

The backends only add I/O around these (stat, read, conditional create).
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO

from sail_api.layout import COMMIT_MARKER
from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.storage.base import AlreadyCommitted, ChecksumMismatch, StorageError
from sail_api.storage.uris import build_commit_key, build_folder_relative

CHUNK = 1024 * 1024


def compute_sha256(stream: BinaryIO) -> tuple[int, str]:
    """(size, hex sha256) of everything left in a binary stream, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def compute_file_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, hex sha256) of a local file."""
    with open(path, "rb") as stream:
        return compute_sha256(stream)


def select_commit_files(folder: str, keys: Iterable[str]) -> list[str]:
    """Paths relative to `folder` that a commit covers, sorted and unique.

    `keys`: root-relative keys inside the folder (every file present under it by default, or
    the caller's list normalised by `build_commit_key`). The folder's own marker is never listed.
    """
    chosen = {build_folder_relative(folder, key) for key in keys}
    return sorted(name for name in chosen if name and name != COMMIT_MARKER)


def build_writer_id() -> str:
    """host/pid/random: tells apart two processes (or two calls) that commit the same folder."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def build_manifest(
    entries: list[FileEntry],
    *,
    metrics: dict[str, float] | None,
    metadata: dict[str, Any] | None,
    fields: dict[str, Any],
) -> PhaseManifest:
    """The manifest a commit writes; created_at and writer default to now and a fresh writer id."""
    values: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "writer": build_writer_id(),
        **fields,
    }
    return PhaseManifest(files=entries, metrics=dict(metrics or {}), metadata=dict(metadata or {}), **values)


def build_commit_manifest(
    store: Any,
    folder_key: str,
    files: list[str] | None,
    entry_for: Callable[[str, str], FileEntry],
    *,
    metrics: dict[str, float] | None,
    metadata: dict[str, Any] | None,
    fields: dict[str, Any],
) -> PhaseManifest:
    """The manifest `store.commit` writes: the named files (default: all under the folder but
    the marker and temp files), each described by the backend's `entry_for(folder_key, name)`.

    Raises AlreadyCommitted at once when the folder is committed already, so a loser does not hash
    (or, on S3, HEAD) every file first; the backend's exclusive marker write still decides races.
    """
    if store.is_committed(folder_key):
        winner = store.read_manifest(folder_key)
        raise AlreadyCommitted(f"{store.uri(folder_key)} is already committed by {winner.writer}", winner)

    keys = store.list(folder_key) if files is None else [build_commit_key(store.root, folder_key, n) for n in files]
    entries = fetch_entries(entry_for, folder_key, select_commit_files(folder_key, keys))
    return build_manifest(entries, metrics=metrics, metadata=metadata, fields=fields)


COMMIT_WORKERS = 16  # concurrent HEADs (S3) or file hashes (local) while building a manifest


def fetch_entries(entry_for: Callable[[str, str], FileEntry], folder_key: str, names: list[str]) -> list[FileEntry]:
    """`entry_for(folder_key, name)` for every name, in order, up to COMMIT_WORKERS at a time.

    On S3 each entry is one HEAD (size and sha256 metadata): one after another, a commit of
    10,000 files is 10,000 round trips (bench/scale.py --commit-files; docs/performance.md).
    The first error is raised, as in a sequential loop.
    """
    if len(names) < 4:
        return [entry_for(folder_key, name) for name in names]

    with ThreadPoolExecutor(max_workers=min(COMMIT_WORKERS, len(names)), thread_name_prefix="sail-commit") as pool:
        return list(pool.map(lambda name: entry_for(folder_key, name), names))


def encode_manifest(manifest: PhaseManifest) -> bytes:
    """The bytes of `_SUCCESS.json` (camelCase aliases, like every API object on the wire)."""
    return manifest.model_dump_json(by_alias=True, indent=2).encode("utf-8")


def decode_manifest(data: bytes, uri: str) -> PhaseManifest:
    """Parse `_SUCCESS.json`; a corrupt marker is a clear StorageError, not a pydantic trace."""
    try:
        return PhaseManifest.model_validate_json(data)
    except ValueError as exc:
        raise StorageError(
            f"{uri} is not a valid commit manifest ({exc.__class__.__name__}): it was not written by "
            "this store; delete the folder to re-run the phase"
        ) from exc


def check_entry(entry: FileEntry, uri: str, size: int | None, sha256: str | None) -> None:
    """Raise ChecksumMismatch naming the file when it is missing or its size/sha256 differ."""
    if size is None:
        raise ChecksumMismatch(f"{uri} is listed in the commit manifest but missing")
    if size != entry.size:
        raise ChecksumMismatch(f"{uri}: size {size} bytes, manifest says {entry.size}: the file changed after commit")
    if sha256 is not None and sha256 != entry.sha256:
        raise ChecksumMismatch(
            f"{uri}: sha256 {sha256}, manifest says {entry.sha256}: the file changed after commit"
        )
