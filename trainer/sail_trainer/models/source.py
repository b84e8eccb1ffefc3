"""Resolve a model URI to a local diffusers folder (local path, s3:// folder, or hub id).

s3:// folders are downloaded once into a cache folder keyed by the URI and a version
string (the committed manifest of a run checkpoint, else the sorted key listing), written
to a temp folder and renamed when complete, so a crash never leaves a half cache.
Hub ids go through `DiffusionPipeline.download` (only where a hub is reachable; never in tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from sail_api.storage import DEFAULT_CONNECTION, Connection, open_store
from sail_api.uris import is_s3_uri, looks_like_hub_id, strip_file_scheme
from sail_trainer.errors import BadSpecError

log = logging.getLogger(__name__)
MODEL_INDEX = "model_index.json"


def default_cache_dir() -> Path:
    """SAIL_CACHE_DIR, else ~/.cache/sail-trainer, else <tmp>/sail-trainer-cache when home is read-only
    (pods run with a read-only root filesystem). Read when called, never at import."""
    explicit = os.environ.get("SAIL_CACHE_DIR")
    candidates = [Path(explicit)] if explicit else [Path.home() / ".cache" / "sail-trainer",
                                                    Path(tempfile.gettempdir()) / "sail-trainer-cache"]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            return candidate
        except OSError:
            continue
    return candidates[-1]


def compute_cache_key(uri: str, version: str) -> str:
    return hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()[:32]


def resolve_model_folder(
    uri: str, *, field: str = "model.uri", cache_dir: Path | None = None,
    connection: Connection = DEFAULT_CONNECTION, revision: str | None = None, version: str | None = None,
) -> Path:
    """A local folder holding model_index.json for `uri`; BadSpecError naming `field` otherwise."""
    if is_s3_uri(uri):
        return _fetch_s3_folder(uri, cache_dir or default_cache_dir(), connection, version, field)
    local = Path(strip_file_scheme(uri)).expanduser()
    if local.is_dir():
        if not (local / MODEL_INDEX).is_file():
            raise BadSpecError(
                f"{field}: {local} has no {MODEL_INDEX}; point it at a diffusers pipeline folder "
                "(the output of DiffusionPipeline.save_pretrained)"
            )
        return local
    if looks_like_hub_id(uri):
        return _fetch_hub(uri, revision, field)
    raise BadSpecError(f"{field}: model folder {uri} does not exist; give a local folder, an s3:// folder or a hub id")


def fetch_s3_folder(uri: str, *, field: str, marker: str, kind: str, cache_dir: Path | None = None,
                    connection: Connection = DEFAULT_CONNECTION) -> Path:
    """A local copy of any s3:// model folder (e.g. a CLIP scorer's), cached like pipelines are."""
    return _fetch_s3_folder(uri, cache_dir or default_cache_dir(), connection, None, field, marker, kind)


def _fetch_hub(repo_id: str, revision: str | None, field: str) -> Path:
    try:
        # Imported here only: the runner imports this module, and `sail-trainer --help` must not load diffusers.
        from diffusers import DiffusionPipeline

        # DiffusionPipeline.download fetches only the files the pipeline loads (no .ckpt duplicates)
        return Path(DiffusionPipeline.download(repo_id, revision=revision))
    except Exception as exc:
        raise BadSpecError(
            f"{field}: {repo_id} is not a local folder, and fetching it as a hub id (revision {revision}) failed: "
            f"{type(exc).__name__}: {exc}; use a local or s3:// pipeline folder where no hub is reachable"
        ) from exc


def _fetch_s3_folder(
    uri: str, cache_dir: Path, connection: Connection, version: str | None, field: str,
    marker: str = MODEL_INDEX, kind: str = "a diffusers pipeline folder",
) -> Path:
    """Download the s3:// folder `uri` once into the cache (`marker`: the file that must be in it)."""
    store = open_store(uri, connection)
    keys = [k for k in store.list("") if not k.endswith("/")]
    if marker not in keys:
        raise BadSpecError(f"{field}: {uri} has no {marker} (found {len(keys)} objects); "
                           f"upload {kind} there")
    target = cache_dir / compute_cache_key(uri, version or "\n".join(keys))
    if (target / marker).is_file():
        log.info("model %s: using cache %s", uri, target)
        return target
    tmp = cache_dir / f".tmp-{uuid.uuid4().hex}"
    log.info("model %s: downloading %d files to %s", uri, len(keys), target)
    for key in keys:
        dest = tmp / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(key, dest)
    try:
        tmp.rename(target)
    except OSError:  # another process filled the cache first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target
