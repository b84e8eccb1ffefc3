"""Where a local run lives, and the SAILRun file made concrete for this machine.

- Relative URIs in the file (model, seedPairs, prompts) resolve against the file's folder,
  so an example runs from any working directory.
- Storage: `--storage PATH|s3://...`, else spec.storage.uri, else `<file dir>/.sail/<run name>`.
- The executor's own files (state, resolved spec, logs, termination logs) live in
  `<run root>/local/` for local storage, or in `<file dir>/.sail/<run name>/s3/<bucket>/<prefix>/local/`
  when the run root is on S3 (the operator package never writes to S3 itself). Keyed by the
  root, not only the run name: another `--storage s3://...` with the same file is another run,
  never the old one's state. (A state in the older `<file dir>/.sail/<run name>/local/` is
  still used when it records this very root.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sail_api.spec import SAILRun
from sail_api.uris import is_remote_uri, strip_file_scheme

STATE_FOLDER = "local"
STATE_FILE = "state.json"
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class RunPaths:
    storage_uri: str   # run root as the trainer gets it (--run)
    local_dir: Path    # the executor's folder: state, spec, logs

    @property
    def state_file(self) -> Path:
        return self.local_dir / STATE_FILE

    @property
    def spec_file(self) -> Path:
        return self.local_dir / SPEC_FILE

    def attempt_dir(self, job_name: str) -> Path:
        return self.local_dir / "attempts" / job_name

    @property
    def local_root(self) -> Path | None:
        """The run root as a local folder, None on S3."""
        return None if is_remote(self.storage_uri) else Path(self.storage_uri)


def is_remote(uri: str) -> bool:
    return is_remote_uri(uri)


def resolve_uri(uri: str, base: Path) -> str:
    """A relative path resolves against `base`; URIs (s3://, file://) and absolute paths are kept.

    A bare hub id such as `org/model` is ambiguous: it resolves only when such a folder exists.
    """
    if "://" in uri:
        return strip_file_scheme(uri)
    path = Path(uri).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = (base / path).resolve()
    if candidate.exists() or uri.startswith((".", "..")) or path.suffix:
        return str(candidate)
    return uri


def build_local_run(run: SAILRun, source: Path, storage: str | None) -> tuple[SAILRun, RunPaths]:
    """The run with concrete URIs (inputs and storage) and where its files go."""
    base = source.resolve().parent
    out = run.model_copy(deep=True)
    spec = out.spec
    spec.model.uri = resolve_uri(spec.model.uri, base)
    spec.seed_pairs.uri = resolve_uri(spec.seed_pairs.uri, base)
    spec.prompts.uri = resolve_uri(spec.prompts.uri, base)
    if spec.sail.validation.uri:
        spec.sail.validation.uri = resolve_uri(spec.sail.validation.uri, base)
    for uri_holder in ([] if spec.evaluation is None else
                       [s.clip for s in spec.evaluation.scorers if s.clip] + [spec.evaluation.prompts]):
        if uri_holder is not None:
            uri_holder.uri = resolve_uri(uri_holder.uri, base)
    default_dir = base / ".sail" / run.metadata.name
    if storage is not None:  # from the command line: relative to the working directory
        root = storage.rstrip("/") if is_remote(storage) else str(Path(strip_file_scheme(storage)).expanduser().resolve())
    elif spec.storage.uri is None:
        root = str(default_dir)
    elif is_remote(spec.storage.uri):
        root = spec.storage.uri.rstrip("/")
    else:  # from the file: relative to the file's folder
        root = str((base / Path(strip_file_scheme(spec.storage.uri)).expanduser()).resolve())
    spec.storage.uri = root
    local_dir = build_remote_state_dir(default_dir, root) if is_remote(root) else Path(root) / STATE_FOLDER
    return out, RunPaths(storage_uri=root, local_dir=local_dir)


def build_remote_state_dir(default_dir: Path, root: str) -> Path:
    """The executor's folder for a remote run root: one per root (`.sail/<name>/s3/<bucket>/<prefix>/local`).

    The older layout (`.sail/<name>/local`, one per run name) is used only if its state records this root.
    """
    scheme, _, rest = root.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    folder = default_dir.joinpath(scheme, *parts, STATE_FOLDER)
    legacy = default_dir / STATE_FOLDER
    if not (folder / STATE_FILE).exists() and _recorded_root(legacy / STATE_FILE) == root:
        return legacy
    return folder


def _recorded_root(state_file: Path) -> str | None:
    import json

    try:
        return json.loads(state_file.read_text()).get("storageUri")
    except (OSError, ValueError, AttributeError):
        return None


def find_state_file(target: Path) -> Path | None:
    """`sail status|report PATH|FILE`: the state file of a run root, its local/ folder, or a SAILRun file."""
    candidates = [target / STATE_FOLDER / STATE_FILE, target / STATE_FILE, target]
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from sail_api.validation import load_run_file

        run = load_run_file(target)
        _, paths = build_local_run(run, target, None)
        candidates = [paths.state_file]
    for candidate in candidates:
        if candidate.is_file() and candidate.name == STATE_FILE:
            return candidate
    return None
