"""bench/threads.py runs each OpenMP wait policy in its own child and reports one row per thread count.

One child process (it imports torch and loads the toy model of examples/toy/model): the
"default" policy, checked to reach the child as unset although the parent has a policy.
"""

from __future__ import annotations

import json

import pytest

from bench import threads


@pytest.mark.slow  # a child process importing torch and sampling: ~40 s on the loaded 2-core machine
def test_threads_bench_default_policy_child_runs_unset_with_rows_for_1_and_2_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # as scripts/test.sh sets it: "default" must unset it
    out = tmp_path / "threads.json"

    assert threads.main(["--samples", "2", "--repeats", "1", "--policies", "default", "--out", str(out)]) == 0

    rows = json.loads(out.read_text())["rows"]
    assert [(r["policy"], r["threads"]) for r in rows] == [("default", 1), ("default", 2), ("default", 1), ("default", 2)]
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 for r in rows)
