"""S3Store: the Store protocol on `s3://bucket/prefix` (AWS, MinIO, Ceph...), through boto3.

- boto3/botocore are imported inside this module's functions only, so `import sail_api` stays
  light (the operator image and `--help` never pay for it).
- Credentials come from the standard AWS chain (env vars, profile, web identity, instance
  role); the endpoint and region from the connection (`S3Store(root, connection)`), else the
  AWS environment. With an explicit endpoint, path-style addressing is used (MinIO/Ceph/moto
  need it). Secrets are never logged: log lines carry URIs, operations and error class names only.
- Retries: botocore's own retries are switched off so that one bounded, configurable policy
  (`RetryPolicy`: exponential backoff + full jitter) covers every operation. Transient errors
  (unreachable endpoint, connection reset, timeouts, 5xx, throttling) are retried, then raised as
  StorageUnavailable naming the endpoint; permanent ones (missing bucket, refused credentials,
  missing key) are raised at once. Large uploads are multipart with each part retried on its
  own (a throttled part of a multi-GB checkpoint does not restart the file); a failed download
  is retried as a whole.
- Commit: `_SUCCESS.json` is put last with `If-None-Match: *`; S3 answers 412 to every writer
  but the first, which becomes AlreadyCommitted carrying the winner's manifest. If a retried
  put finds a marker equal to its own manifest, its earlier attempt landed: that is success.
- Every object this store writes carries its sha256 in user metadata (`x-amz-meta-sha256`),
  so a commit hashes large files without downloading them again; `read_manifest(verify=True)`
  always re-reads and hashes the content itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal, TypeVar

from sail_api.layout import COMMIT_MARKER
from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.storage.base import (
    AlreadyCommitted,
    NotCommitted,
    StorageError,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)
from sail_api.storage.connection import DEFAULT_CONNECTION, Connection
from sail_api.storage.manifests import (
    build_commit_manifest,
    check_entry,
    compute_file_sha256,
    compute_sha256,
    decode_manifest,
    encode_manifest,
)
from sail_api.storage.retry import RetryPolicy, build_retry_policy, run_with_retries
from sail_api.storage.uris import build_relative_key, join_key, split_uri

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
SHA256_METADATA = "sha256"

ErrorKind = Literal["transient", "bucket_missing", "not_found", "permission", "precondition", "other"]

TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted",
    "ConditionalRequestConflict", "500", "502", "503", "504",
})
PERMISSION_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity", "403", "Forbidden",
})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) or AWS_PROFILE in this "
    "process's environment; on Kubernetes, the Secret named by spec.storage.credentialsSecretRef"
)


class BucketNotFound(StorageNotFound):
    """The bucket itself is missing (a StorageNotFound that no retry or re-run can fix)."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (cause, context, s3transfer's last_exception), depth-bounded."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (current.__cause__, current.__context__, getattr(current, "last_exception", None)):
            if isinstance(nested, BaseException):
                todo.append(nested)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of the first botocore ClientError in the chain ("NoSuchBucket", "404"...)."""
    for current in _causes(exc):
        response = getattr(current, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return str(response["Error"].get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def classify_s3_error(exc: BaseException) -> ErrorKind:
    """Which of the storage vocabulary a boto3/botocore/s3transfer failure belongs to (no I/O)."""
    from botocore import exceptions as bx

    for current in _causes(exc):
        if isinstance(current, bx.ClientError):
            return _classify_client_error(current)
        if isinstance(current, bx.NoCredentialsError | bx.PartialCredentialsError | bx.ProfileNotFound
                      | bx.CredentialRetrievalError | bx.UnknownCredentialError):
            return "permission"
        if isinstance(current, bx.SSLError):
            return "other"
        if isinstance(current, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError
                      | ConnectionError | TimeoutError):
            return "transient"
    return "other"


def _classify_client_error(exc: Any) -> ErrorKind:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "NoSuchBucket":
        return "bucket_missing"
    if code in PERMISSION_CODES:
        return "permission"
    if code in ("PreconditionFailed", "412") or status == 412:
        return "precondition"
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return "transient"
    if code in NOT_FOUND_CODES or status == 404:
        return "not_found"
    if status == 403:
        return "permission"
    return "other"


def is_transient_s3_error(exc: BaseException) -> bool:
    return classify_s3_error(exc) == "transient"


class S3Store:
    """The Store protocol on `s3://bucket/prefix`; `root` is that URI without a trailing slash.

    `connection`: the endpoint and region (sail_api.storage.connection); unset, the AWS environment's."""

    def __init__(
        self,
        root: str,
        connection: Connection = DEFAULT_CONNECTION,
        *,
        retries: RetryPolicy | int | None = None,
        part_size: int = 16 * MiB,
        max_concurrency: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.bucket, self.prefix = split_uri(root)
        self.root = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.retries = build_retry_policy(retries)
        if part_size < 5 * MiB:
            raise ValueError(f"part_size {part_size} is below S3's 5 MiB minimum multipart part size")
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        endpoint = connection.endpoint
        self._client = _create_client(endpoint, connection.region, max_concurrency, connect_timeout, read_timeout,
                                      self.root)
        self.endpoint = endpoint or str(self._client.meta.endpoint_url)
        self._bucket_seen = False

    def __repr__(self) -> str:
        return f"S3Store({self.root!r}, endpoint={self.endpoint!r})"

    # -- keys -----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return build_relative_key(self.root, os.fspath(key))

    def _object_key(self, key: str) -> str:
        return join_key(self.prefix, self._key(key))

    def uri(self, key: str) -> str:
        relative = self._key(key)
        return f"{self.root}/{relative}" if relative else self.root

    # -- the one place where boto3 calls are retried and their errors mapped ----------------

    def _call(self, operation: str, uri: str, action: Callable[[], T]) -> T:
        try:
            result = run_with_retries(
                action, policy=self.retries, is_transient=is_transient_s3_error, label=f"{operation} {uri}",
            )
        except StorageError:
            raise
        except Exception as exc:
            raise self._map_error(exc, operation, uri) from exc
        self._bucket_seen = True
        return result

    def _map_error(self, exc: Exception, operation: str, uri: str) -> StorageError:
        kind = classify_s3_error(exc)
        code = error_code(exc) or type(exc).__name__
        if kind == "not_found" and not self._bucket_seen and not self._bucket_exists():
            kind = "bucket_missing"
        if kind == "bucket_missing":
            return BucketNotFound(
                f"bucket {self.bucket} does not exist (endpoint {self.endpoint}): create it or fix storage.uri"
            )
        if kind == "not_found":
            return StorageNotFound(f"{uri} does not exist")
        if kind == "permission":
            return StoragePermissionDenied(f"{operation} {uri} was refused ({code}): {CREDENTIALS_HINT}")
        if kind == "precondition":
            return AlreadyCommitted(f"{uri} already exists (conditional put refused)")
        if kind == "transient":
            return StorageUnavailable(
                f"S3 endpoint {self.endpoint} is unavailable: {operation} {uri} failed {self.retries.attempts} "
                f"time(s), last error {code}; check storage.endpoint and the network, then re-run "
                "(phases resume from their committed manifests)"
            )
        return StorageError(f"{operation} {uri} failed ({code}): {exc}")

    def _bucket_exists(self) -> bool:
        """One HEAD on the bucket, to tell 'no such key' from 'no such bucket' after a bare 404."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            return classify_s3_error(exc) not in ("not_found", "bucket_missing")
        self._bucket_seen = True
        return True

    def _transfer_config(self) -> Any:
        """boto3 managed-transfer settings for downloads (uploads use `_upload_multipart`)."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
            max_concurrency=self.max_concurrency, num_download_attempts=1,
        )

    # -- objects --------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        metadata = {SHA256_METADATA: hashlib.sha256(data).hexdigest()}
        self._call("PUT", self.uri(key), lambda: self._client.put_object(
            Bucket=self.bucket, Key=self._object_key(key), Body=data, Metadata=metadata))

    def read_bytes(self, key: str) -> bytes:
        def action() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            with response["Body"] as body:
                return body.read()

        return self._call("GET", self.uri(key), action)

    def upload_file(self, key: str, path: Path) -> None:
        """Stream a local file up: one PUT up to `part_size`, else a multipart upload whose parts
        (`part_size` each, `max_concurrency` in flight) are retried one by one."""
        source = Path(path)
        if not source.is_file():
            raise StorageNotFound(f"local file {source} to upload to {self.uri(key)} does not exist")
        size, sha256 = compute_file_sha256(source)
        if size <= self.part_size:
            data = source.read_bytes()
            self._call("PUT", self.uri(key), lambda: self._client.put_object(
                Bucket=self.bucket, Key=self._object_key(key), Body=data, Metadata={SHA256_METADATA: sha256}))
            return
        self._upload_multipart(key, source, size, sha256)

    def _upload_multipart(self, key: str, source: Path, size: int, sha256: str) -> None:
        """Multipart upload with per-part retries (a transient error costs one part, not the file).

        On failure the upload is aborted (best effort; `delete_prefix` aborts any that remain), so
        no object appears: S3 shows nothing until CompleteMultipartUpload succeeds.
        """
        uri, object_key = self.uri(key), self._object_key(key)
        upload_id: str = self._call("CREATE-UPLOAD", uri, lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=object_key, Metadata={SHA256_METADATA: sha256})["UploadId"])
        parts = [(number, offset, min(self.part_size, size - offset))
                 for number, offset in enumerate(range(0, size, self.part_size), start=1)]
        try:
            etags = self._upload_parts(source, uri, object_key, upload_id, parts)
            self._complete_upload(key, upload_id, etags, size, sha256)
        except BaseException:
            self._abort_quietly(uri, object_key, upload_id)
            raise

    def _upload_parts(
        self, source: Path, uri: str, object_key: str, upload_id: str, parts: list[tuple[int, int, int]],
    ) -> list[str]:
        def upload_part(number: int, offset: int, length: int) -> str:
            with open(source, "rb") as stream:
                stream.seek(offset)
                data = stream.read(length)
            response = self._call(f"UPLOAD-PART {number}/{len(parts)}", uri, lambda: self._client.upload_part(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=data))
            return str(response["ETag"])

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="sail-s3-part") as pool:
            futures = [pool.submit(upload_part, *part) for part in parts]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()  # fail fast: parts not started yet are not sent
            for future in futures:
                if future in done and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            return [future.result() for future in futures]

    def _complete_upload(self, key: str, upload_id: str, etags: list[str], size: int, sha256: str) -> None:
        parts = [{"ETag": etag, "PartNumber": number} for number, etag in enumerate(etags, start=1)]
        try:
            self._call("COMPLETE-UPLOAD", self.uri(key), lambda: self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._object_key(key), UploadId=upload_id,
                MultipartUpload={"Parts": parts}))
        except StorageNotFound:
            head = self._head(key)  # a retried complete whose first attempt landed: NoSuchUpload
            if head is None or (head.get("Metadata") or {}).get(SHA256_METADATA) != sha256 \
                    or int(head["ContentLength"]) != size:
                raise

    def _abort_quietly(self, uri: str, object_key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
        except Exception as exc:
            log.warning("could not abort the failed multipart upload of %s (%s); delete_prefix aborts it later",
                        uri, type(exc).__name__)

    def download_file(self, key: str, path: Path) -> None:
        """Stream an object down to `path` (boto3's managed transfer: parallel ranged GETs into a
        temp file that is renamed; a failed download is retried as a whole)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        config = self._transfer_config()
        self._call("DOWNLOAD", self.uri(key), lambda: self._client.download_file(
            self.bucket, self._object_key(key), str(target), Config=config))

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD of an object, None when it does not exist (a missing bucket still raises)."""
        try:
            return self._call("HEAD", self.uri(key), lambda: self._client.head_object(
                Bucket=self.bucket, Key=self._object_key(key)))
        except BucketNotFound:
            raise
        except StorageNotFound:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> Iterator[str]:
        """Objects under the folder `prefix` (recursive), root-relative, sorted."""
        relative = self._key(prefix)
        object_prefix = join_key(self.prefix, relative)
        object_prefix = f"{object_prefix}/" if object_prefix else ""
        strip = f"{self.prefix}/" if self.prefix else ""

        def action() -> list[str]:
            paginator = self._client.get_paginator("list_objects_v2")
            keys: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=object_prefix):
                keys.extend(item["Key"][len(strip):] for item in page.get("Contents", []))
            return keys

        return iter(sorted(self._call("LIST", self.uri(relative), action)))

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object `prefix` and every object under the folder `prefix` (markers first), and
        abort unfinished multipart uploads there."""
        keys = list(self.list(prefix))
        if self._key(prefix) and self.exists(prefix):
            keys.append(self._key(prefix))
        markers = [key for key in keys if key.rsplit("/", 1)[-1] == COMMIT_MARKER]
        others = [key for key in keys if key.rsplit("/", 1)[-1] != COMMIT_MARKER]
        for batch_start in range(0, len(markers), 1000):
            self._delete_batch(markers[batch_start:batch_start + 1000])
        for batch_start in range(0, len(others), 1000):
            self._delete_batch(others[batch_start:batch_start + 1000])
        self._abort_uploads(prefix)

    def _delete_batch(self, keys: list[str]) -> None:
        objects = [{"Key": self._object_key(key)} for key in keys]
        response = self._call("DELETE", self.uri(keys[0]), lambda: self._client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}))
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                f"could not delete {len(errors)} object(s) under {self.root}, e.g. {first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message')}"
            )

    def _abort_uploads(self, prefix: str) -> None:
        relative = self._key(prefix)
        object_key = join_key(self.prefix, relative)

        def inside(key: str) -> bool:
            return not object_key or key == object_key or key.startswith(f"{object_key}/")

        def action() -> None:
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=object_key):
                for upload in page.get("Uploads", []):
                    if inside(upload["Key"]):
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])

        self._call("ABORT-UPLOADS", self.uri(relative), action)

    # -- commit ---------------------------------------------------------------------------

    def _marker_key(self, folder: str) -> str:
        return join_key(self._key(folder), COMMIT_MARKER)

    def commit(
        self, folder: str, files: list[str] | None = None, *, metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None, **manifest_fields: Any,
    ) -> PhaseManifest:
        """Hash the files, then put `folder/_SUCCESS.json` with If-None-Match: * (exactly once)."""
        folder_key = self._key(folder)
        manifest = build_commit_manifest(self, folder_key, files, self._stat_entry, metrics=metrics,
                                         metadata=metadata, fields=manifest_fields)
        self._put_marker(folder_key, manifest)
        log.info("committed %s (%d files)", self.uri(folder_key), len(manifest.files))
        return manifest

    def _put_marker(self, folder_key: str, manifest: PhaseManifest) -> None:
        data = encode_manifest(manifest)
        marker = self._marker_key(folder_key)
        try:
            self._call("COMMIT", self.uri(marker), lambda: self._client.put_object(
                Bucket=self.bucket, Key=self._object_key(marker), Body=data, IfNoneMatch="*",
                ContentType="application/json", Metadata={SHA256_METADATA: hashlib.sha256(data).hexdigest()}))
        except AlreadyCommitted as exc:
            winner = self.read_manifest(folder_key)
            if winner == manifest:
                return  # a retried put whose first attempt had landed: our own commit
            raise AlreadyCommitted(
                f"{self.uri(folder_key)} was committed first by {winner.writer}", winner) from exc

    def _stat_entry(self, folder_key: str, name: str) -> FileEntry:
        """Size and sha256 of a file to commit: from its sha256 metadata, else by streaming it."""
        key = join_key(folder_key, name)
        head = self._head(key)
        if head is None:
            raise StorageNotFound(f"{self.uri(key)} is listed for commit but does not exist")
        sha256 = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if sha256 is None:
            size, sha256 = self._hash_object(key)
        else:
            size = int(head["ContentLength"])
        return FileEntry(path=name, size=size, sha256=sha256)

    def _hash_object(self, key: str) -> tuple[int, str]:
        def action() -> tuple[int, str]:
            response = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            with response["Body"] as body:
                return compute_sha256(body)

        return self._call("GET", self.uri(key), action)

    def is_committed(self, folder: str) -> bool:
        return self.exists(self._marker_key(folder))

    def read_manifest(self, folder: str, *, verify: bool = False) -> PhaseManifest:
        """The folder's manifest; NotCommitted without a marker; with verify, re-hash every file."""
        marker = self._marker_key(folder)
        try:
            data = self.read_bytes(marker)
        except BucketNotFound:
            raise
        except StorageNotFound as exc:
            raise NotCommitted(
                f"{self.uri(self._key(folder))} is not committed (no {COMMIT_MARKER}): "
                "its files are incomplete and must not be read"
            ) from exc
        manifest = decode_manifest(data, self.uri(marker))
        if verify:
            for entry in manifest.files:
                key = join_key(self._key(folder), entry.path)
                head = self._head(key)
                if head is None:
                    check_entry(entry, self.uri(key), None, None)
                    continue
                check_entry(entry, self.uri(key), int(head["ContentLength"]), None)
                size, sha256 = self._hash_object(key)
                check_entry(entry, self.uri(key), size, sha256)
        return manifest


def _create_client(
    endpoint: str | None, region: str | None, max_concurrency: int,
    connect_timeout: float, read_timeout: float, root: str,
) -> Any:
    """A boto3 S3 client from the standard AWS chain plus the explicit endpoint/region."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    options: dict[str, Any] = {
        "region_name": region,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max(10, 2 * max_concurrency),
    }
    if endpoint:
        options["s3"] = {"addressing_style": "path"}
        # S3-compatible stores (older MinIO/Ceph) reject the CRC checksums newer botocore adds by default.
        if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
    try:
        session = boto3.session.Session(region_name=region)
    except ProfileNotFound as exc:
        raise StoragePermissionDenied(f"cannot open {root}: {exc}; {CREDENTIALS_HINT}") from exc
    return session.client("s3", endpoint_url=endpoint, config=Config(**options))
