"""`sail run` on a finished run whose `sail.rounds` was raised: the new round runs, nothing committed reruns.

Issue 19 item 2: a finished run printed "complete ..." and ignored the raised target (the planner
kept a Succeeded run finished). Real trainer, tiny SD1.5 pipeline: step 0 alone (rounds 0), then
rounds raised to 1. The same re-opening as 1 -> 2 with six trainer processes instead of ten
(issue 17: each one costs seconds of torch/diffusers import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sail_api.layout import RunLayout
from sail_api.phases import Phase

pytestmark = pytest.mark.slow


def sail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sail_operator", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600, check=False)


@pytest.fixture
def run_file(tmp_path) -> Path:
    from tests.builders.tiny_pipeline import (
        build_tiny_algorithm,
        build_tiny_prompts,
        build_tiny_sd15,
        build_tiny_seed_pairs,
    )

    build_tiny_sd15(tmp_path / "model")
    build_tiny_seed_pairs(tmp_path / "seed")
    build_tiny_prompts(tmp_path / "prompts.txt", n=8)
    body = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "tiny"},
            "spec": build_tiny_algorithm("model", "seed/pairs.jsonl", "prompts.txt", rounds=0, selfPairCap=2)}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def set_rounds(path: Path, rounds: int) -> None:
    body = yaml.safe_load(path.read_text())
    body["spec"]["sail"]["rounds"] = rounds
    path.write_text(yaml.safe_dump(body, sort_keys=False))


def test_raising_rounds_on_a_finished_run_extends_it_through_sail_run(run_file):
    folder = run_file.parent
    root = folder / ".sail" / "tiny"
    layout = RunLayout(str(root))
    first = sail("run", "run.yaml", cwd=folder)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "step 0 and 0 round" in first.stdout
    assert not (root / "iter-001").exists()
    committed = {p: p.stat().st_mtime_ns for p in root.glob("iter-000/**/_SUCCESS.json")}
    assert len(committed) >= 2  # step 0's mixup and train (and train step checkpoints)

    set_rounds(run_file, 1)
    assert "step 0 + 1 round)" in sail("validate", "run.yaml", cwd=folder).stdout
    second = sail("run", "run.yaml", cwd=folder)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "spec.sail.rounds raised to 1, continuing at round 1" in second.stdout
    assert "started tiny-i000" not in second.stdout and "started tiny-i001-generate" in second.stdout
    assert Path(layout.manifest_uri(1, Phase.TRAIN)).is_file()
    assert {p: p.stat().st_mtime_ns for p in committed} == committed  # nothing committed was redone

    mixup = json.loads(Path(layout.manifest_uri(1, Phase.MIXUP)).read_text())["metrics"]
    assert (mixup["self_annotated"], mixup["self_pairs"]) == (4, 2)  # item 9: self_pairs counts after the cap

    status = sail("status", str(root), cwd=folder)
    checkpoint = next(line for line in status.stdout.splitlines() if line.startswith("final model"))
    model = Path(checkpoint.split(": ", 1)[1])
    assert "iter-001" in str(model) and (model / "model_index.json").is_file()
    assert model.is_relative_to(root / "iter-001" / "train") and model.parent.name.startswith("attempt-")
