"""Attack: `spec.storage.endpoint` pointed at a hostile server to steal the pod's cloud identity.

On a cluster with IRSA the pod holds a projected web-identity token; botocore trades it at STS
(`AssumeRoleWithWebIdentity`) for the workload role. If the Job exported the endpoint as the
*global* `AWS_ENDPOINT_URL`, that STS call would go to the user's URL with the token in its body.

Here the pod environment is exactly what the Job builder renders, the hostile endpoint is a
loopback sink that records everything it receives, and the trainer's own S3 code
(`sail_api.storage.open_store` with the resolved run file's endpoint) makes a request. Real AWS
STS is the one peer no test can run: a `before-send` hook answers STS calls bound for an AWS
host with stub credentials (calls bound for the sink pass through to it, so the bug shows up as a
token at the sink). Nothing leaves the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sail_api.phases import Phase
from sail_api.resolved import ResolvedRun
from sail_api.storage import RetryPolicy, open_store
from sail_operator.kube.jobs import SPEC_FILE_KEY, build_phase_job, build_spec_configmap, coerce_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import CreatePhaseJob, build_job_name
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

TOKEN = "CANARY-web-identity-token-7c1e"
ROLE = "arn:aws:iam::123456789012:role/sail-workload"
STS_OK = b"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIASTUBSTUBSTUB</AccessKeyId>
<SecretAccessKey>stub-secret</SecretAccessKey><SessionToken>stub-session</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<SubjectFromWebIdentityToken>system:serviceaccount:team-a:sail-workload</SubjectFromWebIdentityToken>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/sail-workload/x</Arn>
<AssumedRoleId>AROASTUB:x</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult>
<ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"""


class Sink:
    """A loopback HTTP server standing in for a hostile endpoint: records every request, answers 404."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sink.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body.decode(errors="replace")})
                self.send_response(404)
                self.send_header("Content-Type", "application/xml")
                payload = b"<Error><Code>NoSuchKey</Code><Message>sink</Message></Error>"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _record  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def text(self) -> str:
        return json.dumps(self.requests)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _run(endpoint: str) -> dict[str, Any]:
    spec = build_spec_body(prompts="s3://b/prompts.txt", sail={"rounds": 1},
                           storage={"uri": "s3://tenant-runs/team-a/r1", "endpoint": endpoint, "region": "us-east-1"})
    return build_sailrun_dict("r1", spec, namespace="team-a", uid="0b3a2c1d-0000-4000-8000-0000000000aa")


def _pod_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run: dict[str, Any]) -> None:
    """os.environ as the phase pod sees it: the Job's literal env plus what the IRSA webhook injects."""
    action = CreatePhaseJob(name=build_job_name("r1", 1, Phase.GENERATE, 1), iteration=1, phase=Phase.GENERATE,
                            attempt=1, shards=1, nodes=1)
    job = build_phase_job(coerce_run(run), action, OperatorSettings())
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    absent = tmp_path / "absent"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(absent))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(absent))
    for item in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item and item["name"].startswith("AWS_"):
            monkeypatch.setenv(item["name"], item["value"])
    token = tmp_path / "token"
    token.write_text(TOKEN)
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))


def _answer_real_sts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every new botocore session answers STS calls bound for AWS with stub credentials; returns their URLs."""
    import botocore.handlers
    from botocore.awsrequest import AWSResponse

    seen: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            return None  # bound for the sink: let it go, the sink records it
        seen.append(request.url)
        return AWSResponse(request.url, 200, {"Content-Type": "text/xml"}, _Raw(STS_OK))

    handlers = [*botocore.handlers.BUILTIN_HANDLERS, ("before-send.sts.AssumeRoleWithWebIdentity", answer)]
    monkeypatch.setattr(botocore.handlers, "BUILTIN_HANDLERS", handlers)
    return seen


def test_a_hostile_storage_endpoint_never_receives_the_web_identity_token(
        sink: Sink, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = _run(sink.url)
    _pod_environment(monkeypatch, tmp_path, run)
    real_sts = _answer_real_sts(monkeypatch)
    resolved = ResolvedRun.model_validate_json(build_spec_configmap(coerce_run(run))["data"][SPEC_FILE_KEY])
    # What the trainer does with the run file: an S3 store on the run root with the spec's endpoint.
    store = open_store(resolved.storage.uri, resolved.storage,
                       retries=RetryPolicy(attempts=1, base_delay=0.0, max_delay=0.0))
    try:
        store.exists("iter-001/generate/manifest.json")
    except Exception:  # noqa: BLE001  (the sink answers nonsense; only what it received matters)
        pass
    assert sink.requests, "the S3 request never reached the endpoint: the test proves nothing"
    assert "AssumeRoleWithWebIdentity" not in sink.text()
    assert TOKEN not in sink.text()
    assert real_sts and all(urlsplit(url).hostname.endswith(".amazonaws.com") for url in real_sts), real_sts


def test_botocore_in_the_pod_environment_resolves_sts_to_aws_and_s3_to_the_endpoint(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hostile = "http://10.0.0.66:8080"
    _pod_environment(monkeypatch, tmp_path, _run(hostile))
    import botocore.session

    session = botocore.session.get_session()
    sts = session.create_client("sts", region_name="us-east-1")
    s3 = session.create_client("s3", region_name="us-east-1")
    assert urlsplit(sts.meta.endpoint_url).hostname.endswith(".amazonaws.com"), sts.meta.endpoint_url
    assert s3.meta.endpoint_url == hostile  # scoped: tools on the standard chain still find the store
