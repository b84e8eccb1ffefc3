"""`sail run` end to end with the real trainer on a tiny SD1.5 pipeline: step 0 + 1 round.

The run is interrupted twice in the middle of a phase (SIGINT during step 0's train, then
SIGKILL of `sail run` during round 1's sharded generate), run again each time, and must
complete with every phase (and shard) committed exactly once: one manifest per phase,
attempt 1 everywhere in the state file, and no committed phase started again.
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
import yaml

from sail_api.layout import RunLayout
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase

# Heavy on purpose (issue 17): the only test of the real trainer killed mid-phase under `sail run`
# (11 trainer starts); each rerun also waits out the planner's missing-Job grace (<= 10 s).
pytestmark = pytest.mark.slow
RUN_NAME = "tiny"


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    from tests.builders.tiny_pipeline import (
        build_tiny_algorithm,
        build_tiny_prompts,
        build_tiny_sd15,
        build_tiny_seed_pairs,
    )

    folder = tmp_path_factory.mktemp("sailrun")
    build_tiny_sd15(folder / "model")
    build_tiny_seed_pairs(folder / "seed")
    build_tiny_prompts(folder / "prompts.txt")
    body = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": RUN_NAME},
            "spec": {**build_tiny_algorithm("model", "seed/pairs.jsonl", "prompts.txt"),
                     "parallelism": {"generateShards": 2, "annotateShards": 2, "gpusPerNode": 0}}}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _stop_leftover_sail_processes():
    """A failing assertion must not leave a `sail run` (and its phases) running."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


def start_sail(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sail_operator", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    STARTED.append(process)
    return process


def read_until(process: subprocess.Popen[str], marker: str, seen: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"`{marker}` never appeared; output:\n{''.join(seen)}")


def wait_for_output(folder: Path, files: list[str], timeout: float = 120.0) -> None:
    """The phase processes are running: each shard log has output (the trainer has started)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in files):
            return
        time.sleep(0.1)
    raise AssertionError(f"no output in {folder} after {timeout}s")


def phase_processes(spec_file: Path) -> list[int]:
    """Live processes started with this run's --spec file."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(spec_file).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def expected_manifests(root: Path) -> list[Path]:
    layout = RunLayout(str(root))
    out = [layout.manifest_uri(0, Phase.MIXUP), layout.manifest_uri(0, Phase.TRAIN)]
    for phase in (Phase.GENERATE, Phase.ANNOTATE):
        out += [layout.manifest_uri(1, phase, k, 2) for k in range(2)]
    out += [layout.manifest_uri(1, Phase.MIXUP), layout.manifest_uri(1, Phase.TRAIN)]
    return [Path(p) for p in out]


def test_interrupted_twice_resumed_and_every_phase_committed_once(run_file):
    folder = run_file.parent
    root = folder / ".sail" / RUN_NAME
    attempts = root / "local" / "attempts"

    first: list[str] = []
    proc = start_sail("run", run_file.name, "--workers", "2", cwd=folder)
    read_until(proc, f"started {RUN_NAME}-i000-train-a1", first)
    wait_for_output(attempts / f"{RUN_NAME}-i000-train-a1", ["shard-0.log"])
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    first.append(rest)
    assert proc.returncode == 130, "".join(first)
    assert "interrupted" in "".join(first)
    state = json.loads((root / "local" / "state.json").read_text())
    assert state["status"]["current"]["jobName"] in (f"{RUN_NAME}-i000-train-a1", f"{RUN_NAME}-i001-generate-a1")
    running = [a for a in state["attempts"].values() if a["state"] in ("pending", "running")]
    assert running == []  # the interrupted attempt is forgotten, to be re-created by name

    second: list[str] = []
    proc = start_sail("run", run_file.name, "--workers", "2", cwd=folder)
    read_until(proc, f"started {RUN_NAME}-i001-generate-a1", second)
    wait_for_output(attempts / f"{RUN_NAME}-i001-generate-a1", ["shard-0.log", "shard-1.log"])
    proc.kill()  # SIGKILL: no chance to clean up; its phase processes get SIGTERM from the kernel
    proc.communicate(timeout=60)
    assert f"started {RUN_NAME}-i000-mixup" not in "".join(second)  # committed step 0 mixup not rerun
    end = time.monotonic() + 30
    while phase_processes(root / "local" / "spec.json") and time.monotonic() < end:
        time.sleep(0.2)
    assert phase_processes(root / "local" / "spec.json") == [], "phase processes outlived a SIGKILLed sail run"

    third = start_sail("run", run_file.name, "--workers", "2", cwd=folder)
    out, _ = third.communicate(timeout=400)
    assert third.returncode == 0, out
    assert f"started {RUN_NAME}-i000-" not in out  # step 0 was committed before the kill: not started again

    state = json.loads((root / "local" / "state.json").read_text())
    status = state["status"]
    assert status["state"] == "Succeeded" and status["progress"]["percent"] == 100
    phases = [(r["iteration"], p["phase"], p["result"], p["attempts"]) for r in status["iterations"] for p in r["phases"]]
    assert phases == [(0, "mixup", "Succeeded", 1), (0, "train", "Succeeded", 1), (1, "generate", "Succeeded", 1),
                      (1, "annotate", "Succeeded", 1), (1, "mixup", "Succeeded", 1), (1, "train", "Succeeded", 1)]
    assert status["restarts"] == {"app": 0, "infra": 0}
    for manifest_path in expected_manifests(root):
        manifest = PhaseManifest.model_validate_json(manifest_path.read_text())
        assert manifest.files, manifest_path
        for entry in manifest.files:
            assert (manifest_path.parent / entry.path).stat().st_size == entry.size
    for phase_dir in (root / "iter-001" / "generate", root / "iter-001" / "annotate"):
        assert sorted(p.name for p in phase_dir.iterdir()) == ["shard-00000-of-00002", "shard-00001-of-00002"]
    # the checkpoint is the committed attempt's model folder (train writes under attempt-<id>/)
    train1 = PhaseManifest.model_validate_json((root / "iter-001" / "train" / "_SUCCESS.json").read_text())
    model = root / "iter-001" / "train" / train1.metadata["attempt"] / "model"
    assert status["checkpoint"]["uri"] == str(model)
    assert (model / "model_index.json").is_file()

    shown = start_sail("status", str(root), cwd=folder).communicate(timeout=60)[0]
    assert "Succeeded" in shown and "acc " in shown and str(model) in shown

    report = start_sail("report", run_file.name, cwd=folder)
    report_out = report.communicate(timeout=120)[0]
    assert report.returncode == 0, report_out
    html = Path(report_out.strip().splitlines()[-1]).read_text()
    for iteration in ("base", "0", "1"):
        assert f"data-iteration='{iteration}'" in html
    assert html.count("data:image/png;base64,") >= 3 + 3  # three grids, three metric plots
