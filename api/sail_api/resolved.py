"""The resolved run file: what every phase receives from its executor (`--spec`).

It carries the algorithm spec with all defaults filled in, plus the storage connection
facts a phase needs (no credentials: those come from the standard AWS environment). The
first phase commits it as run.json; later phases refuse to run if their digest differs.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from sail_api.spec import AlgorithmSpec, ApiModel, PerformanceSpec, SAILRun


class StorageConnection(ApiModel):
    """The run root and how to reach it, carried once: every phase opens its stores with
    `sail_api.storage.open_store(uri, <this>)` (it is a `sail_api.storage.Connection`)."""

    uri: str = Field(description="Run root URI.")
    endpoint: str | None = Field(None, description="S3 endpoint URL.")
    region: str | None = Field(None, description="S3 region.")


class ResolvedRun(ApiModel):
    name: str = Field(description="Run name.")
    namespace: str | None = Field(None, description="Namespace on a cluster.")
    algorithm: AlgorithmSpec = Field(description="Algorithm spec with defaults resolved.")
    storage: StorageConnection = Field(description="Where the run lives.")
    performance: PerformanceSpec = Field(
        default_factory=PerformanceSpec, description="Trainer speed levers (execution: not in the digest)."
    )
    precision_override: str | None = Field(
        None, description="Executor-chosen precision (e.g. fp32 on a CPU-only machine); not part of the digest."
    )

    def digest(self) -> str:
        return compute_algorithm_digest(self.algorithm)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


# Fields of the algorithm part that may change while a run goes on: raising the rounds target
# extends the run (docs/method.md: the rounds target is not part of the algorithm) without changing
# what any committed phase computed.
DIGEST_EXCLUDED_SAIL_FIELDS = frozenset({"rounds"})
# Fields added after runs existed: left out of the digest while at their default, so a run
# started before the field existed keeps its digest (and its committed phases) on upgrade.
DIGEST_OMITTED_AT_DEFAULT_SAIL_FIELDS = frozenset({"rewardTimesteps", "annotationPrecision"})

# `validation` is safe there although its default holds pairs out: which pairs are held out is
# decided once, by the iteration-0 mixup, and committed in its seed index; every later phase
# follows that record, so a run whose step 0 predates the field keeps training on all its pairs.
DIGEST_OMITTED_AT_DEFAULT_SAIL_FIELDS = DIGEST_OMITTED_AT_DEFAULT_SAIL_FIELDS | {"validation"}


def compute_algorithm_digest(algorithm: AlgorithmSpec) -> str:
    canonical = json.dumps(_digest_body(algorithm), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# What may change once a run has started (the rest of the algorithm part is fixed by its digest).
ALLOWED_EDITS = (
    "sail.rounds (raise it to extend the run), startIteration, suspend, and the execution part "
    "(resources, parallelism, performance, failurePolicy, activeDeadlineSeconds, template, queueName)"
)


def _digest_body(algorithm: AlgorithmSpec) -> dict:
    body = algorithm.model_dump(mode="json", by_alias=True)
    defaults = type(algorithm.sail)().model_dump(mode="json", by_alias=True)
    if body.get("evaluation") is None:  # opt-in, added after runs existed: absent keeps their digest
        body.pop("evaluation", None)
    body["sail"] = {k: v for k, v in body["sail"].items() if k not in DIGEST_EXCLUDED_SAIL_FIELDS
                    and not (k in DIGEST_OMITTED_AT_DEFAULT_SAIL_FIELDS and v == defaults[k])}
    return body


def _flatten(value: object, path: str, out: dict[str, object]) -> dict[str, object]:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{path}.{key}", out)
    else:
        out[path] = value
    return out


def compute_algorithm_differences(committed: AlgorithmSpec, ours: AlgorithmSpec) -> list[str]:
    """`spec.<field>: <committed> -> <ours>` for each digest field that differs (sorted); [] when equal."""
    theirs_flat = _flatten(_digest_body(committed), "spec", {})
    ours_flat = _flatten(_digest_body(ours), "spec", {})
    return [f"{key}: {json.dumps(theirs_flat.get(key))} -> {json.dumps(ours_flat.get(key))}"
            for key in sorted(set(theirs_flat) | set(ours_flat)) if theirs_flat.get(key) != ours_flat.get(key)]


def build_resolved_run(run: SAILRun, storage_uri: str) -> ResolvedRun:
    storage = run.spec.storage
    return ResolvedRun(
        name=run.metadata.name,
        namespace=run.metadata.namespace,
        algorithm=run.spec.algorithm(),
        storage=StorageConnection(uri=storage_uri, endpoint=storage.endpoint, region=storage.region),
        performance=run.spec.performance,
    )
