"""moto S3 over real HTTP, as pytest fixtures, plus a handle to break and heal the server.

Fixtures:
- `moto_s3` (session): a `MotoPeer` - moto's ThreadedMotoServer on 127.0.0.1, port 0.
- `aws_env` (function): fake AWS credentials via monkeypatch (never at import time), the
  developer's ~/.aws files and instance metadata switched off so nothing real is reached.
- `s3_bucket` (function): a fresh bucket, emptied afterwards (moto keeps objects in memory).
- `s3_store` (function): an S3Store on `s3://<bucket>/run` with a short retry budget.
- `local_store` (function): a LocalStore in tmp_path.
- `memory_store` (function): the in-memory store for unit tests.
- `store` (function): parametrized over "local", "s3" and "memory", so one test covers them all.

`MotoPeer.stop()` really closes the listening socket and resets open keep-alive connections (a
stopped moto otherwise keeps serving pooled connections), so a client sees a dead server;
`start()` brings it back on the same port with the same data (moto's backends are per process).
`MotoPeer.inject(Fault(...))` arms failures: an outage the moment a matching request arrives
(a server dying in the middle of an upload, back `down_for` seconds later), a 503 SlowDown, or a
response lost after the write landed. `MotoPeer.requests` records what reached the server.
Conditional writes (`If-None-Match: *`) are serialised: moto checks then stores in two steps,
while S3 decides atomically, and the exactly-once tests must test our code, not moto's race.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from sail_api.storage import LocalStore, MemoryStore, RetryPolicy, S3Connection, S3Store

REGION = "us-east-1"
FAST_RETRIES = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)

Environ = dict[str, Any]


@dataclass
class Fault:
    """One injected failure: for the next `times` requests matching `match`...

    kind "outage": the server stops (that request is answered 503, open keep-alive connections
    are reset, new ones refused) and restarts `down_for` s later (0: stays down); "error": answered 503 SlowDown without reaching moto; "lose_response":
    moto applies the request, then the client gets 500 (the write landed, the answer was lost).
    """

    match: Callable[[Environ], bool]
    kind: Literal["outage", "error", "lose_response"]
    times: int = 1
    down_for: float = 0.0


def _error_body(code: str, message: str) -> bytes:
    return f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


class _FaultInjector:
    """WSGI middleware in front of moto: records every request and applies armed faults."""

    def __init__(self, app: Callable[..., Any], peer: MotoPeer) -> None:
        self.app = app
        self.peer = peer

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Any:
        fault = self.peer.take_fault(environ)
        if fault is None and environ.get("HTTP_IF_NONE_MATCH") == "*":
            # moto checks If-None-Match and then stores, two steps another thread can run between;
            # real S3 decides atomically. Serialising conditional writes restores S3's behaviour.
            with self.peer.conditional_writes:
                return list(self.app(environ, start_response))
        if fault is None:
            return self.app(environ, start_response)
        if fault.kind == "outage":
            self._drain(environ)  # else the client blocks sending a body nobody reads
            self.peer.stop()
            if fault.down_for > 0:
                timer = threading.Timer(fault.down_for, self.peer.start)
                timer.daemon = True
                timer.start()
            return self._reply(start_response, "503 Service Unavailable", "ServiceUnavailable", "stopped")
        if fault.kind == "lose_response":
            result = self.app(environ, lambda *_args, **_kwargs: (lambda _data: None))
            for _chunk in result:
                pass
            if hasattr(result, "close"):
                result.close()
            return self._reply(start_response, "500 Internal Server Error", "InternalError", "lost")
        return self._reply(start_response, "503 Slow Down", "SlowDown", "Please reduce your request rate.")

    @staticmethod
    def _drain(environ: Environ) -> None:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)  # never read past the body: it would block
        while remaining > 0:
            chunk = environ["wsgi.input"].read(min(remaining, 1024 * 1024))
            if not chunk:
                break
            remaining -= len(chunk)

    @staticmethod
    def _reply(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
        body = _error_body(code, message)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body))), ("Connection", "close")]
        start_response(status, headers)
        return [body]


def _create_moto_server(peer: MotoPeer) -> Any:
    """moto's ThreadedMotoServer serving moto's app behind our fault injector, on a server that
    tracks its connections. Built lazily: importing moto costs ~1.5 s, and this plugin is loaded
    by every pytest run."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import ThreadedWSGIServer

    class TrackingServer(ThreadedWSGIServer):
        """werkzeug's threaded server that remembers open connections so `stop` can reset them."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.connections: set[socket.socket] = set()
            self.connections_lock = threading.Lock()

        def process_request(self, request: Any, client_address: Any) -> None:
            with self.connections_lock:
                self.connections.add(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            with self.connections_lock:
                self.connections.discard(request)
            super().shutdown_request(request)

        def reset_connections(self) -> None:
            with self.connections_lock:
                open_connections = list(self.connections)
            for connection in open_connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    class PeerServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # overrides moto's: same app and handler, our server and middleware
            app = _FaultInjector(DomainDispatcherApplication(create_backend_app), peer)
            self._server = TrackingServer(self._ip_address, self._port, app, MotoRequestHandler)
            self._port = self._server.server_address[1]  # keep the port across restarts
            self._server_ready_event.set()
            self._server.serve_forever()

        @property
        def port(self) -> int:
            return int(self._port)

        def halt(self) -> None:
            """Stop serving, close the listening socket, reset open connections."""
            server = self._server
            assert server is not None
            self._server_ready_event.clear()
            server.shutdown()
            server.server_close()
            server.reset_connections()

    return PeerServer(ip_address="127.0.0.1", port=0, verbose=False)


class MotoPeer:
    """moto S3 on loopback, with stop/start that really drop the port and its connections."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.conditional_writes = threading.Lock()
        self._server: Any = None
        self.running = False
        self.requests: list[str] = []
        self.faults_fired = 0

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> None:
        with self._lock:
            if self._server is None:
                self._server = _create_moto_server(self)
            if not self.running:
                self._server.start()
                self.running = True

    def stop(self) -> None:
        with self._lock:
            if self.running:
                self._server.halt()
                self.running = False

    def inject(self, fault: Fault) -> None:
        self._faults.append(fault)

    def reset(self) -> None:
        """Back to a healthy, running server with no armed faults and no recorded requests."""
        self._faults.clear()
        self.requests.clear()
        self.faults_fired = 0
        self.start()

    def take_fault(self, environ: Environ) -> Fault | None:
        query = environ.get("QUERY_STRING")
        self.requests.append(f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}{'?' + query if query else ''}")
        for fault in self._faults:
            if fault.times > 0 and fault.match(environ):
                fault.times -= 1
                self.faults_fired += 1
                return fault
        return None


