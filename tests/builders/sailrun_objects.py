"""SAILRun API objects and their planned Jobs, for tests against the Kubernetes emulator."""

from __future__ import annotations

from typing import Any

from sail_api.phases import phases_of_iteration
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body, merge_spec


def build_sailrun_object(name: str, rounds: int = 2, namespace: str = "default",
                         **spec_overrides: Any) -> dict[str, Any]:
    """A valid SAILRun on s3:// storage with fast retries; dict overrides are merged one level deep."""
    spec = build_spec_body(
        model="s3://models/tiny-sd15", seed_pairs="s3://data/seed.jsonl", prompts="s3://data/prompts.txt",
        storage=f"s3://runs/{name}", sail={"rounds": rounds},
        parallelism={"generateShards": 2, "annotateShards": 1},
        failurePolicy={"appRetries": 2, "backoff": {"initialSeconds": 0.2, "maxSeconds": 1, "jitter": 0.0}},
    )
    spec = merge_spec(spec, storage={"region": "us-east-1", "credentialsSecretRef": {"name": "s3-creds"}})
    return build_sailrun_dict(name, merge_spec(spec, **spec_overrides), namespace=namespace)


def planned_jobs(run: str, rounds: int) -> list[str]:
    """The Job names of a run that succeeds first time, in plan order."""
    return [build_job_name(run, i, phase, 1) for i in range(rounds + 1) for phase in phases_of_iteration(i)]
