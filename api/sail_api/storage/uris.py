"""Pure helpers for storage URIs and keys: how an s3:// URI splits, and how a key maps under a root.

Which kind of place a URI names (s3://, file://, a path) is decided by `sail_api.uris` only.

Both backends accept either a key relative to the store's root ("iter-001/train/model") or an
absolute URI/path under that root (what `sail_api.layout.RunLayout` builds), so callers can pass
layout paths straight through. Keys never escape the root: ".." is refused, because a key built
from a bad spec must fail loudly instead of writing outside the run.
"""

from __future__ import annotations

import os

from sail_api.uris import FILE_SCHEME, S3_SCHEME, is_local_uri, is_s3_uri, strip_file_scheme


def split_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/some/prefix` into ("bucket", "some/prefix") (prefix without slashes at the ends)."""
    if not is_s3_uri(uri):
        raise ValueError(f"storage uri {uri!r} is not an s3:// URI (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"storage uri {uri!r} has no bucket name (expected s3://bucket/prefix)")
    if any(part in (".", "..") for part in prefix.split("/")):
        # S3 keys are literal: "runs/../b" would not go up, it would be a confusing sibling of "runs".
        raise ValueError(f"storage uri {uri!r} has a '.' or '..' segment; write the prefix plainly")
    return bucket, prefix.strip("/")


def local_root_path(uri: str) -> str:
    """Absolute local path of a local root given as a path or a `file://` URI."""
    if not is_local_uri(uri):
        raise ValueError(f"storage uri {uri!r}: only s3:// URIs or local paths are supported")
    uri = strip_file_scheme(uri)
    if not uri:
        raise ValueError("storage uri is empty: give a local folder or s3://bucket/prefix")
    return os.path.abspath(os.path.expanduser(uri))


def build_relative_key(root: str, key: str) -> str:
    """Normalise `key` (relative, or an absolute URI/path under `root`) to a clean key relative to `root`.

    Returns "" for the root itself. Raises ValueError for a URI outside the root or a ".." part.
    """
    root = root.rstrip("/")
    if key.startswith(FILE_SCHEME) and not root.startswith(FILE_SCHEME):
        key = strip_file_scheme(key)
    if key == root:
        return ""
    if key.startswith(root + "/"):
        key = key[len(root) + 1:]
    elif "://" in key or key.startswith("/"):
        raise ValueError(f"{key!r} is not under the store root {root!r}")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"key {key!r} contains '..': keys must stay under the store root {root!r}")
    return "/".join(parts)


def join_key(*parts: str) -> str:
    """Join key parts with '/', skipping empty ones ("" is the root)."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def build_folder_relative(folder: str, key: str) -> str:
    """Path of `key` relative to `folder` (both root-relative keys); ValueError when outside the folder."""
    if not folder:
        return key
    if not key.startswith(folder + "/"):
        raise ValueError(f"file {key!r} is not inside the committed folder {folder!r}")
    return key[len(folder) + 1:]


def build_commit_key(root: str, folder: str, name: str) -> str:
    """Root-relative key of a file named in `commit(folder, files=[...])`.

    `name` is relative to the folder, or an absolute URI/path under the root; either way it must
    lie inside the folder (ValueError otherwise).
    """
    if "://" in name or name.startswith("/"):
        key = build_relative_key(root, name)
    else:
        key = join_key(folder, build_relative_key("", name))
    build_folder_relative(folder, key)
    return key
