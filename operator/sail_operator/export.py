"""`sail export RUN [--iteration N|best|latest] OUT`: copy a committed model folder out as a clean diffusers pipeline.

A committed model lives at `iter-NNN/train/attempt-<id>/model/` beside step checkpoints,
sample grids and metrics; only the train manifest says which attempt won. Export reads that
manifest, copies exactly the files it lists under `model/` (model card included) through the
storage interface (local or s3://), checks each file's size and sha256 against the manifest,
and moves the folder into place only when complete. No torch: the operator package never
imports it, and copying needs none.

`best` is the committed iteration with the highest held-out accuracy against the base model
(the one held-out number comparable across iterations: every iteration is measured against
the same base on the same pairs and draws); a tie goes to the earlier iteration.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from sail_api.layout import RunLayout
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.storage import NotCommitted, Store
from sail_api.storage.resolve import logical_path

BEST_METRIC = "heldout_accuracy_vs_base"
MODEL_PREFIX = "model/"


class ExportError(ValueError):
    """The run, the iteration or the output folder cannot be used (the message says how to fix it)."""


@dataclass(frozen=True)
class Exported:
    iteration: int
    folder: Path
    files: int
    source: str


def train_folder(iteration: int) -> str:
    return RunLayout("").phase_dir(iteration, Phase.TRAIN).lstrip("/")


def fetch_committed_trains(store: Store) -> dict[int, PhaseManifest]:
    """Manifests of the committed train phases, iteration 0 upwards (iterations are contiguous)."""
    found: dict[int, PhaseManifest] = {}
    iteration = 0
    while True:
        try:
            found[iteration] = store.read_manifest(train_folder(iteration))
        except NotCommitted:
            return found
        iteration += 1


def select_iteration(metrics: dict[int, dict[str, float]], choice: str | None) -> int:
    """The iteration to export: a number, `latest` (default) or `best` (see the module docstring)."""
    if not metrics:
        raise ExportError("no committed train phase yet: nothing to export (is the run's step 0 finished?)")
    if choice in (None, "latest"):
        return max(metrics)
    if choice == "best":
        scored = {i: m[BEST_METRIC] for i, m in metrics.items() if BEST_METRIC in m}
        if not scored:
            raise ExportError(f"--iteration best needs held-out metrics ({BEST_METRIC}) and no train phase has "
                              "them (the run holds out no pairs: sail.validation); give --iteration N")
        return max(sorted(scored), key=lambda i: scored[i])
    try:
        wanted = int(choice)
    except ValueError as exc:
        raise ExportError(f"--iteration {choice!r}: give a number, best or latest") from exc
    if wanted not in metrics:
        raise ExportError(f"--iteration {wanted}: not committed; committed iterations: {sorted(metrics)}")
    return wanted


def export_model(store: Store, choice: str | None, out: Path) -> Exported:
    """Copy the chosen iteration's model folder to `out` (which must not exist or be empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; choose a new output folder")
    manifests = fetch_committed_trains(store)
    iteration = select_iteration({i: m.metrics for i, m in manifests.items()}, choice)
    folder, manifest = train_folder(iteration), manifests[iteration]
    entries = [e for e in manifest.files if logical_path(e.path).startswith(MODEL_PREFIX)]
    if not entries:
        raise ExportError(f"{store.uri(folder)}: the committed train phase lists no model/ files")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for entry in entries:
            target = partial / logical_path(entry.path)[len(MODEL_PREFIX):]
            target.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(f"{folder}/{entry.path}", target)
            _check(target, entry.size, entry.sha256, store.uri(f"{folder}/{entry.path}"))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # never leave a half-copied pipeline behind
        raise
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return Exported(iteration, out.resolve(), len(entries), store.uri(folder))


def _check(path: Path, size: int, sha256: str, source: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if path.stat().st_size != size or digest.hexdigest() != sha256:
        raise ExportError(f"{source}: size or sha256 differs from the committed manifest; the run's storage "
                          "was changed after the commit")
