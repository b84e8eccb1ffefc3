"""A train killed with SIGKILL mid-way resumes from its last step checkpoint and commits validly.

The resumed run must end with exactly the weights of an uninterrupted run: model, optimizer,
scheduler and data position all come back from the checkpoint, and every per-pair draw is
seeded by its position.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import REPO_ROOT, create_tiny_run, phase_args, run_trainer_process

pytestmark = pytest.mark.slow
SETTINGS = {"train": {"step0Steps": 12, "checkpointEvery": 2}}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as stream:
        return subprocess.Popen([sys.executable, "-m", "sail_trainer", *args], stdout=stream, stderr=stream, env=env)


def test_sigkilled_train_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path / "a", **SETTINGS)
    reference = create_tiny_run(tmp_path / "b", model=run.model, **SETTINGS)
    for r in (run, reference):
        assert main(phase_args(r, "mixup", 0)) == 0
    assert main(phase_args(reference, "train", 0)) == 0

    layout = RunLayout(run.run_uri)
    steps_dir = Path(layout.phase_dir(0, Phase.TRAIN), "steps")
    proc = _start(phase_args(run, "train", 0), tmp_path / "killed.log")
    deadline = time.monotonic() + 240
    while not list(steps_dir.glob("step-*/_SUCCESS.json")):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no step checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = LocalStore(run.run_uri)
    assert not store.is_committed(layout.phase_dir(0, Phase.TRAIN)), "the train finished before it was killed"

    result = run_trainer_process(phase_args(run, "train", 0))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.summary["outcome"] == "committed"
    assert "resumed from" in result.stderr
    manifest = store.read_manifest(layout.phase_dir(0, Phase.TRAIN), verify=True)
    assert manifest.metrics["steps"] == 12
    history = json.loads(Path(resolve_committed(store, layout.phase_dir(0, Phase.TRAIN), "metrics.json")).read_text())
    assert [h["step"] for h in history] == [float(s) for s in range(1, 13)]

    weights = "unet/diffusion_pytorch_model.safetensors"
    resumed = load_file(Path(resolve_committed(store, layout.phase_dir(0, Phase.TRAIN), f"model/{weights}")))
    uninterrupted = load_file(Path(resolve_committed(LocalStore(reference.run_uri),
                                                     RunLayout(reference.run_uri).phase_dir(0, Phase.TRAIN),
                                                     f"model/{weights}")))
    assert resumed.keys() == uninterrupted.keys()
    assert all((resumed[k] - uninterrupted[k]).abs().max() <= 1e-6 for k in resumed)


def test_leftovers_of_a_crashed_attempt_are_never_committed_or_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path)
    layout = RunLayout(run.run_uri)
    folder = Path(layout.phase_dir(0, Phase.MIXUP))
    crashed = folder / "attempt-0123456789ab"  # a crashed attempt's prefix (each attempt writes under its own)
    crashed.mkdir(parents=True)
    (crashed / "mixture.json").write_text('{"entries": [["seed", 99')  # torn write of a crashed attempt
    (crashed / "seed-latents-00007.safetensors").write_bytes(b"stale")
    assert main(phase_args(run, "mixup", 0)) == 0
    store = LocalStore(run.run_uri)
    manifest = store.read_manifest(str(folder), verify=True)
    assert not any("seed-latents-00007" in f.path or f.path.startswith(crashed.name) for f in manifest.files)
    # Left in place on purpose (a live writer's prefix looks the same), never listed, never read.
    assert (crashed / "seed-latents-00007.safetensors").read_bytes() == b"stale"
    mixture = Path(resolve_committed(store, str(folder), "mixture.json"))
    assert mixture.parent.name == manifest.metadata["attempt"]
    assert len(json.loads(mixture.read_text())["entries"]) == 8
