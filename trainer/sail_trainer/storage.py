"""How the trainer reads committed folders (thin layer over `sail_api.storage`, which opens stores).

Only committed folders are trusted: `list_committed_shards` finds the complete set of
committed shards of a sharded phase, `resolve_committed` maps a logical name to the key the
committed manifest lists (attempt-prefixed), `read_committed_bytes` reads such a file. Nothing here knows which backend a URI uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sail_api.layout import COMMIT_MARKER, RunLayout, join
from sail_api.phases import Phase
from sail_api.storage import NotCommitted, Store
from sail_api.storage.resolve import resolve_file, resolve_folder
from sail_trainer.errors import MissingInputError

_SHARD_RE = re.compile(r"shard-(\d{5})-of-(\d{5})/" + re.escape(COMMIT_MARKER) + "$")


@dataclass(frozen=True)
class ShardSet:
    """A complete set of committed shards of one sharded phase: folders in shard order."""

    shards: int
    folders: tuple[str, ...]


def find_committed_shards(store: Store, layout: RunLayout, iteration: int, phase: Phase) -> ShardSet:
    """The complete set of committed shards (`shard-k-of-S`, every k) of a phase.

    If shards were committed under several counts (the shard count changed between attempts),
    the complete set with the most shards wins; shard counts do not change results.
    Raises MissingInputError naming the folder when no complete set exists.
    """
    phase_dir = layout.phase_dir(iteration, phase)
    found: dict[int, set[int]] = {}
    for key in store.list(phase_dir):
        match = _SHARD_RE.search(key)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    complete = [s for s, ks in found.items() if ks == set(range(s))]
    if not complete:
        raise MissingInputError(
            f"{store.uri(phase_dir)}: no complete set of committed {phase.value} shards "
            f"(found {({s: sorted(k) for s, k in found.items()})}); run the {phase.value} phase first"
        )
    shards = max(complete)
    return ShardSet(shards, tuple(layout.shard_dir(iteration, phase, k, shards) for k in range(shards)))


def require_committed(store: Store, folder: str, what: str) -> None:
    """Raise MissingInputError unless `folder` is committed."""
    if not store.is_committed(folder):
        raise MissingInputError(f"{store.uri(folder)} is not committed: {what} must run first")


def resolve_committed(store: Store, folder: str, name: str, *, is_folder: bool = False) -> str:
    """The physical key of the logical file (or sub-folder) `name` of a committed folder.

    Files live under attempt-unique prefixes (`attempt-<id>/<name>`, see sail_api.storage.resolve);
    only the committed manifest says which attempt won. MissingInputError when the folder is not
    committed or its manifest does not list `name`.
    """
    try:
        manifest = store.read_manifest(folder)
    except NotCommitted as exc:
        raise MissingInputError(str(exc)) from exc
    found = resolve_folder(manifest, name) if is_folder else resolve_file(manifest, name)
    if found is None:
        raise MissingInputError(f"{store.uri(join(folder, name))} is not listed in the committed manifest")
    return join(folder, found)


def read_committed_bytes(store: Store, folder: str, name: str, *, check_only: bool = False) -> bytes:
    """Read the logical file `name` of `folder`, which must be listed in the folder's committed
    manifest (with check_only, just check that and return b"")."""
    key = resolve_committed(store, folder, name)
    return b"" if check_only else store.read_bytes(key)
