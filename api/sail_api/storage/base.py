"""The storage protocol and its error vocabulary (the interface; backends implement it).

Paths: every method takes a *key* relative to the store's root ("iter-001/generate/x.pt").
`store.uri(key)` gives the absolute URI. A folder is committed when `<folder>/_SUCCESS.json`
exists; it is written last, lists every file with size and sha256, and on S3 is put with
If-None-Match: * so that exactly one writer commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sail_api.manifest import PhaseManifest


class StorageError(Exception):
    """Base of storage errors; messages name the URI and say how to fix the problem."""


class StorageUnavailable(StorageError):
    """Transient: endpoint unreachable, throttled, 5xx. Raised after retries are spent."""


class StorageNotFound(StorageError):
    """The bucket or key does not exist."""


class StoragePermissionDenied(StorageError):
    """Credentials missing or refused."""


class AlreadyCommitted(StorageError):
    """Another writer committed this folder first (the loser gets this, with the winner's manifest)."""

    def __init__(self, message: str, manifest: PhaseManifest | None = None) -> None:
        super().__init__(message)
        self.manifest = manifest


class NotCommitted(StorageError):
    """A reader asked for a folder that has no commit marker."""


class ChecksumMismatch(StorageError):
    """A file listed in a manifest has the wrong size or sha256."""


@runtime_checkable
class Store(Protocol):
    root: str

    def uri(self, key: str) -> str: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def upload_file(self, key: str, path: Path) -> None:
        """Stream a local file (multipart on S3 for large files)."""

    def download_file(self, key: str, path: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under prefix (recursive), relative to the root, sorted."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove uncommitted leftovers; never called on a committed folder."""

    def commit(
        self, folder: str, files: list[str] | None = None, *, metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None, **manifest_fields: Any,
    ) -> PhaseManifest:
        """Hash the files (default: all under folder), write `folder/_SUCCESS.json` atomically, exactly once.

        Raises AlreadyCommitted (carrying the winner's manifest) when another writer committed first.
        """

    def is_committed(self, folder: str) -> bool: ...

    def read_manifest(self, folder: str, *, verify: bool = False) -> PhaseManifest:
        """Read the commit manifest; with verify, check every file's size and sha256 (ChecksumMismatch)."""
