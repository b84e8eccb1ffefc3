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
from sail_api.storage import NotCommitted, StorageError, Store, open_store
from sail_api.storage.resolve import resolve_file
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


def parse_metric_history(data: object) -> list[dict[str, float]]:
    """metrics.json: a list of per-step dicts (the trainer's format) or one dict of final values."""
    rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    out = []
    for row in rows:
        if isinstance(row, dict):
            out.append({k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return out


def open_run_store(state: LocalState) -> Store:
    """The run root of a state file, with the endpoint/region of its spec (S3 credentials: AWS env)."""
    storage: dict[str, Any] = (state.spec or {}).get("storage") or {}
    return open_store(state.storage_uri, endpoint=storage.get("endpoint"), region=storage.get("region"))


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
    return found


def fetch_run_artifacts(state: LocalState) -> list[IterationArtifacts]:
    """Every iteration the state knows of (0..the latest, also those trimmed from its history)."""
    store = open_run_store(state)
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
