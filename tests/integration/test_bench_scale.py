"""bench/scale.py at a tiny count on the moto S3 server: it runs every phase and measures what it says.

Benchmarks measure; this only checks that the benchmark works (each phase has a row per size,
S3 requests are counted by verb, objects and manifests are found, growth is computed). No timing
is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale


@pytest.mark.slow  # ~17 CPU s: one child process importing torch runs the six phases
def test_scale_bench_runs_every_phase_on_s3_at_tiny_counts(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    code = scale.main(["--sizes", "4", "--backends", "s3", "--candidates", "2", "--round-seed-pairs", "8",
                       "--batch", "8", "--work", str(tmp_path / "work"), "--out", str(out)])

    assert code == 0
    doc = json.loads(out.read_text())
    phases = ["mixup0", "train0", "generate", "annotate", "mixup", "train"]
    assert [r["phase"] for r in doc["rows"]] == phases
    for row in doc["rows"]:
        assert row["objects"] > 0 and row["manifests"] >= 1 and row["manifest_kib"] > 0, row
        assert row["s3_requests"].get("PUT", 0) > 0, row  # every phase writes, at least its commit
        assert row["peak_rss_mib"] > 0 and row["cpu_seconds"] >= 0, row
    (generate,) = [r for r in doc["rows"] if r["phase"] == "generate"]
    latents = 4 * 2 * 4 * 8 * 8 * 4  # prompts x candidates x fp32 latents of the tiny VAE (4 x 8 x 8)
    assert generate["s3_mib_in"] * 2**20 > latents and generate["stored_mib"] * 2**20 > latents
    assert doc["growth"] == []  # one size: nothing to grow from (tests below check the exponent)


def test_growth_exponent_is_one_for_linear_metrics() -> None:
    rows = [{"backend": "local", "shards": 1, "phase": "generate", "prompts": n, "seconds": 0.5 * n,
             "objects": 3} for n in (100, 400)]
    (growth,) = scale.compute_growth(rows, "prompts")
    assert growth["seconds_exp"] == 1.0 and growth["objects_exp"] == 0.0 and growth["peak_rss_mib_exp"] is None


def test_s3_verbs_tell_lists_and_batch_deletes_apart() -> None:
    def verb(method: str, path: str, query: str = "") -> str:
        return scale.CountingApp.verb({"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query})

    assert verb("GET", "/bucket", "list-type=2&prefix=run/") == "LIST"
    assert verb("GET", "/bucket/run/iter-001/generate/_SUCCESS.json") == "GET"
    assert verb("POST", "/bucket", "delete") == "DELETE_BATCH"
    assert verb("PUT", "/bucket/run/x") == "PUT"
