"""Pure parts of the storage layer: URIs and keys, backoff, error classification, commit file lists."""

from __future__ import annotations

import subprocess
import sys

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from sail_api.manifest import FileEntry
from sail_api.storage import ChecksumMismatch, RetryPolicy, S3Connection, is_s3_uri, open_store, split_uri
from sail_api.storage.local import LocalStore
from sail_api.storage.manifests import check_entry, select_commit_files
from sail_api.storage.retry import build_retry_policy, compute_backoff, run_with_retries
from sail_api.storage.s3 import S3Store, classify_s3_error, error_code
from sail_api.storage.uris import build_commit_key, build_relative_key, local_root_path


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b/", ("bucket", "a/b")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
    ],
    ids=["bucket and prefix", "bucket only", "bucket with slash"],
)
def test_split_uri(uri: str, expected: tuple[str, str]) -> None:
    assert split_uri(uri) == expected


def test_split_uri_refuses_what_is_not_a_bucket_uri() -> None:
    with pytest.raises(ValueError, match="no bucket"):
        split_uri("s3:///prefix")
    with pytest.raises(ValueError, match="not an s3:// URI"):
        split_uri("/data/run")
    assert is_s3_uri("s3://b/p") and not is_s3_uri("/tmp/s3://x")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("iter-001/train", "iter-001/train"),
        ("s3://b/run/iter-001/train/", "iter-001/train"),
        ("s3://b/run", ""),
        ("./iter-001//train", "iter-001/train"),
    ],
    ids=["relative key", "absolute uri under root", "the root itself", "redundant separators"],
)
def test_relative_keys(key: str, expected: str) -> None:
    assert build_relative_key("s3://b/run", key) == expected


@pytest.mark.parametrize(
    "key", ["s3://b/other/x", "s3://b/runner/x", "/etc/passwd", "a/../../b"],
    ids=["other prefix", "prefix that only shares letters", "absolute path elsewhere", "dot-dot escape"],
)
def test_keys_outside_the_root_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        build_relative_key("s3://b/run", key)


def test_local_roots_accept_paths_and_file_uris(tmp_path: object) -> None:
    assert local_root_path("file:///data/run") == "/data/run"
    assert local_root_path("/data/run/") == "/data/run"
    with pytest.raises(ValueError, match="only s3://"):
        local_root_path("gs://bucket/run")
    assert build_relative_key("/data/run", "file:///data/run/iter-000") == "iter-000"


def test_commit_keys_must_lie_inside_the_folder() -> None:
    assert build_commit_key("s3://b/run", "iter-001/train", "model/unet.bin") == "iter-001/train/model/unet.bin"
    assert build_commit_key("s3://b/run", "iter-001/train", "s3://b/run/iter-001/train/m.json") == "iter-001/train/m.json"
    with pytest.raises(ValueError, match="not inside"):
        build_commit_key("s3://b/run", "iter-001/train", "s3://b/run/iter-001/mixup/x")


def test_select_commit_files_is_sorted_unique_relative_and_skips_the_marker() -> None:
    keys = ["f/b", "f/a/x", "f/_SUCCESS.json", "f/b", "f/sub/_SUCCESS.json"]
    assert select_commit_files("f", keys) == ["a/x", "b", "sub/_SUCCESS.json"]


def test_check_entry_names_the_file_and_the_difference() -> None:
    entry = FileEntry(path="a.bin", size=3, sha256="0" * 64)
    check_entry(entry, "s3://b/a.bin", 3, "0" * 64)
    with pytest.raises(ChecksumMismatch, match=r"s3://b/a\.bin: size 4 bytes, manifest says 3"):
        check_entry(entry, "s3://b/a.bin", 4, None)
    with pytest.raises(ChecksumMismatch, match=r"a\.bin: sha256 1{64}"):
        check_entry(entry, "s3://b/a.bin", 3, "1" * 64)
    with pytest.raises(ChecksumMismatch, match="missing"):
        check_entry(entry, "s3://b/a.bin", None, None)


