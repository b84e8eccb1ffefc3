"""The Store contract, run against both backends (LocalStore on tmp_path, S3Store on moto over HTTP)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from sail_api.layout import COMMIT_MARKER
from sail_api.manifest import PhaseManifest
from sail_api.storage import (
    AlreadyCommitted,
    ChecksumMismatch,
    LocalStore,
    MemoryStore,
    NotCommitted,
    S3Store,
    StorageNotFound,
    Store,
)
from tests.peers.s3 import create_admin_client

MiB = 1024 * 1024


def write_random_file(path: Path, size: int) -> str:
    """A file of `size` pseudo-random bytes (incompressible, cheap to make); returns its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as stream:
        written = 0
        while written < size:
            chunk = block[: min(MiB, size - written)]
            chunk = hashlib.sha256(written.to_bytes(8, "little")).digest() + chunk[32:]
            stream.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_bytes_round_trip_and_keys_or_uris_are_equivalent(store: Store) -> None:
    store.write_bytes("iter-001/train/metrics.json", b'{"loss": 1.0}')
    assert store.read_bytes(store.uri("iter-001/train/metrics.json")) == b'{"loss": 1.0}'
    assert store.exists("iter-001/train/metrics.json")
    assert not store.exists("iter-001/train/other.json")
    assert not store.exists("iter-001/train")  # folders are not objects


def test_overwrite_replaces_whole_content(store: Store) -> None:
    store.write_bytes("a.bin", b"x" * 1000)
    store.write_bytes("a.bin", b"short")
    assert store.read_bytes("a.bin") == b"short"


def test_missing_key_is_storage_not_found_naming_it(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StorageNotFound, match="nothing-here.bin"):
        store.read_bytes("nothing-here.bin")
    with pytest.raises(StorageNotFound, match="nothing-here.bin"):
        store.download_file("nothing-here.bin", tmp_path / "out.bin")


def test_key_outside_root_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        store.write_bytes("iter-001/../../escape", b"x")


