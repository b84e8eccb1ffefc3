"""One storage interface over local paths and s3:// URIs, with an atomic commit marker.

Usage: `store = open_store(uri, connection)` (the connection: the resolved run's `storage`, a
SAILRun's `spec.storage` or an `S3Connection`; see connection.py); every method takes URIs under
that root or paths relative to it. This is the one way to open a store, for the trainer, the
operator, the CLI and the benches. Nothing else in the code base knows which backend
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
from sail_api.storage.connection import DEFAULT_CONNECTION, Connection, S3Connection
from sail_api.storage.local import LocalStore
from sail_api.storage.memory import MemoryStore
from sail_api.storage.retry import RetryPolicy
from sail_api.storage.s3 import BucketNotFound, S3Store
from sail_api.storage.uris import is_s3_uri, split_uri


def open_store(
    uri: str,
    connection: Connection = DEFAULT_CONNECTION,
    *,
    retries: RetryPolicy | int | None = None,
) -> Store:
    """The store rooted at `uri`: S3Store for `s3://bucket/prefix`, LocalStore for a path or `file://`.

    connection: the S3 endpoint and region (the default: both from the AWS environment).
    retries: attempts per operation, or a RetryPolicy (default: 5 attempts, 0.5 s base backoff).
    Local stores ignore the connection and retries.
    """
    if is_s3_uri(uri):
        return S3Store(uri, connection, retries=retries)
    return LocalStore(uri)


__all__ = [
    "AlreadyCommitted",
    "BucketNotFound",
    "ChecksumMismatch",
    "Connection",
    "LocalStore",
    "MemoryStore",
    "NotCommitted",
    "RetryPolicy",
    "S3Connection",
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
