"""What a phase receives: the resolved spec, the store, the layout, its iteration and shard."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sail_api.layout import RunLayout, join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.resolved import ResolvedRun
from sail_api.spec import AlgorithmSpec
from sail_api.storage import Store
from sail_api.storage.resolve import new_attempt_dir

log = logging.getLogger(__name__)


@dataclass
class PhaseContext:
    """One phase attempt. `shard`/`shards` are set for generate and annotate only."""

    resolved: ResolvedRun
    run_uri: str
    iteration: int
    phase: Phase
    store: Store
    cache_dir: Path
    work_dir: Path
    shard: int | None = None
    shards: int | None = None
    rank: int = 0
    world_size: int = 1
    # Made once per attempt: this attempt's files go under <output_dir>/<attempt>/, so a second
    # writer of the same folder (operator + sail run, a recreated Job) never writes our keys.
    attempt: str = field(default_factory=new_attempt_dir)

    @property
    def algorithm(self) -> AlgorithmSpec:
        return self.resolved.algorithm

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_uri)

    @property
    def output_dir(self) -> str:
        return self.layout.output_dir(self.iteration, self.phase, self.shard, self.shards)

    @property
    def shard_label(self) -> str | None:
        return None if self.shard is None else f"{self.shard}/{self.shards}"

    @property
    def precision(self) -> str:
        return self.resolved.precision_override or self.algorithm.model.precision

    def attempt_path(self, name: str) -> str:
        """`name` inside this attempt's prefix, relative to the output folder (what the manifest lists)."""
        return f"{self.attempt}/{name.strip('/')}"

    def output_key(self, name: str) -> str:
        return join(self.output_dir, self.attempt_path(name))

    def put_bytes(self, name: str, data: bytes) -> str:
        """Write logical `name` under this attempt's prefix; return its folder-relative path (for the commit list)."""
        self.store.write_bytes(self.output_key(name), data)
        return self.attempt_path(name)

    def put_file(self, name: str, path: Path) -> str:
        self.store.upload_file(self.output_key(name), path)
        return self.attempt_path(name)

    def commit(self, files: list[str], metrics: dict[str, float], metadata: dict[str, Any]) -> PhaseManifest:
        """Commit the output folder with exactly `files` (paths relative to it), last; the
        manifest's metadata["attempt"] names the winning attempt prefix."""
        return self.store.commit(
            self.output_dir, files, metrics=metrics, metadata={**metadata, "attempt": self.attempt},
            run=self.resolved.name,
            iteration=self.iteration, phase=self.phase.value, shard=self.shard_label,
            spec_digest=self.resolved.digest(),
        )