@pytest.mark.parametrize(
    ("retry", "unit_random", "expected"),
    [(1, 1.0, 0.5), (2, 1.0, 1.0), (3, 0.5, 1.0), (10, 1.0, 20.0), (4, 0.0, 0.0)],
    ids=["first retry waits up to base", "doubles", "full jitter scales the cap",
         "capped at max_delay", "jitter can be zero"],
)
def test_backoff_is_exponential_capped_and_jittered(retry: int, unit_random: float, expected: float) -> None:
    assert compute_backoff(retry, RetryPolicy(attempts=20, base_delay=0.5, max_delay=20.0), unit_random) == expected


def test_retry_policy_validation_and_shorthand() -> None:
    assert build_retry_policy(3) == RetryPolicy(attempts=3)
    assert build_retry_policy(None) == RetryPolicy()
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_transient_errors_are_retried_until_success() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    result = run_with_retries(flaky, policy=RetryPolicy(attempts=5, base_delay=1.0), is_transient=lambda e: True,
                              label="op", sleep=sleeps.append, unit_random=lambda: 1.0)
    assert result == "ok" and len(calls) == 3 and sleeps == [1.0, 2.0]


def test_permanent_errors_are_never_retried_and_budgets_are_bounded() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        run_with_retries(broken, policy=RetryPolicy(attempts=5), is_transient=lambda e: False,
                         label="op", sleep=lambda s: None)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(PermissionError):
        run_with_retries(broken, policy=RetryPolicy(attempts=4), is_transient=lambda e: True,
                         label="op", sleep=lambda s: None)
    assert len(calls) == 4


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("NoSuchBucket", 404), "bucket_missing"),
        (client_error("NoSuchKey", 404), "not_found"),
        (client_error("404", 404), "not_found"),
        (client_error("AccessDenied", 403), "permission"),
        (client_error("InvalidAccessKeyId", 403), "permission"),
        (client_error("SignatureDoesNotMatch", 403), "permission"),
        (client_error("403", 403), "permission"),
        (NoCredentialsError(), "permission"),
        (client_error("PreconditionFailed", 412), "precondition"),
        (client_error("SlowDown", 503), "transient"),
        (client_error("InternalError", 500), "transient"),
        (client_error("ConditionalRequestConflict", 409), "transient"),
        (client_error("Whatever", 502), "transient"),
        (EndpointConnectionError(endpoint_url="http://x"), "transient"),
        (ConnectionClosedError(endpoint_url="http://x"), "transient"),
        (ReadTimeoutError(endpoint_url="http://x"), "transient"),
        (client_error("InvalidArgument", 400), "other"),
        (ValueError("bug"), "other"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_classify_s3_errors(error: Exception, kind: str) -> None:
    assert classify_s3_error(error) == kind


def test_classification_looks_through_wrappers() -> None:
    """boto3's S3UploadFailedError keeps the ClientError only as __context__; RetriesExceededError as last_exception."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError

    try:
        try:
            raise client_error("AccessDenied", 403)
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904 - mimics boto3
    except S3UploadFailedError as wrapped:
        assert classify_s3_error(wrapped) == "permission"
        assert error_code(wrapped) == "AccessDenied"
    assert classify_s3_error(RetriesExceededError(EndpointConnectionError(endpoint_url="http://x"))) == "transient"


def test_open_store_picks_the_backend_without_importing_boto3_for_local(aws_env: None) -> None:
    code = (
        "import sys; from sail_api.storage import open_store; s = open_store('/tmp/run'); "
        "print(type(s).__name__, 'boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LocalStore", "False"]
    assert isinstance(open_store("s3://bucket/run", S3Connection(endpoint="http://127.0.0.1:1", region="us-east-1")), S3Store)
    assert isinstance(open_store("file:///tmp/run"), LocalStore)


def test_s3_part_size_below_the_s3_minimum_is_refused(aws_env: None) -> None:
    with pytest.raises(ValueError, match="5 MiB"):
        S3Store("s3://bucket/run", S3Connection(endpoint="http://127.0.0.1:1", region="us-east-1"), part_size=1024)
