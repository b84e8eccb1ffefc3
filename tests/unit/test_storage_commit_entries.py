"""Building a commit manifest asks for the files' entries concurrently (one HEAD each on S3), in order."""

from __future__ import annotations

import threading

import pytest

from sail_api.manifest import FileEntry
from sail_api.storage.manifests import fetch_entries


def _entry(name: str) -> FileEntry:
    return FileEntry(path=name, size=len(name), sha256="0" * 64)


def test_entries_are_fetched_concurrently_and_kept_in_order() -> None:
    """Four lookups must be in flight together to pass the barrier (one after another, it times out)."""
    barrier = threading.Barrier(4, timeout=5)

    def entry_for(folder: str, name: str) -> FileEntry:
        barrier.wait()
        return _entry(name)

    names = [f"parts/part-{i:05d}/latents.safetensors" for i in range(8)]
    assert [e.path for e in fetch_entries(entry_for, "phase", names)] == names


def test_the_first_error_is_raised() -> None:
    def entry_for(folder: str, name: str) -> FileEntry:
        if name.endswith("3"):
            raise FileNotFoundError(f"{folder}/{name} is missing")
        return _entry(name)

    with pytest.raises(FileNotFoundError, match="f3 is missing"):
        fetch_entries(entry_for, "phase", [f"f{i}" for i in range(8)])
