"""Logical names -> physical paths inside a committed folder (pure; no I/O).

Each attempt at a phase (or a part, or a step checkpoint) writes its files under an
attempt-unique prefix inside the folder (`attempt-<12 hex>/<name>`), so two writers of one
folder never write the same key: the loser cannot overwrite the files the winner's manifest
hashed, and cleanup can tell whose files are whose. The committed manifest lists the physical
paths; readers ask for the logical name (`metrics.json`, `model`, `parts/part-00000/x`) and
these functions find it in the manifest. Manifests written before attempt prefixes existed
list logical paths, which resolve to themselves.
"""

from __future__ import annotations

import re
import uuid

from sail_api.manifest import PhaseManifest

ATTEMPT_PREFIX = "attempt-"
_ATTEMPT_SEGMENT = re.compile(r"^attempt-[0-9a-f]{6,32}$")


def new_attempt_dir() -> str:
    """A fresh attempt prefix (`attempt-<12 hex>`), made once per attempt of a phase."""
    return f"{ATTEMPT_PREFIX}{uuid.uuid4().hex[:12]}"


def is_attempt_dir(segment: str) -> bool:
    """True for a path segment that is an attempt prefix."""
    return bool(_ATTEMPT_SEGMENT.match(segment))


def logical_path(path: str) -> str:
    """`path` with its attempt-prefix segments removed (`attempt-ab12/model/x` -> `model/x`)."""
    return "/".join(seg for seg in path.strip("/").split("/") if not is_attempt_dir(seg))


def resolve_file(manifest: PhaseManifest, name: str) -> str | None:
    """The manifest-relative path of the file called `name`, or None when the manifest lacks it."""
    name = name.strip("/")
    paths = [entry.path for entry in manifest.files]
    if name in paths:
        return name
    return next((path for path in paths if logical_path(path) == name), None)


def resolve_folder(manifest: PhaseManifest, name: str) -> str | None:
    """The manifest-relative physical folder holding the sub-folder `name` (e.g. `model` ->
    `attempt-ab12/model`), or None when no listed file lies under it."""
    name = name.strip("/")
    for entry in manifest.files:
        segments = entry.path.split("/")
        kept = [i for i, seg in enumerate(segments) if not is_attempt_dir(seg)]
        logical = [segments[i] for i in kept]
        depth = len(name.split("/"))
        if logical[:depth] == name.split("/") and len(logical) > depth:
            return "/".join(segments[: kept[depth - 1] + 1])
    return None
