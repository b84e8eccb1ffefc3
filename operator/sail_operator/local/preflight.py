"""What `sail run` checks before any phase starts: inputs, storage, and that state and storage agree.

Everything that can be found out before compute is spent is found out here, in seconds:
- the local input files (exist, not empty, headers, prompt pool vs rounds x promptsPerRound:
  `sail_api.inputs`, the same checks `sail validate` makes);
- the run root: a local folder that can be created and written, or an s3:// root reachable
  within a few seconds (`PROBE_POLICY`); a missing bucket or refused credentials is
  permanent (never retried), an unreachable endpoint is reported at once;
- the run root against the local state: a `run.json` of another run, an algorithm that differs
  from the committed one (naming the fields and the edits that are allowed), or a state that
  says phases committed where the storage holds nothing.
Each problem is a `PreflightError` whose message says what to do; `permanent` tells bad input
(exit 2) from an unreachable storage (exit 1, try again later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sail_api.inputs import check_local_inputs
from sail_api.resolved import ALLOWED_EDITS, ResolvedRun, compute_algorithm_differences
from sail_api.spec import SAILRun
from sail_operator.local.paths import RunPaths
from sail_operator.local.state import LocalState

PROBE_CONNECT_SECONDS = 3.0
PROBE_READ_SECONDS = 5.0
RUN_FILE = "run.json"


@dataclass
class PreflightError(Exception):
    message: str
    permanent: bool = True

    def __str__(self) -> str:
        return self.message


def check_inputs(run: SAILRun) -> list[str]:
    """Problems with the run's local input files (URIs already resolved by build_local_run)."""
    return check_local_inputs(run.spec)


def read_committed_run(run: SAILRun, paths: RunPaths) -> ResolvedRun | None:
    """The run root's committed run.json (None before the first phase), after a short bounded probe."""
    root = paths.local_root
    if root is not None:
        return _read_local_run(root)
    return _read_remote_run(run, paths.storage_uri)


def _read_local_run(root: Path) -> ResolvedRun | None:
    where = "--storage / spec.storage.uri"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"{where}: cannot create the run root folder {root} ({exc.strerror or exc}); "
                             "choose a folder you can write, with --storage or spec.storage.uri") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise PreflightError(f"{where}: the run root folder {root} is not writable; choose a folder you can "
                             "write, with --storage or spec.storage.uri, or fix its permissions")
    run_file = root / RUN_FILE
    if not run_file.is_file():
        return None
    return _parse_run_file(run_file.read_bytes(), str(run_file))


def _read_remote_run(run: SAILRun, root: str) -> ResolvedRun | None:
    from sail_api.storage import (
        BucketNotFound,
        StorageError,
        StorageNotFound,
        StoragePermissionDenied,
        StorageUnavailable,
    )
    from sail_api.storage.retry import PROBE_POLICY
    from sail_api.storage.s3 import S3Store

    storage = run.spec.storage
    try:
        store = S3Store(root, storage, retries=PROBE_POLICY,
                        connect_timeout=PROBE_CONNECT_SECONDS, read_timeout=PROBE_READ_SECONDS)
        if not store.exists(RUN_FILE):
            return None
        return _parse_run_file(store.read_bytes(RUN_FILE), store.uri(RUN_FILE))
    except (BucketNotFound, StoragePermissionDenied) as exc:
        raise PreflightError(f"storage {root}: {exc} (not retried: no retry can fix it)") from exc
    except StorageUnavailable as exc:
        raise PreflightError(f"storage {root} is not reachable: {exc}; nothing was started", permanent=False) from exc
    except StorageNotFound:
        return None
    except StorageError as exc:
        raise PreflightError(f"storage {root}: {exc}", permanent=False) from exc


def _parse_run_file(data: bytes, where: str) -> ResolvedRun:
    try:
        return ResolvedRun.model_validate_json(data)
    except ValueError as exc:
        raise PreflightError(f"{where} is not a run file sail can read ({exc.__class__.__name__}); the run root "
                             "holds something else: choose another storage.uri") from exc


def check_agreement(run: SAILRun, paths: RunPaths, committed: ResolvedRun | None, state: LocalState | None) -> None:
    """The run root, the file and the local state describe one run, or a PreflightError says how not."""
    name = run.metadata.name
    if committed is not None and committed.name != name:
        raise PreflightError(f"{paths.storage_uri} holds run {committed.name!r}, not {name!r}: one run root per run; "
                             "choose another --storage / spec.storage.uri, or rename the run to continue that one")
    if committed is not None:
        changed = compute_algorithm_differences(committed.algorithm, run.spec.algorithm())
        if changed:
            raise PreflightError(
                f"the algorithm part of run {name!r} is fixed once it started ({paths.storage_uri}/{RUN_FILE}), but "
                f"the file changes: {'; '.join(changed)}. Undo those edits, or start a new run (another "
                f"--storage / spec.storage.uri) to change them. Allowed edits: {ALLOWED_EDITS}")
    recorded = sum(1 for it in (state.status.iterations if state else []) for p in it.phases
                   if p.result == "Succeeded")
    if committed is None and recorded and paths.local_root is None:
        raise PreflightError(
            f"the local state {paths.state_file} records {recorded} committed phase(s) of {paths.storage_uri}, but "
            f"that root holds no {RUN_FILE}: the storage was emptied or is another one. Move {paths.local_dir} "
            "away to start afresh there, or point --storage at the run's root")
