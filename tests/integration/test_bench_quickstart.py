"""bench/quickstart.py measures `sail run` per phase: on a tiny step-0-only run it writes one row per phase
with a wall time from the state file and a peak RSS sampled from the phase's process."""

from __future__ import annotations

import json

import pytest
import yaml

from bench import quickstart
from tests.builders.sailrun_spec import build_sailrun_dict
from tests.builders.tiny_pipeline import (
    build_tiny_algorithm,
    build_tiny_prompts,
    build_tiny_sd15,
    build_tiny_seed_pairs,
)


def test_identify_phase_reads_the_trainer_command_line():
    argv = ["/usr/bin/python", "-m", "sail_trainer", "train", "--run", "/r", "--iteration", "2", "--spec", "s"]
    assert quickstart.identify_phase(argv) == ("train", 2)
    assert quickstart.identify_phase(["python", "-m", "sail_operator", "run", "x.yaml"]) is None


@pytest.mark.slow  # two trainer processes, each importing torch: ~11 s on an idle 2-core machine
def test_quickstart_bench_measures_each_phase_of_a_tiny_run(tmp_path):
    algorithm = build_tiny_algorithm(
        str(build_tiny_sd15(tmp_path / "model")), str(build_tiny_seed_pairs(tmp_path / "seed", 4)),
        str(build_tiny_prompts(tmp_path / "prompts.txt", 8)), rounds=0, train={"step0Steps": 1})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(build_sailrun_dict("bench-tiny", algorithm)))
    out = tmp_path / "quickstart.json"

    code = quickstart.main(["--config", str(config), "--storage", str(tmp_path / "run"), "--poll", "0.05",
                            "--out", str(out)])

    doc = json.loads(out.read_text())
    assert code == 0, doc["log_tail"]
    assert [(r["iteration"], r["phase"]) for r in doc["rows"]] == [(0, "mixup"), (0, "train")]
    for row in doc["rows"]:
        assert row["wall_s"] > 0 and row["result"] == "Succeeded", row
        assert row["processes"] >= 1 and row["peak_rss_mib"] > 50, row  # a python with torch imported
    assert doc["wall_s"] >= doc["phases_wall_s"]
