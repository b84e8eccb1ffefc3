"""Two gloo processes train like one process at the same global batch.

The two processes are started the way a train pod starts them: plain `sail-trainer train`
with the operator's PET_* environment, which re-runs itself under torchrun.

One process runs 2 micro batches of 2 with gradient accumulation; two processes run one
micro batch of 2 each and average gradients with DDP. Per-pair draws are seeded by global
position, so the loss curves and final weights agree up to floating-point reduction order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import REPO_ROOT, create_tiny_run, phase_args

pytestmark = pytest.mark.slow
SETTINGS = {"train": {"step0Steps": 3, "effectiveBatch": 4, "microBatch": 2, "checkpointEvery": 2}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _history(run_uri: str) -> list[dict]:
    train = RunLayout(run_uri).phase_dir(0, Phase.TRAIN)
    return json.loads(Path(resolve_committed(LocalStore(run_uri), train, "metrics.json")).read_text())


def test_two_gloo_processes_match_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    single = create_tiny_run(tmp_path / "one", **SETTINGS)
    double = create_tiny_run(tmp_path / "two", model=single.model, **SETTINGS)
    for run in (single, double):
        assert main(phase_args(run, "mixup", 0)) == 0
    assert main(phase_args(single, "train", 0)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT),
           "SAIL_TERMINATION_LOG": str(tmp_path / "termination-log"), "PET_NNODES": "1",
           "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
           "PET_MASTER_PORT": str(_free_port())}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "sail_trainer", *phase_args(double, "train", 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 3 and {s["outcome"] for s in summaries} == {"committed"}  # 2 workers + launcher
    assert json.loads((tmp_path / "termination-log").read_text()) == summaries[-1]
    assert "2 process(es)" in proc.stderr

    one, two = _history(single.run_uri), _history(double.run_uri)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["implicit_accuracy"] == b["implicit_accuracy"]
    assert one[-1]["loss"] != one[0]["loss"], "the loss curve is flat: the comparison would prove nothing"

    weights = "unet/diffusion_pytorch_model.safetensors"
    w1, w2 = (load_file(Path(resolve_committed(LocalStore(r.run_uri), RunLayout(r.run_uri).phase_dir(0, Phase.TRAIN),
                                               f"model/{weights}"))) for r in (single, double))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
