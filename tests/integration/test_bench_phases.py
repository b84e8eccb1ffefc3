"""bench/phases.py runs in its tiniest configuration and writes its JSON (benchmarks measure; this only
checks that the benchmark works: every phase has a baseline and a project row, numbers are finite, and
the project path reproduces the plain loop's outputs on the same inputs)."""

from __future__ import annotations

import json
import math

import pytest

from bench import phases


# tiny-sdxl also takes the train measurement's CUDA branch (one path's UNets resident at a time)
@pytest.mark.parametrize(("shape", "extra"), [("tiny", []), ("tiny-sdxl", ["--one-at-a-time", "yes"])])
def test_phases_bench_tiny_cpu_writes_rows_for_every_phase(tmp_path, capsys, shape, extra):
    out = tmp_path / "phases.json"
    code = phases.main(["--shape", shape, "--repeats", "1", "--warmup", "0", "--models", str(tmp_path / "models"),
                        "--out", str(out), *extra])

    assert code == 0
    doc = json.loads(out.read_text())
    assert {(r["phase"], r["path"]) for r in doc["rows"]} == {
        (p, path) for p in ("generate", "annotate", "train") for path in ("baseline", "project")}
    for row in doc["rows"]:
        assert math.isfinite(row["throughput"]) and row["throughput"] > 0, row
        assert row["peak_mem_mib"] > 0, row
    project = [r for r in doc["rows"] if r["path"] == "project"]
    assert all(r["within_tolerance"] for r in project), [(r["phase"], r["rel_diff"]) for r in project]
    assert doc["unet_fwd_flops"] > 0 and doc["machine"]["cpu_model"]
    assert "generate" in capsys.readouterr().out


def test_phases_bench_rejects_an_unknown_phase(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        phases.main(["--phases", "generate,sample", "--models", str(tmp_path)])
