"""LocalStore specifics on a real filesystem: atomic replace, cleanup of failed writes, and the
O_EXCL fallback for filesystems without hard links."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from sail_api.storage import AlreadyCommitted, LocalStore, StorageError
from sail_api.storage.local import TMP_PREFIX, create_exclusively, write_atomically


def test_readers_never_see_a_torn_file(local_store: LocalStore) -> None:
    old, new = b"a" * (2 * 1024 * 1024), b"b" * (3 * 1024 * 1024)
    local_store.write_bytes("weights.bin", old)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            local_store.write_bytes("weights.bin", new)
            local_store.write_bytes("weights.bin", old)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = {local_store.read_bytes("weights.bin") for _ in range(100)}
    finally:
        stop.set()
        thread.join()
    assert seen <= {old, new}


def test_a_failed_write_leaves_neither_target_nor_temp_file(tmp_path: Path) -> None:
    def fill(stream: object) -> None:
        stream.write(b"partial")  # type: ignore[attr-defined]
        raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "out.bin", fill)
    assert list(tmp_path.iterdir()) == []


def test_exclusive_create_without_hard_links_falls_back_to_o_excl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    assert create_exclusively(tmp_path / "_SUCCESS.json", b"first")
    assert not create_exclusively(tmp_path / "_SUCCESS.json", b"second")
    assert (tmp_path / "_SUCCESS.json").read_bytes() == b"first"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(TMP_PREFIX)]


def test_commit_on_a_filesystem_without_hard_links_is_still_exactly_once(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "link", no_links)
    local_store.write_bytes("f/a", b"a")
    first = local_store.commit("f")
    monkeypatch.setattr(local_store, "is_committed", lambda folder: False)
    with pytest.raises(AlreadyCommitted) as caught:
        local_store.commit("f")
    assert caught.value.manifest == first


def test_a_corrupt_marker_is_a_clear_error(local_store: LocalStore) -> None:
    local_store.write_bytes("f/_SUCCESS.json", b"{not json")
    assert local_store.is_committed("f")
    with pytest.raises(StorageError, match=r"_SUCCESS\.json is not a valid commit manifest.*delete the folder"):
        local_store.read_manifest("f")


def test_permission_denied_names_the_path_and_the_fix(local_store: LocalStore, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    Path(local_store.root).mkdir(parents=True)
    os.chmod(local_store.root, 0o500)
    try:
        with pytest.raises(StorageError, match="permission denied on .*run/x.bin.*fsGroup"):
            local_store.write_bytes("x.bin", b"x")
    finally:
        os.chmod(local_store.root, 0o700)
