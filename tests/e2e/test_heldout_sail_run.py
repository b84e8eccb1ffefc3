"""Held-out numbers end to end: `sail run` (tiny SD1.5, step 0 + 1 round, 2 annotate shards), then
`sail status`, `sail report` and `sail export` read them as a user would.

The numbers travel trainer manifest -> phase summary -> executor -> status (state.json): the
test checks they arrive unchanged there (judge trust reported by shard 0 only, averaged over
the shards that report it), and that the status text, the report and the export use them.
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
from sail_api.storage import LocalStore

# One `sail run` (7 trainer starts, 2 annotate shards) shared by the module's tests (module fixture;
# the xdist group keeps them on one worker so it runs once).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heldout_sail_run")]


def sail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sail_operator", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    from tests.builders.tiny_pipeline import (
        build_tiny_algorithm,
        build_tiny_prompts,
        build_tiny_sd15,
        build_tiny_seed_pairs,
    )

    folder = tmp_path_factory.mktemp("heldout-run")
    build_tiny_sd15(folder / "model")
    build_tiny_seed_pairs(folder / "seed")
    build_tiny_prompts(folder / "prompts.txt")
    algorithm = build_tiny_algorithm("model", "seed/pairs.jsonl", "prompts.txt", validation={"fraction": 0.25})
    body = {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "tiny-heldout"},
            "spec": {**algorithm, "parallelism": {"annotateShards": 2, "gpusPerNode": 0}}}
    run_file = folder / "run.yaml"
    run_file.write_text(yaml.safe_dump(body, sort_keys=False))
    done = sail("run", str(run_file), cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return run_file, folder / ".sail" / "tiny-heldout"


def test_status_gets_the_manifests_numbers_through_the_phase_summaries(finished_run):
    _, root = finished_run
    state = json.loads((root / "local" / "state.json").read_text())
    metrics = {(it["iteration"], p["phase"]): p["metrics"] for it in state["status"]["iterations"] for p in it["phases"]}
    store, layout = LocalStore(str(root)), RunLayout(str(root))
    for iteration in (0, 1):
        committed = store.read_manifest(layout.phase_dir(iteration, Phase.TRAIN)).metrics
        assert metrics[(iteration, "train")]["heldout_accuracy_vs_base"] == committed["heldout_accuracy_vs_base"]
    shard0 = store.read_manifest(layout.shard_dir(1, Phase.ANNOTATE, 0, 2)).metrics
    shard1 = store.read_manifest(layout.shard_dir(1, Phase.ANNOTATE, 1, 2)).metrics
    assert "judge_trust" not in shard1, "one shard measures the judge; the others do not repeat the work"
    assert metrics[(1, "annotate")]["judge_trust"] == shard0["judge_trust"]


def test_status_report_and_export_answer_did_it_get_better(finished_run, tmp_path):
    run_file, root = finished_run
    status = sail("status", str(root), cwd=root)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any(line.startswith(("Better than the base", "Not measurably better")) for line in lines), status.stdout
    assert any(line.split()[:2] == ["round", "1"] and "%" in line for line in lines), status.stdout
    report = sail("report", str(root), "--out", str(tmp_path / "r.html"), cwd=root)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert "id=verdict" in page and "id=heldout" in page and "id=comparison" in page
    exported = sail("export", str(run_file), str(tmp_path / "best"), "--iteration", "best", cwd=root)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "best" / "README.md").is_file() and (tmp_path / "best" / "model_index.json").is_file()
