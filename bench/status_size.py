"""SAILRun status size and `decide` cost over a long run: R rounds x S shards, every phase retried once.

Drives the operator's pure planner (`sail_operator.planner.decide.decide`) through a whole run
the way the kube executor does (observe -> decide -> act), playing the Job controller: each Job
the planner creates first fails with an infrastructure cause (a preemption: the retry the
budget allows), its second attempt succeeds with one termination summary per shard carrying
8 metrics. After every decision the status is serialised as the API server stores it (camelCase
JSON) and its size recorded. etcd's object limit is 1.5 MiB; the status is bounded by
`MAX_ITERATION_HISTORY` iterations of history.

    .venv/bin/python bench/status_size.py --rounds 50 --shards 16 --out bench-out/status-size.json
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_repo_paths, describe_machine, write_json  # noqa: E402

add_repo_paths()
ETCD_LIMIT = 1_572_864  # bytes (1.5 MiB): the API server's default object size limit


def build_spec(rounds: int, shards: int):
    from sail_api.spec import SAILRunSpec

    return SAILRunSpec.model_validate({
        "model": {"uri": "s3://models/sd15"}, "seedPairs": {"uri": "s3://data/seed.parquet", "limit": 50000},
        "prompts": {"uri": "s3://data/prompts.parquet"}, "sail": {"rounds": rounds, "promptsPerRound": 20000},
        "storage": {"uri": "s3://runs/long-run"},
        "parallelism": {"generateShards": shards, "annotateShards": shards, "trainNodes": 2, "gpusPerNode": 8},
        "failurePolicy": {"appRetries": 2, "infraRetries": 1000, "backoff": {"initialSeconds": 10, "maxSeconds": 60}},
    })


def run(rounds: int, shards: int) -> dict:
    from sail_api.phases import PhaseSummary
    from sail_api.status import SAILRunStatus
    from sail_operator.planner.decide import decide
    from sail_operator.planner.model import (
        AttemptObservation,
        AttemptState,
        CreatePhaseJob,
        DeletePhaseJob,
        FailureCause,
        Observed,
    )

    spec, status, jobs = build_spec(rounds, shards), SAILRunStatus(), {}
    now = datetime(2026, 12, 5, tzinfo=UTC)
    sizes, decide_seconds, failed_once = [], [], set()
    for _ in range(20 * (rounds + 1) * 8):
        observed = Observed(name="long-run", namespace="ns", uid="uid-1", generation=1, spec=spec, spec_error=None,
                            status=status, attempts=tuple(jobs.values()))
        started = time.perf_counter()
        decision = decide(observed, now)
        decide_seconds.append(time.perf_counter() - started)
        status = decision.status
        sizes.append(len(status.model_dump_json(by_alias=True, exclude_none=True)))
        if status.state in ("Succeeded", "Failed"):
            break
        for action in decision.actions:
            if isinstance(action, CreatePhaseJob):
                jobs[action.name] = AttemptObservation(action.name, action.iteration, action.phase, action.attempt,
                                                       AttemptState.RUNNING, created_at=now)
            elif isinstance(action, DeletePhaseJob):
                jobs.pop(action.name, None)
        now += timedelta(minutes=30)
        for name, job in list(jobs.items()):
            if job.state is not AttemptState.RUNNING:
                continue
            key = (job.iteration, job.phase)
            if key not in failed_once:
                failed_once.add(key)
                jobs[name] = AttemptObservation(name, job.iteration, job.phase, job.attempt, AttemptState.FAILED,
                                                cause=FailureCause.INFRA, message="preempted (DisruptionTarget)",
                                                created_at=job.created_at, finished_at=now)
                continue
            count = shards if job.phase.value in ("generate", "annotate") else 1
            summaries = tuple(PhaseSummary(
                phase=job.phase, iteration=job.iteration, shard=f"{k}/{count}" if count > 1 else None,
                outcome="committed",
                manifest_uri=f"s3://runs/long-run/iter-{job.iteration:03d}/{job.phase.value}/shard-{k:05d}/_SUCCESS.json",
                metrics={f"metric_{i}": 0.123456789 * i for i in range(8)}) for k in range(count))
            jobs[name] = AttemptObservation(name, job.iteration, job.phase, job.attempt, AttemptState.SUCCEEDED,
                                            summaries=summaries, created_at=job.created_at, started_at=job.created_at,
                                            finished_at=now)
    tail = decide_seconds[-50:]
    return {"rounds": rounds, "shards": shards, "state": str(status.state), "decisions": len(sizes),
            "max_status_bytes": max(sizes), "final_status_bytes": sizes[-1], "etcd_limit_bytes": ETCD_LIMIT,
            "share_of_etcd_limit": max(sizes) / ETCD_LIMIT, "restarts": status.restarts.model_dump(),
            "iterations_kept": len(status.iterations),
            "decide_ms_first_50": 1000 * sum(decide_seconds[:50]) / min(50, len(decide_seconds)),
            "decide_ms_last_50": 1000 * sum(tail) / len(tail)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args.rounds, args.shards)
    write_json(args.out, {"machine": describe_machine(), **result})
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0 if result["state"] == "Succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
