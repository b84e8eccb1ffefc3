"""open_store(uri, connection): the endpoint and region travel as one object, from any of its sources."""

from __future__ import annotations

import pytest

from sail_api.resolved import StorageConnection
from sail_api.spec import StorageSpec
from sail_api.storage import LocalStore, S3Connection, S3Store, open_store

ENDPOINT, REGION = "http://127.0.0.1:1", "eu-west-1"


@pytest.mark.parametrize("connection", [
    StorageConnection(uri="s3://other/root", endpoint=ENDPOINT, region=REGION),  # the resolved run's storage
    StorageSpec(uri="s3://other/root", endpoint=ENDPOINT, region=REGION),        # a SAILRun's spec.storage
    S3Connection(endpoint=ENDPOINT, region=REGION),                              # loose values (a CLI flag)
])
def test_an_s3_store_takes_endpoint_and_region_from_the_connection(connection) -> None:
    store = open_store("s3://bucket/run", connection)
    assert isinstance(store, S3Store)
    assert (store.endpoint, store._client.meta.region_name) == (ENDPOINT, REGION)
    assert store.uri("") == "s3://bucket/run"  # the URI names the root, never the connection's own uri


def test_a_local_root_ignores_the_connection(tmp_path) -> None:
    store = open_store(f"file://{tmp_path}", S3Connection(endpoint=ENDPOINT))
    assert isinstance(store, LocalStore)
    assert store.root == str(tmp_path)


def test_without_a_connection_the_aws_environment_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    store = open_store("s3://bucket/run")
    assert isinstance(store, S3Store)
    assert store._client.meta.region_name == "ap-south-1" and "amazonaws.com" in store.endpoint