def test_fifty_megabyte_file_streams_up_and_down_intact(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    expected = write_random_file(source, 50 * MiB)
    store.upload_file("iter-001/train/model/unet.safetensors", source)
    target = tmp_path / "back" / "unet.safetensors"
    store.download_file("iter-001/train/model/unet.safetensors", target)
    assert target.stat().st_size == 50 * MiB
    assert sha256_of(target) == expected
    manifest = store.commit("iter-001/train")
    assert manifest.files[0].sha256 == expected
    assert manifest.files[0].size == 50 * MiB
    if isinstance(store, S3Store):  # streamed as a multipart upload: AWS ETag "<md5 of md5s>-<parts>"
        head = create_admin_client(store.endpoint).head_object(
            Bucket=store.bucket, Key=f"{store.prefix}/iter-001/train/model/unet.safetensors")
        assert head["ETag"].strip('"').endswith(f"-{-(-50 * MiB // store.part_size)}")


def test_s3_upload_of_a_large_file_is_multipart(s3_store: S3Store, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    write_random_file(source, 3 * s3_store.part_size // 2 + 1)
    s3_store.upload_file("big.bin", source)
    head = create_admin_client(s3_store.endpoint).head_object(Bucket=s3_store.bucket, Key="run/big.bin")
    assert head["ETag"].strip('"').endswith("-2")  # AWS multipart ETag: md5-of-md5s "-<parts>"


def test_listing_is_recursive_sorted_and_relative_to_the_root(store: Store) -> None:
    for key in ["b/2.txt", "a/z/deep.txt", "a/1.txt", "a/10.txt", "ab/x.txt", "top.txt"]:
        store.write_bytes(key, b"x")
    assert list(store.list("a")) == ["a/1.txt", "a/10.txt", "a/z/deep.txt"]  # a folder, not "ab/"
    assert list(store.list("")) == ["a/1.txt", "a/10.txt", "a/z/deep.txt", "ab/x.txt", "b/2.txt", "top.txt"]
    assert list(store.list(store.uri("a/z"))) == ["a/z/deep.txt"]
    assert list(store.list("missing")) == []


def test_commit_lists_every_file_with_size_and_sha256_and_the_marker_last(store: Store) -> None:
    store.write_bytes("iter-002/mixup/pairs.pt", b"pairs")
    store.write_bytes("iter-002/mixup/sub/latents.pt", b"latents!")
    manifest = store.commit(
        "iter-002/mixup", metrics={"pairs": 2.0}, metadata={"alpha": 0.5}, run="r", iteration=2, phase="mixup",
    )
    assert [(entry.path, entry.size) for entry in manifest.files] == [("pairs.pt", 5), ("sub/latents.pt", 8)]
    assert manifest.files[0].sha256 == hashlib.sha256(b"pairs").hexdigest()
    assert store.is_committed("iter-002/mixup")
    on_disk = PhaseManifest.model_validate_json(store.read_bytes(f"iter-002/mixup/{COMMIT_MARKER}"))
    assert on_disk == manifest
    assert b'"schemaVersion"' in store.read_bytes(f"iter-002/mixup/{COMMIT_MARKER}")  # by_alias JSON
    assert store.read_manifest("iter-002/mixup", verify=True) == manifest
    assert (on_disk.run, on_disk.iteration, on_disk.phase, on_disk.metrics) == ("r", 2, "mixup", {"pairs": 2.0})


def test_commit_of_an_explicit_file_list_covers_only_those(store: Store) -> None:
    store.write_bytes("f/keep.bin", b"1")
    store.write_bytes("f/scratch.bin", b"2")
    manifest = store.commit("f", files=["keep.bin"])
    assert [entry.path for entry in manifest.files] == ["keep.bin"]
    with pytest.raises(StorageNotFound, match="absent.bin"):
        store.commit("g", files=["absent.bin"])


def test_files_without_a_marker_are_invisible(store: Store) -> None:
    """A torn write: a phase died after writing files but before committing."""
    store.write_bytes("iter-003/generate/shard-00000-of-00002/images.bin", b"half")
    assert not store.is_committed("iter-003/generate/shard-00000-of-00002")
    with pytest.raises(NotCommitted, match="shard-00000-of-00002"):
        store.read_manifest("iter-003/generate/shard-00000-of-00002")


def test_a_crash_while_writing_leaves_no_visible_local_file(local_store: LocalStore) -> None:
    """Local temp files (a write or commit cut short) are not listed and commit nothing."""
    folder = Path(local_store.uri("iter-004/annotate"))
    folder.mkdir(parents=True)
    (folder / f".sail-tmp-{COMMIT_MARKER}.dead").write_bytes(b'{"files": [')
    (folder / ".sail-tmp-scores.pt.dead").write_bytes(b"partial")
    assert list(local_store.list("iter-004")) == []
    assert not local_store.is_committed("iter-004/annotate")
    local_store.write_bytes("iter-004/annotate/scores.pt", b"complete")
    assert [entry.path for entry in local_store.commit("iter-004/annotate").files] == ["scores.pt"]


@pytest.mark.parametrize("committers", [2, 4])
def test_concurrent_committers_exactly_one_wins(store: Store, committers: int) -> None:
    store.write_bytes("iter-005/train/model/unet.bin", b"weights")
    barrier = threading.Barrier(committers)
    outcomes: list[Any] = [None] * committers

    def committer(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = store.commit("iter-005/train", metadata={"committer": index})
        except AlreadyCommitted as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=committer, args=(index,)) for index in range(committers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [outcome for outcome in outcomes if isinstance(outcome, PhaseManifest)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, AlreadyCommitted)]
    assert len(winners) == 1 and len(losers) == committers - 1, outcomes
    assert all(loser.manifest == winners[0] for loser in losers)
    assert store.read_manifest("iter-005/train") == winners[0]


def test_committing_a_committed_folder_again_returns_the_first_manifest(store: Store) -> None:
    store.write_bytes("x/a", b"a")
    first = store.commit("x")
    store.write_bytes("x/b", b"b")
    with pytest.raises(AlreadyCommitted) as caught:
        store.commit("x")
    assert caught.value.manifest == first


def test_verify_detects_a_changed_file(store: Store) -> None:
    store.write_bytes("iter-006/mixup/pairs.pt", b"AAAA")
    store.commit("iter-006/mixup")
    store.write_bytes("iter-006/mixup/pairs.pt", b"AAAB")  # same size, other content
    store.read_manifest("iter-006/mixup")  # without verify: trusts the marker
    with pytest.raises(ChecksumMismatch, match=r"pairs\.pt.*sha256"):
        store.read_manifest("iter-006/mixup", verify=True)
    store.write_bytes("iter-006/mixup/pairs.pt", b"AAAAAAAA")
    with pytest.raises(ChecksumMismatch, match=r"pairs\.pt.*size"):
        store.read_manifest("iter-006/mixup", verify=True)


def test_verify_detects_a_missing_file(store: Store) -> None:
    store.write_bytes("m/one", b"1")
    store.write_bytes("m/two", b"2")
    store.commit("m")
    remove_behind_the_stores_back(store, "m/two")
    with pytest.raises(ChecksumMismatch, match="two.*missing"):
        store.read_manifest("m", verify=True)


def remove_behind_the_stores_back(store: Store, key: str) -> None:
    if isinstance(store, LocalStore):
        Path(store.uri(key)).unlink()
    elif isinstance(store, MemoryStore):
        del store.objects[key]
    else:
        assert isinstance(store, S3Store)
        create_admin_client(store.endpoint).delete_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}")


def test_a_commit_racing_past_the_early_check_still_loses(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exactly-once guarantee is the conditional create itself (link / If-None-Match), not the pre-check."""
    store.write_bytes("race/a.bin", b"a")
    winner = store.commit("race", metadata={"who": "first"})
    monkeypatch.setattr(store, "is_committed", lambda folder: False)
    with pytest.raises(AlreadyCommitted) as caught:
        store.commit("race", metadata={"who": "second"})
    assert caught.value.manifest == winner
    assert store.read_manifest("race").metadata == {"who": "first"}


def test_delete_prefix_removes_leftovers_and_marker(store: Store) -> None:
    store.write_bytes("iter-007/generate/shard-00000-of-00001/a.bin", b"a")
    store.write_bytes("iter-007/generate/shard-00000-of-00001/b/c.bin", b"c")
    store.commit("iter-007/generate/shard-00000-of-00001")
    store.write_bytes("iter-007/annotate/keep.bin", b"k")
    store.delete_prefix("iter-007/generate")
    assert not store.is_committed("iter-007/generate/shard-00000-of-00001")
    assert list(store.list("iter-007")) == ["iter-007/annotate/keep.bin"]


def test_delete_prefix_of_a_file_key_deletes_exactly_that_file(store: Store) -> None:
    for key in ["out/a.bin", "out/a.bin2", "out/a.bin/inner"] if not isinstance(store, LocalStore) \
            else ["out/a.bin", "out/a.bin2"]:
        store.write_bytes(key, b"x")
    store.delete_prefix("out/a.bin")
    assert list(store.list("out")) == ["out/a.bin2"]
