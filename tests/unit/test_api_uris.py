"""sail_api.uris: the one classifier of URI schemes every package uses."""

from __future__ import annotations

import os

import pytest

from sail_api.uris import (
    UriKind,
    classify_uri,
    is_local_uri,
    is_remote_uri,
    is_s3_uri,
    looks_like_hub_id,
    same_root,
    strip_file_scheme,
    uri_path,
    uri_scheme,
)


@pytest.mark.parametrize(("uri", "kind"), [
    ("s3://bucket/runs/a", UriKind.S3),
    ("file:///tmp/run", UriKind.FILE),
    ("/tmp/run", UriKind.LOCAL),
    ("./run", UriKind.LOCAL),
    ("org/model", UriKind.LOCAL),
    ("gs://bucket/x", UriKind.UNSUPPORTED),
    ("https://example.com/x", UriKind.UNSUPPORTED),
])
def test_classify_uri_names_each_kind(uri: str, kind: UriKind) -> None:
    assert classify_uri(uri) is kind
    assert is_s3_uri(uri) is (kind is UriKind.S3)
    assert is_local_uri(uri) is (kind in (UriKind.FILE, UriKind.LOCAL))
    assert is_remote_uri(uri) is not is_local_uri(uri)


def test_helpers_strip_and_split() -> None:
    assert strip_file_scheme("file:///tmp/x") == "/tmp/x"
    assert strip_file_scheme("s3://b/x") == "s3://b/x"
    assert uri_path("s3://b/x/y") == "b/x/y"
    assert uri_scheme("gs://b") == "gs"
    assert uri_scheme("/tmp") is None


@pytest.mark.parametrize(("uri", "hub"), [
    ("org/model", True), ("./org/model", False), ("/org/model", False), ("s3://org/model", False),
    ("org/model/sub", False), ("model", False),
])
def test_looks_like_hub_id(uri: str, hub: bool) -> None:
    assert looks_like_hub_id(uri) is hub


def test_same_root_ignores_trailing_slash_and_file_scheme() -> None:
    assert same_root("s3://b/run/", "s3://b/run")
    assert not same_root("s3://b/run", "s3://b/other")
    assert same_root("file:///tmp/run", "/tmp/run/")
    assert same_root("run", os.path.abspath("run"))
    assert not same_root("/tmp/run", "s3://tmp/run")
