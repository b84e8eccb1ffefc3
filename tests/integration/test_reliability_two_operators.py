"""Two operator processes against one API server for a whole multi-run workload.

A second operator happens: a scaled Deployment, a zombie pod on a partitioned node, `sail
operator` started from a laptop. Measured here, from the API server's own request log: Job POSTs
made more than once, events posted more than once (same run, reason and message), and status
writes that moved a run's progress backwards. Both layers are exercised: leader election on a
Lease (`--no-standalone`, what the chart runs), and two `--standalone` processes where only the
resourceVersion precondition of every status write stands between them. Figures in
docs/reliability.md ("Two operators").
"""

from __future__ import annotations

import time

import pytest

from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.builders.sailrun_objects import planned_jobs
from tests.integration.test_operator_cluster import _duplicates
from tests.integration.test_operator_kube import wait_state

NS = "default"
RUNS = 6


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["leader-election", "precondition-only"])
def test_two_operators_for_a_whole_workload_duplicate_nothing(kube_cluster, job_controller, operator_process, mode):
    extra = ("--no-standalone", "--lease-namespace", NS) if mode == "leader-election" else ()
    job_controller(mode="instant", delay=0.2)
    first = operator_process(*extra).start()
    second = operator_process(*extra).start()
    names = [f"w{i}" for i in range(RUNS)]
    started = time.monotonic()
    for name in names:
        kube_cluster.create_run(build_run(name, rounds=1))
    for name in names:
        wait_state(kube_cluster, name, "Succeeded", first, timeout=300)
    elapsed = time.monotonic() - started
    posts, events, backwards = _duplicates(kube_cluster)
    jobs = len(kube_cluster.job_creations())
    print(f"\n{mode}: {RUNS} runs, {jobs} Job POSTs in {elapsed:.1f}s: duplicate Job POSTs {posts}, "
          f"duplicate events {events}, backwards status writes {backwards}, "
          f"status writes {len(kube_cluster.emulator.status_writes)}, "
          f"409 refusals {sum(1 for status, _ in kube_cluster.emulator.refused if status == 409)}")
    assert (posts, events, backwards) == (0, 0, 0)
    assert sorted(kube_cluster.job_creations()) == sorted(j for n in names for j in planned_jobs(n, 1))
    assert first.alive and second.alive
