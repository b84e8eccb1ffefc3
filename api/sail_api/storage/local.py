"""LocalStore: the Store protocol on a local folder (the `sail run` default, and shared volumes).

Guarantees, with only POSIX file operations:
- Writes are atomic: data goes to a hidden temp file in the same folder, is fsynced, then
  `os.replace`d over the target, so a reader sees the old file or the new one, never a torn one.
- A commit is exactly-once: the manifest is written to a temp file and then hard-linked to
  `_SUCCESS.json`; `link` fails if the marker exists, so of two concurrent committers one wins
  and the other gets AlreadyCommitted with the winner's manifest. Filesystems without hard
  links fall back to an O_EXCL create (still exactly-once; a reader may then briefly see a
  half-written marker, which it reports as a corrupt manifest).
- Temp files (`.sail-tmp-*`) are invisible to `list` and never part of a commit.

What it does not do: retries (a local disk error is not transient) or locking beyond the marker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sail_api.layout import COMMIT_MARKER
from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.storage.base import (
    AlreadyCommitted,
    NotCommitted,
    StorageError,
    StorageNotFound,
    StoragePermissionDenied,
)
from sail_api.storage.manifests import (
    build_commit_manifest,
    check_entry,
    compute_file_sha256,
    decode_manifest,
    encode_manifest,
)
from sail_api.storage.uris import build_relative_key, join_key, local_root_path

log = logging.getLogger(__name__)

TMP_PREFIX = ".sail-tmp-"


@contextlib.contextmanager
def _mapped_os_errors(uri: str) -> Iterator[None]:
    """Translate OSError into the storage vocabulary, naming the file and the fix."""
    try:
        yield
    except FileNotFoundError as exc:
        raise StorageNotFound(f"{uri} does not exist") from exc
    except PermissionError as exc:
        raise StoragePermissionDenied(
            f"permission denied on {uri}: make the folder writable by this user "
            "(on Kubernetes: the pod's securityContext runAsUser/fsGroup and the volume's mode)"
        ) from exc
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from exc


def _fsync_dir(path: Path) -> None:
    """Persist a rename/link in `path` across a crash (best effort: not every FS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_path(target: Path) -> Path:
    return target.parent / f"{TMP_PREFIX}{target.name}.{uuid.uuid4().hex}"


def _write_temp(target: Path, fill: Callable[[BinaryIO], None]) -> Path:
    """Write a fsynced temp file next to `target` and return its path (caller renames or links it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(target)
    try:
        with open(tmp, "xb") as stream:
            fill(stream)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomically(target: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Replace `target` with what `fill` writes, so readers never see a partial file."""
    tmp = _write_temp(target, fill)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_exclusively(target: Path, data: bytes) -> bool:
    """Create `target` with `data` only if it does not exist; True if this call created it."""
    tmp = _write_temp(target, lambda stream: stream.write(data))
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        return _create_with_excl(target, data)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return True


def _create_with_excl(target: Path, data: bytes) -> bool:
    """Fallback for filesystems without hard links: O_EXCL create, then write and fsync."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    return True


class LocalStore:
    """The Store protocol on a local folder; `root` is its absolute path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = local_root_path(os.fspath(root))

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    # -- keys and paths -------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return build_relative_key(self.root, os.fspath(key))

    def _path(self, key: str) -> Path:
        return Path(self.root, *self._key(key).split("/")) if self._key(key) else Path(self.root)

    def uri(self, key: str) -> str:
        """Absolute local path of `key`."""
        relative = self._key(key)
        return f"{self.root}/{relative}" if relative else self.root

    # -- objects --------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        with _mapped_os_errors(self.uri(key)):
            write_atomically(target, lambda stream: stream.write(data))

    def read_bytes(self, key: str) -> bytes:
        with _mapped_os_errors(self.uri(key)):
            return self._path(key).read_bytes()

    def upload_file(self, key: str, path: Path) -> None:
        """Copy a local file in (streamed, atomic)."""
        source = Path(path)
        if not source.is_file():
            raise StorageNotFound(f"local file {source} to upload to {self.uri(key)} does not exist")
        with _mapped_os_errors(self.uri(key)), open(source, "rb") as src:
            write_atomically(self._path(key), lambda stream: shutil.copyfileobj(src, stream, 1024 * 1024))

    def download_file(self, key: str, path: Path) -> None:
        """Copy a stored file out to `path` (streamed, atomic at the destination)."""
        with _mapped_os_errors(self.uri(key)), open(self._path(key), "rb") as src:
            write_atomically(Path(path), lambda stream: shutil.copyfileobj(src, stream, 1024 * 1024))

    def exists(self, key: str) -> bool:
        """True when `key` is a file (folders are not objects, as on S3)."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        """Files under the folder `prefix` (recursive), root-relative, sorted; temp files hidden."""
        base_key = self._key(prefix)
        base = self._path(base_key)
        keys: list[str] = []
        with _mapped_os_errors(self.uri(base_key)):
            if not base.is_dir():
                return iter(())
            for dirpath, _dirs, names in os.walk(base):
                relative_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                for name in names:
                    if not name.startswith(TMP_PREFIX):
                        keys.append(join_key("" if relative_dir == "." else relative_dir, name))
        return iter(sorted(keys))

    def delete_prefix(self, prefix: str) -> None:
        """Delete the file `prefix` or the folder `prefix`; commit markers go first so no reader trusts
        a half-deleted folder."""
        base_key = self._key(prefix)
        base = self._path(base_key)
        for key in self.list(base_key):
            if key.rsplit("/", 1)[-1] == COMMIT_MARKER:
                with _mapped_os_errors(self.uri(key)):
                    self._path(key).unlink(missing_ok=True)
        with _mapped_os_errors(self.uri(base_key)):
            if base.is_dir():
                shutil.rmtree(base)
            else:
                base.unlink(missing_ok=True)

    # -- commit ---------------------------------------------------------------------------

    def _marker_key(self, folder: str) -> str:
        return join_key(self._key(folder), COMMIT_MARKER)

    def commit(
        self, folder: str, files: list[str] | None = None, *, metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None, **manifest_fields: Any,
    ) -> PhaseManifest:
        """Hash the files, then create `folder/_SUCCESS.json` exactly once (see the module docstring)."""
        folder_key = self._key(folder)
        manifest = build_commit_manifest(self, folder_key, files, self._hash_entry, metrics=metrics,
                                         metadata=metadata, fields=manifest_fields)
        marker = self._marker_key(folder_key)
        with _mapped_os_errors(self.uri(marker)):
            created = create_exclusively(self._path(marker), encode_manifest(manifest))
        if not created:
            winner = self.read_manifest(folder_key)
            raise AlreadyCommitted(f"{self.uri(folder_key)} was committed first by {winner.writer}", winner)
        log.info("committed %s (%d files)", self.uri(folder_key), len(manifest.files))
        return manifest

    def _hash_entry(self, folder_key: str, name: str) -> FileEntry:
        key = join_key(folder_key, name)
        with _mapped_os_errors(self.uri(key)):
            size, sha256 = compute_file_sha256(self._path(key))
        return FileEntry(path=name, size=size, sha256=sha256)

    def is_committed(self, folder: str) -> bool:
        return self.exists(self._marker_key(folder))

    def read_manifest(self, folder: str, *, verify: bool = False) -> PhaseManifest:
        """The folder's manifest; NotCommitted without a marker; with verify, check every file."""
        marker = self._marker_key(folder)
        try:
            data = self.read_bytes(marker)
        except StorageNotFound as exc:
            raise NotCommitted(
                f"{self.uri(self._key(folder))} is not committed (no {COMMIT_MARKER}): "
                "its files are incomplete and must not be read"
            ) from exc
        manifest = decode_manifest(data, self.uri(marker))
        if verify:
            for entry in manifest.files:
                self._verify_entry(self._key(folder), entry)
        return manifest

    def _verify_entry(self, folder_key: str, entry: FileEntry) -> None:
        key = join_key(folder_key, entry.path)
        path = self._path(key)
        if not path.is_file():
            check_entry(entry, self.uri(key), None, None)
        with _mapped_os_errors(self.uri(key)):
            size = path.stat().st_size
            check_entry(entry, self.uri(key), size, None)
            size, sha256 = compute_file_sha256(path)
        check_entry(entry, self.uri(key), size, sha256)
