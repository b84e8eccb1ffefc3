"""The driver every phase goes through (docs/storage.md).

1. Parse `--spec` (a ResolvedRun JSON); a bad file is BAD_SPEC naming the file and field.
2. run.json: the first phase writes it; later phases refuse (BAD_SPEC) if their algorithm
   digest differs from the committed one.
3. If the phase's (or shard's) output folder is already committed: outcome already_committed.
4. Each attempt writes under its own prefix `<output>/attempt-<id>/` (PhaseContext.attempt), so
   two writers of one folder never write the same key and the manifest lists the winner's paths.
   Other attempts' uncommitted prefixes are deleted, re-checking the commit before each delete
   (train keeps its step checkpoints and generate/annotate their parts: each is committed on its
   own, is attempt-prefixed inside, and is how they resume). A commit that appears meanwhile
   is kept: the outcome is already_committed.
5. The phase's `run(ctx)` writes its files and commits `_SUCCESS.json` last.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase, PhaseSummary
from sail_api.resolved import (
    ALLOWED_EDITS,
    ResolvedRun,
    compute_algorithm_differences,
    compute_algorithm_digest,
)
from sail_api.storage import AlreadyCommitted, Store, open_store
from sail_api.storage.resolve import is_attempt_dir
from sail_api.uris import same_root
from sail_trainer.errors import BadSpecError
from sail_trainer.logs import set_log_context
from sail_trainer.models.source import default_cache_dir
from sail_trainer.phases.context import PhaseContext

log = logging.getLogger(__name__)
SUMMARY_METRICS = 12  # the phase's metrics in its summary (termination message: 4 KiB at most)


@dataclass(frozen=True)
class PhaseRequest:
    """What the command line asked for."""

    phase: Phase
    run_uri: str
    iteration: int
    spec_path: str
    shard: int | None = None
    shards: int | None = None


def read_resolved_spec(path: str) -> ResolvedRun:
    """Parse the `--spec` file; BadSpecError naming the file and the failing field."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadSpecError(f"--spec {path}: cannot read the resolved spec file: {exc.strerror or exc}") from exc
    try:
        return ResolvedRun.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadSpecError(f"--spec {path}: field {where}: {first.get('msg')} ({exc.error_count()} error(s))") from exc


def check_run_root(request: PhaseRequest, resolved: ResolvedRun) -> None:
    """The run root comes from the resolved run (with its connection); `--run` must name the same place.

    `--run` stays on the command line so `ps` and `kubectl describe pod` show which run a process
    writes, but it is a cross-check, not a second source: a mismatch is an executor bug or a
    hand-edited command, and writing to either root could split a run, so it is BAD_SPEC.
    """
    if not same_root(request.run_uri, resolved.storage.uri):
        raise BadSpecError(
            f"--run {request.run_uri} differs from storage.uri {resolved.storage.uri} in --spec {request.spec_path}; "
            "both name the run root: pass the spec's storage.uri as --run (the executors always do)"
        )


def ensure_run_file(store: Store, run_file: str, resolved: ResolvedRun, *, may_write: bool) -> None:
    """Write run.json if absent (first phase); refuse a spec whose digest differs from it."""
    if not store.exists(run_file) and may_write:
        store.write_bytes(run_file, resolved.to_json().encode())
        log.info("wrote %s (digest %s)", store.uri(run_file), resolved.digest())
    if not store.exists(run_file):
        return
    committed = ResolvedRun.model_validate_json(store.read_bytes(run_file))
    theirs, ours = compute_algorithm_digest(committed.algorithm), resolved.digest()
    if theirs != ours:
        changed = "; ".join(compute_algorithm_differences(committed.algorithm, resolved.algorithm))
        raise BadSpecError(
            f"--spec: the algorithm differs from {store.uri(run_file)} ({changed}); the algorithm part of a run is "
            f"fixed when it starts: undo those edits, or start a new run (new storage.uri) to change them; "
            f"allowed edits: {ALLOWED_EDITS}"
        )


# Always in the summary besides the first SUMMARY_METRICS others, so the operator's status gets them.
HEADLINE_METRIC_PREFIXES = ("heldout_", "judge_trust", "eval_")


def summarize(request: PhaseRequest, manifest: PhaseManifest, outcome: str, manifest_uri: str) -> PhaseSummary:
    headline = {k: v for k, v in manifest.metrics.items() if k.startswith(HEADLINE_METRIC_PREFIXES)}
    others = [(k, v) for k, v in manifest.metrics.items() if k not in headline]
    metrics = {**headline, **dict(others[:SUMMARY_METRICS])}
    extra = {k: v for k, v in manifest.metadata.items() if k in ("model_uri", "pairs", "steps")}
    return PhaseSummary(
        phase=request.phase, iteration=request.iteration,
        shard=None if request.shard is None else f"{request.shard}/{request.shards}",
        outcome=outcome, manifest_uri=manifest_uri, metrics=metrics, extra=extra,  # type: ignore[arg-type]
    )


