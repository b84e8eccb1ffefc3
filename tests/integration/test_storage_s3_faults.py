"""S3 failure modes against moto over HTTP: each gives a clear error, transient ones are retried,
permanent ones are not, and an interrupted upload never leads to a commit of partial data."""

from __future__ import annotations

import hashlib
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sail_api.storage import (
    BucketNotFound,
    RetryPolicy,
    S3Connection,
    S3Store,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)
from tests.peers.s3 import (
    FAST_RETRIES,
    Fault,
    MotoPeer,
    closed_loopback_port,
    create_admin_client,
    is_upload_part,
)

MiB = 1024 * 1024
PATIENT = RetryPolicy(attempts=40, base_delay=0.02, max_delay=0.25)  # outlasts a short restart


def write_file(path: Path, size: int) -> str:
    data = (hashlib.sha256(b"seed").digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def is_put_of(suffix: str):  # type: ignore[no-untyped-def]
    return lambda environ: environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"].endswith(suffix)


def test_missing_bucket_is_a_clear_not_found_and_not_retried(moto_s3: MotoPeer, aws_env: None) -> None:
    moto_s3.reset()
    store = S3Store(f"s3://absent-{uuid.uuid4().hex[:8]}/run", S3Connection(endpoint=moto_s3.endpoint), retries=FAST_RETRIES)
    with pytest.raises(BucketNotFound, match=r"bucket absent-\w+ does not exist.*create it or fix storage.uri"):
        store.write_bytes("a.bin", b"x")
    assert [line for line in moto_s3.requests if line.startswith("PUT")] == [f"PUT /{store.bucket}/run/a.bin"]
    with pytest.raises(StorageNotFound, match="does not exist"):  # reads too, not a silent "not committed"
        store.is_committed("iter-000/train")
    with pytest.raises(StorageNotFound, match="does not exist"):
        list(store.list(""))


@pytest.fixture
def moto_auth(moto_s3: MotoPeer) -> Iterator[None]:
    """Switch on moto's credential checks (off by default) through its HTTP admin API."""

    def set_no_auth_count(count: str) -> None:
        request = urllib.request.Request(f"{moto_s3.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test peer
            assert response.status == 200

    set_no_auth_count("0")
    yield
    set_no_auth_count("inf")


def test_unknown_access_key_is_permission_denied_naming_what_to_check(
    s3_store: S3Store, moto_s3: MotoPeer, moto_auth: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sEcReT-never-in-messages")
    store = S3Store(s3_store.root, S3Connection(endpoint=moto_s3.endpoint), retries=FAST_RETRIES)
    moto_s3.requests.clear()
    with pytest.raises(StoragePermissionDenied, match="InvalidAccessKeyId") as caught:
        store.write_bytes("a.bin", b"x")
    message = str(caught.value)
    assert "AWS_ACCESS_KEY_ID" in message and "credentialsSecretRef" in message
    assert "sEcReT" not in message
    assert caught.value.__cause__ is not None
    assert len([line for line in moto_s3.requests if line.startswith("PUT")]) == 1  # permanent: no retry


def test_no_credentials_at_all_is_permission_denied(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(s3_store.root, S3Connection(endpoint=s3_store.endpoint), retries=FAST_RETRIES)
    with pytest.raises(StoragePermissionDenied, match="NoCredentialsError.*AWS_ACCESS_KEY_ID"):
        store.read_bytes("a.bin")


def test_unreachable_endpoint_is_unavailable_naming_it(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{closed_loopback_port()}"
    store = S3Store("s3://bucket/run", S3Connection(endpoint=endpoint), retries=RetryPolicy(attempts=2, base_delay=0.01))
    with pytest.raises(StorageUnavailable, match=rf"{endpoint}.*failed 2 time") as caught:
        store.write_bytes("a.bin", b"x")
    assert caught.value.__cause__ is not None


def test_throttling_is_retried_with_backoff_then_succeeds(s3_store: S3Store, moto_s3: MotoPeer) -> None:
    moto_s3.inject(Fault(is_put_of("/run/a.bin"), "error", times=2))
    s3_store.write_bytes("a.bin", b"payload")
    assert moto_s3.faults_fired == 2
    assert moto_s3.requests.count(f"PUT /{s3_store.bucket}/run/a.bin") == 3
    assert s3_store.read_bytes("a.bin") == b"payload"


def test_throttling_beyond_the_budget_is_unavailable(s3_store: S3Store, moto_s3: MotoPeer) -> None:
    moto_s3.inject(Fault(is_put_of("/run/a.bin"), "error", times=99))
    with pytest.raises(StorageUnavailable, match=rf"{moto_s3.endpoint}.*SlowDown"):
        s3_store.write_bytes("a.bin", b"payload")
    assert moto_s3.faults_fired == FAST_RETRIES.attempts


def test_server_stopped_mid_upload_then_back_the_retried_upload_succeeds(
    s3_store: S3Store, moto_s3: MotoPeer, tmp_path: Path,
) -> None:
    store = S3Store(s3_store.root, S3Connection(endpoint=moto_s3.endpoint), retries=PATIENT, part_size=5 * MiB, max_concurrency=1)
    source = tmp_path / "unet.bin"
    expected = write_file(source, 12 * MiB)  # three parts
    moto_s3.inject(Fault(is_upload_part, "outage", down_for=0.3))
    store.upload_file("iter-001/train/model/unet.bin", source)
    assert moto_s3.faults_fired == 1
    part_puts = [line for line in moto_s3.requests if line.startswith("PUT") and "partNumber=" in line]
    assert sum(bool(re.search(r"partNumber=1(&|$)", line)) for line in part_puts) == 1  # only part 2 was re-sent
    back = tmp_path / "back.bin"
    store.download_file("iter-001/train/model/unet.bin", back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == expected
    manifest = store.commit("iter-001/train")
    assert store.read_manifest("iter-001/train", verify=True) == manifest


def test_server_gone_for_good_mid_upload_is_unavailable_and_nothing_is_committed(
    s3_store: S3Store, moto_s3: MotoPeer, tmp_path: Path,
) -> None:
    store = S3Store(s3_store.root, S3Connection(endpoint=moto_s3.endpoint), retries=FAST_RETRIES,
                    part_size=5 * MiB, max_concurrency=1)
    source = tmp_path / "unet.bin"
    write_file(source, 12 * MiB)
    store.write_bytes("iter-001/train/metrics.json", b"{}")
    moto_s3.inject(Fault(is_upload_part, "outage", down_for=0))

    def run_phase() -> None:  # the phase pattern: write outputs, then commit last
        store.upload_file("iter-001/train/model/unet.bin", source)
        store.commit("iter-001/train")

    with pytest.raises(StorageUnavailable, match=moto_s3.endpoint):
        run_phase()
    moto_s3.start()
    assert not store.is_committed("iter-001/train")
    assert not store.exists("iter-001/train/model/unet.bin")
    admin = create_admin_client(moto_s3.endpoint)
    assert admin.list_multipart_uploads(Bucket=store.bucket).get("Uploads")  # the abandoned upload
    store.delete_prefix("iter-001/train")  # the retry of the phase cleans up leftovers first
    assert not admin.list_multipart_uploads(Bucket=store.bucket).get("Uploads")
    assert list(store.list("iter-001")) == []


def test_commit_whose_response_was_lost_is_recognised_as_our_own(s3_store: S3Store, moto_s3: MotoPeer) -> None:
    s3_store.write_bytes("iter-002/mixup/pairs.pt", b"pairs")
    moto_s3.inject(Fault(is_put_of("/_SUCCESS.json"), "lose_response"))
    manifest = s3_store.commit("iter-002/mixup")
    assert moto_s3.faults_fired == 1  # the first put landed, its answer was lost, the retry got 412
    assert s3_store.read_manifest("iter-002/mixup") == manifest


def test_multipart_completion_whose_response_was_lost_still_succeeds(
    s3_store: S3Store, moto_s3: MotoPeer, tmp_path: Path,
) -> None:
    store = S3Store(s3_store.root, S3Connection(endpoint=moto_s3.endpoint), retries=FAST_RETRIES, part_size=5 * MiB)
    source = tmp_path / "unet.bin"
    expected = write_file(source, 11 * MiB)

    def is_complete(environ: dict[str, str]) -> bool:
        return environ["REQUEST_METHOD"] == "POST" and "uploadId=" in environ.get("QUERY_STRING", "")

    moto_s3.inject(Fault(is_complete, "lose_response"))
    store.upload_file("unet.bin", source)
    assert moto_s3.faults_fired == 1
    assert hashlib.sha256(store.read_bytes("unet.bin")).hexdigest() == expected


def test_download_retries_through_a_restart(s3_store: S3Store, moto_s3: MotoPeer, tmp_path: Path) -> None:
    s3_store.write_bytes("a.bin", b"0123456789" * 1000)
    store = S3Store(s3_store.root, S3Connection(endpoint=moto_s3.endpoint), retries=PATIENT)
    moto_s3.inject(Fault(lambda environ: environ["REQUEST_METHOD"] in ("GET", "HEAD"), "outage", down_for=0.3))
    store.download_file("a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == b"0123456789" * 1000
