"""`sail report` of a run whose root is on S3 (moto over HTTP): reads committed files only.

The state file stays on this machine (as `sail run` keeps it for s3:// roots); the grids,
metrics and manifests are in the bucket. Building the artifacts reuses the Chromium test's
builder, then uploads the files under the same keys.
"""

from __future__ import annotations

import re
from pathlib import Path

from sail_operator.cli import main
from sail_operator.local.state import LocalState, load_state, save_state
from tests.e2e.test_report_chromium import ROUNDS, build_run_root
from tests.peers.s3 import create_admin_client


def test_report_of_an_s3_run_root_embeds_each_iterations_committed_grid(tmp_path, moto_s3, s3_bucket, capsys):
    local = tmp_path / "build"
    build_run_root(local)
    client = create_admin_client(moto_s3.endpoint)
    for path in sorted(local.rglob("*")):
        if path.is_file() and "local" not in path.relative_to(local).parts:
            client.put_object(Bucket=s3_bucket, Key=f"run/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    state = load_state(local / "local" / "state.json")
    state.storage_uri = f"s3://{s3_bucket}/run"
    state.spec = {**(state.spec or {}), "storage": {"uri": state.storage_uri, "endpoint": moto_s3.endpoint}}
    state_file = tmp_path / ".sail" / "grid-demo" / "local" / "state.json"
    save_state(state_file, state)

    assert main(["report", str(state_file)]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == (tmp_path / ".sail" / "grid-demo" / "report" / "report.html").resolve()
    text = report.read_text()
    assert re.findall(r"data-iteration='(\w+)'", text) == ["base"] + [str(i) for i in range(ROUNDS + 1)]
    assert len(re.findall(r"data-metric=(\w+)", text)) == 3
    assert f"s3://{s3_bucket}/run" in text


def test_report_of_an_unreachable_s3_root_fails_with_the_uri(tmp_path, moto_s3, s3_bucket, capsys):
    state_file = tmp_path / "local" / "state.json"
    save_state(state_file, LocalState(name="gone", storage_uri=f"s3://{s3_bucket}-missing/run",
                                      spec={"storage": {"endpoint": moto_s3.endpoint}}))
    assert main(["report", str(state_file)]) == 1
    assert f"s3://{s3_bucket}-missing/run" in capsys.readouterr().err
