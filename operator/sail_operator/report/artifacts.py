"""Reading what the report shows from a run root, local or s3:// (the I/O edge of the report).

Through `sail_api.storage` (the one storage interface), so the report neither knows nor
cares which backend the run is on, and like every reader it trusts only files listed in
a committed manifest (`_SUCCESS.json` of each train phase).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import NotCommitted, S3Connection, StorageError, Store, open_store
from sail_api.storage.resolve import resolve_file, resolve_folder
from sail_api.storage.retry import PROBE_POLICY
from sail_operator.local.state import LocalState

log = logging.getLogger(__name__)
SAMPLES = "samples.png"
BASE_SAMPLES = "samples-base.png"
METRICS = "metrics.json"


@dataclass
class IterationArtifacts:
    iteration: int
    samples: bytes | None = None
    base_samples: bytes | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # the grid's columns, left to right (when the manifest says)
    model: str | None = None  # the committed model folder (attempt-<id>/model)


def parse_metric_history(data: object) -> list[dict[str, float]]:
    """metrics.json: a list of per-step dicts (the trainer's format) or one dict of final values."""
    rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    out = []
    for row in rows:
        if isinstance(row, dict):
            out.append({k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return out


def state_connection(state: LocalState) -> S3Connection:
    """The connection (endpoint, region) of the spec a state file records; S3 credentials: AWS env.

    Read leniently (not re-validated): a report of an old state file must not fail on a field."""
    storage: dict[str, Any] = (state.spec or {}).get("storage") or {}
    return S3Connection(endpoint=storage.get("endpoint"), region=storage.get("region"))


def fetch_committed_train(store: Store, iteration: int) -> IterationArtifacts:
    """The train phase's grids and metric history of one iteration; empty when not committed."""
    folder = RunLayout("").phase_dir(iteration, Phase.TRAIN).lstrip("/")
    found = IterationArtifacts(iteration)
    try:
        manifest = store.read_manifest(folder)
    except NotCommitted:
        return found
    # Files sit under the winning attempt's prefix (attempt-<id>/samples.png): only the manifest says where.
    samples, base, metrics = (resolve_file(manifest, name) for name in (SAMPLES, BASE_SAMPLES, METRICS))
    if samples is not None:
        found.samples = store.read_bytes(f"{folder}/{samples}")
    if base is not None:
        found.base_samples = store.read_bytes(f"{folder}/{base}")
    if metrics is not None:
        found.history = parse_metric_history(json.loads(store.read_bytes(f"{folder}/{metrics}")))
    found.model = committed_model_uri(store, folder, manifest)
    prompts = manifest.metadata.get("sample_prompts")
    if isinstance(prompts, list):
        found.prompts = [str(p) for p in prompts]
    return found


def committed_model_uri(store: Store, folder: str, manifest: Any) -> str | None:
    """The model folder a train manifest committed: its `model_uri`, else the folder its files lie in."""
    uri = manifest.metadata.get("model_uri")
    if uri:
        return str(uri)
    physical = resolve_folder(manifest, "model")
    return store.uri(f"{folder}/{physical}") if physical else None


def fetch_model_folders(state: LocalState) -> dict[int, str]:
    """The committed model folder of each iteration whose train phase succeeded (for `sail status`).

    Best effort with a short bounded probe: a root that cannot be read leaves the table with the
    logical folders, and the final model still comes from the status.
    """
    store = open_store(state.storage_uri, state_connection(state), retries=PROBE_POLICY)
    found: dict[int, str] = {}
    for record in state.status.iterations:
        if not any(p.phase == Phase.TRAIN.value and p.result == "Succeeded" for p in record.phases):
            continue
        folder = RunLayout("").phase_dir(record.iteration, Phase.TRAIN).lstrip("/")
        try:
            uri = committed_model_uri(store, folder, store.read_manifest(folder))
        except (StorageError, ValueError) as exc:
            log.info("no committed model folder for iteration %d: %s", record.iteration, exc)
            return found
        if uri:
            found[record.iteration] = uri
    return found


def fetch_run_artifacts(state: LocalState) -> list[IterationArtifacts]:
    """Every iteration the state knows of (0..the latest, also those trimmed from its history)."""
    store = open_store(state.storage_uri, state_connection(state))
    rounds = int(((state.spec or {}).get("sail") or {}).get("rounds", 0))
    last = max([r.iteration for r in state.status.iterations] + [0])
    out = []
    for iteration in range(max(last, 0) + 1):
        try:
            out.append(fetch_committed_train(store, iteration))
        except (StorageError, ValueError) as exc:
            raise ValueError(f"{store.uri(RunLayout('').phase_dir(iteration, Phase.TRAIN).lstrip('/'))}: "
                             f"cannot read the committed train outputs: {exc}") from exc
    log.debug("read %d of %d iterations from %s", len(out), rounds + 1, state.storage_uri)
    return out
