"""Shared test configuration: real peers (moto S3, kmock Kubernetes) live in tests/peers."""

pytest_plugins = ["tests.peers.s3", "tests.peers.kube"]
