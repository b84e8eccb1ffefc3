"""bench/status_size.py drives the planner through a whole run with a retry per phase (it only checks the
bench works: the run finishes, every phase was retried once, the status size is recorded)."""

from __future__ import annotations

from bench import status_size


def test_status_size_bench_finishes_a_run_with_one_retry_per_phase() -> None:
    result = status_size.run(rounds=2, shards=3)
    assert result["state"] == "Succeeded"
    assert result["restarts"] == {"app": 0, "infra": 2 + 4 * 2}  # step 0's 2 phases + 4 per round, once each
    assert 0 < result["max_status_bytes"] < status_size.ETCD_LIMIT
    assert result["iterations_kept"] == 3
