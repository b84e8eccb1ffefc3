"""The run layout: every storage path of a run, in one place.

    <root>/run.json
    <root>/iter-NNN/<phase>/...                 non-sharded phase (mixup, train)
    <root>/iter-NNN/<phase>/shard-KKKKK-of-SSSSS/...   sharded phase (generate, annotate)
    <root>/iter-NNN/train/model/                diffusers pipeline folder (checkpoint)
    <root>/iter-NNN/train/steps/step-SSSSSSS/   resumable step checkpoints of a train
    <root>/report/

Pure string manipulation; works for s3:// URIs and local paths alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sail_api.phases import Phase

COMMIT_MARKER = "_SUCCESS.json"
RUN_FILE = "run.json"


def join(root: str, *parts: str) -> str:
    out = root.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@dataclass(frozen=True)
class RunLayout:
    root: str

    @property
    def run_file(self) -> str:
        return join(self.root, RUN_FILE)

    @property
    def report_dir(self) -> str:
        return join(self.root, "report")

    def iteration_dir(self, iteration: int) -> str:
        return join(self.root, f"iter-{iteration:03d}")

    def phase_dir(self, iteration: int, phase: Phase) -> str:
        return join(self.iteration_dir(iteration), phase.value)

    def shard_dir(self, iteration: int, phase: Phase, shard: int, shards: int) -> str:
        return join(self.phase_dir(iteration, phase), f"shard-{shard:05d}-of-{shards:05d}")

    def output_dir(self, iteration: int, phase: Phase, shard: int | None = None, shards: int | None = None) -> str:
        """Folder whose _SUCCESS.json commits one phase (or one shard of it)."""
        if shard is None or shards is None:
            return self.phase_dir(iteration, phase)
        return self.shard_dir(iteration, phase, shard, shards)

    def manifest_uri(self, iteration: int, phase: Phase, shard: int | None = None, shards: int | None = None) -> str:
        return join(self.output_dir(iteration, phase, shard, shards), COMMIT_MARKER)

    def model_dir(self, iteration: int) -> str:
        return join(self.phase_dir(iteration, Phase.TRAIN), "model")

    def step_checkpoint_dir(self, iteration: int, step: int) -> str:
        return join(self.phase_dir(iteration, Phase.TRAIN), "steps", f"step-{step:07d}")
