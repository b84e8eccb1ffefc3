"""MemoryStore: the Store protocol in a dict, for unit tests of code that reads and writes a run.

It keeps the contract's observable behaviour (root-relative keys or URIs under the root, sorted
folder listing, exactly-once commit with AlreadyCommitted carrying the winner's manifest,
NotCommitted, ChecksumMismatch on verify) so a unit test on it means the same as one on disk or
S3. It does not model failures, latency or persistence: those are tested on the real backends.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sail_api.layout import COMMIT_MARKER
from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.storage.base import AlreadyCommitted, NotCommitted, StorageNotFound
from sail_api.storage.manifests import (
    build_commit_manifest,
    check_entry,
    decode_manifest,
    encode_manifest,
)
from sail_api.storage.uris import build_relative_key, join_key


class MemoryStore:
    """The Store protocol on a dict; `root` is a label such as "memory://test"."""

    def __init__(self, root: str = "memory://store") -> None:
        self.root = root.rstrip("/")
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({self.root!r}, {len(self.objects)} objects)"

    def _key(self, key: str) -> str:
        return build_relative_key(self.root, str(key))

    def uri(self, key: str) -> str:
        relative = self._key(key)
        return f"{self.root}/{relative}" if relative else self.root

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[self._key(key)] = bytes(data)

    def read_bytes(self, key: str) -> bytes:
        with self._lock:
            data = self.objects.get(self._key(key))
        if data is None:
            raise StorageNotFound(f"{self.uri(key)} does not exist")
        return data

    def upload_file(self, key: str, path: Path) -> None:
        source = Path(path)
        if not source.is_file():
            raise StorageNotFound(f"local file {source} to upload to {self.uri(key)} does not exist")
        self.write_bytes(key, source.read_bytes())

    def download_file(self, key: str, path: Path) -> None:
        data = self.read_bytes(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def exists(self, key: str) -> bool:
        with self._lock:
            return self._key(key) in self.objects

    def list(self, prefix: str) -> Iterator[str]:
        folder = self._key(prefix)
        start = f"{folder}/" if folder else ""
        with self._lock:
            return iter(sorted(key for key in self.objects if key.startswith(start)))

    def delete_prefix(self, prefix: str) -> None:
        keys = [*self.list(prefix), self._key(prefix)]
        with self._lock:
            for key in keys:
                self.objects.pop(key, None)

    def commit(
        self, folder: str, files: list[str] | None = None, *, metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None, **manifest_fields: Any,
    ) -> PhaseManifest:
        folder_key = self._key(folder)
        manifest = build_commit_manifest(self, folder_key, files, self._entry, metrics=metrics,
                                         metadata=metadata, fields=manifest_fields)
        marker = join_key(folder_key, COMMIT_MARKER)
        with self._lock:
            existing = self.objects.get(marker)
            if existing is None:
                self.objects[marker] = encode_manifest(manifest)
                return manifest
        winner = decode_manifest(existing, self.uri(marker))
        raise AlreadyCommitted(f"{self.uri(folder_key)} was committed first by {winner.writer}", winner)

    def _entry(self, folder_key: str, name: str) -> FileEntry:
        data = self.read_bytes(join_key(folder_key, name))
        return FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def is_committed(self, folder: str) -> bool:
        return self.exists(join_key(self._key(folder), COMMIT_MARKER))

    def read_manifest(self, folder: str, *, verify: bool = False) -> PhaseManifest:
        folder_key = self._key(folder)
        marker = join_key(folder_key, COMMIT_MARKER)
        try:
            manifest = decode_manifest(self.read_bytes(marker), self.uri(marker))
        except StorageNotFound as exc:
            raise NotCommitted(
                f"{self.uri(folder_key)} is not committed (no {COMMIT_MARKER}): "
                "its files are incomplete and must not be read"
            ) from exc
        if verify:
            for entry in manifest.files:
                key = join_key(folder_key, entry.path)
                with self._lock:
                    data = self.objects.get(key)
                if data is None:
                    check_entry(entry, self.uri(key), None, None)
                    continue
                check_entry(entry, self.uri(key), len(data), None)
                check_entry(entry, self.uri(key), len(data), hashlib.sha256(data).hexdigest())
        return manifest
