"""One storage interface over local paths and s3:// URIs, with an atomic commit marker.

Usage: `store = open_store(uri, endpoint=..., region=...)`; every method takes URIs under
that root or paths relative to it. Nothing else in the code base knows which backend
it is on. boto3 is imported lazily by the S3 backend only.
"""

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

__all__ = [
    "AlreadyCommitted",
    "ChecksumMismatch",
    "NotCommitted",
    "Store",
    "StorageError",
    "StorageNotFound",
    "StoragePermissionDenied",
    "StorageUnavailable",
]
