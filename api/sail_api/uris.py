"""Which kind of place a URI names: the one classifier of URI schemes (pure; no I/O, no imports).

Every part of SAIL takes the same four kinds of location, and each used to test prefixes on its
own (`startswith("s3://")` in the spec validators, the policy, the trainer's data and model
readers, the local executor); one copy that drifted would accept a URI another refuses. So:

- `s3://bucket/prefix`: an S3 location (`UriKind.S3`);
- `file:///abs/path`: a local path written as a URI (`UriKind.FILE`);
- a plain path (`/abs`, `./rel`, `~/x`, `rel/dir`): `UriKind.LOCAL`;
- anything else with `://` (`gs://`, `http://`): `UriKind.UNSUPPORTED`.

A bare `org/name` is both a relative path and a Hugging Face hub id; only the model reader may
take it as a hub id, and only when no such folder exists (`looks_like_hub_id` says whether it
could be one). Keys inside a store (`sail_api.storage.uris`) build on these prefixes.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UriKind(StrEnum):
    S3 = "s3"
    FILE = "file"
    LOCAL = "local"
    UNSUPPORTED = "unsupported"


def classify_uri(uri: str) -> UriKind:
    """The kind of location `uri` names (see the module docstring)."""
    if uri.startswith(S3_SCHEME):
        return UriKind.S3
    if uri.startswith(FILE_SCHEME):
        return UriKind.FILE
    if "://" in uri:
        return UriKind.UNSUPPORTED
    return UriKind.LOCAL


def is_s3_uri(uri: str) -> bool:
    """True for `s3://bucket[/prefix]` URIs."""
    return classify_uri(uri) is UriKind.S3


def is_local_uri(uri: str) -> bool:
    """True for a plain path or a `file://` URI (what a local store or folder reader opens)."""
    return classify_uri(uri) in (UriKind.FILE, UriKind.LOCAL)


def is_remote_uri(uri: str) -> bool:
    """True for anything that is not a local path: s3:// and the schemes nobody supports."""
    return not is_local_uri(uri)


def uri_scheme(uri: str) -> str | None:
    """The scheme before `://` (`s3`, `gs`...), or None for a plain path."""
    return uri.split("://", 1)[0] if "://" in uri else None


def strip_file_scheme(uri: str) -> str:
    """A `file://` URI as its plain path; every other URI unchanged."""
    return uri[len(FILE_SCHEME):] if uri.startswith(FILE_SCHEME) else uri


def uri_path(uri: str) -> str:
    """The part after `scheme://` (`bucket/prefix` for s3://), or the path itself."""
    return uri.split("://", 1)[1] if "://" in uri else uri


def s3_bucket(uri: str) -> str:
    """The bucket of an s3:// URI (possibly empty or invalid: callers check it)."""
    return uri_path(uri).split("/", 1)[0]


def looks_like_hub_id(uri: str) -> bool:
    """True when `uri` could be a Hugging Face hub id (`org/name`): a plain relative path of two parts."""
    return classify_uri(uri) is UriKind.LOCAL and not uri.startswith((".", "/", "~")) and bool(_HUB_ID.match(uri))


def same_root(first: str, second: str) -> bool:
    """True when two run-root URIs name the same place (trailing slashes and `file://` aside;
    local paths compared as absolute paths)."""
    if is_local_uri(first) and is_local_uri(second):
        return _absolute(first) == _absolute(second)
    return first.rstrip("/") == second.rstrip("/")


def _absolute(uri: str) -> str:
    return os.path.abspath(os.path.expanduser(strip_file_scheme(uri))).rstrip("/") or "/"