def find_stale_attempts(output_dir: str, keys: list[str], ours: str) -> list[str]:
    """The attempt prefixes (`<output_dir>/attempt-<id>`) under an uncommitted folder other than ours.

    Only attempt prefixes are ever candidates: the marker, the resumable sub-folders (each
    committed on its own) and anything else are never deleted here.
    """
    base = output_dir.rstrip("/") + "/"
    found = set()
    for key in keys:
        if key.startswith(base):
            top = key[len(base):].split("/", 1)[0]
            if is_attempt_dir(top) and top != ours and "/" in key[len(base):]:
                found.add(join(output_dir, top))
    return sorted(found)


def _clean_leftovers(store: Store, ctx: PhaseContext) -> bool:
    """Check that the folder is still uncommitted; False when another writer committed it.

    Other attempts' prefixes are deliberately left in place: a prefix cannot tell a crashed
    attempt from a live one (operator and `sail run` on one run root, or a Job recreated while
    an old pod still runs), and deleting a live writer's files makes its commit fail. Leftovers
    are never listed in a manifest, so readers never see them; they only cost space
    (`find_stale_attempts` lists them for a garbage collector).
    """
    stale = find_stale_attempts(store.uri(ctx.output_dir), [store.uri(k) for k in store.list(ctx.output_dir)],
                                ctx.attempt)
    if stale:
        log.info("leaving %d other attempt prefix(es) under %s untouched (never listed, never read)",
                 len(stale), store.uri(ctx.output_dir))
    if store.is_committed(ctx.output_dir):
        log.info("%s was committed by another writer after our check: keeping it, nothing more removed",
                 store.uri(ctx.output_dir))
        return False
    return True


def execute_phase(request: PhaseRequest, *, rank: int = 0, world_size: int = 1) -> PhaseSummary:
    """Run one phase attempt end to end (see the module docstring); exceptions propagate."""
    set_log_context(run=None, iteration=request.iteration, phase=request.phase.value,
                    shard=None if request.shard is None else f"{request.shard}/{request.shards}")
    resolved = read_resolved_spec(request.spec_path)
    set_log_context(run=resolved.name)
    check_run_root(request, resolved)
    store = open_store(resolved.storage.uri, resolved.storage)
    ctx = PhaseContext(
        resolved=resolved, run_uri=store.uri(""), iteration=request.iteration, phase=request.phase,
        store=store, cache_dir=default_cache_dir(), work_dir=Path(tempfile.mkdtemp(prefix="sail-")),
        shard=request.shard, shards=request.shards, rank=rank, world_size=world_size,
    )
    try:
        return _run_in_context(request, ctx, rank)
    finally:
        _remove_tree(ctx.work_dir)


def _run_in_context(request: PhaseRequest, ctx: PhaseContext, rank: int) -> PhaseSummary:
    store = ctx.store
    ensure_run_file(store, ctx.layout.run_file, ctx.resolved, may_write=rank == 0)
    manifest_uri = store.uri(join(ctx.output_dir, "_SUCCESS.json"))
    if store.is_committed(ctx.output_dir):
        log.info("%s is already committed: nothing to do", store.uri(ctx.output_dir))
        return summarize(request, store.read_manifest(ctx.output_dir), "already_committed", manifest_uri)
    if rank == 0 and not _clean_leftovers(store, ctx):
        return summarize(request, store.read_manifest(ctx.output_dir), "already_committed", manifest_uri)
    module = importlib.import_module(f"sail_trainer.phases.{request.phase.value}_phase")
    try:
        manifest = module.run(ctx)
    except AlreadyCommitted as exc:
        log.info("another attempt committed %s first; keeping its outputs", store.uri(ctx.output_dir))
        manifest = exc.manifest or store.read_manifest(ctx.output_dir)
        return summarize(request, manifest, "already_committed", manifest_uri)
    return summarize(request, manifest, "committed", manifest_uri)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def dump_summary(summary: PhaseSummary) -> str:
    """Compact JSON of the summary (kept under the termination-message limit by the CLI)."""
    return json.dumps(summary.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))


def env_rank() -> tuple[int, int]:
    """(rank, world size) from the torchrun/Kubeflow environment; (0, 1) outside one."""
    rank = int(os.environ.get("RANK", os.environ.get("PET_NODE_RANK", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return rank, world