def is_upload_part(environ: Environ, part: int = 2) -> bool:
    """Matches the PUT of multipart part number `part` (a request in the middle of an upload)."""
    return environ.get("REQUEST_METHOD") == "PUT" and f"partNumber={part}" in environ.get("QUERY_STRING", "")


def closed_loopback_port() -> int:
    """A loopback port with nothing listening (connection refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoPeer]:
    peer = MotoPeer()
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials; no profile, config file or instance metadata can leak in or be slow."""
    missing = tmp_path_factory.mktemp("aws") / "absent"
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def create_admin_client(endpoint: str) -> Any:
    """A plain boto3 client for test setup and for looking behind the store's back."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def s3_bucket(moto_s3: MotoPeer, aws_env: None) -> Iterator[str]:
    moto_s3.reset()  # a fault test may have left it stopped
    client = create_admin_client(moto_s3.endpoint)
    name = f"sail-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    moto_s3.reset()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_store(moto_s3: MotoPeer, s3_bucket: str) -> S3Store:
    return S3Store(f"s3://{s3_bucket}/run", S3Connection(endpoint=moto_s3.endpoint), retries=FAST_RETRIES)


@pytest.fixture
def local_store(tmp_path: Any) -> LocalStore:
    return LocalStore(tmp_path / "run")


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore("memory://run")


@pytest.fixture(params=["local", "s3", "memory"])
def store(request: pytest.FixtureRequest) -> Any:
    """The same test against both backends (and the in-memory store unit tests use)."""
    return request.getfixturevalue(f"{request.param}_store")
