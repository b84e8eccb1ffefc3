"""One storage interface over local paths and s3:// URIs, with an atomic commit marker.

Usage: `store = open_store(uri, endpoint=..., region=...)`; every method takes URIs under
that root or paths relative to it. Nothing else in the code base knows which backend
it is on. boto3 is imported lazily by the S3 backend only. The contract is in docs/storage.md.
"""

from __future__ import annotations

from sail_api.storage.base import (
    AlreadyCommitted,
    ChecksumMismatch,
    NotCommitted,
    StorageError,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
    Store,
)
from sail_api.storage.local import LocalStore
from sail_api.storage.memory import MemoryStore
from sail_api.storage.retry import RetryPolicy
from sail_api.storage.s3 import BucketNotFound, S3Store
from sail_api.storage.uris import is_s3_uri, split_uri


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    retries: RetryPolicy | int | None = None,
) -> Store:
    """The store for a run root: S3Store for `s3://bucket/prefix`, LocalStore for a path or `file://`.

    endpoint/region: for S3 (spec.storage.endpoint / .region); unset means the AWS environment.
    retries: attempts per operation, or a RetryPolicy (default: 5 attempts, 0.5 s base backoff).
    Local stores ignore endpoint, region and retries.
    """
    if is_s3_uri(uri):
        return S3Store(uri, endpoint=endpoint, region=region, retries=retries)
    return LocalStore(uri)


__all__ = [
    "AlreadyCommitted",
    "BucketNotFound",
    "ChecksumMismatch",
    "LocalStore",
    "MemoryStore",
    "NotCommitted",
    "RetryPolicy",
    "S3Store",
    "Store",
    "StorageError",
    "StorageNotFound",
    "StoragePermissionDenied",
    "StorageUnavailable",
    "is_s3_uri",
    "open_store",
    "split_uri",
]
